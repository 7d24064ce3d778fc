# shellcheck shell=bash
# Shared by the benchmark scripts (sourced, not run).

# Replaces the section of $DOC (docs/performance.md) headed by the line $HEADING with
# $WORK/report.md, in place, keeping every other section; appends it when $DOC has no such
# section yet, and creates $DOC when missing.
# shellcheck disable=SC2154 # DOC, HEADING and WORK are set by the script that sources this
write_doc() {
    mkdir -p "$(dirname "$DOC")"
    [[ -f $DOC ]] || printf '# Performance\n\n' >"$DOC"
    if grep -qxF "$HEADING" "$DOC"; then
        # In place: the old section, up to the next `## ` heading, becomes the report.
        awk -v h="$HEADING" -v r="$WORK/report.md" '
            $0 == h {skip = 1; while ((getline l < r) > 0) print l; next}
            skip && /^## / {skip = 0; print ""}
            !skip' "$DOC" >"$WORK/doc.md"
    else
        cp "$DOC" "$WORK/doc.md"
        # A blank line before the section's heading.
        [[ -z $(tail -n1 "$WORK/doc.md") ]] || echo >>"$WORK/doc.md"
        cat "$WORK/report.md" >>"$WORK/doc.md"
    fi
    cp "$WORK/doc.md" "$DOC"
}

# stats FILE: "median min max" of the numbers in FILE.
stats() {
    sort -g "$1" | awk '{a[NR] = $1}
        END {m = NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2
             print m, a[1], a[NR]}'
}
median() { stats "$1" | cut -d' ' -f1; }
# calc FORMAT EXPR: EXPR evaluated by awk, printed with FORMAT.
calc() { awk "BEGIN {printf \"$1\\n\", $2}"; }

# The functions below use, from the sourcing script: LR (leak-record), FX (fixtures), WORK,
# LOG, LIBC, T (threads of a churn run) and log.

# define_placed_probes: perf uprobe events leakbench:malloc_entry, malloc_return (perf calls
# its event malloc_return__return), free_entry and free_placed on libc, free_placed where
# leak-record puts free's entry probe (FREE_AT, which it says); deleted on exit.
define_placed_probes() {
    # perf probe defines uprobe events through tracefs.
    mountpoint -q /sys/kernel/tracing || mount -t tracefs nodev /sys/kernel/tracing
    # Where leak-record puts free's entry probe (its verbose output says when it moves it).
    FREE_AT=$("$LR" -o "$WORK/where.zst" --force -- "$FX/leaky" churn 10 2>&1 >/dev/null \
        | sed -n 's/.* free: entry probe at free+\(0x[0-9a-f]*\).*/\1/p')
    FREE_AT=${FREE_AT:-0}
    log "leak-record probes free at free+$FREE_AT"
    perf probe -q -d 'leakbench:*' >/dev/null 2>&1 || true
    trap 'perf probe -q -d "leakbench:*" >/dev/null 2>&1 || true' EXIT
    perf probe -q -x "$LIBC" -a leakbench:malloc_entry=malloc -a leakbench:malloc_return=malloc%return \
        -a leakbench:free_entry=free -a "leakbench:free_placed=free+$FREE_AT" >>"$LOG" 2>&1
}

