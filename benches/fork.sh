#!/usr/bin/env bash
# benches/fork.sh - what a child forked by the recorded process (without exec) pays for the
# allocator probes it inherits (issue 8).
#
# usage (root, from anywhere):  bash benches/fork.sh
#   env: RUNS=5            rounds
#        N=1000000         malloc(64)/free pairs the child churns
#        LATER_MS=1000     the child's other start: this long after the fork
#        SAMPLE=64K        --sample-bytes of the sampled variants
#        BENCH_TARGET_DIR=/tmp/bench-target   cargo target dir (not the repo's)
#        BENCH_WORK=/tmp/leak-fork-bench      scratch dir (fixtures, logs, recordings)
#
# `leaky fork_churn N MS` forks a child that churns N pairs MS ms after the fork (0, and
# LATER_MS), and prints the child's own CPU time (user + system, getrusage). The child is not
# recorded: its time is what the breakpoints it inherited cost it. Variants, each at both
# starts, interleaved in every round (order rotated):
# bare; exact = leak-record (the classic pair on malloc: the child's first hit takes each
# breakpoint out); sampled = leak-record --sample-bytes SAMPLE (a session probe on malloc where
# the kernel has them, Linux >= 6.13, which leak-record swaps for the classic pair once the
# child has run the target's program for 10 ms); classic = the same with
# LEAK_RECORD_NO_SESSIONS=1. Reports the child's CPU time (median, min, max), per pair, and
# above bare at the same start.
# Prints a markdown report and writes it into docs/performance.md.
set -euo pipefail
# shellcheck source=benches/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
shopt -s inherit_errexit

RUNS=${RUNS:-5}
N=${N:-1000000}
LATER_MS=${LATER_MS:-1000}
SAMPLE=${SAMPLE:-64K}
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TARGET=${BENCH_TARGET_DIR:-/tmp/bench-target}
WORK=${BENCH_WORK:-/tmp/leak-fork-bench}
FX="$WORK/fx"
LR="$TARGET/release/leak-record"
LOG="$WORK/bench.log"
DOC="$ROOT/docs/performance.md"
HEADING="## A forked child (issue 8 benchmark)"
VARIANTS=(bare exact sampled classic)
STARTS=(0 "$LATER_MS")

log() { echo "[fork] $*" >&2; }

setup() {
    [[ $EUID -eq 0 ]] || { echo "run as root (BPF uprobes)" >&2; exit 1; }
    rm -rf "$WORK/t" && mkdir -p "$WORK/t" && : >"$LOG"
    log "building fixtures and leak-record into $TARGET"
    bash "$ROOT/fixtures/build.sh" "$FX" >>"$LOG"
    (cd "$ROOT" && CARGO_TARGET_DIR="$TARGET" cargo build --release --bin leak-record \
        >>"$LOG" 2>&1)
}

# v_VARIANT MS: runs `leaky fork_churn N MS` as VARIANT.
v_bare() { "$FX/leaky" fork_churn "$N" "$1"; }
v_exact() { "$LR" -q -o "$WORK/f.zst" --force -- "$FX/leaky" fork_churn "$N" "$1" 2>>"$LOG"; }
v_sampled() {
    "$LR" -q --sample-bytes "$SAMPLE" -o "$WORK/f.zst" --force -- \
        "$FX/leaky" fork_churn "$N" "$1" 2>>"$LOG"
}
v_classic() { LEAK_RECORD_NO_SESSIONS=1 v_sampled "$@"; }

# child_ns VARIANT MS: the child's CPU time in ns, from the fixture's line.
child_ns() {
    local out
    out=$("v_$1" "$2")
    sed -n 's/^child cpu_ns //p' <<<"$out" | grep -E '^[0-9]+$' \
        || { echo "no child cpu_ns line from $1: $out" >&2; exit 1; }
}

bench() {
    local r i v ms ns k=${#VARIANTS[@]}
    for ((r = 0; r < RUNS; r++)); do
        for ((i = 0; i < k; i++)); do # rotate the order every round
            v=${VARIANTS[(i + r) % k]}
            for ms in "${STARTS[@]}"; do
                ns=$(child_ns "$v" "$ms")
                echo "$ns" >>"$WORK/t/$v-$ms"
                log "round $((r + 1))/$RUNS $v, start $ms ms: child $(calc %.1f "$ns / 1e6") ms"
            done
        done
    done
}

report() {
    local bare v ms m lo hi
    {
        echo "$HEADING"
        echo
        echo "\`bash benches/fork.sh\`, $(date -u '+%Y-%m-%d %H:%M') UTC, $(uname -r), load" \
            "$(cut -d' ' -f1-3 /proc/loadavg), RUNS=$RUNS: a child forked without exec churns" \
            "N=$N malloc(64)/free pairs at once or $LATER_MS ms after the fork" \
            "(\`leaky fork_churn\`); its own CPU time:"
        echo
        echo "| variant | child starts | child CPU ms median | min | max | ns/pair | above bare (ms) |"
        echo "|---|---:|---:|---:|---:|---:|---:|"
        for ms in "${STARTS[@]}"; do
            bare=$(median "$WORK/t/bare-$ms")
            for v in "${VARIANTS[@]}"; do
                read -r m lo hi < <(stats "$WORK/t/$v-$ms")
                echo "| $v | after $ms ms | $(calc %.1f "$m / 1e6") | $(calc %.1f "$lo / 1e6") |" \
                    "$(calc %.1f "$hi / 1e6") | $(calc %.0f "$m / $N") |" \
                    "$(calc %.1f "($m - $bare) / 1e6") |"
            done
        done
        echo
        echo "exact: leak-record; sampled: \`--sample-bytes $SAMPLE\` (a session probe on malloc" \
            "until the hand-over, Linux >= 6.13); classic: the same with" \
            "LEAK_RECORD_NO_SESSIONS=1." \
            "What a child pays beyond bare is a one-off: the classic pair leaves it at its" \
            "first hit of each probe, and leak-record swaps a session probe for the classic" \
            "pair when a forked child still runs the target's program 10 ms after its fork" \
            "(docs/guide.md, \"Sampling\"), the child trapping on every malloc until then."
    } >"$WORK/report.md"
    cat "$WORK/report.md"
    write_doc
}

setup
bench
report
