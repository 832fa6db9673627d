# examples/common.sh: what every examples/NAME/run.sh shares. Sourced, not run:
#   . "$(dirname "$0")/../common.sh"
# Sets here (the example's folder), root, pocket (the binary) and run
# (${TMPDIR:-/tmp}/pocket-example-NAME: pid files, for "what to try"), and defines:
#   prepare PORT...    build pocket if missing, refuse ports in use, clean up on exit
#   start NAME CMD...  run CMD in the background; its pid goes to $run/NAME.pid
#   wait_port PORT     wait (10 s at most) until something listens on PORT
#   serve PORT         run Pocket with the example's policy.lua until it stops

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
pocket="$root/target/release/pocket"
run="${TMPDIR:-/tmp}/pocket-example-$(basename "$here")"

listening() { (: <"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

prepare() {
  if [[ ! -x "$pocket" ]]; then
    echo "run.sh: building pocket (cargo build --release)" >&2
    (cd "$root" && cargo build --release)
  fi

  local port
  for port in "$@"; do
    if listening "$port"; then
      echo "run.sh: port $port is already in use; stop whatever holds it first" >&2
      exit 1
    fi
  done

  pids=()
  trap stop EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM

  rm -rf "$run"
  mkdir -p "$run"
}

stop() {
  trap - EXIT INT TERM
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$run"
}

start() {
  local name=$1
  shift
  "$@" &
  pids+=("$!")
  echo "$!" >"$run/$name.pid"
}

wait_port() {
  for _ in $(seq 100); do
    if listening "$1"; then return 0; fi
    sleep 0.1
  done
  echo "run.sh: nothing listens on port $1 after 10 s" >&2
  exit 1
}

serve() {
  echo "run.sh: Pocket on http://127.0.0.1:$1/ (Ctrl-C to stop)" >&2
  start pocket "$pocket" run "$here/policy.lua" --grace 2s
  wait "${pids[-1]}"
}
