#!/usr/bin/env bash
# benches/redis.sh - a real service under leak-record: redis-server (Debian's, linked with
# jemalloc) driven by redis-benchmark on loopback, bare vs recorded (issue 8).
#
# usage (root, from anywhere):  bash benches/redis.sh
#   env: RUNS=3          rounds; each round runs bare and recorded, order alternating
#        REQUESTS=200000 requests per redis-benchmark test
#        CLIENTS=50      parallel connections
#        TESTS=set,get,lpush,lpop   redis-benchmark -t
#        SAMPLE=64K      also record with --sample-bytes SAMPLE, with session probes on malloc
#                        (Linux >= 6.13) and without (LEAK_RECORD_NO_SESSIONS=1); empty: not
#        BENCH_TARGET_DIR=/tmp/bench-target   cargo target dir (not the repo's)
#        BENCH_WORK=/tmp/leak-redis           scratch dir
#
# Installs redis-server (and redis-tools, perf) if missing, builds leak-record, then per round
# starts redis-server bare, under count-only probes at exactly the places leak-record probes
# ("floor": tracefs uprobe events counted by perf stat, no BPF; the places are read from a
# recording's header), under `leak-record -i 5s`, and (SAMPLE) under `leak-record -i 5s
# --sample-bytes SAMPLE` with and without session probes, runs redis-benchmark against each and
# reads its requests per second. Reports the median per test and the ratios, with the
# recording's loss counters, and writes the section into docs/performance.md.
set -euo pipefail
# shellcheck source=benches/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
shopt -s inherit_errexit

RUNS=${RUNS:-3}
REQUESTS=${REQUESTS:-200000}
CLIENTS=${CLIENTS:-50}
TESTS=${TESTS:-set,get,lpush,lpop}
SAMPLE=${SAMPLE-64K}
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TARGET=${BENCH_TARGET_DIR:-/tmp/bench-target}
WORK=${BENCH_WORK:-/tmp/leak-redis}
LR="$TARGET/release/leak-record"
COSTS="$TARGET/release/examples/snapshot_costs"
# shellcheck disable=SC2034 # read by define_floor (lib.sh)
PROBES="$TARGET/release/examples/probes"
PORT=6399
LOG="$WORK/bench.log"
DOC="$ROOT/docs/performance.md"
HEADING="## A real service: redis-server under redis-benchmark (issue 8)"

log() { echo "[redis] $*" >&2; }

setup() {
    [[ $EUID -eq 0 ]] || { echo "run as root (BPF uprobes)" >&2; exit 1; }
    rm -rf "$WORK" && mkdir -p "$WORK/t" && : >"$LOG"
    if ! command -v redis-server >/dev/null || ! command -v redis-benchmark >/dev/null \
        || ! command -v perf >/dev/null; then
        log "installing redis-server and perf"
        apt-get install -y redis-server redis-tools linux-perf >>"$LOG" 2>&1 \
            || { apt-get update >>"$LOG" 2>&1 \
                && apt-get install -y redis-server redis-tools linux-perf >>"$LOG" 2>&1; }
    fi
    mountpoint -q /sys/kernel/tracing || mount -t tracefs nodev /sys/kernel/tracing
    # Debian starts a redis service on 6379; ours runs on its own port and config.
    log "building leak-record into $TARGET"
    (cd "$ROOT" && CARGO_TARGET_DIR="$TARGET" cargo build --release --bin leak-record \
        >>"$LOG" 2>&1 && CARGO_TARGET_DIR="$TARGET" cargo build --release -p leak-format \
        --example snapshot_costs --example probes >>"$LOG" 2>&1)
    SERVER=(redis-server --port "$PORT" --bind 127.0.0.1 --save "" --appendonly no
        --daemonize no --protected-mode yes --dir "$WORK")
}

wait_ready() {
    local i
    for ((i = 0; i < 200; i++)); do
        redis-cli -p "$PORT" ping 2>/dev/null | grep -q PONG && return 0
        sleep 0.05
    done
    log "redis-server did not answer on port $PORT (see $LOG)"
    return 1
}

# run VARIANT: starts the server its way, benchmarks it, stops it; appends "test rps" lines.
run() {
    local v=$1 pid
    if [[ $v == bare ]]; then
        "${SERVER[@]}" >>"$LOG" 2>&1 &
    elif [[ $v == floor ]]; then
        perf stat -x, -o "$WORK/perf.out" -e 'leakbench:*' -- "${SERVER[@]}" >>"$LOG" 2>&1 &
    else
        local out=redis.zst
        local -a sample=() env=()
        [[ $v == recorded ]] || { out=$v.zst; sample=(--sample-bytes "$SAMPLE"); }
        [[ $v == sampled_classic ]] && env=(LEAK_RECORD_NO_SESSIONS=1)
        # (the ${a[@]+...} form: an empty array under set -u on bash < 4.4)
        env ${env[@]+"${env[@]}"} "$LR" -q -i 5s ${sample[@]+"${sample[@]}"} -o "$WORK/$out" \
            --force -- "${SERVER[@]}" >>"$LOG" 2>>"$WORK/record.stderr" &
    fi
    pid=$!
    wait_ready
    redis-benchmark -p "$PORT" -q --csv -n "$REQUESTS" -c "$CLIENTS" -t "$TESTS" \
        >"$WORK/out.csv" 2>>"$LOG"
    # The recorder stops on SIGTERM with a final snapshot, then ends the server.
    kill -TERM "$pid"
    wait "$pid" || true
    redis-cli -p "$PORT" shutdown nosave >/dev/null 2>&1 || true
    # "test","rps",...: one line per test after the header; kept as "test<TAB>rps".
    awk -F'","' 'NR > 1 {gsub(/"/, "", $1); print $1 "\t" $2}' "$WORK/out.csv" >>"$WORK/t/$v"
}

