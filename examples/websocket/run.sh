#!/usr/bin/env bash
# examples/websocket: Pocket :8086 -> chat :9601 (a WebSocket echo server), web :9602.
# One command: examples/websocket/run.sh   (Ctrl-C stops everything it started)
# The chat server is tests/clients/ws_server.py: it needs python3 with
# websockets (pip install websockets, or tests/run's venv on PATH).
set -euo pipefail

. "$(dirname "$0")/../common.sh"

if ! python3 -c 'import websockets' 2>/dev/null; then
  echo "run.sh: python3 cannot import websockets (pip install websockets)" >&2
  exit 1
fi
prepare 8086 9601 9602
start chat python3 "$root/tests/clients/ws_server.py" chat 9601
wait_port 9601 chat
origin web 9602
serve 8086
