#!/usr/bin/env bash
# benches/sqlite.sh - a real program under leak-record: Debian's sqlite3 shell running a fixed
# SQL workload on an in-memory database, bare vs recorded (issue 8).
#
# usage (root, from anywhere):  bash benches/sqlite.sh
#   env: RUNS=5          rounds; each round runs bare, floor and recorded, order alternating
#        ROWS=200000     rows the workload inserts (the rest of it scales with them)
#        BEFORE=PATH     another leak-record build (e.g. of an older commit), run as a fourth
#                        variant ("before") in the same rounds
#        BEFORE_NAME=TEXT  what that build is, for the report (default: its path)
#        BENCH_TARGET_DIR=/tmp/bench-target   cargo target dir (not the repo's)
#        BENCH_WORK=/tmp/leak-sqlite          scratch dir
#
# Installs sqlite3 (and perf) if missing, builds leak-record, writes the workload (inserts,
# two indexes, an aggregate, an update that grows every third row, a self-join, a large
# group_concat, a delete of half the rows, VACUUM: every statement allocates), then per round
# times `sqlite3 :memory: ".read workload.sql"` bare, under count-only probes at exactly the
# places leak-record probes ("floor": tracefs uprobe events counted by perf stat, no BPF; the
# places are read from a recording's header) and under `leak-record -i 1s`. Every run must
# print the same query results as the bare one. Reports the median wall time (min-max), the
# ratios, the calls the probes counted, the BPF programs' run time per invocation (one more
# recorded run, kernel.bpf_stats) and the recording's loss counters, and writes the section into
# docs/performance.md.
set -euo pipefail
# shellcheck source=benches/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
shopt -s inherit_errexit

RUNS=${RUNS:-5}
ROWS=${ROWS:-200000}
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TARGET=${BENCH_TARGET_DIR:-/tmp/bench-target}
WORK=${BENCH_WORK:-/tmp/leak-sqlite}
LR="$TARGET/release/leak-record"
BEFORE=${BEFORE:-}
COSTS="$TARGET/release/examples/snapshot_costs"
# shellcheck disable=SC2034 # read by define_floor (lib.sh)
PROBES="$TARGET/release/examples/probes"
LOG="$WORK/bench.log"
DOC="$ROOT/docs/performance.md"
HEADING="## A real program: sqlite3 running a fixed SQL workload (issue 8)"

log() { echo "[sqlite] $*" >&2; }

setup() {
    [[ $EUID -eq 0 ]] || { echo "run as root (BPF uprobes)" >&2; exit 1; }
    rm -rf "$WORK" && mkdir -p "$WORK/t" && : >"$LOG"
    if ! command -v sqlite3 >/dev/null || ! command -v perf >/dev/null; then
        log "installing sqlite3 and perf"
        apt-get install -y sqlite3 linux-perf >>"$LOG" 2>&1 \
            || { apt-get update >>"$LOG" 2>&1 \
                && apt-get install -y sqlite3 linux-perf >>"$LOG" 2>&1; }
    fi
    log "building leak-record into $TARGET"
    (cd "$ROOT" && CARGO_TARGET_DIR="$TARGET" cargo build --release --bin leak-record \
        >>"$LOG" 2>&1 && CARGO_TARGET_DIR="$TARGET" cargo build --release -p leak-format \
        --example snapshot_costs --example probes >>"$LOG" 2>&1)
    cat >"$WORK/workload.sql" <<EOF
CREATE TABLE t(id INTEGER PRIMARY KEY, k TEXT, v BLOB, n INTEGER);
WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < $ROWS)
INSERT INTO t SELECT x, printf('key-%08d', (x * 7919) % $ROWS), zeroblob(16 + x % 200), x % 1000
FROM c;
CREATE INDEX t_k ON t(k);
CREATE INDEX t_n ON t(n, k);
SELECT n, count(*), sum(length(v)) FROM t GROUP BY n ORDER BY 3 DESC, 1 LIMIT 3;
UPDATE t SET v = zeroblob(length(v) + 24), k = k || '-u' WHERE n % 3 = 0;
SELECT count(*), sum(a.n + b.n) FROM t a JOIN t b ON a.k = b.k WHERE a.n < 300;
SELECT length(group_concat(k, ',')) FROM (SELECT k FROM t ORDER BY k DESC LIMIT $((ROWS / 4)));
DELETE FROM t WHERE n % 2 = 0;
VACUUM;
SELECT count(*), sum(length(v)), max(k) FROM t;
EOF
    SQL=(sqlite3 :memory: ".read $WORK/workload.sql")
}

