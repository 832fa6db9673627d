# examples/common.sh: what every examples/NAME/run.sh shares. Sourced, not run:
#   . "$(dirname "$0")/../common.sh"
# Sets here (the example's folder), root, pocket (the binary: cargo's release
# build, in $CARGO_TARGET_DIR when set, else target/) and run
# (${TMPDIR:-/tmp}/pocket-example-NAME: pid files, for "what to try"), and defines:
#   prepare PORT...    build pocket if missing, refuse ports in use, clean up on exit
#   start NAME CMD...  run CMD in the background; its pid goes to $run/NAME.pid
#   origin NAME PORT   start Pocket's built-in origin NAME on PORT, and wait for it
#   wait_port PORT [NAME]  wait (10 s at most) until something listens on PORT;
#                      with NAME (started with start), stop at once if it exited
#   serve PORT         run Pocket with the example's policy.lua; say where once it
#                      listens on PORT, then wait until it stops
# Anything that fails to start stops the script with the reason, and
# everything started so far is stopped.

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
# cargo puts its builds in $CARGO_TARGET_DIR when set (relative to the
# folder cargo runs in, here $root).
target="${CARGO_TARGET_DIR:-$root/target}"
[[ "$target" = /* ]] || target="$root/$target"
pocket="$target/release/pocket"
run="${TMPDIR:-/tmp}/pocket-example-$(basename "$here")"

listening() { (: <"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

prepare() {
  if [[ ! -x "$pocket" ]]; then
    echo "run.sh: building pocket (cargo build --release), for $pocket" >&2
    if ! (cd "$root" && cargo build --release); then
      echo "run.sh: cargo build --release failed (see above); nothing was started" >&2
      exit 1
    fi
    if [[ ! -x "$pocket" ]]; then
      echo "run.sh: cargo build --release did not make $pocket; nothing was started" >&2
      exit 1
    fi
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
  local port=$1 name=${2:-} pid="" status=0
  [[ -n "$name" ]] && pid="$(cat "$run/$name.pid")"
  for _ in $(seq 100); do
    if listening "$port"; then return 0; fi
    if [[ -n "$pid" ]] && ! kill -0 "$pid" 2>/dev/null; then
      wait "$pid" || status=$?
      echo "run.sh: $name exited (status $status) before listening on port $port; see its errors above" >&2
      exit 1
    fi
    sleep 0.1
  done
  echo "run.sh: nothing listens on port $port after 10 s${name:+ ($name did not start)}" >&2
  exit 1
}

origin() {
  start "$1" "$pocket" origin --name "$1" --port "$2"
  wait_port "$2" "$1"
}

serve() {
  start pocket "$pocket" run "$here/policy.lua" --grace 2s
  wait_port "$1" pocket
  echo "run.sh: Pocket on http://127.0.0.1:$1/ (Ctrl-C to stop)" >&2
  wait "${pids[-1]}"
}
