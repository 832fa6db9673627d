#!/usr/bin/env bash
# examples/content-switching: Pocket :8084 -> web :9401, static :9402, api :9403, admin :9404.
# One command: examples/content-switching/run.sh   (Ctrl-C stops everything it started)
set -euo pipefail

. "$(dirname "$0")/../common.sh"

prepare 8084 9401 9402 9403 9404
origin web 9401
origin static 9402
origin api 9403
origin admin 9404
serve 8084
