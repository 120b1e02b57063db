#!/usr/bin/env bash
# Regenerate the console screenshots in docs/console/ (shown in the README): runs the browser
# test, which seeds a gateway and the emulator and saves a PNG of each page as it checks it.
# Needs what the test needs: node/npm and Debian's chromium.
set -euo pipefail
cd "$(dirname "$0")/.."
out="$(pwd)/docs/console"
mkdir -p "$out"
SCREENSHOT_DIR="$out" cargo test -p freshgate --test it -- browser:: --exact browser::the_console_in_headless_chromium
ls -1 "$out"
