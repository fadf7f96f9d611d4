#!/usr/bin/env bash
# Load: N records (default one million) through the whole pipeline on a real broker, then the
# verifier's proof that each was accounted for exactly once.
#
#   bash infra/load.sh [N] [RATE]
#   POLL_ARGS="--concurrency 1" bash infra/load.sh 200000     # extra `esm poll` options
#   PARTITIONS=6 bash infra/load.sh                             # source partitions (default 3)
#   FRESH_BROKER=1 bash infra/load.sh                           # restart a memory broker first
#   TANSU_PORT=19092 bash infra/load.sh                         # a broker of its own on that port
#
# Tansu's memory storage keeps every earlier run's topics, and it slows as it fills (measured: four
# 1M runs in a row on one broker, 36,736 then 29,764, 29,549 and 23,845 records/s, its CPU per run
# 10.7 s to 18.2 s): compare runs with FRESH_BROKER=1, which restarts a running memory broker (never
# a SQLite one, the end-to-end suite's: use another TANSU_PORT then).
#
# Starts Tansu (memory storage) if it is not running, creates fresh topics, starts `esm poll` (the
# consumer in process, idempotency in a local redb file, alerts and dead letters to the broker), then
# produces N metrics through the producer Lambda's code at RATE records/s (default: as fast as the
# broker takes them) while the poller runs. Prints the poller's summary (records/s while busy and
# its peak memory, `peak_rss_mib`), and the verifier's verdict with produce-to-alert latency percentiles.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

n="${1:-1000000}"
rate="${2:-}"
run="load-$(date +%s)"
source_topic="$run.metrics"
alerts_topic="$run.alerts"
dlq_topic="$run.metrics.dlq"
state=$(mktemp -d)
trap 'rm -rf "$state"' EXIT

cargo build --release --locked --bin esm >&2
esm="${CARGO_TARGET_DIR:-target}/release/esm"

if [ -n "${FRESH_BROKER:-}" ] && bash infra/broker.sh status >/dev/null 2>&1; then
  if [ "$(bash infra/broker.sh storage)" != memory ]; then
    echo "load: FRESH_BROKER=1, but the running broker keeps SQLite storage (the end-to-end suite's?): it is not restarted; run with TANSU_PORT=<another port> for a broker of its own" >&2
    exit 1
  fi
  bash infra/broker.sh stop >&2
fi
bash infra/broker.sh status >/dev/null 2>&1 || bash infra/broker.sh start memory
eval "$(bash infra/broker.sh env)"
partitions="${PARTITIONS:-3}"
bash infra/broker.sh topics "$source_topic:$partitions" "$alerts_topic:3" "$dlq_topic:1"

export KAFKA_BOOTSTRAP_SERVERS="$KAFKA_ESM_BROKER"
export IDEMPOTENCY_STORE="${IDEMPOTENCY_STORE:-local}" IDEMPOTENCY_LOCAL_PATH="$state/idempotency.redb"
export ALERTS_TOPIC="$alerts_topic" DLQ_TOPIC="$dlq_topic"
export RUST_LOG="${RUST_LOG:-esm::poll=info,warn}"

echo "load: $n records, topic $source_topic" >&2
"$esm" poll --topics "$source_topic" --group "$run" \
  --batch-size 1000 --batch-window-ms 50 --exit-when-idle-ms 5000 --progress-seconds 5 \
  ${POLL_ARGS:-} --json >"$state/poll.json" 2>"$state/poll.log" &
poller=$!

produce_args=(produce --topic "$source_topic" --generate "$n" --json)
[ -n "$rate" ] && produce_args+=(--rate "$rate")
"$esm" "${produce_args[@]}" >"$state/produce.json"
wait "$poller" || true

echo "produce: $(cat "$state/produce.json")"
echo "poll:    $(tail -n 1 "$state/poll.json")"
grep -E '"progress"|progress' "$state/poll.log" | tail -n 3 >&2 || true
echo "verify:  $("$esm" verify --topic "$source_topic")"
