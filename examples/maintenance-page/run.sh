#!/usr/bin/env bash
# examples/maintenance-page: Pocket :8085 -> app-1 :9501, app-2 :9502, static :9503.
# One command: examples/maintenance-page/run.sh   (Ctrl-C stops everything it started)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
pocket="$root/target/release/pocket"
run="${TMPDIR:-/tmp}/pocket-example-maintenance-page"   # pid files, for "what to try"

if [[ ! -x "$pocket" ]]; then
  echo "run.sh: building pocket (cargo build --release)" >&2
  (cd "$root" && cargo build --release)
fi

for port in 8085 9501 9502 9503; do
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

start app-1 "$pocket" origin --name app-1 --port 9501
start app-2 "$pocket" origin --name app-2 --port 9502
start static "$pocket" origin --name static --port 9503

echo "run.sh: Pocket on http://127.0.0.1:8085/ (Ctrl-C to stop)" >&2
start pocket "$pocket" run "$here/policy.lua" --grace 2s
wait "${pids[-1]}"
