#!/usr/bin/env bash
# Checks the Terraform of deploy/gce, with the real tools where they exist:
#   - terraform on PATH: `terraform fmt -check -recursive deploy/gce`, then `terraform init
#     -backend=false` and `terraform validate` on a copy of the directory (the working tree gets
#     no .terraform/ or lock file). init needs the providers: without a network (and nothing
#     cached yet) init and validate are skipped, and the closing line says so. The providers and
#     the lock file are cached under $CACHE/terraform, so later runs need no network.
#   - always: python-hcl2 (from PyPI, into a venv at $CACHE/hcl-venv, made once and reused)
#     parses every .tf file, failing with the file and the parser's error; every var.X used in
#     the .tf files must be declared in variables.tf, and every variable declared there must have
#     a type and a description, and be used. Without terraform this is the whole check, and the
#     venv must be had; with terraform, a venv that cannot be made only skips these checks.
#
#   scripts/check-terraform.sh
#
# One `==>` line on success; idempotent.
# TERRAFORM: the terraform program (default: the one on PATH; set it empty to check without).
# CONTAINARIUM_CACHE: the cache directory (default /var/cache/containarium).
set -euo pipefail
cd "$(dirname "$0")/.."

DIR=deploy/gce
CACHE="${CONTAINARIUM_CACHE:-/var/cache/containarium}"
VENV="$CACHE/hcl-venv"
HCL2_VERSION=8.1.4
TF="${TERRAFORM-$(command -v terraform || true)}"
fail() { printf 'check-terraform: %s\n' "$*" >&2; exit 1; }
[ -f "$DIR/variables.tf" ] || fail "$DIR/variables.tf is missing"

done_parts=()

# --- terraform fmt, init, validate ------------------------------------------------------------
if [ -n "$TF" ]; then
  export TF_IN_AUTOMATION=1
  if ! out=$("$TF" fmt -check -recursive -diff -no-color "$DIR" 2>&1); then
    printf '%s\n' "$out" >&2
    fail "terraform fmt -check -recursive $DIR failed (above): a syntax error, or files that need \`terraform fmt -recursive $DIR\`"
  fi
  done_parts+=("terraform fmt ok")

  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  mkdir -p "$CACHE/terraform/plugins"
  # The configuration alone: not a .terraform/, lock file or state someone left in $DIR.
  mkdir -p "$tmp/gce"
  tar -C "$DIR" --exclude=./.terraform --exclude=./.terraform.lock.hcl --exclude='*.tfstate*' -cf - . | tar -C "$tmp/gce" -xf -
  lock="$CACHE/terraform/gce.terraform.lock.hcl"
  export TF_PLUGIN_CACHE_DIR="$CACHE/terraform/plugins"
  tf_init() { timeout 600 "$TF" -chdir="$tmp/gce" init -backend=false -input=false -no-color 2>&1; }
  [ -f "$lock" ] && cp "$lock" "$tmp/gce/.terraform.lock.hcl"
  if ! out=$(tf_init) && [ -f "$lock" ]; then
    # The cached lock file may no longer fit versions.tf: once more without it.
    rm -f "$tmp/gce/.terraform.lock.hcl"
    out=$(tf_init) || true
  fi
  if [ -d "$tmp/gce/.terraform/providers" ] && grep -q 'Terraform has been successfully initialized' <<<"$out"; then
    cp "$tmp/gce/.terraform.lock.hcl" "$lock"
    if ! out=$("$TF" -chdir="$tmp/gce" validate -no-color 2>&1); then
      printf '%s\n' "$out" >&2
      fail "terraform validate failed in $DIR"
    fi
    done_parts+=("validate ok")
  elif grep -qiE 'could not connect|no such host|dial tcp|i/o timeout|network is unreachable|connection refused|TLS handshake timeout|failed to request discovery document|could not retrieve the list of available versions|failed to query available provider packages' <<<"$out"; then
    done_parts+=("init and validate skipped (no network to fetch the providers)")
  else
    printf '%s\n' "$out" >&2
    fail "terraform init -backend=false failed in $DIR"
  fi