# run VARIANT: runs the workload its way; appends its wall time (s) to $WORK/t/VARIANT and
# checks its output against the bare run's.
run() {
    local v=$1 s out="$WORK/out.$1"
    s=$EPOCHREALTIME
    case $v in
        bare) "${SQL[@]}" >"$out" 2>>"$LOG" ;;
        floor) perf stat -x, -o "$WORK/perf.out" -e 'leakbench:*' -- "${SQL[@]}" >"$out" 2>>"$LOG" ;;
        recorded) "$LR" -q -i 1s -o "$WORK/sqlite.zst" --force -- "${SQL[@]}" >"$out" \
            2>>"$WORK/record.stderr" ;;
        before) "$BEFORE" -q -i 1s -o "$WORK/before.zst" --force -- "${SQL[@]}" >"$out" \
            2>>"$WORK/record.stderr" ;;
    esac
    calc %.3f "$EPOCHREALTIME - $s" >>"$WORK/t/$v"
    [[ ! -s $WORK/expected ]] && [[ $v == bare ]] && cp "$out" "$WORK/expected"
    if [[ -s $WORK/expected ]] && ! cmp -s "$out" "$WORK/expected"; then
        log "the $v run printed other results than the bare one:"
        diff "$WORK/expected" "$out" >&2 || true
        exit 1
    fi
}

# bpf_stats: one more recorded run with kernel.bpf_stats_enabled on (restored afterwards); the
# programs' counters are read every 0.2 s while it runs (they go when leak-record exits; while
# it exits it holds fewer), and the last reading with every program is kept: sets BPF_TABLE.
# Every program that ran is counted but for the last 0.2 s of the run.
bpf_stats() {
    local rp ids="" now
    STATS_OLD=$(sysctl -n kernel.bpf_stats_enabled)
    sysctl -qw kernel.bpf_stats_enabled=1
    trap 'sysctl -qw kernel.bpf_stats_enabled="$STATS_OLD"' EXIT
    "$LR" -q -i 1s -o "$WORK/stats.zst" --force -- "${SQL[@]}" >/dev/null 2>>"$WORK/record.stderr" &
    rp=$!
    while kill -0 "$rp" 2>/dev/null; do
        # A reading counts when leak-record held as many programs before and after it as ever.
        now=$(bpf_prog_ids "$rp")
        if bpftool prog show -j >"$WORK/progs.now" 2>/dev/null \
            && [[ $(bpf_prog_ids "$rp") == "$now" ]] \
            && (($(jq length <<<"$now") >= $(jq length <<<"${ids:-[]}"))); then
            ids=$now
            mv "$WORK/progs.now" "$WORK/progs.json"
        fi
        sleep 0.2
    done
    wait "$rp"
    sysctl -qw kernel.bpf_stats_enabled="$STATS_OLD"
    trap - EXIT
    [[ -n $ids && $ids != "[]" ]] || { log "no BPF program counters read"; exit 1; }
    bpf_table "$ids" "$WORK/progs.json"
}

