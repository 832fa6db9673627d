#!/usr/bin/env bash
# examples/canary: Pocket :8082 -> stable v1-a :9201, v1-b :9202; canary v2 :9203.
# One command: examples/canary/run.sh   (Ctrl-C stops everything it started)
set -euo pipefail

. "$(dirname "$0")/../common.sh"

prepare 8082 9201 9202 9203
origin v1-a 9201
origin v1-b 9202
origin v2 9203
serve 8082
