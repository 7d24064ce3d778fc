#!/usr/bin/env bash
# benches/kernel-overhead.sh - overhead of `leak-record --kernel` (issue 5).
#
# usage (root, from anywhere):  bash benches/kernel-overhead.sh
#   env: RUNS=5        rounds; variants are interleaved in each round (order rotated)
#        N=100000      files created and removed per busy run (`fileleak loop N`)
#        SPIN=20000000 iterations of the idle system's CPU-bound job (an awk loop)
#        IDLE_S=10     seconds of the recorder's own CPU measurement on the idle system
#        SAMPLE=64K    --sample-bytes of the sampled variant
#        BENCH_TARGET_DIR=/tmp/bench-target   cargo target dir (not the repo's)
#        BENCH_WORK=/tmp/leak-kbench          scratch dir (fixtures, logs, recordings)
#
# Variants, each a leak-record --kernel running in the background (attached before the
# job starts, stopped after it):
#   bare      no recorder;
#   filtered  --pid of an idle `sleep`: every kmem event runs the programs, none is kept;
#   sampled   every task recorded, --sample-bytes SAMPLE (a sample of the allocations);
#   all       every task's allocations recorded (the job's included).
# Workloads: busy = `fileleak loop N` in /dev/shm (creat/close/unlink: struct file, dentry,
# inode and LSM allocations each round); idle = a CPU-bound awk loop on an otherwise quiet
# machine. Reported: median/min/max wall time over rounds and ratios of medians against
# bare; the recorder's own CPU use on the idle system; the BPF run time per invocation of
# each program (kernel.bpf_stats) during a busy run, recording every allocation and sampled.
# Prints a markdown report and writes it into docs/performance.md.
set -euo pipefail
# shellcheck source=benches/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
shopt -s inherit_errexit

RUNS=${RUNS:-5}
N=${N:-100000}
SPIN=${SPIN:-20000000}
IDLE_S=${IDLE_S:-10}
SAMPLE=${SAMPLE:-64K}
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TARGET=${BENCH_TARGET_DIR:-/tmp/bench-target}
WORK=${BENCH_WORK:-/tmp/leak-kbench}
FX="$WORK/fx"
LR="$TARGET/release/leak-record"
LOG="$WORK/bench.log"
DOC="$ROOT/docs/performance.md"
HEADING="## Kernel mode overhead (issue 5 benchmark)"
VARIANTS=(bare filtered sampled all)

log() { echo "[kernel-overhead] $*" >&2; }

setup() {
    [[ $EUID -eq 0 ]] || { echo "run as root (BPF tracepoints)" >&2; exit 1; }
    command -v jq >/dev/null || { echo "needs jq" >&2; exit 1; }
    rm -rf "$WORK/t" && mkdir -p "$WORK/t" && : >"$LOG"
    log "building fixtures and release binaries into $TARGET"
    bash "$ROOT/fixtures/build.sh" "$FX" >>"$LOG"
    (cd "$ROOT" && CARGO_TARGET_DIR="$TARGET" cargo build --release \
        --bin leak-record --bin leak-report >>"$LOG" 2>&1)
    SHM=$(mktemp -d /dev/shm/kbench.XXXXXX)
    sleep 1000000 & SLEEPER=$!
    trap 'kill "$SLEEPER" 2>/dev/null || true; rm -rf "$SHM"' EXIT
}

# start_recorder VARIANT: starts leak-record for the variant, returns once it is attached.
start_recorder() {
    REC=
    local args
    case $1 in
        bare) return ;;
        filtered) args=(--pid "$SLEEPER") ;;
        sampled) args=(--sample-bytes "$SAMPLE") ;;
        all) args=() ;;
    esac
    : >"$WORK/rec.err"
    "$LR" --kernel "${args[@]}" -i 1s -o "$WORK/$1.zst" --force 2>"$WORK/rec.err" & REC=$!
    until grep -q "recording kernel" "$WORK/rec.err"; do
        kill -0 "$REC" 2>/dev/null || { cat "$WORK/rec.err" >&2; exit 1; }
        sleep 0.05
    done
}
stop_recorder() {
    [[ -n $REC ]] || return 0
    kill -INT "$REC"; wait "$REC" || { cat "$WORK/rec.err" >&2; exit 1; }
    grep -h "drops" "$WORK/rec.err" | tail -n1 >>"$WORK/t/drops.$1" || true
}