report() {
    local cpu b bmin bmax f fmin fmax r rmin rmax o omin omax calls
    cpu=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
    read -r b bmin bmax < <(stats "$WORK/t/bare")
    read -r f fmin fmax < <(stats "$WORK/t/floor")
    read -r r rmin rmax < <(stats "$WORK/t/recorded")
    calls=$(awk -F, '/leakbench:/ {s += $1} END {print s + 0}' "$WORK/perf.out")
    local before_row="" before_note=""
    if [[ -n $BEFORE ]]; then
        read -r o omin omax < <(stats "$WORK/t/before")
        before_row="| before | $o ($omin-$omax) | $(calc %.2f "$o / $b") | $(calc %.2f "$o / $f") |"
        before_note=$'\n'"\"before\" = ${BEFORE_NAME:-\`$BEFORE\`}, recorded the same way in the same rounds."$'\n'
    fi
    cat <<EOF
$HEADING

- date: $(date -u '+%Y-%m-%d %H:%M UTC'); kernel: $(uname -r); CPU: $cpu ($(nproc) cores);
  load average (1 min) before the run: $LOAD_BEFORE, after: $(cut -d' ' -f1 /proc/loadavg);
  sqlite3 $(sqlite3 --version | cut -d' ' -f1)
- reproduce (root): \`bash benches/sqlite.sh\` (RUNS=$RUNS ROWS=$ROWS)
- method: per round, \`sqlite3 :memory: ".read workload.sql"\` runs bare, under count-only
  probes ("floor") and under \`leak-record -i 1s\` (order reversed every other round); wall
  time, median (min-max) over $RUNS rounds. Every run printed the same query results. The
  workload ($ROWS rows): inserts, two indexes, an aggregate, an update that grows every third
  row, a self-join, a group_concat of $((ROWS / 4)) keys, a delete of half the rows, VACUUM.

"floor" = count-only probes at the $(wc -l <"$WORK/probes.list") places leak-record probes
(tracefs uprobe events from the recording's header, counted by \`perf stat\`, no BPF); they
counted $calls probe hits in the last floor run.

| | wall s | / bare | / floor |
|---|---:|---:|---:|
| bare | $b ($bmin-$bmax) | 1.00 | |
| floor | $f ($fmin-$fmax) | $(calc %.2f "$f / $b") | 1.00 |
| recorded | $r ($rmin-$rmax) | $(calc %.2f "$r / $b") | $(calc %.2f "$r / $f") |
$before_row
$before_note
Cost per probe hit: floor $(calc %.0f "($f - $b) * 1e9 / $calls") ns, recorded
$(calc %.0f "($r - $b) * 1e9 / $calls") ns (wall time over bare, divided by the hits).

BPF run time per invocation (kernel.bpf_stats, one more recorded run, counters read every 0.2 s
while it ran, the last reading):

$BPF_TABLE

EOF
    report_probes_and_losses "$WORK/sqlite.zst"
}

main() {
    LOAD_BEFORE=$(cut -d' ' -f1 /proc/loadavg)
    setup
    # What leak-record attaches in sqlite3, said once (verbose).
    "$LR" -o "$WORK/probes.zst" --force -- "${SQL[@]}" 2>&1 >/dev/null \
        | grep -E 'attached|entry probe' >"$WORK/probes.txt" || true
    define_floor "$WORK/probes.zst"
    local r v variants=(bare floor recorded)
    [[ -n $BEFORE ]] && variants+=(before)
    for ((r = 0; r < RUNS; r++)); do
        if ((r % 2)); then
            for ((v = ${#variants[@]} - 1; v >= 0; v--)); do run "${variants[v]}"; done
        else
            for v in "${variants[@]}"; do run "$v"; done
        fi
        log "round $((r + 1))/$RUNS:" "$(for v in "${variants[@]}"; do
            echo -n "$v $(tail -n1 "$WORK/t/$v") s; "; done)"
    done
    perf probe -q -d 'leakbench:*' >>"$LOG" 2>&1 || true
    bpf_stats
    report | tee "$WORK/report.md"
    write_doc
    log "written $DOC; logs in $WORK"
}

main "$@"
