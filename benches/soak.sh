#!/usr/bin/env bash
# benches/soak.sh - does the recorder leak itself? (issue 7, documented run)
#
# usage (root, from anywhere):  bash benches/soak.sh
#   env: DURATION=600     seconds of recording
#        SAMPLE=5         seconds between RSS samples of the recorder
#        BENCH_TARGET_DIR=/tmp/bench-target   cargo target dir (release build)
#        BENCH_WORK=/tmp/leak-soak            scratch dir (fixtures, recordings, samples)
#
# 1. `leak-record -i 1s -d DURATION -- leaky churn <huge>`: the target mallocs and frees 64 bytes
#    in a tight loop for the whole run (the highest allocation rate one traced thread reaches);
# 2. a second leak-record attaches to the first one (-p) for the same time, so the recorder's
#    own heap is recorded and leak-report can say whether any of its stacks grows;
# 3. the first recorder's VmRSS is sampled every SAMPLE seconds.
# Prints a markdown report (RSS after warm-up, at the end, max, least-squares slope; the churn
# rate, timed before; leak-report's verdict on the recorder itself) and replaces the
# "Recorder soak" section of docs/performance.md with it.
set -euo pipefail
shopt -s inherit_errexit

DURATION=${DURATION:-600}
SAMPLE=${SAMPLE:-5}
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TARGET=${BENCH_TARGET_DIR:-/tmp/bench-target}
WORK=${BENCH_WORK:-/tmp/leak-soak}
LR="$TARGET/release/leak-record"
REPORT="$TARGET/release/leak-report"
DOC="$ROOT/docs/performance.md"
HEADING="## Recorder soak (issue 7)"

log() { echo "[soak] $*" >&2; }

[[ $EUID -eq 0 ]] || { echo "run as root (BPF uprobes)" >&2; exit 1; }
mkdir -p "$WORK"
rm -f "$WORK"/{soak.zst,self.zst,rss.tsv,*.log}
log "building fixtures and release binaries into $TARGET"
bash "$ROOT/fixtures/build.sh" "$WORK/fx" >/dev/null
(cd "$ROOT" && CARGO_TARGET_DIR="$TARGET" cargo build -q --release --bin leak-record --bin leak-report)

log "calibrating the traced allocation rate"
t0=$(date +%s.%N)
"$LR" -q -i 1s -o "$WORK/calib.zst" --force -- "$WORK/fx/leaky" churn 2000000 2>"$WORK/calib.log"
rate=$(echo "2000000 / ($(date +%s.%N) - $t0)" | bc -l | xargs printf '%.0f')

log "recording leaky churn for ${DURATION}s"
"$LR" -q -i 1s -d "${DURATION}s" -o "$WORK/soak.zst" -- "$WORK/fx/leaky" churn 18446744073709551615 \
    2>"$WORK/inner.log" &
inner=$!
sleep 2
kill -0 "$inner" || { cat "$WORK/inner.log"; exit 1; }
"$LR" -q -i 10s -d "$((DURATION + 30))s" -o "$WORK/self.zst" -p "$inner" 2>"$WORK/outer.log" &
outer=$!

start=$(date +%s)
printf 'seconds\tvmrss_kib\n' >"$WORK/rss.tsv"
while kill -0 "$inner" 2>/dev/null; do
    rss=$(awk '/^VmRSS:/ { print $2 }' "/proc/$inner/status" 2>/dev/null || true)
    [[ -n $rss ]] && printf '%s\t%s\n' "$(($(date +%s) - start))" "$rss" >>"$WORK/rss.tsv"
    sleep "$SAMPLE"
done
wait "$inner" || { log "leak-record failed:"; cat "$WORK/inner.log"; exit 1; }
wait "$outer" || { log "outer leak-record failed:"; cat "$WORK/outer.log"; exit 1; }

# RSS statistics: warm-up is the first 10% of the run.
stats=$(awk -v warm="$((DURATION / 10))" 'NR > 1 {
        n++; t[n] = $1; r[n] = $2; if ($2 > max) max = $2
        if (!w && $1 >= warm) w = $2
    } END {
        for (i = 1; i <= n; i++) if (t[i] >= warm) { m++; st += t[i]; sr += r[i] }
        mt = st / m; mr = sr / m
        for (i = 1; i <= n; i++) if (t[i] >= warm) {
            num += (t[i] - mt) * (r[i] - mr); den += (t[i] - mt) ^ 2
        }
        printf "%d %d %d %d %d %.3f", m, r[1], w, r[n], max, (den ? num / den * 60 : 0)
    }' "$WORK/rss.tsv")
read -r samples first warm last max slope <<<"$stats"
"$REPORT" "$WORK/soak.zst" --json "$WORK/soak.json" >"$WORK/soak.txt"
self_status=0
"$REPORT" "$WORK/self.zst" --fail-on-leak >"$WORK/self.txt" 2>&1 || self_status=$?

report=$(cat <<EOF
$HEADING

Measured $(date -u +%Y-%m-%d) by \`bash benches/soak.sh\` (DURATION=$DURATION, SAMPLE=$SAMPLE), kernel
$(uname -r), $(nproc) cores. Target: \`leaky churn\` (malloc(64) + free in a tight loop) under
\`leak-record -i 1s -d ${DURATION}s\`, while a second \`leak-record -i 10s -p <recorder>\` records the
first recorder's own heap.

| recorder VmRSS | KiB |
|---|---|
| first sample | $first |
| after warm-up ($((DURATION / 10)) s) | $warm |
| at the end | $last |
| maximum | $max |
| least-squares slope after warm-up ($samples samples) | $slope KiB/min |

Traced allocation rate: about $rate malloc/free pairs per second (\`leaky churn 2000000\` under
leak-record, timed before the soak, including start-up), i.e. roughly $((rate * DURATION / 1000000)) million pairs
over the soak; recording size $(du -k "$WORK/soak.zst" | cut -f1) KiB.
\`leak-report --fail-on-leak\` on the recording of the recorder itself: exit status $self_status
(0 = no continuous leak); its summary:

\`\`\`
$(head -n 4 "$WORK/self.txt")
\`\`\`

The release build of leak-record has no frame pointers, so its own stacks are shallow (the
warning above): the verdict covers every stack seen, but names them only roughly.
EOF
)
echo "$report"
python3 - "$DOC" "$HEADING" "$report" <<'PY'
import sys
doc, heading, report = sys.argv[1], sys.argv[2], sys.argv[3]
text = open(doc).read()
start = text.find(heading)
if start < 0:
    text = text.rstrip("\n") + "\n\n" + report + "\n"
else:
    end = text.find("\n## ", start + len(heading))
    text = text[:start] + report + "\n" + (text[end + 1:] if end >= 0 else "")
open(doc, "w").write(text)
PY
log "wrote $DOC"
