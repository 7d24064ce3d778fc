#!/usr/bin/env bash
# benches/sampling.sh - what `leak-record --sample-bytes` saves, and what its estimates cost
# in accuracy (issue 8).
#
# usage (root, from anywhere):  bash benches/sampling.sh
#   env: RUNS=5            rounds of the churn benchmark
#        N=200000          small churn size; the large one is N2=5*N
#        RATES="4K 64K 512K"   sampling periods measured
#        CLASSIC_RATE=64K  the period also measured without session probes
#        ERR_RUNS=7        recordings per (period, leak) for the error
#        BENCH_TARGET_DIR=/tmp/bench-target   cargo target dir (not the repo's)
#        BENCH_WORK=/tmp/leak-sampling-bench  scratch dir (fixtures, logs, recordings)
#
# 1. builds the fixtures and release binaries; defines perf count-only uprobes where
#    leak-record puts its probes (malloc entry, malloc return, free+N);
# 2. churn: `leaky churn N` and `leaky churn N2` (malloc(64)/free pairs) under each variant,
#    interleaved in every round (order rotated): bare; traps = the perf count-only probes at
#    leak-record's places (the trap cost, no BPF); traps_no_return = the same without the
#    return probe (the traps of a call whose session probe skips its return); exact =
#    leak-record; sampled-R = leak-record --sample-bytes R for each R (with session probes on
#    malloc where the kernel has them, Linux >= 6.13); classic-R = the same at CLASSIC_RATE
#    with LEAK_RECORD_NO_SESSIONS=1 (an entry and a return probe on every malloc). ns/pair = (cpu(N2) - cpu(N)) / (N2 - N), where
#    cpu is the user + system time of the variant's whole process tree (the traps and the BPF
#    programs run in the traced process's system time): unlike wall time it does not count
#    waiting for a core on a shared machine. Median/min/max over rounds, ratios of medians;
#    the wall-time figure is reported beside it;
# 3. BPF run time per invocation (kernel.bpf_stats), exact and at each period;
# 4. error: `leaky basic K S` (K blocks of S bytes leaked from leak_here, amid 5000 balanced
#    churn pairs), recorded ERR_RUNS times at each period, for a small-block leak (100,000 x
#    64 B) and a large-block one (1,000 x 64 KiB); relative error of leak_here's estimated
#    outstanding bytes: median |error|, max |error|, and the standard deviation the estimator's
#    variance predicts, sqrt((1 - p) / (K p)) with p = 1 - exp(-S/R).
# Prints a markdown report and writes it into docs/performance.md.
set -euo pipefail
# shellcheck source=benches/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
shopt -s inherit_errexit

RUNS=${RUNS:-5}
N=${N:-200000}
N2=${N2:-$((5 * N))}
RATES=${RATES:-4K 64K 512K}
ERR_RUNS=${ERR_RUNS:-7}
CLASSIC_RATE=${CLASSIC_RATE:-64K}
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TARGET=${BENCH_TARGET_DIR:-/tmp/bench-target}
WORK=${BENCH_WORK:-/tmp/leak-sampling-bench}
LIBC=/lib/x86_64-linux-gnu/libc.so.6
FX="$WORK/fx"
LR="$TARGET/release/leak-record"
LREP="$TARGET/release/leak-report"
LOG="$WORK/bench.log"
DOC="$ROOT/docs/performance.md"
HEADING="## Sampling (issue 8 benchmark)"
T=1

log() { echo "[sampling] $*" >&2; }

setup() {
    [[ $EUID -eq 0 ]] || { echo "run as root (BPF uprobes)" >&2; exit 1; }
    for c in perf jq bpftool; do
        command -v "$c" >/dev/null || { echo "needs $c" >&2; exit 1; }
    done
    rm -rf "$WORK/t" && mkdir -p "$WORK/t" && : >"$LOG" && : >"$WORK/record.stderr"
    log "building fixtures and release binaries into $TARGET"
    bash "$ROOT/fixtures/build.sh" "$FX" >>"$LOG"
    (cd "$ROOT" && CARGO_TARGET_DIR="$TARGET" cargo build --release --bin leak-record \
        --bin leak-report >>"$LOG" 2>&1)
    define_placed_probes
    VARIANTS=(bare traps traps_no_return exact)
    local r
    for r in $RATES; do VARIANTS+=("sampled-$r"); done
    [[ " $RATES " == *" $CLASSIC_RATE "* ]] \
        || { echo "CLASSIC_RATE=$CLASSIC_RATE must be one of RATES ($RATES)" >&2; exit 2; }
    VARIANTS+=("classic-$CLASSIC_RATE")
}

v_bare() { "$FX/leaky" churn "$1" "$T"; }
v_traps() { v_perf "$1" malloc_entry malloc_return__return free_placed; }
v_traps_no_return() { v_perf "$1" malloc_entry free_placed; }
v_exact() { "$LR" -q -o "$WORK/churn.zst" --force -- "$FX/leaky" churn "$1" 2>>"$WORK/record.stderr"; }
v_sampled() { # R N
    "$LR" -q --sample-bytes "$1" -o "$WORK/churn-$1.zst" --force -- "$FX/leaky" churn "$2" \
        2>>"$WORK/record.stderr"
}
v_classic() { LEAK_RECORD_NO_SESSIONS=1 v_sampled "$@"; }

