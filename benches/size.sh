#!/usr/bin/env bash
# benches/size.sh - recording size per hour (issue 8 benchmark).
#
# usage (root, from anywhere):  bash benches/size.sh
#   env: DURATION=3600   seconds each recording lasts
#        INTERVAL=5s     leak-record's snapshot interval (its default)
#        STACKS=1000     live stacks of the fixture
#        TOGGLE="20 1000"  changing case: K stacks toggle a block every MS ms
#                        (20 per 1000 ms = 100 of the 1,000 stacks per 5 s interval)
#        MARKS="300 900 3600"  seconds at which the recording's size is reported
#        BENCH_TARGET_DIR=/tmp/bench-target   cargo target dir (not the repo's)
#        BENCH_WORK=/tmp/leak-size            scratch dir (fixtures, binaries, recordings)
#
# Records two cases side by side, for DURATION seconds each, with leak-record's defaults
# (-i 5s, no --bundle-symbols):
#   static:   `leaky --wait-end many_stacks STACKS`: STACKS live stacks, none changes;
#   changing: `leaky many_stacks STACKS K MS`: the same stacks, then every MS ms the next K
#             of them (round robin) each allocate or free one extra block.
# The size of each recording file is sampled every 10 s while it is written (every snapshot
# is flushed to disk as it is taken), so growth over time can be checked for linearity.
# Prints a markdown report and writes it into docs/performance.md.
set -euo pipefail
# shellcheck source=benches/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

DURATION=${DURATION:-3600}
INTERVAL=${INTERVAL:-5s}
STACKS=${STACKS:-1000}
TOGGLE=${TOGGLE:-20 1000}
MARKS=${MARKS:-300 900 3600}
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TARGET=${BENCH_TARGET_DIR:-/tmp/bench-target}
WORK=${BENCH_WORK:-/tmp/leak-size}
FX="$WORK/fx"
BIN="$WORK/bin" # copies: rebuilding the target dir during the run cannot touch them
LOG="$WORK/bench.log"
DOC="$ROOT/docs/performance.md"
HEADING="## Recording size per hour (issue 8 benchmark)"
CASES=(static changing)

log() { echo "[size] $*" >&2; }
calc() { awk "BEGIN {printf \"$1\\n\", $2}"; }

setup() {
    [[ $EUID -eq 0 ]] || { echo "run as root (BPF uprobes)" >&2; exit 1; }
    mkdir -p "$WORK" "$BIN" && : >"$LOG"
    log "building fixtures and release binaries into $TARGET"
    bash "$ROOT/fixtures/build.sh" "$FX" >>"$LOG"
    (cd "$ROOT" && CARGO_TARGET_DIR="$TARGET" cargo build --release --bin leak-record \
        >>"$LOG" 2>&1 && CARGO_TARGET_DIR="$TARGET" cargo build --release -p leak-format \
        --example snapshot_costs >>"$LOG" 2>&1)
    cp "$TARGET/release/leak-record" "$TARGET/release/examples/snapshot_costs" "$BIN/"
    COMMIT=$(git -C "$ROOT" rev-parse --short HEAD)
    git -C "$ROOT" diff --quiet HEAD -- recorder format bpf || COMMIT+=" + uncommitted changes"
}

# record CASE: one recording of DURATION seconds; stdin stays open (a pipe from sleep, not
# waited for) so that `--wait-end` holds the static fixture until leak-record ends it.
record() {
    local cmd
    read -r k ms <<<"$TOGGLE"
    case $1 in
        static) cmd=("$FX/leaky" --wait-end many_stacks "$STACKS") ;;
        changing) cmd=("$FX/leaky" many_stacks "$STACKS" "$k" "$ms") ;;
    esac
    "$BIN/leak-record" -q -i "$INTERVAL" -d "${DURATION}s" -o "$WORK/$1.zst" --force \
        -- "${cmd[@]}" >>"$LOG" 2>"$WORK/$1.stderr" < <(sleep $((DURATION + 60)))
}

# sample: the size of each recording every 10 s until every recorder has ended.
sample() {
    local t0=$EPOCHREALTIME c
    for c in "${CASES[@]}"; do echo "seconds bytes" >"$WORK/$c.sizes"; done
    while true; do
        sleep 10
        local t
        t=$(calc %.0f "$EPOCHREALTIME - $t0")
        for c in "${CASES[@]}"; do
            [[ -f $WORK/$c.zst ]] && echo "$t $(stat -c %s "$WORK/$c.zst")" >>"$WORK/$c.sizes"
        done
        local running=0 p
        for p in "${PIDS[@]}"; do kill -0 "$p" 2>/dev/null && running=1; done
        ((running)) || break
    done
}

