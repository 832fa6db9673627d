#!/usr/bin/env bash
# examples/sticky-sessions: Pocket :8083 -> app-1 :9301, app-2 :9302, app-3 :9303, sticky by the sid cookie.
# One command: examples/sticky-sessions/run.sh   (Ctrl-C stops everything it started)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
pocket="$root/target/release/pocket"
run="${TMPDIR:-/tmp}/pocket-example-sticky-sessions"   # pid files, for "what to try"

if [[ ! -x "$pocket" ]]; then
  echo "run.sh: building pocket (cargo build --release)" >&2
  (cd "$root" && cargo build --release)
fi

for port in 8083 9301 9302 9303; do
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

start app-1 "$pocket" origin --name app-1 --port 9301
start app-2 "$pocket" origin --name app-2 --port 9302
start app-3 "$pocket" origin --name app-3 --port 9303

echo "run.sh: Pocket on http://127.0.0.1:8083/ (Ctrl-C to stop)" >&2
start pocket "$pocket" run "$here/policy.lua" --grace 2s
wait "${pids[-1]}"
