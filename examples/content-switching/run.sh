#!/usr/bin/env bash
# examples/content-switching: Pocket :8084 -> web :9401, static :9402, api :9403, admin :9404.
# One command: examples/content-switching/run.sh   (Ctrl-C stops everything it started)
set -euo pipefail

. "$(dirname "$0")/../common.sh"

prepare 8084 9401 9402 9403 9404
start web "$pocket" origin --name web --port 9401
start static "$pocket" origin --name static --port 9402
start api "$pocket" origin --name api --port 9403
start admin "$pocket" origin --name admin --port 9404
serve 8084
