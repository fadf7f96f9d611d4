#!/usr/bin/env bash
# Local AWS endpoints for the tests: moto's server (DynamoDB and SQS) on 127.0.0.1.
#
#   bash infra/local-stack.sh start    # install moto[server] if missing, start it, wait until it answers
#   eval "$(bash infra/local-stack.sh env)"   # KAFKA_ESM_MOTO_ENDPOINT and static test credentials
#   bash infra/local-stack.sh status   # exit 0 when it is running and answering, 3 otherwise
#   bash infra/local-stack.sh stop
#
# moto lives in a virtualenv outside the clone, ${KAFKA_ESM_CACHE:-$HOME/.cache/kafka-esm}/moto-venv,
# installed only when its moto_server is missing; the pid file and the log are in the same directory.
# The port is ${MOTO_PORT:-5001}. `start` when it already runs does nothing.
set -euo pipefail

cache="${KAFKA_ESM_CACHE:-$HOME/.cache/kafka-esm}"
venv="$cache/moto-venv"
port="${MOTO_PORT:-5001}"
pidfile="$cache/moto-$port.pid"
logfile="$cache/moto-$port.log"
endpoint="http://127.0.0.1:$port"
# moto 5 serves DynamoDB and SQS the way aws-sdk-rust calls them (JSON protocol for SQS).
moto_requirement='moto[server]>=5.1,<6'
start_timeout_s="${MOTO_START_TIMEOUT_S:-60}"

say() { echo "local-stack: $*" >&2; }
now_ms() { echo $(($(date +%s%N) / 1000000)); }

# running_pid, wait_until_answers, stop_pid.
# shellcheck source=infra/process.sh
source "$(dirname "${BASH_SOURCE[0]}")/process.sh"

# True when moto answers on the port (its own API path, so another server there does not count).
answers() {
  curl -fsS -o /dev/null --max-time 2 "$endpoint/moto-api/data.json" 2>/dev/null
}

install_moto() {
  if [ -x "$venv/bin/moto_server" ]; then
    return 0
  fi
  command -v python3 >/dev/null || { say "python3 is missing: install Python 3 (with venv) first"; exit 1; }
  mkdir -p "$cache"
  say "installing $moto_requirement into $venv"
  local began
  began=$(now_ms)
  rm -rf "$venv"
  python3 -m venv "$venv" || { say "python3 -m venv failed: install the python3-venv package"; exit 1; }
  "$venv/bin/pip" install --quiet --disable-pip-version-check "$moto_requirement" \
    || { say "pip install $moto_requirement failed (see above); nothing is started"; rm -rf "$venv"; exit 1; }
  say "moto installed in $(($(now_ms) - began)) ms"
}

start() {
  if pid=$(running_pid "$pidfile"); then
    if answers; then
      say "already running (pid $pid) at $endpoint"
      return 0
    fi
    say "pid $pid from $pidfile runs but does not answer at $endpoint: stop it first (bash $0 stop)"
    exit 1
  fi
  rm -f "$pidfile"
  if answers; then
    say "something not started by this script already answers at $endpoint: stop it, or choose MOTO_PORT"
    exit 1
  fi
  install_moto
  mkdir -p "$cache"
  local began
  began=$(now_ms)
  # setsid: the server outlives this script and is not killed with the caller's process group.
  setsid "$venv/bin/moto_server" -H 127.0.0.1 -p "$port" >"$logfile" 2>&1 </dev/null &
  local pid=$!
  echo "$pid" >"$pidfile"
  wait_until_answers "$pid" "$pidfile" "$logfile" moto_server "$start_timeout_s"
  say "started (pid $pid) at $endpoint in $(($(now_ms) - began)) ms; log: $logfile"
}

stop() {
  stop_pid "$pidfile"
}

status() {
  local pid
  if pid=$(running_pid "$pidfile") && answers; then
    echo "running (pid $pid) at $endpoint"
    return 0
  fi
  echo "not running"
  return 3
}

env_lines() {
  cat <<EOF
export KAFKA_ESM_MOTO_ENDPOINT=$endpoint
export AWS_ACCESS_KEY_ID=test
export AWS_SECRET_ACCESS_KEY=test
export AWS_REGION=us-east-1
export AWS_DEFAULT_REGION=us-east-1
EOF
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  env) env_lines ;;
  *)
    echo "usage: $0 start|stop|status|env" >&2
    exit 2
    ;;
esac