# children_cpu_ns VAR: sets VAR to the user + system time, in ns, of this shell's reaped
# children so far (bash `times`, run in this very shell: a subshell reports its own children).
children_cpu_ns() {
    times >"$WORK/times.out"
    printf -v "$1" %s "$(awk 'NR == 2 {t = 0; for (i = 1; i <= 2; i++) {split($i, a, /[ms]/)
        t += a[1] * 60 + a[2]}; printf "%.0f\n", t * 1e9}' "$WORK/times.out")"
}

# cpu_wall_ns CMD...: runs CMD; prints its CPU time (user + system of every process it
# started) and its wall time, in ns.
cpu_wall_ns() {
    local c0 c1 w
    children_cpu_ns c0
    w=$(wall_ns "$@")
    children_cpu_ns c1
    echo "$((c1 - c0)) $w"
}

churn_bench() {
    local r i v c1 w1 c2 w2 k=${#VARIANTS[@]} run
    for ((r = 0; r < RUNS; r++)); do
        for ((i = 0; i < k; i++)); do # rotate the order every round
            v=${VARIANTS[(i + r) % k]}
            run=("v_$v")
            [[ $v == sampled-* ]] && run=(v_sampled "${v#sampled-}")
            [[ $v == classic-* ]] && run=(v_classic "${v#classic-}")
            read -r c1 w1 < <(cpu_wall_ns "${run[@]}" "$N")
            read -r c2 w2 < <(cpu_wall_ns "${run[@]}" "$N2")
            calc %.2f "($c2 - $c1) / ($N2 - $N)" >>"$WORK/t/$v.pp"
            calc %.2f "($w2 - $w1) / ($N2 - $N)" >>"$WORK/t/$v.wall"
            log "round $((r + 1))/$RUNS $v: cpu $(calc %.2f "$c1/1e9") s, $(calc %.2f "$c2/1e9") s;" \
                "wall $(calc %.2f "$w1/1e9") s, $(calc %.2f "$w2/1e9") s"
        done
    done
    perf probe -q -d 'leakbench:*' >>"$LOG" 2>&1 || true
    local m lo hi bare traps exact
    bare=$(median "$WORK/t/bare.pp"); traps=$(median "$WORK/t/traps.pp")
    exact=$(median "$WORK/t/exact.pp")
    CHURN_TABLE="| variant | CPU ns/pair median | min | max | x bare | x traps | x exact | above traps (ns) | wall ns/pair median |
|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    for v in "${VARIANTS[@]}"; do
        read -r m lo hi < <(stats "$WORK/t/$v.pp")
        CHURN_TABLE+="
| $v | $(calc %.0f "$m") | $(calc %.0f "$lo") | $(calc %.0f "$hi") | $(calc %.1f "$m / $bare") \
| $(calc %.2f "$m / $traps") | $(calc %.2f "$m / $exact") | $(calc %.0f "$m - $traps") \
| $(calc %.0f "$(median "$WORK/t/$v.wall")") |"
    done
}

bpf_bench() {
    BPF_TABLES=""
    local r
    # shellcheck disable=SC2119 # no extra leak-record arguments
    bpf_run_times
    BPF_TABLES+="exact (${BPF_PAIR} ns per pair in malloc_enter + alloc_exit + free_enter):

$BPF_TABLE
"
    for r in $RATES; do
        bpf_run_times --sample-bytes "$r"
        BPF_TABLES+="
--sample-bytes $r (${BPF_PAIR} ns per pair):

$BPF_TABLE
"
    done
    LEAK_RECORD_NO_SESSIONS=1 bpf_run_times --sample-bytes "$CLASSIC_RATE"
    BPF_TABLES+="
--sample-bytes $CLASSIC_RATE without session probes (LEAK_RECORD_NO_SESSIONS=1; ${BPF_PAIR} ns per pair):

$BPF_TABLE
"
}

# estimate K S R: leak_here's estimated outstanding bytes in a recording of `leaky basic K S`
# sampled at one per R bytes.
estimate() {
    "$LR" -q -i 1s --sample-bytes "$3" -o "$WORK/err.zst" --force -- "$FX/leaky" basic "$1" "$2" \
        2>>"$WORK/record.stderr"
    "$LREP" "$WORK/err.zst" --json - 2>>"$LOG" | jq '[.stacks[] | select(.frames[0].function
        == "leak_here") | .outstanding_bytes] | add // 0'
}

bytes_of() { numfmt --from=iec "$1"; }

