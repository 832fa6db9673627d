#!/usr/bin/env bash
# examples/sticky-sessions: Pocket :8083 -> app-1 :9301, app-2 :9302, app-3 :9303, sticky by the sid cookie.
# One command: examples/sticky-sessions/run.sh   (Ctrl-C stops everything it started)
set -euo pipefail

. "$(dirname "$0")/../common.sh"

prepare 8083 9301 9302 9303
start app-1 "$pocket" origin --name app-1 --port 9301
start app-2 "$pocket" origin --name app-2 --port 9302
start app-3 "$pocket" origin --name app-3 --port 9303
serve 8083