median_of() { # TEST VARIANT
    awk -F'\t' -v t="$1" '$1 == t {print $2}' "$WORK/t/$2" | sort -g \
        | awk '{a[NR] = $1} END {print NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'
}
range_of() { # TEST VARIANT
    awk -F'\t' -v t="$1" '$1 == t {print $2}' "$WORK/t/$2" | sort -g \
        | awk 'NR == 1 {lo = $1} {hi = $1} END {print lo "-" hi}'
}

report() {
    local cpu t b r
    SAMPLED_NOTE=""
    [[ -n $SAMPLE ]] && SAMPLED_NOTE=$'\n  '"and at \`--sample-bytes $SAMPLE\` with and without session probes"
    cpu=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
    cat <<EOF
$HEADING

- date: $(date -u '+%Y-%m-%d %H:%M UTC'); kernel: $(uname -r); CPU: $cpu ($(nproc) cores);
  load average (1 min) before the run: $LOAD_BEFORE, after: $(cut -d' ' -f1 /proc/loadavg);
  $(redis-server --version | cut -d' ' -f1-3)
- reproduce (root): \`bash benches/redis.sh\` (RUNS=$RUNS REQUESTS=$REQUESTS CLIENTS=$CLIENTS SAMPLE=$SAMPLE
  TESTS=$TESTS)
- method: per round, redis-server (no persistence, loopback, port $PORT) is started bare,
  under count-only probes ("floor"), under \`leak-record -i 5s\`$SAMPLED_NOTE (order reversed
  every other round), and \`redis-benchmark -n $REQUESTS -c $CLIENTS -t $TESTS\` runs against it; requests
  per second, median (min-max) over $RUNS rounds.
  redis-benchmark runs on the same $(nproc) cores as the server.

"floor" = count-only probes at the $(wc -l <"$WORK/probes.list") places leak-record probes
(tracefs uprobe events from the recording's header, counted by \`perf stat\`, no BPF).

| test | bare rps | floor rps | recorded rps | recorded / bare | recorded / floor |
|---|---:|---:|---:|---:|---:|
EOF
    local f
    while IFS= read -r t; do
        b=$(median_of "$t" bare); f=$(median_of "$t" floor); r=$(median_of "$t" recorded)
        echo "| $t | $b ($(range_of "$t" bare)) | $f ($(range_of "$t" floor)) |" \
            "$r ($(range_of "$t" recorded)) | $(awk "BEGIN {printf \"%.2f\", $r / $b}") |" \
            "$(awk "BEGIN {printf \"%.2f\", $r / $f}") |"
    done < <(cut -f1 "$WORK/t/bare" | awk '!seen[$0]++')
    echo
    [[ -n $SAMPLE ]] && sampled_table
    report_probes_and_losses "$WORK/redis.zst"
}

ratio() { awk "BEGIN {printf \"%.2f\", $1 / $2}"; }

sampled_table() {
    cat <<EOF
Sampled at \`--sample-bytes $SAMPLE\`, with session probes on malloc (an unsampled call skips its
return trap) and without (\`LEAK_RECORD_NO_SESSIONS=1\`: an entry and a return probe on every
call), in the same rounds:

| test | sampled rps | sampled / bare | without sessions rps | without sessions / bare | with / without sessions |
|---|---:|---:|---:|---:|---:|
EOF
    local t b s c
    while IFS= read -r t; do
        b=$(median_of "$t" bare); s=$(median_of "$t" sampled); c=$(median_of "$t" sampled_classic)
        echo "| $t | $s ($(range_of "$t" sampled)) | $(ratio "$s" "$b") |" \
            "$c ($(range_of "$t" sampled_classic)) | $(ratio "$c" "$b") | $(ratio "$s" "$c") |"
    done < <(cut -f1 "$WORK/t/bare" | awk '!seen[$0]++')
    echo
}

main() {
    LOAD_BEFORE=$(cut -d' ' -f1 /proc/loadavg)
    setup
    # What leak-record attaches in redis-server, said once (verbose, a short run).
    "$LR" -d 2s -o "$WORK/probes.zst" --force -- "${SERVER[@]}" 2>&1 >/dev/null \
        | grep -E 'attached|entry probe' >"$WORK/probes.txt" || true
    redis-cli -p "$PORT" shutdown nosave >/dev/null 2>&1 || true
    define_floor "$WORK/probes.zst"
    local r v
    local -a variants=(bare floor recorded)
    [[ -n $SAMPLE ]] && variants+=(sampled sampled_classic)
    for ((r = 0; r < RUNS; r++)); do
        if ((r % 2)); then
            for ((v = ${#variants[@]} - 1; v >= 0; v--)); do run "${variants[v]}"; done
        else
            for v in "${variants[@]}"; do run "$v"; done
        fi
        log "round $((r + 1))/$RUNS done"
    done
    perf probe -q -d 'leakbench:*' >>"$LOG" 2>&1 || true
    report | tee "$WORK/report.md"
    write_doc
    log "written $DOC; logs in $WORK"
}

main "$@"
