# shellcheck shell=bash
# Sourced by infra/local-stack.sh and infra/broker.sh: the life of one background server that a pid file
# names. The caller defines `say MESSAGE` and `answers` (true when the server answers).

# The pid in pid file $1, if that process still runs.
running_pid() {
  local pidfile="$1" pid
  [ -f "$pidfile" ] || return 1
  pid=$(cat "$pidfile" 2>/dev/null) || return 1
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  echo "$pid"
}

# Waits until `answers` for the process $1 started in the background (pid file $2, log $3, name $4),
# at most $5 seconds; on failure it stops the process, removes the pid file and exits 1.
wait_until_answers() {
  local pid="$1" pidfile="$2" logfile="$3" name="$4" timeout_s="$5" waited=0
  until answers; do
    if ! kill -0 "$pid" 2>/dev/null; then
      say "$name exited during start-up; the last lines of $logfile:"
      tail -n 20 "$logfile" >&2 || true
      rm -f "$pidfile"
      exit 1
    fi
    if [ "$waited" -ge $((timeout_s * 10)) ]; then
      say "$name does not answer after ${timeout_s} s; stopping it (log: $logfile)"
      kill "$pid" 2>/dev/null || true
      rm -f "$pidfile"
      exit 1
    fi
    sleep 0.1
    waited=$((waited + 1))
  done
}

# Stops the process of pid file $1 with signal $2 (default TERM), then SIGKILL if it still runs after 5 s.
stop_pid() {
  local pidfile="$1" signal="${2:-TERM}" pid
  if ! pid=$(running_pid "$pidfile"); then
    rm -f "$pidfile"
    say "not running"
    return 0
  fi
  kill -s "$signal" "$pid" 2>/dev/null || true
  for _ in $(seq 1 50); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    say "pid $pid did not stop within 5 s; killing it"
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile"
  say "stopped (pid $pid)"
}
