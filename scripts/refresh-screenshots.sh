#!/usr/bin/env bash
# Refresh the committed dashboard screenshots in docs/screenshots/, on purpose.
#
# The browser tests (WebDashboardTests, and the VM screen in VMTests.multiBackend) save their
# screenshots in a scratch directory that is removed after the run, so an ordinary test run never
# changes the committed files. This runs the same tests through scripts/test.sh (the same test
# bed, daemon, Chromium and Playwright; as root on Debian 12, like scripts/test.sh) with
# CONTAINARIUM_SCREENSHOT_DIR set to docs/screenshots, where they are then kept.
#
#   scripts/refresh-screenshots.sh          # the dashboard screens (01-10.png)
#   scripts/refresh-screenshots.sh --vm     # and the VM screen (11-vm-screen.png): boots a VM, slower
#
# Review the result with `git status docs/screenshots` / `git diff --stat` before committing it.
set -euo pipefail
cd "$(dirname "$0")/.."

filter='WebDashboardTests'
if [ "${1:-}" = "--vm" ]; then
  filter='WebDashboardTests|VMTests/multiBackend'
  shift
fi
if [ "${CONTAINARIUM_SKIP_BROWSER:-}" = "1" ]; then
  echo "CONTAINARIUM_SKIP_BROWSER=1 would skip the browser tests: unset it to refresh the screenshots" >&2
  exit 1
fi

export CONTAINARIUM_SCREENSHOT_DIR="$PWD/docs/screenshots"
mkdir -p "$CONTAINARIUM_SCREENSHOT_DIR"
bash scripts/test.sh --filter "$filter" "$@"
echo "screenshots written to $CONTAINARIUM_SCREENSHOT_DIR:"
git status --short -- docs/screenshots || true
