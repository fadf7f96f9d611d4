#!/usr/bin/env bash
# cargo-lambda (pinned, from PyPI, with zig bundled) and a `cargo lambda watch` server in the background.
#
#   bash infra/cargo-lambda.sh install                 # install once; prints the cargo-lambda binary's path
#   bash infra/cargo-lambda.sh env                     # export KAFKA_ESM_CARGO_LAMBDA=<that path>, for eval
#   bash infra/cargo-lambda.sh watch-start PORT [-- ARGS...]   # `cargo lambda watch` on 127.0.0.1:PORT
#   bash infra/cargo-lambda.sh watch-status PORT       # exit 0 when it runs and answers, 3 otherwise
#   bash infra/cargo-lambda.sh watch-stop PORT         # stop it and the function it runs
#
# The venv is ${KAFKA_ESM_CACHE:-$HOME/.cache/kafka-esm}/cargo-lambda-venv (~30 s to install, once; a second
# run only checks). Use the binary as `"$(bash infra/cargo-lambda.sh install)" lambda build ...`, or put its
# directory first on PATH and run `cargo lambda ...`.
#
# watch-start runs `cargo lambda watch -A 127.0.0.1 -P PORT --ignore-changes ARGS...` from the repository
# (no reload when files change: edits elsewhere do not restart the function mid-run) and returns once the
# port answers. The function is built on the first invoke of
# http://127.0.0.1:PORT/2015-03-31/functions/<bin>/invocations, with `cargo run --bin <bin>`: the dev
# profile (add ARGS --release for release), $CARGO_TARGET_DIR when set, else <repo>/target. The function
# inherits this environment (the caller's) plus any `--env-var KEY=VALUE` in ARGS (which splits values at
# commas: pass a broker list through the environment or --env-file instead). The pid file and the log
# (cargo's output and the function's) are cargo-lambda-watch-PORT.{pid,log} in the cache directory.
# Known: watch 1.9.2 sends the function `Lambda-Runtime-Deadline-Ms: 600000` (a duration, not an epoch time);
# the consumer reads a deadline that early as milliseconds from now (retry::Deadline::from_epoch_ms).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${KAFKA_ESM_CACHE:-$HOME/.cache/kafka-esm}"
# Pinned so a new release cannot change the build on its own; bump on purpose (build-lambdas.sh uses the same).
cargo_lambda_requirement='cargo-lambda==1.9.2'
cl_venv="$cache/cargo-lambda-venv"
cl_stamp="$cl_venv/.kafka-esm-requirements"
cl_bin="$cl_venv/bin/cargo-lambda"
start_timeout_s="${CARGO_LAMBDA_WATCH_START_TIMEOUT_S:-30}"

say() { echo "cargo-lambda: $*" >&2; }
die() { say "$*"; exit 1; }

# running_pid, wait_until_answers, stop_pid.
# shellcheck source=infra/process.sh
source "$repo/infra/process.sh"

install() {
  if [ -x "$cl_bin" ] && [ "$(cat "$cl_stamp" 2>/dev/null)" = "$cargo_lambda_requirement" ]; then
    return 0
  fi
  command -v python3 >/dev/null || die "python3 is missing: install Python 3 (with venv) first"
  say "installing $cargo_lambda_requirement (with zig) into $cl_venv"
  local began=$SECONDS
  rm -rf "$cl_venv"
  mkdir -p "$cache"
  python3 -m venv "$cl_venv" || die "python3 -m venv failed: install the python3-venv package"
  "$cl_venv/bin/pip" install --quiet --disable-pip-version-check "$cargo_lambda_requirement" \
    || { rm -rf "$cl_venv"; die "pip install $cargo_lambda_requirement failed (see above)"; }
  echo "$cargo_lambda_requirement" >"$cl_stamp"
  say "cargo-lambda installed in $((SECONDS - began)) s"
}

port_arg() {
  [[ "${1:-}" =~ ^[0-9]+$ ]] || { say "give the port: bash $0 ${2:-watch-start} PORT"; exit 2; }
  port="$1"
  pidfile="$cache/cargo-lambda-watch-$port.pid"
  logfile="$cache/cargo-lambda-watch-$port.log"
}

# True when something accepts connections on the port (used by wait_until_answers).
answers() {
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null
}

watch_start() {
  if pid=$(running_pid "$pidfile"); then
    answers && { say "watch already running (pid $pid) on 127.0.0.1:$port"; return 0; }
    die "pid $pid from $pidfile runs but does not answer on 127.0.0.1:$port: stop it first (bash $0 watch-stop $port)"
  fi
  rm -f "$pidfile"
  answers && die "something not started by this script already listens on 127.0.0.1:$port: choose another port"
  install
  command -v cargo >/dev/null || die "cargo is missing: install Rust first"
  mkdir -p "$cache"
  : >"$logfile"
  # setsid: its own process group (watch-stop ends the function with it), not killed with the caller's.
  (cd "$repo" && exec setsid "$cl_bin" lambda watch -A 127.0.0.1 -P "$port" --ignore-changes "$@" \
    >>"$logfile" 2>&1 </dev/null) &
  local pid=$!
  echo "$pid" >"$pidfile"
  wait_until_answers "$pid" "$pidfile" "$logfile" "cargo lambda watch" "$start_timeout_s"
  say "watch started (pid $pid) on http://127.0.0.1:$port; log: $logfile"
}

watch_stop() {
  local pid
  pid=$(running_pid "$pidfile") || pid=""
  stop_pid "$pidfile"
  # The function (and a cargo build in progress) run in watch's process group: end whatever is left.
  if [ -n "$pid" ]; then
    kill -KILL -- "-$pid" 2>/dev/null || true
  fi
}

case "${1:-}" in
  install)
    install
    echo "$cl_bin"
    ;;
  env)
    install
    echo "export KAFKA_ESM_CARGO_LAMBDA=$cl_bin"
    ;;
  watch-start)
    port_arg "${2:-}" watch-start
    shift 2
    [ "${1:-}" = "--" ] && shift
    watch_start "$@"
    ;;
  watch-status)
    port_arg "${2:-}" watch-status
    if pid=$(running_pid "$pidfile") && answers; then
      say "watch running (pid $pid) on http://127.0.0.1:$port"
    else
      say "watch not running on 127.0.0.1:$port"
      exit 3
    fi
    ;;
  watch-stop)
    port_arg "${2:-}" watch-stop
    watch_stop
    ;;
  *)
    echo "usage: bash $0 install | env | watch-start PORT [-- ARGS...] | watch-status PORT | watch-stop PORT" >&2
    exit 2
    ;;
esac
