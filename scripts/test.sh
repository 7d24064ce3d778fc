#!/usr/bin/env bash
# The test command (README): installs what the build and the tests need when it is missing,
# then runs formatting and lint checks and every test of the workspace.
#
#   bash scripts/test.sh
#
# BPF tests need root: run as root (CI does), or they skip with a reason. In CI (CI=true) a
# skipped BPF test is a failure.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

source scripts/deps.sh
deps_install chromium libcap2-bin
if ! cargo clippy --version >/dev/null 2>&1 || ! cargo fmt --version >/dev/null 2>&1; then
    rustup component add clippy rustfmt
fi

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
# The analyzer and the format must build without clang, libelf or BPF: build them alone.
cargo build -p leak-report -p leak-format
if [[ $(id -u) -ne 0 ]]; then
    echo "test.sh: not root: the BPF tests will skip (run with sudo to run them)" >&2
fi
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --workspace --all-targets --no-fail-fast 2>&1 | tee "$log"
bash scripts/check-static.sh
# One closing line with the totals of every test binary.
awk '/^test result:/ { p += $4; f += $6 } END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
