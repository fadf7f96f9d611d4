#!/usr/bin/env bash
# A real Kafka-protocol broker for the end-to-end tests and demos: Tansu, on 127.0.0.1.
#
#   bash infra/broker.sh install                 # build patched tansu (once; cached outside the clone)
#   bash infra/broker.sh start [memory|sqlite]   # start it (default memory), wait until it answers
#   bash infra/broker.sh topics NAME[:PARTITIONS] ...   # create topics (default 3 partitions)
#   bash infra/broker.sh status                  # exit 0 when it runs and answers, 3 otherwise
#   bash infra/broker.sh restart                 # stop and start again with the same storage
#   bash infra/broker.sh stop
#   bash infra/broker.sh env                     # KAFKA_ESM_BROKER=127.0.0.1:PORT, for eval
#   bash infra/broker.sh storage                 # memory or sqlite: the running broker's storage
#   bash infra/broker.sh log [LINES]             # the log's last lines and any panic in it
#
# Tansu 0.6.0 is built from its published sources with our patch to its SQLite storage
# (infra/tansu/tansu-0.6.0-sqlite-restart.patch: stock 0.6.0 panics and wedges when an idempotent
# producer bumps its epoch, which clients do after a broker restart). Cargo fetches the two crates the
# patch changes, tansu and tansu-storage, at the versions and checksums infra/tansu/Cargo.lock pins (from
# whatever registry or mirror cargo is configured with); the patch is applied to copies of them, and
# `cargo install --path tansu-0.6.0 --locked --features dynostore,libsql` builds them with tansu's own
# Cargo.lock (12 to 50 minutes on 2 cores, at low priority) into
# ${KAFKA_ESM_CACHE:-$HOME/.cache/kafka-esm}/tansu-0.6.0-p<patch hash>,
# so a second run finds it at once and a changed patch builds afresh. The pid file, the log and
# the SQLite database (tansu-PORT.db; `reset` deletes it) live in the same cache directory. The
# port is ${TANSU_PORT:-9092}. SQLite storage survives `restart`; memory storage does not.
set -euo pipefail

version=0.6.0
tansu_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/tansu"
patch_file="$tansu_dir/tansu-$version-sqlite-restart.patch"
# Pins tansu and tansu-storage $version with their checksums (Cargo.lock beside it).
sources_manifest="$tansu_dir/Cargo.toml"
cache="${KAFKA_ESM_CACHE:-$HOME/.cache/kafka-esm}"
root="$cache/tansu-$version-p$(sha256sum "$patch_file" | cut -c1-12)"
bin="$root/bin/tansu"
port="${TANSU_PORT:-9092}"
pidfile="$cache/tansu-$port.pid"
logfile="$cache/tansu-$port.log"
storefile="$cache/tansu-$port.storage"
dbname="tansu-$port.db" # relative: Tansu runs in $cache and reads sqlite:// paths relative to it
listener="tcp://127.0.0.1:$port"
start_timeout_s="${TANSU_START_TIMEOUT_S:-60}"

say() { echo "broker: $*" >&2; }
now_ms() { echo $(($(date +%s%N) / 1000000)); }

# running_pid, wait_until_answers, stop_pid.
# shellcheck source=infra/process.sh
source "$(dirname "${BASH_SOURCE[0]}")/process.sh"

# True when something accepts connections on the port.
answers() {
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null
}

install() {
  if [ -x "$bin" ]; then
    return 0
  fi
  command -v cargo >/dev/null || { say "cargo is missing: install Rust first"; exit 1; }
  local tool
  for tool in patch sha256sum; do
    command -v "$tool" >/dev/null || { say "$tool is missing (bash infra/install-build-deps.sh installs it)"; exit 1; }
  done
  mkdir -p "$cache"
  # One build at a time (CI builds in the background while a script may start the broker).
  if command -v flock >/dev/null; then
    exec 9>"$cache/tansu-install.lock"
    flock 9
    if [ -x "$bin" ]; then
      return 0
    fi
  fi
  say "building patched tansu $version into $root (12 to 50 minutes on 2 cores, once)"
  local began src
  began=$(now_ms)
  src="$cache/tansu-src"
  rm -rf "$src"
  mkdir -p "$src"
  # Cargo downloads the crates infra/tansu/Cargo.lock pins, checks each against its checksum there, and
  # copies them to $src/<crate>-<version>, so tansu-$version and tansu-storage-$version land where the
  # patch expects them (`cargo vendor`: tansu has no library, so `cargo metadata` does not list it). Only
  # those two copies are used. $src is not made a source for the build: `cargo install --locked` resolves
  # tansu's whole Cargo.lock, optional dependencies of unbuilt features included, which this lock's
  # crates do not cover. So the build fetches its dependencies as before, at the versions tansu's own
  # Cargo.lock pins, and the .cargo-checksum.json files `cargo vendor` writes (the patch makes two of
  # them stale) are never read. Run in $src: the cargo configuration (a registry mirror, say) is then
  # the one `cargo install --path $src/...` below reads.
  (cd "$src" && cargo vendor --quiet --locked --versioned-dirs --manifest-path "$sources_manifest" "$src" >/dev/null) \
    || { say "cargo could not fetch the tansu $version sources (see above); nothing is started"; exit 1; }
  (cd "$src" && patch -p1 --forward --quiet <"$patch_file") \
    || { say "$patch_file does not apply to tansu $version"; exit 1; }
  # A private target directory: the install never waits on (or invalidates) the project's build.
  # Low priority: on a shared machine the project's own build goes first.
  CARGO_TARGET_DIR="$cache/tansu-build" nice -n 10 cargo install --path "$src/tansu-$version" --locked \
    --features dynostore,libsql --root "$root" \
    || { say "building tansu failed (see above); nothing is started"; exit 1; }
  rm -rf "$cache/tansu-build" "$src"
  say "tansu installed in $(($(now_ms) - began)) ms"
}

