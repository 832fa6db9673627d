#!/usr/bin/env bash
# examples/maintenance-page: Pocket :8085 -> app-1 :9501, app-2 :9502, static :9503.
# One command: examples/maintenance-page/run.sh   (Ctrl-C stops everything it started)
set -euo pipefail

. "$(dirname "$0")/../common.sh"

prepare 8085 9501 9502 9503
origin app-1 9501
origin app-2 9502
origin static 9503
serve 8085