# counts_ok N COUNT...: every probe saw the N pairs of each of the T threads (with threads,
# glibc's thread set-up and exit add a few calls of its own).
counts_ok() {
    local n=$1 c
    shift
    (($# > 0)) || return 1
    for c in "$@"; do
        if ((T > 1)); then ((c >= n * T)) || return 1; else ((c == n)) || return 1; fi
    done
}

# v_perf N EVENT...: perf stat counts the uprobe events (no BPF) on `leaky churn N $T`; every
# event must count the pairs.
v_perf() {
    local n=$1
    shift
    perf stat -x, -o "$WORK/perf.out" "${@/#/-eleakbench:}" -- "$FX/leaky" churn "$n" "$T"
    # shellcheck disable=SC2046 # one count per event
    if ! counts_ok "$n" $(awk -F, '/leakbench:/ {print $1}' "$WORK/perf.out") \
        || (($(grep -c leakbench: "$WORK/perf.out") != $#)); then
        cat "$WORK/perf.out"
        return 1
    fi
}

# wall_ns CMD...: runs CMD, prints its wall time in ns.
wall_ns() {
    local s=$EPOCHREALTIME
    "$@" >>"$LOG" 2>&1 || { log "FAILED: $* (see $LOG)"; return 1; }
    calc %.0f "($EPOCHREALTIME - $s) * 1e9"
}

# jq: the programs of `bpftool prog show -j` whose id is in $ids and that ran.
# shellcheck disable=SC2016 # jq's variables, not the shell's
BPF_MINE='.[] | select((.id as $i | $ids | index($i)) and (.run_cnt // 0) > 0)'

# bpf_prog_ids PID: the ids of the BPF programs process PID holds open (from its fdinfo), as a
# JSON array.
bpf_prog_ids() {
    { cat /proc/"$1"/fdinfo/* 2>/dev/null || true; } | awk '/^prog_id:/ {print $2}' | jq -sc .
}

# bpf_table IDS PROGS: sets BPF_TABLE, a markdown table of the run count, run time and time per
# invocation of the programs with ids IDS (a JSON array) that ran, from PROGS (the output of
# `bpftool prog show -j` with kernel.bpf_stats_enabled on).
bpf_table() {
    local row='"| \(.name) | \(.run_cnt) | \(.run_time_ns) | \(.run_time_ns / .run_cnt | floor) |"'
    BPF_TABLE="| program | run_cnt | run_time_ns | ns/invocation |
|---|---:|---:|---:|"
    BPF_TABLE+=$'\n'$(jq -r --argjson ids "$1" "$BPF_MINE | $row" "$2")
}

# bpf_run_times [ARG...]: per-invocation BPF run time of leak-record's programs (run with ARGs),
# from kernel.bpf_stats, while it traces `$BPF_FIXTURE $BPF_WORKLOAD` (default `leaky churn
# 2000000000`; the workload must outlast the recording): sets BPF_TABLE (markdown) and
# BPF_PAIR (ns of malloc_enter + alloc_exit + free_enter per pair, delete_enter counting as
# free_enter for C++ deletes that free by themselves; with session probes, malloc_session,
# which runs at the entry of every malloc and at the return of those it records, takes the
# place of the first two: the sum of their run times per free-side run, which is per pair on
# a workload of allocation/free pairs, as `leaky churn` is).
# shellcheck disable=SC2120 # ARGs are optional
bpf_run_times() {
    local old lp rp ids i
    local -a workload
    read -ra workload <<<"${BPF_WORKLOAD:-churn 2000000000}"
    old=$(sysctl -n kernel.bpf_stats_enabled)
    sysctl -qw kernel.bpf_stats_enabled=1
    "$FX/${BPF_FIXTURE:-leaky}" "${workload[@]}" & lp=$!
    trap 'sysctl -qw kernel.bpf_stats_enabled="$old"; kill "$lp" 2>/dev/null || true' EXIT
    # Attached before the dynamic loader mapped the C library, leak-record finds no allocator.
    for ((i = 0; i < 100; i++)); do
        grep -q 'libc\.so' "/proc/$lp/maps" 2>/dev/null && break
        sleep 0.05
    done
    "$LR" -q -p "$lp" "$@" -o "$WORK/stats.zst" --force -i 1s -d 6s 2>>"$WORK/record.stderr" & rp=$!
    sleep 5 # then read the programs leak-record holds open (ids from its fdinfo)
    ids=$(bpf_prog_ids "$rp")
    bpftool prog show -j >"$WORK/progs.json"
    wait "$rp"
    kill "$lp"; wait "$lp" 2>/dev/null || true
    sysctl -qw kernel.bpf_stats_enabled="$old"
    trap - EXIT
    bpf_table "$ids" "$WORK/progs.json"
    # shellcheck disable=SC2034 # read by the sourcing script
    BPF_PAIR=$(jq --argjson ids "$ids" "[$BPF_MINE"' | select(.name == "malloc_enter"
        or .name == "alloc_exit" or .name == "free_enter" or .name == "delete_enter"
        or .name == "malloc_session")]
        | (map(.run_time_ns) | add)
        / (map(select(.name == "free_enter" or .name == "delete_enter") | .run_cnt) | add)
        | floor' "$WORK/progs.json")
}

# define_floor RECORDING: one tracefs uprobe event (group leakbench) per probe leak-record
# attached in the recording RECORDING, at the same file offset (entry probes where leak-record
# placed them); their list is left in $WORK/probes.list. Uses PROBES (the leak-format
# `probes` example) and WORK from the sourcing script; the events are deleted on exit.
# shellcheck disable=SC2154 # PROBES and WORK are set by the script that sources this
define_floor() {
    local side module offset i=0 events=/sys/kernel/tracing/uprobe_events
    mountpoint -q /sys/kernel/tracing || mount -t tracefs nodev /sys/kernel/tracing
    "$PROBES" "$1" >"$WORK/probes.list"
    perf probe -q -d 'leakbench:*' >/dev/null 2>&1 || true
    trap 'perf probe -q -d "leakbench:*" >/dev/null 2>&1 || true' EXIT
    while read -r side module offset _; do
        [[ $side == entry ]] && echo "p:leakbench/p$i $module:$offset" >>"$events"
        [[ $side == return ]] && echo "r:leakbench/p$i $module:$offset" >>"$events"
        i=$((i + 1))
    done <"$WORK/probes.list"
}

# report_probes_and_losses RECORDING: the last lines of a service benchmark's report: the probes
# leak-record placed (its verbose lines, saved in $WORK/probes.txt), the snapshot costs and loss
# counters of RECORDING (COSTS: the leak-format `snapshot_costs` example) and what leak-record
# wrote to stderr ($WORK/record.stderr).
# shellcheck disable=SC2154 # COSTS and WORK are set by the script that sources this
report_probes_and_losses() {
    echo "Probes leak-record placed (from its verbose output):"
    echo
    sed 's/^/    /' "$WORK/probes.txt"
    echo
    echo "Recording of the last recorded round: \`$("$COSTS" "$1" | tr '\n' ' ')\`;" \
        "leak-record stderr (with -q):" \
        "$(if [[ -s $WORK/record.stderr ]]; then cat "$WORK/record.stderr"; else echo "empty"; fi)"
}
