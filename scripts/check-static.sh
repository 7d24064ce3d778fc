#!/usr/bin/env bash
# Builds leak-record with `--features static` and checks that it needs nothing beyond the C
# runtime (libc and libm, the dynamic linker, the vDSO and libgcc_s, Rust's unwinder; all
# present on every glibc system), then, as root, records a command with it. libm comes with
# --sample-bytes, whose tables are computed with exp and ln.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
target_dir="${STATIC_TARGET_DIR:-target/static}"
cargo build --release --features static --bin leak-record --target-dir "$target_dir"
bin="$target_dir/release/leak-record"
extra=$(ldd "$bin" | awk '{print $1}' | grep -vE '^(linux-vdso\.so\.1|libc\.so\.6|libm\.so\.6|libgcc_s\.so\.1|/lib64/ld-linux-x86-64\.so\.2|/lib/ld-linux-aarch64\.so\.1)$' || true)
if [[ -n "$extra" ]]; then
    echo "check-static: the static build still needs: $extra" >&2
    exit 1
fi
echo "check-static: $bin needs only: $(ldd "$bin" | awk '{print $1}' | tr '\n' ' ')"
if [[ $(id -u) -eq 0 ]]; then
    out=$(mktemp -d)/static.zst
    "$bin" -q -i 1s -o "$out" -- /bin/true
    echo "check-static: recorded /bin/true with the static binary ($(stat -c %s "$out") bytes)"
fi