storage_url() {
  case "$1" in
    memory) echo "memory://tansu/" ;;
    sqlite) echo "sqlite://$dbname" ;;
    *) say "unknown storage '$1': use memory or sqlite"; exit 2 ;;
  esac
}

start() {
  local storage="${1:-memory}"
  if pid=$(running_pid "$pidfile"); then
    if answers; then
      say "already running (pid $pid) on $listener"
      return 0
    fi
    say "pid $pid from $pidfile runs but does not answer on $listener: stop it first (bash $0 stop)"
    exit 1
  fi
  rm -f "$pidfile"
  if answers; then
    say "something not started by this script already listens on $listener: stop it, or choose TANSU_PORT"
    exit 1
  fi
  local url
  url=$(storage_url "$storage")
  install
  mkdir -p "$cache"
  echo "$storage" >"$storefile"
  local began
  began=$(now_ms)
  # setsid: the broker outlives this script and is not killed with the caller's process group.
  (cd "$cache" && exec setsid "$bin" broker --listener-url "$listener" --advertised-listener-url "$listener" \
    --storage-engine "$url" >>"$logfile" 2>&1 </dev/null) &
  local pid=$!
  echo "$pid" >"$pidfile"
  wait_until_answers "$pid" "$pidfile" "$logfile" tansu "$start_timeout_s"
  say "started (pid $pid, $storage storage) on $listener in $(($(now_ms) - began)) ms"
}

# SIGKILL, not SIGTERM: on SIGTERM Tansu 0.6.0 stops its storage task at once but keeps answering open
# connections for 5 s, every request with an error. Producers lose those messages, and an idempotent
# producer bumps its epoch, which then panics the SQLite storage (`idempotent_message_check: more or
# less than one row`, tansu-storage lite.rs:503) and wedges the broker until it is reset. SQLite runs in
# WAL mode, so a kill keeps every committed write; clients resend what was in flight.
stop() {
  stop_pid "$pidfile" KILL
}

topics() {
  [ "$#" -gt 0 ] || { say "topics: name at least one topic (NAME or NAME:PARTITIONS)"; exit 2; }
  install
  local spec name partitions
  for spec in "$@"; do
    name="${spec%%:*}"
    partitions=3
    [ "$spec" != "$name" ] && partitions="${spec#*:}"
    [[ "$partitions" =~ ^[0-9]+$ ]] || { say "'$spec': partitions must be a number"; exit 2; }
    if out=$("$bin" topic create --broker "$listener" --partitions "$partitions" "$name" 2>&1); then
      say "topic $name ($partitions partitions) created"
    elif grep -qi 'exist' <<<"$out"; then
      say "topic $name exists"
    else
      say "creating topic $name failed: $out"
      exit 1
    fi
  done
}

case "${1:-}" in
  install) install ;;
  start) start "${2:-memory}" ;;
  stop) stop ;;
  restart)
    storage=$(cat "$storefile" 2>/dev/null || echo memory)
    stop
    start "$storage"
    ;;
  status)
    if pid=$(running_pid "$pidfile") && answers; then
      say "running (pid $pid) on $listener"
    else
      say "not running on $listener"
      exit 3
    fi
    ;;
  topics)
    shift
    topics "$@"
    ;;
  env) echo "export KAFKA_ESM_BROKER=127.0.0.1:$port" ;;
  storage)
    # The storage of the broker this script started (memory or sqlite); exit 3 when none runs.
    if running_pid "$pidfile" >/dev/null && answers; then
      cat "$storefile" 2>/dev/null || echo memory
    else
      exit 3
    fi
    ;;
  log)
    # The last lines of the broker's log (default 40), and every panic in it.
    [ -f "$logfile" ] || { say "no log at $logfile"; exit 0; }
    tail -n "${2:-40}" "$logfile"
    grep -n -A2 'panicked' "$logfile" | tail -n 30 || true
    ;;
  reset)
    stop
    rm -f "$cache/$dbname" "$cache/$dbname"-*
    [ -f "$logfile" ] && mv -f "$logfile" "$logfile.old"
    say "sqlite storage deleted (the log moved to $logfile.old)"
    ;;
  *)
    echo "usage: bash $0 install | start [memory|sqlite] | topics NAME[:PARTITIONS]... | status | restart | stop | reset | env | storage | log [LINES]" >&2
    exit 2
    ;;
esac
