#!/usr/bin/env bash
# examples/sticky-sessions: Pocket :8083 -> app-1 :9301, app-2 :9302, app-3 :9303, sticky by the sid cookie.
# One command: examples/sticky-sessions/run.sh   (Ctrl-C stops everything it started)
set -euo pipefail

. "$(dirname "$0")/../common.sh"

prepare 8083 9301 9302 9303
origin app-1 9301
origin app-2 9302
origin app-3 9303
serve 8083
