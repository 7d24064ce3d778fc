#!/usr/bin/env bash
# benches/analyzer.sh - leak-report throughput benchmark (issue 3).
#
# usage (from anywhere; root or sudo-less root for the apt step):  bash benches/analyzer.sh
#   env: STACKS=10000      stacks in the synthetic recording
#        SNAPSHOTS=17280   snapshots (17280 = 24 h at one per 5 s)
#        CHANGED=0.1       share of stacks listed (changed) per snapshot
#        SEED=1            generator seed (the recording is deterministic)
#        RUNS=3            measured rounds
#        BENCH_TARGET_DIR=/tmp/anbench-target   cargo target dir (not the repo's)
#        BENCH_WORK=/tmp/anbench                scratch dir (recordings, logs)
#
# 1. installs zstd and GNU time (apt) if missing; builds leak-report and the gen_recording
#    example (analyzer/examples/gen_recording.rs) with --release into BENCH_TARGET_DIR;
# 2. generates the recording once into BENCH_WORK (reused when one with the same
#    STACKS/SNAPSHOTS/CHANGED/SEED is there), then reads it once to warm the page cache;
# 3. for RUNS rounds, alternately runs (a) `zstd -dc REC > /dev/null`, the floor: decompressing
#    every record, (b) `zstd -dc --no-asyncio REC > /dev/null` (when this zstd has the option:
#    zstd >= 1.5.3 hands reading and writing to threads of its own by default, which on some
#    machines costs more than the decompression; this is the single-threaded floor), and (c)
#    `leak-report REC --json /dev/null`, the whole analysis; each under
#    `/usr/bin/time -f '%e %M %U %S'` (wall seconds, peak RSS KiB, user and system CPU seconds);
# 4. runs `leak-report REC > /dev/null` (text output) once.
# Prints a markdown report (also saved as BENCH_WORK/report.md): medians, min/max, the ratios of
# medians leak-report/zstd (against both floors), leak-report's CPU time and peak RSS. Targets (issue 3): leak-report <= 2x
# `zstd -dc` wall time, peak RSS <= 1 GB.
set -euo pipefail
shopt -s inherit_errexit

STACKS=${STACKS:-10000}
SNAPSHOTS=${SNAPSHOTS:-17280}
CHANGED=${CHANGED:-0.1}
SEED=${SEED:-1}
RUNS=${RUNS:-3}
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TARGET=${BENCH_TARGET_DIR:-/tmp/anbench-target}
WORK=${BENCH_WORK:-/tmp/anbench}
REPORT_BIN="$TARGET/release/leak-report"
GEN_BIN="$TARGET/release/examples/gen_recording"
LOG="$WORK/bench.log"
REC="$WORK/rec-s${STACKS}-n${SNAPSHOTS}-c${CHANGED}-seed${SEED}.zst"

log() { echo "[analyzer] $*" >&2; }

