#!/usr/bin/env bash
# Copy the dashboard's third-party libraries from Debian's packages into DEST/vendor, once:
#   xterm.js 3.8 (node-xterm's CommonJS modules, bundled here into one browser script that
#   defines window.Terminal, because Debian's libjs-xterm ships only a stub), its fit addon
#   and stylesheet, Chart.js 3.9 (libjs-chart.js, a UMD build that defines window.Chart), and
#   noVNC 1.3's ES modules (novnc) for VM screens.
# No npm, no CDN, no build step at run time: the daemon serves DEST as static files.
#
#   scripts/webui-assets.sh DEST     (DEST is the web/ directory the daemon serves)
set -euo pipefail
DEST=${1:?usage: webui-assets.sh DEST}
pkgs=()
for p in node-xterm libjs-xterm libjs-chart.js; do dpkg -s "$p" >/dev/null 2>&1 || pkgs+=("$p"); done
if [ ${#pkgs[@]} -gt 0 ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
fi
mkdir -p "$DEST/vendor"
python3 - /usr/share/nodejs/xterm/lib "$DEST/vendor" <<'PY'
import json, os, re, sys
lib, out = sys.argv[1], sys.argv[2]
REQ = re.compile(r'require\("(\.{1,2}/[^"]+)"\)')

def bundle(entry, export):
    """A minimal CommonJS bundle: every module reachable by relative require() from entry."""
    modules, order, todo = {}, [], [os.path.normpath(entry)]
    while todo:
        path = todo.pop()
        if path in modules:
            continue
        src = open(path, encoding="utf-8").read()
        src = re.sub(r"^//# sourceMappingURL=.*$", "", src, flags=re.M)
        deps = {}
        for rel in REQ.findall(src):
            target = os.path.normpath(os.path.join(os.path.dirname(path), rel))
            if not target.endswith(".js"):
                target += ".js"
            deps[rel] = target
            todo.append(target)
        modules[path] = (src, deps)
        order.append(path)
    parts = ["(function () {\n'use strict';\nvar defs = {}, cache = {};\n",
             "function load(id) { if (cache[id]) return cache[id].exports; var m = cache[id] = { exports: {} };",
             " defs[id][0].call(m.exports, function (r) { return load(defs[id][1][r]); }, m, m.exports); return m.exports; }\n"]
    for path in order:
        src, deps = modules[path]
        key = os.path.relpath(path, lib)
        parts.append("defs[%s] = [function (require, module, exports) {\n%s\n}, %s];\n"
                     % (json.dumps(key), src, json.dumps({r: os.path.relpath(t, lib) for r, t in deps.items()})))
    parts.append("window.%s = load(%s);\n})();\n" % (export, json.dumps(os.path.relpath(os.path.normpath(entry), lib))))
    return "".join(parts), len(order)

js, n = bundle(os.path.join(lib, "public", "Terminal.js"), "XtermModule")
open(os.path.join(out, "xterm.js"), "w").write(js + "window.Terminal = window.XtermModule.Terminal;\n")
fit, _ = bundle(os.path.join(lib, "addons", "fit", "fit.js"), "XtermFit")
open(os.path.join(out, "xterm-fit.js"), "w").write(fit)
print(f"xterm.js: {n} modules bundled", file=sys.stderr)
PY
# noVNC 1.3 (Debian's novnc): its core ES modules and the pako inflater they import, as
# shipped. Only the files are taken (dpkg-deb -x): the package's websockify, Python and
# Node.js dependencies are for its own proxy, which the daemon replaces.
if [ ! -f /usr/share/novnc/core/rfb.js ]; then
  novnc=$(mktemp -d)
  (cd "$novnc" && apt-get download -qq -o APT::Sandbox::User=root novnc >/dev/null && dpkg-deb -x novnc_*.deb root)
  src="$novnc/root/usr/share"
else
  novnc=""
  src=/usr/share
fi
rm -rf "$DEST/vendor/novnc"
mkdir -p "$DEST/vendor/novnc/vendor"
cp -r "$src/novnc/core" "$DEST/vendor/novnc/core"
cp -r "$src/novnc/vendor/pako" "$DEST/vendor/novnc/vendor/pako"
cp "$src/doc/novnc/copyright" "$DEST/vendor/novnc.copyright"
[ -z "$novnc" ] || rm -rf "$novnc"
cp /usr/share/javascript/xterm/xterm.css "$DEST/vendor/xterm.css"
cp /usr/share/javascript/chart.js/chart.min.js "$DEST/vendor/chart.min.js"
cp /usr/share/doc/node-xterm/copyright "$DEST/vendor/xterm.copyright"
cp /usr/share/doc/libjs-chart.js/copyright "$DEST/vendor/chart.copyright"
echo "dashboard libraries in $DEST/vendor" >&2