fi

# --- python-hcl2: parse, variables ------------------------------------------------------------
venv_ready() { [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c 'import hcl2' >/dev/null 2>&1; }
make_venv() {
  mkdir -p "$CACHE" || return 1
  if ! python3 -m venv "$VENV" >/dev/null 2>&1; then
    # Debian's python3 makes venvs only with python3-venv.
    rm -rf "$VENV"
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null 2>&1 \
        || { apt-get update -qq >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null 2>&1; } || return 1
      python3 -m venv "$VENV" >/dev/null 2>&1 || return 1
    else
      return 1
    fi
  fi
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "python-hcl2==$HCL2_VERSION" >/dev/null 2>&1
}
if ! venv_ready; then
  if ! make_venv || ! venv_ready; then
    rm -rf "$VENV"
    [ -n "$TF" ] || fail "no terraform, and python-hcl2 could not be installed into $VENV (python3 -m venv, pip install python-hcl2==$HCL2_VERSION)"
    done_parts+=("HCL parser checks skipped (python-hcl2 could not be installed)")
  fi
fi
if venv_ready; then
  summary=$("$VENV/bin/python" - "$DIR" <<'PY'
import glob
import os
import re
import sys

import hcl2

root = sys.argv[1]
files = sorted(f for f in glob.glob(os.path.join(root, "**", "*.tf"), recursive=True) if "/.terraform/" not in f)
errors = []
parsed = {}
for f in files:
    try:
        with open(f, encoding="utf-8") as fh:
            parsed[f] = hcl2.load(fh)
    except Exception as e:  # the parser's own error, whatever its type
        errors.append(f"{f}: does not parse: {type(e).__name__}: {e}")


def unquote(s):
    # python-hcl2 8 keeps the quotes of labels and string literals.
    return s[1:-1] if isinstance(s, str) and len(s) >= 2 and s[0] == s[-1] == '"' else s


variables_tf = os.path.join(root, "variables.tf")
declared = {}
for f, tree in parsed.items():
    for block in tree.get("variable", []):
        for label, body in block.items():
            name = unquote(label)
            if f != variables_tf:
                errors.append(f"{f}: variable {name} is declared outside variables.tf")
            if name in declared:
                errors.append(f"{f}: variable {name} is declared twice")
            declared[name] = body if isinstance(body, dict) else {}
for name, body in sorted(declared.items()):
    if not str(unquote(body.get("description", ""))).strip():
        errors.append(f"{variables_tf}: variable {name} has no description")
    if "type" not in body:
        errors.append(f"{variables_tf}: variable {name} has no type")

reference = re.compile(r"\bvar\.([A-Za-z_][A-Za-z0-9_-]*)")
used = {}


def walk(node, f):
    if isinstance(node, dict):
        for k, v in node.items():
            walk(k, f)
            walk(v, f)
    elif isinstance(node, list):
        for v in node:
            walk(v, f)
    elif isinstance(node, str):
        for m in reference.finditer(node):
            used.setdefault(m.group(1), f)


for f, tree in parsed.items():
    walk(tree, f)
for name, f in sorted(used.items()):
    if name not in declared:
        errors.append(f"{f}: var.{name} is not declared in {variables_tf}")
for name in sorted(set(declared) - set(used)):
    errors.append(f"{variables_tf}: variable {name} is declared but never used")

if len(parsed) == 0 and not errors:
    errors.append(f"{root}: no .tf files")
if errors:
    print("\n".join(errors), file=sys.stderr)
    sys.exit(1)
print(f"{len(parsed)} .tf files parse, {len(declared)} variables declared, documented and used")
PY
  ) || fail "the HCL checks of $DIR failed (above)"
  done_parts+=("$summary")
fi

line=""
for part in "${done_parts[@]}"; do line="${line:+$line; }$part"; done
printf '==> %s: %s\n' "$DIR" "$line"
