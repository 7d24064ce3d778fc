# shellcheck shell=bash
# Shared by the benchmark scripts (sourced, not run).

# Replaces the section of $DOC (docs/performance.md) headed by the line $HEADING with
# $WORK/report.md, keeping every other section; creates $DOC when missing.
# shellcheck disable=SC2154 # DOC, HEADING and WORK are set by the script that sources this
write_doc() {
    mkdir -p "$(dirname "$DOC")"
    [[ -f $DOC ]] || printf '# Performance\n\n' >"$DOC"
    awk -v h="$HEADING" '$0 == h {skip = 1; next} skip && /^## / {skip = 0} !skip' \
        "$DOC" >"$WORK/doc.md"
    # A blank line before the section's heading.
    [[ -z $(tail -n1 "$WORK/doc.md") ]] || echo >>"$WORK/doc.md"
    cat "$WORK/report.md" >>"$WORK/doc.md"
    cp "$WORK/doc.md" "$DOC"
}
