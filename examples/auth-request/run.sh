#!/usr/bin/env bash
# examples/auth-request: Pocket :8086 -> app :9601, sub-requests to auth :9602.
# One command: examples/auth-request/run.sh   (Ctrl-C stops everything it started)
set -euo pipefail

. "$(dirname "$0")/../common.sh"

prepare 8086 9601 9602
origin app 9601
origin auth 9602
serve 8086
