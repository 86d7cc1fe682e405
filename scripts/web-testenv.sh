#!/usr/bin/env bash
# What the dashboard's browser tests need, installed once:
#   - Debian's Chromium (headless) and a font,
#   - Playwright from PyPI in a virtual environment (it drives /usr/bin/chromium; no browser download),
#   - the dashboard (web/) with its libraries from Debian's packages (scripts/webui-assets.sh).
# Prints two lines for scripts/test.sh to export: CONTAINARIUM_PLAYWRIGHT_PYTHON and CONTAINARIUM_WEBUI_DIR.
#
#   scripts/web-testenv.sh [CACHE_DIR]     (default /var/cache/containarium)
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE=${1:-/var/cache/containarium}
need=()
for p in chromium fonts-dejavu-core python3-venv; do dpkg -s "$p" >/dev/null 2>&1 || need+=("$p"); done
if [ ${#need[@]} -gt 0 ]; then
  echo "==> installing ${need[*]}" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
VENV="$CACHE/web-venv"
if ! "$VENV/bin/python" -c 'import playwright' 2>/dev/null; then
  echo "==> Playwright into $VENV" >&2
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet "playwright==1.*"
fi
WEBUI="$CACHE/webui"
rm -rf "$WEBUI.new"
mkdir -p "$WEBUI.new"
cp web/*.html web/*.js web/*.css "$WEBUI.new/"
bash scripts/webui-assets.sh "$WEBUI.new" >&2
rm -rf "$WEBUI"
mv "$WEBUI.new" "$WEBUI"
echo "CONTAINARIUM_PLAYWRIGHT_PYTHON=$VENV/bin/python"
echo "CONTAINARIUM_WEBUI_DIR=$WEBUI"
