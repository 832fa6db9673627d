#!/usr/bin/env bash
# examples/auth-request: Pocket :8087 -> app :9701, sub-requests to auth :9702.
# One command: examples/auth-request/run.sh   (Ctrl-C stops everything it started)
set -euo pipefail

. "$(dirname "$0")/../common.sh"

prepare 8087 9701 9702
origin app 9701
origin auth 9702
serve 8087