wall_ns() { local s=$EPOCHREALTIME; "$@" >>"$LOG" 2>&1; calc %.0f "($EPOCHREALTIME - $s) * 1e9"; }
job_busy() { (cd "$SHM" && "$FX/fileleak" loop "$N"); }
job_idle() { awk -v n="$SPIN" 'BEGIN {for (i = 0; i < n; i++) s += i; print s}'; }


bench() {
    local r i v k=${#VARIANTS[@]} w
    for ((r = 0; r < RUNS; r++)); do
        for ((i = 0; i < k; i++)); do
            v=${VARIANTS[(i + r) % k]}
            start_recorder "$v"
            for w in busy idle; do
                wall_ns "job_$w" >>"$WORK/t/$v.$w"
            done
            stop_recorder "$v"
            log "round $((r + 1))/$RUNS $v: busy $(calc %.2f "$(tail -n1 "$WORK/t/$v.busy")/1e9") s," \
                "idle $(calc %.2f "$(tail -n1 "$WORK/t/$v.idle")/1e9") s"
        done
    done
    TABLE="| variant | busy median s | min | max | busy x bare | idle median s | min | max | idle x bare |
|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    local bb bi m lo hi m2 lo2 hi2
    bb=$(median "$WORK/t/bare.busy"); bi=$(median "$WORK/t/bare.idle")
    for v in "${VARIANTS[@]}"; do
        read -r m lo hi < <(stats "$WORK/t/$v.busy")
        read -r m2 lo2 hi2 < <(stats "$WORK/t/$v.idle")
        TABLE+="
| $v | $(calc %.3f "$m/1e9") | $(calc %.3f "$lo/1e9") | $(calc %.3f "$hi/1e9") | $(calc %.2f "$m/$bb") \
| $(calc %.3f "$m2/1e9") | $(calc %.3f "$lo2/1e9") | $(calc %.3f "$hi2/1e9") | $(calc %.2f "$m2/$bi") |"
    done
    BUSY_ALL=$(calc %.2f "$(median "$WORK/t/all.busy")/$bb")
    BUSY_FILTERED=$(calc %.2f "$(median "$WORK/t/filtered.busy")/$bb")
    BUSY_SAMPLED=$(calc %.2f "$(median "$WORK/t/sampled.busy")/$bb")
    IDLE_ALL=$(calc %.2f "$(median "$WORK/t/all.idle")/$bi")
    DROPS=$(tail -n1 "$WORK/t/drops.all" 2>/dev/null || echo "(none)")
}

# CPU seconds (user + system) a process has used, from /proc/PID/stat.
cpu_s() { awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15) / hz}' "/proc/$1/stat"; }

# The recorder's own CPU on the idle system (every task recorded, nothing else running).
idle_cpu() {
    start_recorder all
    sleep "$IDLE_S"
    IDLE_CPU=$(calc %.2f "$(cpu_s "$REC") / $IDLE_S * 100")
    stop_recorder idle
}

# bpf_stats VARIANT: per-invocation BPF run time during a busy run of VARIANT (kernel.bpf_stats;
# restored afterwards). Sets BPF_TABLE, ALLOC_NS and FREE_NS.
bpf_stats() {
    local old ids
    old=$(sysctl -n kernel.bpf_stats_enabled)
    sysctl -qw kernel.bpf_stats_enabled=1
    start_recorder "$1"
    job_busy >>"$LOG" 2>&1
    ids=$(bpf_prog_ids "$REC")
    bpftool prog show -j >"$WORK/progs.json"
    stop_recorder stats
    sysctl -qw kernel.bpf_stats_enabled="$old"
    bpf_table "$ids" "$WORK/progs.json"
    # Mean cost per allocation and per free event over the alloc-side / free-side programs
    # (a jq program: $i, $ids and $re are jq's variables).
    # shellcheck disable=SC2016
    local side='[.[] | select((.id as $i | $ids | index($i)) and (.run_cnt // 0) > 0)
        | select(.name | test($re))] | (map(.run_time_ns) | add) / (map(.run_cnt) | add) | floor'
    ALLOC_NS=$(jq --argjson ids "$ids" --arg re 'alloc' "$side" "$WORK/progs.json")
    FREE_NS=$(jq --argjson ids "$ids" --arg re 'free' "$side" "$WORK/progs.json")
}