# sample_at CASE SECONDS: "seconds bytes" of the last sample taken by SECONDS (+5 s).
sample_at() {
    awk -v s="$2" 'NR > 1 && $1 <= s + 5 {t = $1; b = $2} END {print t, b}' "$WORK/$1.sizes"
}
size_at() { sample_at "$@" | cut -d' ' -f2; }

report() {
    local c m table head="| case | snapshots |" sep="|---|---:|" row
    for m in $MARKS; do
        ((m <= DURATION)) || continue
        head+=" bytes at $((m / 60)) min |"; sep+="---:|"
    done
    head+=" final bytes | bytes per hour (whole file) | growth per hour (5 min to end) |"
    sep+="---:|---:|---:|"
    table="$head"$'\n'"$sep"
    for c in "${CASES[@]}"; do
        local final snaps t5 b5 t_end b_end
        final=$(stat -c %s "$WORK/$c.zst")
        "$BIN/snapshot_costs" "$WORK/$c.zst" >"$WORK/$c.costs"
        snaps=$(awk '/^snapshots:/ {print $2}' "$WORK/$c.costs")
        row="| $c | ${snaps:-?} |"
        for m in $MARKS; do
            ((m <= DURATION)) || continue
            row+=" $(size_at "$c" "$m") |"
        done
        read -r t5 b5 < <(sample_at "$c" 300)
        read -r t_end b_end < <(sample_at "$c" "$DURATION") # not the end record
        row+=" $final | $(calc %.0f "$final * 3600 / $DURATION") |"
        if [[ -n $b5 ]] && ((t_end > t5)); then
            row+=" $(calc %.0f "($b_end - $b5) * 3600 / ($t_end - $t5)") |"
        else
            row+=" (shorter than 5 min) |"
        fi
        table+=$'\n'"$row"
    done
    local cpu
    cpu=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
    read -r k ms <<<"$TOGGLE"
    cat <<EOF
$HEADING

- date: $(date -u '+%Y-%m-%d %H:%M UTC') (end); kernel: $(uname -r); CPU: $cpu ($(nproc) cores);
  load average (1 min) before: $LOAD_BEFORE, after: $(cut -d' ' -f1 /proc/loadavg);
  recorder: commit $COMMIT
- reproduce (root): \`bash benches/size.sh\` (DURATION=$DURATION INTERVAL=$INTERVAL
  STACKS=$STACKS TOGGLE="$TOGGLE")
- method: both cases are recorded at the same time by \`leak-record -q -i $INTERVAL -d ${DURATION}s\`
  (defaults otherwise: no \`--bundle-symbols\`). static: \`leaky --wait-end many_stacks $STACKS\`,
  $STACKS live stacks of one 16-byte block each, nothing changes after start-up. changing:
  \`leaky many_stacks $STACKS $k $ms\`, the same stacks, then every $ms ms the next $k stacks
  (round robin) each allocate or free one extra 16-byte block, i.e. $(calc %.0f "$k * 5000 / $ms")
  of the $STACKS stacks change per 5 s. The file's size is sampled every 10 s while it is written
  (each snapshot is flushed as it is taken); "growth per hour" is the slope from the 5-minute
  sample to the last one before the end, without the fixed start (header, probes, stacks,
  memory map) and the end record.

$table

Loss counters at the end (must be zero): static \`$(grep -m1 '^losses' "$WORK/static.costs" || true)\`;
changing \`$(grep -m1 '^losses' "$WORK/changing.costs" || true)\`.
Snapshot costs: static \`$(grep -m1 '^snapshot cost' "$WORK/static.costs" || true)\`;
changing \`$(grep -m1 '^snapshot cost' "$WORK/changing.costs" || true)\`.
EOF
}

main() {
    LOAD_BEFORE=$(cut -d' ' -f1 /proc/loadavg)
    setup
    log "recording ${CASES[*]} for $DURATION s each (started $(date -u +%H:%M:%S) UTC)"
    PIDS=()
    local c
    for c in "${CASES[@]}"; do
        record "$c" &
        PIDS+=($!)
    done
    sample
    for c in "${PIDS[@]}"; do wait "$c" || log "a recording failed (see $WORK/*.stderr)"; done
    report | tee "$WORK/report.md"
    write_doc
    log "written $DOC; recordings, sizes and logs in $WORK"
}

main "$@"
