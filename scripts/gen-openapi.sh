#!/usr/bin/env bash
# Write docs/openapi.json: the REST API's OpenAPI document, which the daemon makes from the
# contract in proto/ (messages, comments and google.api.http routes) and serves at
# /openapi.json. Run after changing proto/ (and scripts/gen-proto.sh), then commit.
# DaemonRESTTests fails when docs/openapi.json and the served document differ.
set -euo pipefail
cd "$(dirname "$0")/.."
SCRATCH="${SWIFT_BUILD_PATH:-.build}"
swift build --scratch-path "$SCRATCH" --product containarium >&2
"$SCRATCH/debug/containarium" openapi > docs/openapi.json
echo "wrote docs/openapi.json ($(wc -c < docs/openapi.json) bytes)" >&2
