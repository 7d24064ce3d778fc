#!/usr/bin/env bash
# Regenerates docs/report.png, the README's screenshot: the HTML report of the bundled demo
# recording, rendered by headless Chromium.
#
#   bash scripts/screenshot.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/deps.sh
deps_install chromium
cargo build --release --bin leak-report
out=$(mktemp -d)
target/release/leak-report fixtures/recordings/demo.zst -o "$out/report.html" >/dev/null
chromium --headless --no-sandbox --disable-gpu --no-first-run --disable-background-networking \
    --disable-component-update --disable-sync --user-data-dir="$out/profile" \
    --window-size=1280,1700 --screenshot=docs/report.png "file://$out/report.html" 2>/dev/null
echo "wrote docs/report.png"