error_bench() {
    ERR_TABLE="| leak | period | p = 1 - exp(-S/R) | predicted sd | median abs error | max abs error | runs |
|---|---:|---:|---:|---:|---:|---:|"
    local leak k s r i est p m hi
    for leak in "100000 64" "1000 65536"; do
        read -r k s <<<"$leak"
        for r in $RATES; do
            : >"$WORK/t/err"
            for ((i = 0; i < ERR_RUNS; i++)); do
                est=$(estimate "$k" "$s" "$r")
                calc %.6f "($est - $k * $s) / ($k * $s)" >>"$WORK/t/err"
                log "error $k x $s B at $r: estimate $est B"
            done
            awk '{print ($1 < 0 ? -$1 : $1)}' "$WORK/t/err" >"$WORK/t/abserr"
            p=$(calc %.6f "1 - exp(-$s / $(bytes_of "$r"))")
            read -r m _ hi < <(stats "$WORK/t/abserr")
            ERR_TABLE+="
| $k x $s B | $r | $(calc %.4f "$p") | $(calc %.1f "100 * sqrt((1 - $p) / ($k * $p))")% \
| $(calc %.1f "100 * $m")% | $(calc %.1f "100 * $hi")% | $ERR_RUNS |"
        done
    done
}

interpretation() {
    local bare traps exact r v
    bare=$(median "$WORK/t/bare.pp"); traps=$(median "$WORK/t/traps.pp")
    exact=$(median "$WORK/t/exact.pp")
    echo "A bare pair costs $(calc %.0f "$bare") ns; the traps alone (count-only probes at" \
        "leak-record's three places) $(calc %.0f "$traps") ns; exact recording" \
        "$(calc %.0f "$exact") ns, i.e. $(calc %.0f "$exact - $traps") ns above" \
        "the traps (its BPF programs, and what running them costs the kernel)."
    for r in $RATES; do
        v=$(median "$WORK/t/sampled-$r.pp")
        echo "At --sample-bytes $r a pair costs $(calc %.0f "$v") ns:" \
            "$(calc %.2f "$v / $exact")x exact recording, $(calc %.0f "$v - $traps") ns from" \
            "the traps alone (exact: $(calc %.0f "$exact - $traps") ns)."
    done
    local entries classic
    entries=$(median "$WORK/t/traps_no_return.pp")
    classic=$(median "$WORK/t/classic-$CLASSIC_RATE.pp")
    echo "Without session probes (LEAK_RECORD_NO_SESSIONS=1) a pair sampled at $CLASSIC_RATE" \
        "costs $(calc %.0f "$classic") ns, $(calc %.0f "$classic - $traps") ns from the traps" \
        "alone: sampling then removes leak-record's own work on unsampled calls, not the traps."
    echo "With session probes an unsampled malloc skips its return trap: the traps left," \
        "malloc's entry and free's, cost $(calc %.0f "$entries") ns per pair" \
        "($(calc %.2f "$entries / $traps")x all three), and a pair sampled at $CLASSIC_RATE" \
        "costs $(calc %.0f "$(median "$WORK/t/sampled-$CLASSIC_RATE.pp")") ns" \
        "($(calc %.2f "$(median "$WORK/t/sampled-$CLASSIC_RATE.pp") / $classic")x the same" \
        "without sessions)."
}

report() {
    local cpu
    cpu=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
    cat <<EOF
$HEADING

- date: $(date -u '+%Y-%m-%d %H:%M UTC'); kernel: $(uname -r); CPU: $cpu ($(nproc) cores);
  load average (1 min) before the run: $LOAD_BEFORE, after: $(cut -d' ' -f1 /proc/loadavg)
- reproduce (root): \`bash benches/sampling.sh\` (RUNS=$RUNS N=$N N2=$N2 RATES="$RATES"
  ERR_RUNS=$ERR_RUNS)
- method: see the script's header. "traps" = \`perf stat\` count-only uprobes at the places
  leak-record probes (malloc entry, malloc return, free+$FREE_AT): the kernel's trap and
  return-address handling alone, no BPF program; "traps_no_return": the same without malloc's
  return. sampled-R use session probes on malloc (Linux >= 6.13); classic-$CLASSIC_RATE does
  not (LEAK_RECORD_NO_SESSIONS=1).

### Churn: cost per malloc(64)/free pair, exact and sampled

$CHURN_TABLE

leak-record stderr (with -q) over all runs:
$(if [[ -s $WORK/record.stderr ]]; then sed 's/^/    /' "$WORK/record.stderr"; else echo "empty"; fi)

### BPF run time per invocation (kernel.bpf_stats, \`leaky churn\`, malloc(64)/free pairs)

$BPF_TABLES

### Error of the estimate (leak_here's outstanding bytes against the truth)

$ERR_TABLE

### Interpretation

$(interpretation)
EOF
}

main() {
    LOAD_BEFORE=$(cut -d' ' -f1 /proc/loadavg)
    setup
    log "churn benchmark: RUNS=$RUNS N=$N N2=$N2 variants: ${VARIANTS[*]}"
    churn_bench
    log "BPF run time (bpf_stats)"
    bpf_bench
    log "error of the estimates"
    error_bench
    report | tee "$WORK/report.md"
    write_doc
    log "written $DOC; logs in $WORK"
}

main "$@"
