#!/usr/bin/env bash
# Install Swagger UI's static assets (from PyPI's swagger-ui-bundle wheel, through the machine's
# own pip configuration) so the daemon serves /swagger-ui/ without any CDN.
#
#   scripts/swagger-ui.sh [DEST]     # default /usr/local/share/containarium/swagger-ui
set -euo pipefail
DEST=${1:-/usr/local/share/containarium/swagger-ui}
VERSION=1.1.0   # swagger-ui-bundle 1.1.0 vendors Swagger UI 4.15.5
if [ -s "$DEST/swagger-ui-bundle.js" ] && [ -s "$DEST/swagger-ui.css" ]; then exit 0; fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$tmp" "swagger-ui-bundle==$VERSION"
python3 - "$tmp" "$DEST" <<'PY'
import glob, os, sys, zipfile
tmp, dest = sys.argv[1], sys.argv[2]
wheel = glob.glob(os.path.join(tmp, "swagger_ui_bundle-*.whl"))[0]
os.makedirs(dest, exist_ok=True)
wanted = {"swagger-ui-bundle.js", "swagger-ui.css", "favicon-32x32.png", "LICENSE"}
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        base = os.path.basename(name)
        if "/vendor/swagger-ui-" in name and base in wanted:
            with z.open(name) as src, open(os.path.join(dest, base), "wb") as out:
                out.write(src.read())
missing = [f for f in ("swagger-ui-bundle.js", "swagger-ui.css") if not os.path.exists(os.path.join(dest, f))]
if missing:
    sys.exit(f"swagger-ui-bundle wheel lacks {missing}")
PY
echo "Swagger UI assets in $DEST" >&2
