#!/usr/bin/env bash
# benches/snapshot.sh - what one snapshot costs the recorder, by live stacks (issue 8 benchmark).
#
# usage (root, from anywhere):  bash benches/snapshot.sh
#   env: STACKS="1000 10000 50000"  live stacks of the fixture
#        CHANGING="0 10"   percent of those stacks that change per second (0: none)
#        ROUNDS=3          recordings per configuration and binary
#        SECONDS_PER=10    length of each recording (one snapshot per second)
#        BEFORE=PATH       another leak-record build (e.g. of an older commit), measured side
#                          by side with this tree's, interleaved in every round (optional)
#        BEFORE_NAME=TEXT  what that build is, for the report (default: its path)
#        BENCH_TARGET_DIR=/tmp/bench-target   cargo target dir (not the repo's)
#        BENCH_WORK=/tmp/leak-snap            scratch dir (fixtures, recordings)
#
# Each recording is `leak-record -q -i 1s -d SECONDS_PER` of `leaky --wait-end many_stacks S`
# (nothing changes after start-up) or `leaky many_stacks S K 1000` (K = S * percent / 100
# stacks allocate or free one block every second); --max-stacks 64K above 16K stacks. The
# figures are the recording's own per-snapshot costs (wall time and recorder thread CPU time,
# format/examples/snapshot_costs.rs): per recording its median over the snapshots (the first,
# which reads every new stack's trace, is in the max), then the median over the rounds.
# Prints a markdown report and writes it into docs/performance.md.
set -euo pipefail
# shellcheck source=benches/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

STACKS=${STACKS:-1000 10000 50000}
CHANGING=${CHANGING:-0 10}
ROUNDS=${ROUNDS:-3}
SECONDS_PER=${SECONDS_PER:-10}
BEFORE=${BEFORE:-}
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TARGET=${BENCH_TARGET_DIR:-/tmp/bench-target}
WORK=${BENCH_WORK:-/tmp/leak-snap}
FX="$WORK/fx"
LOG="$WORK/bench.log"
COSTS="$TARGET/release/examples/snapshot_costs"
DOC="$ROOT/docs/performance.md"
HEADING="## Snapshot cost (issue 8 benchmark)"

log() { echo "[snapshot] $*" >&2; }
calc() { awk "BEGIN {printf \"$1\\n\", $2}"; }
# stats FILE: "median min max" of the numbers in FILE.
stats() {
    sort -g "$1" | awk '{a[NR] = $1}
        END {m = NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2
             print m, a[1], a[NR]}'
}

setup() {
    [[ $EUID -eq 0 ]] || { echo "run as root (BPF uprobes)" >&2; exit 1; }
    rm -rf "$WORK/t" && mkdir -p "$WORK/t" && : >"$LOG"
    log "building fixtures and release binaries into $TARGET"
    bash "$ROOT/fixtures/build.sh" "$FX" >>"$LOG"
    (cd "$ROOT" && CARGO_TARGET_DIR="$TARGET" cargo build --release --bin leak-record \
        >>"$LOG" 2>&1 && CARGO_TARGET_DIR="$TARGET" cargo build --release -p leak-format \
        --example snapshot_costs >>"$LOG" 2>&1)
    BINS=(after)
    cp "$TARGET/release/leak-record" "$WORK/after"
    if [[ -n $BEFORE ]]; then
        cp "$BEFORE" "$WORK/before"
        BINS=(before after)
    fi
    COMMIT=$(git -C "$ROOT" rev-parse --short HEAD)
    git -C "$ROOT" diff --quiet HEAD -- recorder bpf || COMMIT+=" + uncommitted changes"
}

