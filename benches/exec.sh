#!/usr/bin/env bash
# benches/exec.sh - what an exec of the recorded process costs it: at each exec the BPF program
# frees the blocks the old program had outstanding (bpf/leak.bpf.c, `target_exec`), visiting
# every bucket of the live-block table (issue 8).
#
# usage (root, from anywhere):  bash benches/exec.sh
#   env: RUNS=3            rounds
#        EXECS=10          programs in the chain (each execs the next)
#        LIVE=100000       blocks each program leaves outstanding at its exec (the other
#                          variant leaves none)
#        BENCH_TARGET_DIR=/tmp/bench-target   cargo target dir (not the repo's)
#        BENCH_WORK=/tmp/leak-exec-bench      scratch dir (fixtures, logs, recordings)
#
# leak-record starts `lifecycle exec N 64 100 lifecycle exec N 64 100 ... sleep 2`: EXECS
# programs, each leaking N blocks of 64 B and exec'ing the next 100 ms later, the last one
# `sleep`; EXECS + 1 execs by the target (the first program's included). During the sleep the
# kernel's own accounting (kernel.bpf_stats_enabled) gives target_exec's run time; divided by
# the target's execs it is the time an exec spends in it. (The program also runs, and returns at
# once, for the other execs on the machine meanwhile, whose time is counted too: a few, at well
# under a microsecond each.) Variants, interleaved in every round: --max-allocs 1Mi (the
# default) and 16Mi, with N = 0 and N = LIVE.
# Prints a markdown report and writes it into docs/performance.md.
set -euo pipefail
# shellcheck source=benches/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
shopt -s inherit_errexit

RUNS=${RUNS:-3}
EXECS=${EXECS:-10}
LIVE=${LIVE:-100000}
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TARGET=${BENCH_TARGET_DIR:-/tmp/bench-target}
WORK=${BENCH_WORK:-/tmp/leak-exec-bench}
FX="$WORK/fx"
LR="$TARGET/release/leak-record"
LOG="$WORK/bench.log"
DOC="$ROOT/docs/performance.md"
HEADING="## An exec of the target (issue 8 benchmark)"
TABLES=(1048576 16777216)
LIVES=(0 "$LIVE")

log() { echo "[exec] $*" >&2; }

setup() {
    [[ $EUID -eq 0 ]] || { echo "run as root (BPF uprobes)" >&2; exit 1; }
    for c in jq bpftool; do
        command -v "$c" >/dev/null || { echo "needs $c" >&2; exit 1; }
    done
    rm -rf "$WORK/t" && mkdir -p "$WORK/t" && : >"$LOG"
    log "building fixtures and leak-record into $TARGET"
    bash "$ROOT/fixtures/build.sh" "$FX" >>"$LOG"
    (cd "$ROOT" && CARGO_TARGET_DIR="$TARGET" cargo build --release --bin leak-record \
        >>"$LOG" 2>&1)
}

# exec_ns TABLE N: ns target_exec ran per exec of the target, the table holding TABLE blocks
# and each program leaving N outstanding.
exec_ns() {
    local -a chain=()
    local i rp ids ns
    for ((i = 0; i < EXECS; i++)); do
        chain+=("$FX/lifecycle" exec "$2" 64 100)
    done
    chain+=("$(command -v sleep)" 2) # execv: a path
    "$LR" -q --max-allocs "$1" -i 1s -o "$WORK/e.zst" --force -- "${chain[@]}" \
        2>>"$LOG" & rp=$!
    # Until the chain has reached `sleep`.
    for ((i = 0; i < 600; i++)); do
        [[ $(cat /proc/"$(pgrep -P "$rp")"/comm 2>/dev/null) == sleep ]] && break
        sleep 0.1
    done
    ids=$(bpf_prog_ids "$rp")
    bpftool prog show -j >"$WORK/progs.json"
    wait "$rp"
    ns=$(jq --argjson ids "$ids" "[$BPF_MINE"' | select(.name == "target_exec")
        | .run_time_ns] | add // empty' "$WORK/progs.json")
    [[ -n $ns ]] || { echo "no run time for target_exec (see $LOG)" >&2; exit 1; }
    calc %.0f "$ns / ($EXECS + 1)"
}

bench() {
    local r t n ns
    STATS_WERE=$(sysctl -n kernel.bpf_stats_enabled)
    sysctl -qw kernel.bpf_stats_enabled=1
    trap 'sysctl -qw kernel.bpf_stats_enabled="$STATS_WERE"' EXIT
    for ((r = 0; r < RUNS; r++)); do
        for t in "${TABLES[@]}"; do
            for n in "${LIVES[@]}"; do
                ns=$(exec_ns "$t" "$n")
                echo "$ns" >>"$WORK/t/$t-$n"
                log "round $((r + 1))/$RUNS table $t, $n live: $(calc %.2f "$ns / 1e6") ms per exec"
            done
        done
    done
    sysctl -qw kernel.bpf_stats_enabled="$STATS_WERE"
    trap - EXIT
}

report() {
    local t n m lo hi
    {
        echo "$HEADING"
        echo
        echo "\`bash benches/exec.sh\`, $(date -u '+%Y-%m-%d %H:%M') UTC, $(uname -r), load" \
            "$(cut -d' ' -f1-3 /proc/loadavg), RUNS=$RUNS: a chain of $EXECS programs, each" \
            "exec'ing the next (\`lifecycle exec\`), then \`sleep\`: $((EXECS + 1)) execs, the" \
            "first (the command's start) with no block outstanding. Time target_exec ran per" \
            "exec (kernel.bpf_stats; the mean of the $((EXECS + 1))), which frees the blocks the" \
            "old program had outstanding:"
        echo
        echo "| --max-allocs | blocks outstanding at each later exec | ms per exec median | min | max |"
        echo "|---:|---:|---:|---:|---:|"
        for t in "${TABLES[@]}"; do
            for n in "${LIVES[@]}"; do
                read -r m lo hi < <(stats "$WORK/t/$t-$n")
                echo "| $t | $n | $(calc %.2f "$m / 1e6") | $(calc %.2f "$lo / 1e6") |" \
                    "$(calc %.2f "$hi / 1e6") |"
            done
        done
        echo
        echo "The sweep visits every bucket of the table (its size is --max-allocs rounded up" \
            "to a power of two) and frees each block it finds on its stack's counters. It runs" \
            "once per exec of the target, in the kernel, in the exec'ing thread, before the new" \
            "program's first instruction: that thread holds its CPU for that long, without" \
            "yielding it. Per block freed: (live - empty) / LIVE x $((EXECS + 1)) / $EXECS."
    } >"$WORK/report.md"
    cat "$WORK/report.md"
    write_doc
}

setup
bench
report
