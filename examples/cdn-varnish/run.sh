#!/usr/bin/env bash
# examples/cdn-varnish: Pocket :8081 -> varnish A :9111 / B :9112 -> origin :9101.
# One command: examples/cdn-varnish/run.sh   (Ctrl-C stops everything it started)
set -euo pipefail

. "$(dirname "$0")/../common.sh"   # varnish work dirs go under $run too

if ! command -v varnishd >/dev/null 2>&1 && [[ ! -x /usr/sbin/varnishd ]]; then
  echo "run.sh: varnishd is not installed. On Debian or Ubuntu: sudo apt-get install varnish" >&2
  exit 1
fi
varnishd="$(command -v varnishd || echo /usr/sbin/varnishd)"

prepare 8081 9101 9111 9112
origin origin 9101
# -F: stay in the foreground (so stop can end it); -j none: no jail;
# -T none: no management port; -n: a private work dir.
for cache in a:9111 b:9112; do
  name=${cache%%:*} port=${cache##*:}
  start "varnish-$name" "$varnishd" -F -j none -T none -s malloc,32m \
    -a "127.0.0.1:$port" -b 127.0.0.1:9101 -n "$run/$name"
done
wait_port 9111 varnish-a
wait_port 9112 varnish-b
serve 8081
