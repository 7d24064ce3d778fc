#!/usr/bin/env bash
# The main job (README), recorded here: builds leak-record, records the fixture the bundled
# demo comes from for 30 s (a small service: `leak_per_request` leaks 512 B per request, a cache
# fills to 2 MiB and stops, `handle_request` churns), and summarizes the recording: one
# continuous leak, one bounded growth, one stable stack. 61 snapshots at -i 500ms: the detector
# needs at least 12, and 30 to call a leak without the strict p-value (docs/detection.md).
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
target/release/leak-record --force -i 500ms -o "$out" -- target/fixtures/leaky service 30
target/release/leak-report "$out"
echo "The recording is $out; its HTML report: target/release/leak-report $out -o report.html"
