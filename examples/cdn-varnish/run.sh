#!/usr/bin/env bash
# examples/cdn-varnish: Pocket :8081 -> varnish A :9111 / B :9112 -> origin :9101.
# One command: examples/cdn-varnish/run.sh   (Ctrl-C stops everything it started)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
pocket="$root/target/release/pocket"
run="${TMPDIR:-/tmp}/pocket-example-cdn-varnish"   # varnish work dirs and pid files

if ! command -v varnishd >/dev/null 2>&1 && [[ ! -x /usr/sbin/varnishd ]]; then
  echo "run.sh: varnishd is not installed. On Debian or Ubuntu: sudo apt-get install varnish" >&2
  exit 1
fi
varnishd="$(command -v varnishd || echo /usr/sbin/varnishd)"

if [[ ! -x "$pocket" ]]; then
  echo "run.sh: building pocket (cargo build --release)" >&2
  (cd "$root" && cargo build --release)
fi

for port in 8081 9101 9111 9112; do
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
wait_port() {
  for _ in $(seq 100); do
    if (: <"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "run.sh: nothing listens on port $1 after 10 s" >&2
  exit 1
}

start origin "$pocket" origin --name origin --port 9101
wait_port 9101
# -F: stay in the foreground (so stop can end it); -j none: no jail;
# -T none: no management port; -n: a private work dir.
for cache in a:9111 b:9112; do
  name=${cache%%:*} port=${cache##*:}
  start "varnish-$name" "$varnishd" -F -j none -T none -s malloc,32m \
    -a "127.0.0.1:$port" -b 127.0.0.1:9101 -n "$run/$name"
done
wait_port 9111
wait_port 9112

echo "run.sh: Pocket on http://127.0.0.1:8081/ (Ctrl-C to stop)" >&2
start pocket "$pocket" run "$here/policy.lua" --grace 2s
wait "${pids[-1]}"
