#!/usr/bin/env bash
# examples/canary: Pocket :8082 -> stable v1-a :9201, v1-b :9202; canary v2 :9203.
# One command: examples/canary/run.sh   (Ctrl-C stops everything it started)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
pocket="$root/target/release/pocket"
run="${TMPDIR:-/tmp}/pocket-example-canary"   # pid files, for "what to try"

if [[ ! -x "$pocket" ]]; then
  echo "run.sh: building pocket (cargo build --release)" >&2
  (cd "$root" && cargo build --release)
fi

for port in 8082 9201 9202 9203; do
  if (: <"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "run.sh: port $port is already in use; stop whatever holds it first" >&2
    exit 1
  fi
done

pids=()
stop() {
  trap - EXIT INT TERM
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$run"
}
trap stop EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

rm -rf "$run"
mkdir -p "$run"
# start NAME COMMAND...: runs it in the background, remembered for stop.
start() {
  local name=$1
  shift
  "$@" &
  pids+=("$!")
  echo "$!" >"$run/$name.pid"
}

start v1-a "$pocket" origin --name v1-a --port 9201
start v1-b "$pocket" origin --name v1-b --port 9202
start v2 "$pocket" origin --name v2 --port 9203

echo "run.sh: Pocket on http://127.0.0.1:8082/ (Ctrl-C to stop)" >&2
start pocket "$pocket" run "$here/policy.lua" --grace 2s
wait "${pids[-1]}"