# run BIN S PCT: one recording; appends its median wall and CPU ms, max wall ms and most
# counters read to $WORK/t/BIN.S.PCT.{wall,cpu,max,read}.
run() {
    local bin=$1 s=$2 pct=$3 out="$WORK/rec.zst" cmd more=() k
    k=$((s * pct / 100))
    if ((k > 0)); then
        cmd=("$FX/leaky" many_stacks "$s" "$k" 1000)
    else
        cmd=("$FX/leaky" --wait-end many_stacks "$s")
    fi
    ((s > 16000)) && more=(--max-stacks 64K)
    # stdin stays open (sleep's pipe, not waited for) so --wait-end holds the fixture.
    "$WORK/$bin" -q -i 1s -d "${SECONDS_PER}s" "${more[@]}" -o "$out" --force -- "${cmd[@]}" \
        >>"$LOG" 2>>"$WORK/record.stderr" < <(sleep $((SECONDS_PER + 30)))
    "$COSTS" "$out" >"$WORK/costs"
    local f="$WORK/t/$bin.$s.$pct"
    sed -nE 's/^snapshot cost: median ([0-9.]+) ms, max ([0-9.]+) ms, up to ([0-9]+).*/\1 \2 \3/p' \
        "$WORK/costs" | { read -r med max read; echo "$med" >>"$f.wall"; echo "$max" >>"$f.max"
        echo "$read" >>"$f.read"; }
    sed -nE 's/^snapshot cpu: median ([0-9.]+) ms.*/\1/p' "$WORK/costs" >>"$f.cpu"
    grep -m1 '^losses' "$WORK/costs" >"$f.losses"
}

bench() {
    : >"$WORK/record.stderr"
    local r s pct i bin n=${#BINS[@]}
    for ((r = 0; r < ROUNDS; r++)); do
        for s in $STACKS; do
            for pct in $CHANGING; do
                for ((i = 0; i < n; i++)); do # alternate the order every round
                    bin=${BINS[(i + r) % n]}
                    run "$bin" "$s" "$pct"
                    log "round $((r + 1))/$ROUNDS $bin $s stacks, $pct%/s:" \
                        "$(tail -n1 "$WORK/t/$bin.$s.$pct.wall") ms median"
                done
            done
        done
    done
}

table() {
    local s pct bin f m lo hi
    echo "| leak-record | live stacks | changing per s | wall ms, median (min-max over rounds) | CPU ms, median | max wall ms (first snapshot) | counters read, most |"
    echo "|---|---:|---:|---:|---:|---:|---:|"
    for s in $STACKS; do
        for pct in $CHANGING; do
            for bin in "${BINS[@]}"; do
                f="$WORK/t/$bin.$s.$pct"
                read -r m lo hi < <(stats "$f.wall")
                echo "| $bin | $s | $pct% | $m ($lo-$hi) | $(stats "$f.cpu" | cut -d' ' -f1)" \
                    "| $(stats "$f.max" | cut -d' ' -f1) | $(stats "$f.read" | cut -d' ' -f3) |"
            done
        done
    done
}

report() {
    local cpu losses
    cpu=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
    losses=$(cat "$WORK"/t/*.losses | sort | uniq -c | sed 's/^ */    /')
    cat <<EOF
$HEADING

- date: $(date -u '+%Y-%m-%d %H:%M UTC'); kernel: $(uname -r); CPU: $cpu ($(nproc) cores);
  load average (1 min) before: $LOAD_BEFORE, after: $(cut -d' ' -f1 /proc/loadavg);
  "after" = this tree (commit $COMMIT)${BEFORE:+; "before" = ${BEFORE_NAME:-\`$BEFORE\`}}
- reproduce (root): \`${BEFORE:+BEFORE=PATH }bash benches/snapshot.sh\` (STACKS="$STACKS"
  CHANGING="$CHANGING" ROUNDS=$ROUNDS SECONDS_PER=$SECONDS_PER)
- method: \`leak-record -q -i 1s -d ${SECONDS_PER}s\` of \`leaky --wait-end many_stacks S\`
  (0%: nothing changes after start-up) or \`leaky many_stacks S K 1000\` (K = S x percent / 100
  stacks allocate or free one 16-byte block every second); \`--max-stacks 64K\` above 16K
  stacks. Per recording, the median and max of the recording's own per-snapshot costs
  (wall and recorder thread CPU time, \`snapshot_costs\`); per row, the median over $ROUNDS
  rounds (binaries interleaved, order alternated per round). The first snapshot reads every
  new stack's trace: it is the max column.

$(table)

Loss counters at the end of each recording (count, line):
$losses
leak-record stderr (with -q) over all runs: $(if [[ -s $WORK/record.stderr ]]; then
        echo; sed 's/^/    /' "$WORK/record.stderr"; else echo "empty"; fi)
EOF
}

main() {
    LOAD_BEFORE=$(cut -d' ' -f1 /proc/loadavg)
    setup
    log "binaries: ${BINS[*]}; stacks: $STACKS; changing: $CHANGING; rounds: $ROUNDS"
    bench
    report | tee "$WORK/report.md"
    write_doc
    log "written $DOC; logs in $WORK"
}

main "$@"