install_missing() {
    local need=()
    command -v zstd >/dev/null || need+=(zstd)
    [[ -x /usr/bin/time ]] || need+=(time)
    ((${#need[@]} == 0)) && return
    log "installing ${need[*]}"
    apt-get install -y "${need[@]}" >>"$LOG" 2>&1 \
        || { apt-get update >>"$LOG" 2>&1 && apt-get install -y "${need[@]}" >>"$LOG" 2>&1; }
}

# Runs "$@" under GNU time; prints "wall_s peak_kib user_s sys_s". Stdout of the command goes to
# /dev/null.
measure() {
    local out="$WORK/time.out"
    /usr/bin/time -f '%e %M %U %S' -o "$out" "$@" >/dev/null 2>>"$LOG"
    tail -n 1 "$out"
}

# Reads numbers on stdin; prints "median min max".
stats() {
    sort -g | awk '{ v[NR] = $1 } END {
        m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
        printf "%.2f %.2f %.2f\n", m, v[1], v[NR] }'
}

mkdir -p "$WORK"
: >"$LOG"
install_missing
log "building leak-report and gen_recording into $TARGET"
(cd "$ROOT" && CARGO_TARGET_DIR="$TARGET" cargo build --release -p leak-report \
    --bin leak-report --example gen_recording >>"$LOG" 2>&1) \
    || { tail -n 30 "$LOG" >&2; exit 1; }

if [[ -s $REC && -s $REC.gen.txt ]]; then
    log "reusing $REC"
else
    log "generating $REC"
    rm -f "$REC" "$REC.gen.txt"
    "$GEN_BIN" --stacks "$STACKS" --snapshots "$SNAPSHOTS" --changed "$CHANGED" \
        --seed "$SEED" -o "$REC" >"$REC.gen.tmp"
    mv "$REC.gen.tmp" "$REC.gen.txt"
fi
cat "$REC.gen.txt" >&2
BYTES=$(stat -c %s "$REC")
ENTRIES=$(sed -n 's/.*(\([0-9]*\) stat entries).*/\1/p' "$REC.gen.txt")
RAW=$(zstd -dc "$REC" | wc -c) # also warms the page cache
LOAD_BEFORE=$(cut -d' ' -f1 /proc/loadavg)

: >"$WORK/zstd.txt"
: >"$WORK/zstd1.txt"
: >"$WORK/report.txt"
NOASYNC=0
zstd -H 2>&1 | grep -q -- 'asyncio' && NOASYNC=1
for ((r = 1; r <= RUNS; r++)); do
    z=$(measure zstd -dc "$REC")
    echo "$z" >>"$WORK/zstd.txt"
    z1="-"
    if ((NOASYNC)); then
        z1=$(measure zstd -dc --no-asyncio "$REC")
        echo "$z1" >>"$WORK/zstd1.txt"
    fi
    l=$(measure "$REPORT_BIN" "$REC" --json /dev/null)
    echo "$l" >>"$WORK/report.txt"
    log "round $r/$RUNS: zstd -dc ${z%% *} s; --no-asyncio ${z1%% *} s;" \
        "leak-report --json $(cut -d' ' -f1 <<<"$l") s, $(cut -d' ' -f2 <<<"$l") KiB"
done
text=$(measure "$REPORT_BIN" "$REC")
LOAD_AFTER=$(cut -d' ' -f1 /proc/loadavg)

read -r zmed zmin zmax < <(cut -d' ' -f1 "$WORK/zstd.txt" | stats)
read -r lmed lmin lmax < <(cut -d' ' -f1 "$WORK/report.txt" | stats)
read -r rmed rmin rmax < <(cut -d' ' -f2 "$WORK/report.txt" | awk '{ print $1 / 1024 }' | stats)
read -r cmed cmin cmax < <(awk '{ print $3 + $4 }' "$WORK/report.txt" | stats)
zrss=$(cut -d' ' -f2 "$WORK/zstd.txt" | sort -g | tail -n 1)
ratio=$(awk -v l="$lmed" -v z="$zmed" 'BEGIN { printf "%.1f", (z > 0) ? l / z : 0 }')
if ((NOASYNC)); then
    read -r z1med z1min z1max < <(cut -d' ' -f1 "$WORK/zstd1.txt" | stats)
    ratio1=$(awk -v l="$lmed" -v z="$z1med" 'BEGIN { printf "%.1f", (z > 0) ? l / z : 0 }')
fi
ttime=$(cut -d' ' -f1 <<<"$text")
trss=$(awk -v k="$(cut -d' ' -f2 <<<"$text")" 'BEGIN { printf "%.1f", k / 1024 }')

{
    echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'); kernel: $(uname -r);" \
        "CPU: $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1) ($(nproc) cores);" \
        "load average (1 min) before the runs: $LOAD_BEFORE, after: $LOAD_AFTER"
    echo "- command: \`STACKS=$STACKS SNAPSHOTS=$SNAPSHOTS CHANGED=$CHANGED SEED=$SEED RUNS=$RUNS bash benches/analyzer.sh\`"
    echo "- recording: $STACKS stacks x $SNAPSHOTS snapshots (5 s interval), changed share $CHANGED," \
        "seed $SEED: $ENTRIES stat entries, $BYTES bytes compressed, $RAW bytes decompressed"
    echo
    echo "| command | wall s median | min | max | peak RSS MiB |"
    echo "|---|---:|---:|---:|---:|"
    echo "| \`zstd -dc REC > /dev/null\` | $zmed | $zmin | $zmax | $(awk -v k="$zrss" 'BEGIN { printf "%.1f", k / 1024 }') |"
    if ((NOASYNC)); then
        echo "| \`zstd -dc --no-asyncio REC > /dev/null\` | $z1med | $z1min | $z1max | |"
    fi
    echo "| \`leak-report REC --json /dev/null\` | $lmed | $lmin | $lmax | $rmed (min $rmin, max $rmax) |"
    echo "| \`leak-report REC\` (text, once) | $ttime | | | $trss |"
    echo
    echo "leak-report / zstd -dc (medians): ${ratio}x (target <= 2x); leak-report peak RSS" \
        "$rmax MiB (target <= 1 GB); leak-report CPU time (user + system) $cmed s median" \
        "(min $cmin, max $cmax)"
    if ((NOASYNC)); then
        echo
        echo "leak-report / zstd -dc --no-asyncio (medians): ${ratio1}x"
    fi
} | tee "$WORK/report.md"
