#!/usr/bin/env bash
# Checks deploy/monitoring (the Prometheus configuration, rules and Grafana dashboards):
#   - promtool: when it is not on PATH, Debian's `prometheus` package is installed (root,
#     apt-get, --no-install-recommends) WITHOUT starting its service: a temporary
#     /usr/sbin/policy-rc.d that answers 101 ("action forbidden") is in place for the install only
#     when the machine has none of its own, and removed afterwards (as scripts/scanners.sh does);
#   - `promtool check config` on a copy of prometheus.yml in a temporary directory, with its rule
#     files next to it and every credentials_file, bearer_token_file, ca_file, cert_file and
#     key_file pointing at a dummy file (promtool refuses a configuration whose files are missing,
#     and /etc/prometheus/containarium.token exists only where Prometheus is installed);
#   - `promtool check rules` on rules/recording.yml and rules/alerts.yml, and `promtool test
#     rules` on rules/tests.yml;
#   - python3: each grafana/*.json parses, has unique panel ids, a `datasource` variable that
#     every panel and query uses, gridPos inside the 24 columns without overlaps, and defines
#     every $variable its queries use; every `containarium_...` name (less _bucket/_sum/_count)
#     and `process_...` name in a dashboard query or a rule file (comments aside) is in the
#     metrics list of deploy/monitoring/README.md, and every `containarium:...` name is a
#     recording rule of rules/recording.yml; and every dashboard query parses as PromQL (its
#     $variables filled in: `promtool check rules` on a rule file made of the queries).
#
#   scripts/check-monitoring.sh
#
# Prints `==>` lines, then `check-monitoring: ok`; idempotent.
# PROMTOOL: the promtool program (default: the one on PATH, else /usr/bin/promtool once installed).
set -euo pipefail
cd "$(dirname "$0")/.."

DIR=deploy/monitoring
RULES=("$DIR/rules/recording.yml" "$DIR/rules/alerts.yml")
fail() { printf 'check-monitoring: %s\n' "$*" >&2; exit 1; }
log() { printf '==> %s\n' "$*"; }
# Run a command quietly: its output is shown only when it fails.
quiet() {
  local out rc=0
  out=$(mktemp)
  "$@" >"$out" 2>&1 || rc=$?
  if [ "$rc" != 0 ]; then cat "$out" >&2; fi
  rm -f "$out"
  return "$rc"
}
for f in "$DIR/prometheus.yml" "${RULES[@]}" "$DIR/rules/tests.yml" "$DIR/README.md"; do
  [ -f "$f" ] || fail "$f is missing"
done

POLICY=/usr/sbin/policy-rc.d
made_policy=0
tmp=""
cleanup() {
  if [ "$made_policy" = 1 ]; then rm -f "$POLICY"; fi
  if [ -n "$tmp" ]; then rm -rf "$tmp"; fi
}
trap cleanup EXIT