report() {
    local cpu
    cpu=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
    cat >"$WORK/report.md" <<EOF
$HEADING

- date: $(date -u '+%Y-%m-%d %H:%M UTC'); kernel: $(uname -r); CPU: $cpu ($(nproc) cores);
  load average (1 min) before the run: $LOAD_BEFORE, after: $(cut -d' ' -f1 /proc/loadavg)
- reproduce (root): \`bash benches/kernel-overhead.sh\` (RUNS=$RUNS N=$N SPIN=$SPIN SAMPLE=$SAMPLE)
- method: a \`leak-record --kernel -i 1s\` runs in the background (attached before the job
  starts, stopped after it) in variant *filtered* (\`--pid\` of an idle process: every kmem
  event runs the programs, none is kept), *sampled* (every task, \`--sample-bytes $SAMPLE\`)
  and *all* (every task's allocations recorded), and none in *bare*. Jobs: *busy* = \`fileleak loop $N\` in /dev/shm (creat, close, unlink:
  struct file, dentry, inode and LSM blob allocations and frees each round); *idle* = an awk
  loop of $SPIN additions (CPU only, nothing allocated) on an otherwise quiet system.
  Variants are interleaved in each of the $RUNS rounds (order rotated); medians, min, max,
  and ratios of medians against bare.

| | |
|---|---|
| busy system, every task recorded (x bare) | $BUSY_ALL |
| busy system, all events filtered out (x bare) | $BUSY_FILTERED |
| busy system, every task recorded, \`--sample-bytes $SAMPLE\` (x bare) | $BUSY_SAMPLED |
| idle system, CPU-bound job, every task recorded (x bare) | $IDLE_ALL |
| recorder's own CPU on the idle system, every task recorded | $IDLE_CPU % of one core |

$TABLE

Last status line of the *all* recorder: \`$DROPS\`

### BPF run time per invocation (kernel.bpf_stats, every task recorded, one busy run)

$BPF_TABLE

### The same, sampled (\`--sample-bytes $SAMPLE\`, one busy run)

$BPF_TABLE_SAMPLED

### Interpretation

Kernel mode costs what it records. With every task recorded, each allocation event runs a
program that walks the kernel stack and updates the stack, counter and live-object tables
($ALLOC_NS ns per allocation, $FREE_NS ns per free, averaged over the programs above by the
kernel's accounting), so the allocation-heavy creat/close/unlink loop ran ${BUSY_ALL}x slower
than bare. With \`--pid\` of another process every event still runs the programs, which return
after comparing the task: ${BUSY_FILTERED}x. Sampled at one per $SAMPLE bytes, the allocations
that are not sampled skip the stack walk and the table insert ($ALLOC_NS_SAMPLED ns per
allocation and $FREE_NS_SAMPLED ns per free on average, sampled ones included): ${BUSY_SAMPLED}x.
Unlike user mode, no trap is involved here, and the kernel's stack unwinder is most of what a
recorded allocation costs, which is what sampling can save. A CPU-bound job that allocates nothing ran at
${IDLE_ALL}x, and the recorder process itself used $IDLE_CPU % of one core at one snapshot per
second. Drops in kernel mode are \`missed_free\` (objects freed by a path without a free
tracepoint, seen when their address is allocated again). The machine was shared (see the load
average), so single timings are noisy; the ratios come from runs interleaved in each round.
EOF
    cat "$WORK/report.md"
}

main() {
    LOAD_BEFORE=$(cut -d' ' -f1 /proc/loadavg)
    setup
    log "RUNS=$RUNS N=$N SPIN=$SPIN variants: ${VARIANTS[*]}"
    bench
    log "recorder CPU on the idle system (${IDLE_S}s), then BPF run time"
    idle_cpu
    bpf_stats sampled
    BPF_TABLE_SAMPLED=$BPF_TABLE ALLOC_NS_SAMPLED=$ALLOC_NS FREE_NS_SAMPLED=$FREE_NS
    bpf_stats all
    report
    write_doc
    log "written $DOC; logs in $WORK"
}

main "$@"
