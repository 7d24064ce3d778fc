#!/usr/bin/env bash
# benches/detector.sh - detection cost: the detector alone on 10,000 stacks x 2,880 snapshots
# (issue 6).
#
# usage (from anywhere):  bash benches/detector.sh
#   env: STACKS=10000      stacks
#        SNAPSHOTS=2880    snapshots per stack (2880 = 4 h at one per 5 s)
#        RUNS=3            measured rounds (the median is reported)
#        BENCH_TARGET_DIR=/tmp/eval-target   cargo target dir (not the repo's)
#
# 1. builds the evaluate example (analyzer/examples/evaluate.rs) with --release;
# 2. RUNS times, runs `evaluate --cost`: it generates the stacks of synthetic process runs
#    (leak_report::corpus::process_run, about 1% leaks; generation is not timed) in batches of
#    250 and times `detect::detect` on each stack, on one thread: (a) on the raw series of
#    SNAPSHOTS points, (b) on the series as leak-report holds them after `series::read` of a
#    real recording (compacted to at most series::DEFAULT_CAP samples);
# 3. prints a markdown report: medians and min/max of the seconds and ms per stack.
set -euo pipefail
shopt -s inherit_errexit

STACKS=${STACKS:-10000}
SNAPSHOTS=${SNAPSHOTS:-2880}
RUNS=${RUNS:-3}
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TARGET=${BENCH_TARGET_DIR:-/tmp/eval-target}
BIN="$TARGET/release/examples/evaluate"
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT

log() { echo "[detector] $*" >&2; }

# Reads numbers on stdin; prints "median min max".
stats() {
    sort -g | awk '{ v[NR] = $1 } END {
        m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
        printf "%.2f %.2f %.2f\n", m, v[1], v[NR] }'
}

log "building the evaluate example into $TARGET"
(cd "$ROOT" && CARGO_TARGET_DIR="$TARGET" cargo build --release -p leak-report \
    --example evaluate >"$OUT/build.log" 2>&1) || { tail -n 30 "$OUT/build.log" >&2; exit 1; }

LOAD_BEFORE=$(cut -d' ' -f1 /proc/loadavg)
for ((r = 1; r <= RUNS; r++)); do
    "$BIN" --cost --stacks "$STACKS" --snapshots "$SNAPSHOTS" >"$OUT/run$r.txt"
    raw=$(sed -n 's/^- raw series.*: \([0-9.]*\) s, \([0-9.]*\) ms per stack$/\1 \2/p' "$OUT/run$r.txt")
    kept=$(sed -n 's/^- as series::read keeps them.*: \([0-9.]*\) s, \([0-9.]*\) ms per stack$/\1 \2/p' "$OUT/run$r.txt")
    echo "$raw" >>"$OUT/raw.txt"
    echo "$kept" >>"$OUT/kept.txt"
    log "round $r/$RUNS: raw ${raw%% *} s, as read ${kept%% *} s"
done
LOAD_AFTER=$(cut -d' ' -f1 /proc/loadavg)
read -r rs_med rs_min rs_max < <(cut -d' ' -f1 "$OUT/raw.txt" | stats)
read -r rm_med _ _ < <(cut -d' ' -f2 "$OUT/raw.txt" | awk '{ print $1 * 1000 }' | stats)
read -r ks_med ks_min ks_max < <(cut -d' ' -f1 "$OUT/kept.txt" | stats)
read -r km_med _ _ < <(cut -d' ' -f2 "$OUT/kept.txt" | awk '{ print $1 * 1000 }' | stats)
CAP=$(sed -n 's/.*(at most \([0-9]*\) samples).*/\1/p' "$OUT/run1.txt")

echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'); kernel: $(uname -r);" \
    "CPU: $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1) ($(nproc) cores);" \
    "load average (1 min) before the runs: $LOAD_BEFORE, after: $LOAD_AFTER"
echo "- command: \`STACKS=$STACKS SNAPSHOTS=$SNAPSHOTS RUNS=$RUNS bash benches/detector.sh\`" \
    "(one thread; generation not timed)"
echo "- $(sed -n 's/^- verdicts (raw): /verdicts: /p' "$OUT/run1.txt")"
echo
echo "| series given to detect::detect | seconds for $STACKS stacks, median | min | max | µs per stack |"
echo "|---|---:|---:|---:|---:|"
echo "| raw, $SNAPSHOTS points | $rs_med | $rs_min | $rs_max | ${rm_med%.*} |"
echo "| as leak-report reads them (at most $CAP samples) | $ks_med | $ks_min | $ks_max | ${km_med%.*} |"
