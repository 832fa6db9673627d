#!/usr/bin/env bash
# examples/canary: Pocket :8082 -> stable v1-a :9201, v1-b :9202; canary v2 :9203.
# One command: examples/canary/run.sh   (Ctrl-C stops everything it started)
set -euo pipefail

. "$(dirname "$0")/../common.sh"

prepare 8082 9201 9202 9203
start v1-a "$pocket" origin --name v1-a --port 9201
start v1-b "$pocket" origin --name v1-b --port 9202
start v2 "$pocket" origin --name v2 --port 9203
serve 8082
