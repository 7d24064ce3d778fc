#!/usr/bin/env bash
# The main job (README): builds leak-record, records a bundled fixture that leaks 4 KiB every
# 200 ms from `leak_slowly` while churning elsewhere, and summarizes the recording.
#
#   sudo bash scripts/demo.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/deps.sh
# shellcheck disable=SC2119 # no extra packages: the demo needs only the default set
deps_install
cargo build --release --bin leak-record --bin leak-report
bash fixtures/build.sh target/fixtures >/dev/null
out=target/demo.zst
target/release/leak-record --force -i 1s -o "$out" -- target/fixtures/leaky slow 25 4096 200
target/release/leak-report "$out"