# --- promtool (Debian's prometheus), no service started ---------------------------------------
PROMTOOL="${PROMTOOL:-$(command -v promtool || true)}"
if [ -z "$PROMTOOL" ]; then
  [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 \
    || fail "promtool is missing: install Debian's prometheus package (apt-get install --no-install-recommends prometheus), or run this as root to have it installed"
  if [ ! -e "$POLICY" ]; then
    printf '#!/bin/sh\n# Temporary (scripts/check-monitoring.sh): no service starts during this install.\nexit 101\n' > "$POLICY"
    chmod 0755 "$POLICY"
    made_policy=1
  fi
  export DEBIAN_FRONTEND=noninteractive
  log "installing prometheus for promtool (no service is started)"
  if ! quiet apt-get install -y -qq --no-install-recommends prometheus; then
    quiet apt-get update -qq || fail "apt-get update failed (above)"
    quiet apt-get install -y -qq --no-install-recommends prometheus || fail "apt-get install prometheus failed (above)"
  fi
  if [ "$made_policy" = 1 ]; then rm -f "$POLICY"; made_policy=0; fi
  PROMTOOL=/usr/bin/promtool
fi
[ -x "$PROMTOOL" ] || PROMTOOL=$(command -v "$PROMTOOL" || true)
[ -n "$PROMTOOL" ] && [ -x "$PROMTOOL" ] || fail "promtool not found (PROMTOOL=${PROMTOOL:-})"
version=$("$PROMTOOL" --version 2>&1 | head -n1 | awk '{print $3}')

# --- promtool check config, on a copy with dummy credential files -----------------------------
tmp=$(mktemp -d)
mkdir -p "$tmp/prometheus/rules" "$tmp/files"
cp "${RULES[@]}" "$tmp/prometheus/rules/"
printf 'dummy\n' > "$tmp/files/dummy"
sed -E "s#^([[:space:]]*(credentials_file|bearer_token_file|ca_file|cert_file|key_file):[[:space:]]*).*#\\1$tmp/files/dummy#" \
  "$DIR/prometheus.yml" > "$tmp/prometheus/prometheus.yml"
quiet "$PROMTOOL" check config "$tmp/prometheus/prometheus.yml" \
  || fail "promtool check config $DIR/prometheus.yml failed (above; run on a copy in $tmp/prometheus with dummy credential files)"
log "promtool $version check config $DIR/prometheus.yml: ok"

# --- promtool check rules, test rules ---------------------------------------------------------
quiet "$PROMTOOL" check rules "${RULES[@]}" || fail "promtool check rules failed (above)"
log "promtool check rules ${RULES[*]}: ok"
quiet "$PROMTOOL" test rules "$DIR/rules/tests.yml" || fail "promtool test rules $DIR/rules/tests.yml failed (above)"
log "promtool test rules $DIR/rules/tests.yml: ok"

# --- Grafana dashboards and metric names ------------------------------------------------------
summary=$(python3 - "$DIR" "$tmp/dashboard-queries.yml" <<'PY'
import glob
import json
import os
import re
import sys

root = sys.argv[1]
queries_out = sys.argv[2]
errors = []
queries = []

# The metrics list: the "## Metrics" section of the README.
readme = open(os.path.join(root, "README.md"), encoding="utf-8").read()
m = re.search(r"^## Metrics[ \t]*\n(.*?)(?=^## |\Z)", readme, re.S | re.M)
if not m:
    sys.exit(f"{root}/README.md: no '## Metrics' section")
known = set(re.findall(r"(?<![A-Za-z0-9_:])((?:containarium|process)_[a-z0-9_]+)", m.group(1)))
if not known:
    sys.exit(f"{root}/README.md: the '## Metrics' section names no metric")

name_re = re.compile(r"(?<![A-Za-z0-9_:])((?:containarium|process)_[a-z0-9_]+)")
recorded_re = re.compile(r"(?<![A-Za-z0-9_:])(containarium:[A-Za-z0-9_:]+)")


def uncomment(text):
    # YAML comments: whole lines, and ` # ...` after a value (PromQL has no '#').
    out = []
    for line in text.splitlines():
        if line.lstrip().startswith("#"):
            continue
        out.append(re.sub(r"\s+#.*$", "", line) if line.count('"') % 2 == 0 and line.count("'") % 2 == 0 else line)
    return "\n".join(out)


rule_files = [os.path.join(root, "rules", f) for f in ("recording.yml", "alerts.yml")]
rule_text = {f: uncomment(open(f, encoding="utf-8").read()) for f in rule_files}
recorded = set(re.findall(r"^\s*-?\s*record:\s*([^\s#]+)", rule_text[rule_files[0]], re.M))
if not recorded:
    errors.append(f"{rule_files[0]}: no recording rules")

checked = set()


def check_names(text, where):
    for name in name_re.findall(text):
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        checked.add(name)
        if name not in known and base not in known:
            errors.append(f"{where}: {name} is not in the metrics list of {root}/README.md")
    for name in recorded_re.findall(text):
        checked.add(name)
        if name not in recorded:
            errors.append(f"{where}: {name} is not a recording rule of {rule_files[0]}")


for f, text in rule_text.items():
    check_names(text, f)

dashboards = sorted(glob.glob(os.path.join(root, "grafana", "*.json")))
if not dashboards:
    errors.append(f"{root}/grafana: no dashboards")
panel_count = 0
for f in dashboards:
    try:
        with open(f, encoding="utf-8") as fh:
            d = json.load(fh)
    except Exception as e:
        errors.append(f"{f}: does not parse: {e}")
        continue
    if d.get("schemaVersion") != 39:
        errors.append(f"{f}: schemaVersion is {d.get('schemaVersion')!r}, not 39")
    if not d.get("uid"):
        errors.append(f"{f}: no uid")
    variables = {v.get("name"): v for v in d.get("templating", {}).get("list", [])}
    if variables.get("datasource", {}).get("type") != "datasource" or variables["datasource"].get("query") != "prometheus":
        errors.append(f"{f}: no `datasource` variable of type datasource (prometheus)")
    builtin = {"__interval", "__rate_interval", "__range", "__range_s", "__interval_ms", "__all", "__name", "__auto"}

    def check_query(expr, where, ds):
        if (ds or {}).get("uid") != "${datasource}":
            errors.append(f"{where}: its datasource is {ds!r}, not ${{datasource}}")
        check_names(expr, where)
        for var in re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)", expr):
            if var not in variables and var not in builtin:
                errors.append(f"{where}: ${var} is not a dashboard variable")

    for name, v in variables.items():
        if v.get("type") == "query":
            q = v.get("query")
            q = q.get("query", "") if isinstance(q, dict) else (q or "")
            check_query(q, f"{f}: variable {name}", v.get("datasource"))

    ids = {}
    boxes = []

    def walk(panels):
        global panel_count
        for p in panels:
            panel_count += 1
            pid = p.get("id")
            title = p.get("title", "")
            if not isinstance(pid, int):
                errors.append(f"{f}: panel {title!r} has no integer id")
            elif pid in ids:
                errors.append(f"{f}: panel id {pid} is used by {ids[pid]!r} and {title!r}")
            else:
                ids[pid] = title
            g = p.get("gridPos") or {}
            if not all(isinstance(g.get(k), int) for k in ("x", "y", "w", "h")) or g["x"] < 0 or g["w"] < 1 or g["x"] + g["w"] > 24:
                errors.append(f"{f}: panel {title!r} has a bad gridPos {g}")
            else:
                for other, og in boxes:
                    if g["x"] < og["x"] + og["w"] and og["x"] < g["x"] + g["w"] and g["y"] < og["y"] + og["h"] and og["y"] < g["y"] + g["h"]:
                        errors.append(f"{f}: panels {other!r} and {title!r} overlap")
                boxes.append((title, g))
            if p.get("type") != "row":
                if not p.get("targets"):
                    errors.append(f"{f}: panel {title!r} has no queries")
                for t in p.get("targets", []):
                    check_query(t.get("expr", ""), f"{f}: panel {title!r}", t.get("datasource", p.get("datasource")))
                    expr = re.sub(r"\$\{?__(rate_)?interval\}?", "5m", t.get("expr", ""))
                    queries.append(re.sub(r"\$\{?[A-Za-z_][A-Za-z0-9_]*\}?", "x", expr))
            walk(p.get("panels", []))

    walk(d.get("panels", []))

if errors:
    print("\n".join(errors), file=sys.stderr)
    sys.exit(1)
# JSON is YAML: a rule group of the dashboards' queries, for promtool to parse.
with open(queries_out, "w", encoding="utf-8") as fh:
    json.dump({"groups": [{"name": "dashboard-queries", "rules": [
        {"record": f"dashboard:query_{i}", "expr": q} for i, q in enumerate(queries)]}]}, fh, indent=1)
print(f"{len(dashboards)} dashboards, {panel_count} panels; {len(checked)} metric names used, all listed or recorded "
      f"({len(known)} listed, {len(recorded)} recording rules)")
PY
) || fail "the dashboard and metric-name checks failed (above)"
quiet "$PROMTOOL" check rules "$tmp/dashboard-queries.yml" \
  || fail "a dashboard query does not parse as PromQL (above; \$variables filled in with x)"
log "$summary; every query parses"
echo "check-monitoring: ok"
