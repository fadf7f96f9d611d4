#!/usr/bin/env bash
# The I/O benchmark (telemetry/benches/io.rs) against a moto of its own, whose transactions cost what they write.
#
#   bash infra/bench-io.sh            # a patched moto on 127.0.0.1:${IO_BENCH_MOTO_PORT:-5002}, the bench, moto stopped
#   bash infra/bench-io.sh --stock    # the shared moto of infra/local-stack.sh (started if needed), as it is
#
# IO_BENCH_* settings (see telemetry/benches/io.rs) pass through to the bench.
#
# Why a patched moto: before a TransactWriteItems, moto 5.2 deep-copies each table the transaction
# touches once per item of the transaction (for its roll-back), so one transaction of 100 claims on a
# table of N items copies 100 x N items: about 1.4 s at 300 items and 12 s at 2,500, where a real
# table's cost does not depend on its size. The store's batched claims are such transactions, so
# against that moto the 6 MB event would take the better part of an hour. The patch (below, loaded by
# a launcher instead of `moto_server`; nothing in the virtualenv changes) copies once per
# transaction and deep-copies only the items the transaction touches, which is all its roll-back
# restores: what moto answers, roll-backs included, is unchanged. It also parses each condition
# expression once (moto parses it for every item: most of a 100-claim transaction's time went there).
# It runs on its own port so the moto other tests share is never patched.
#
# moto comes from the virtualenv infra/local-stack.sh installs
# (${KAFKA_ESM_CACHE:-$HOME/.cache/kafka-esm}/moto-venv); when it is missing, `local-stack.sh start`
# installs it (and starts the shared moto, left running).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
cache="${KAFKA_ESM_CACHE:-$HOME/.cache/kafka-esm}"
venv="$cache/moto-venv"
port="${IO_BENCH_MOTO_PORT:-5002}"
endpoint="http://127.0.0.1:$port"

say() { echo "bench-io: $*" >&2; }

answers() {
  curl -fsS -o /dev/null --max-time 2 "$1/moto-api/data.json" 2>/dev/null
}

if [ "${1:-}" = "--stock" ]; then
  bash "$here/local-stack.sh" start
  eval "$(bash "$here/local-stack.sh" env)"
  cd "$repo"
  IO_BENCH_MOTO="moto (stock, infra/local-stack.sh)" exec cargo bench --bench io
elif [ -n "${1:-}" ]; then
  echo "usage: $0 [--stock]" >&2
  exit 2
fi

if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import moto.server' 2>/dev/null; then
  say "no moto in $venv: installing it with infra/local-stack.sh start"
  bash "$here/local-stack.sh" start
fi
if answers "$endpoint"; then
  say "something already answers at $endpoint: stop it, or choose IO_BENCH_MOTO_PORT"
  exit 1
fi

work="$(mktemp -d)"
moto_pid=""
cleanup() {
  if [ -n "$moto_pid" ] && kill -0 "$moto_pid" 2>/dev/null; then
    kill "$moto_pid" 2>/dev/null || true
    wait "$moto_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

cat >"$work/patched_moto.py" <<'PY'
# moto's server, with TransactWriteItems' roll-back copy made once per transaction and holding deep
# copies of only the items the transaction touches (see infra/bench-io.sh).
import contextvars
import copy
import sys

import moto.dynamodb.models as models
from moto.dynamodb.models.dynamo_type import DynamoType
from moto.dynamodb.models.table import Table

_transaction = contextvars.ContextVar("io_bench_transaction", default=None)
_deepcopy = copy.deepcopy


def _snapshot(table, touched):
    # The table's other state is shared: a transaction changes items only.
    snapshot = copy.copy(table)
    items = copy.copy(table.items)
    for hash_value in touched:
        if hash_value in table.items:
            items[hash_value] = _deepcopy(table.items[hash_value])
    snapshot.items = items
    return snapshot


class _Copy:
    """The `copy` module as models/__init__.py sees it: deepcopy of a table within a transaction
    is the transaction's snapshot; everything else is copy's own."""

    def __getattr__(self, name):
        return getattr(copy, name)

    @staticmethod
    def deepcopy(obj, memo=None):
        transaction = _transaction.get()
        if transaction is None or not isinstance(obj, Table):
            return _deepcopy(obj, memo)
        snapshots = transaction["snapshots"]
        if id(obj) not in snapshots:
            snapshots[id(obj)] = _snapshot(obj, transaction["touched"].get(obj.name, ()))
        return snapshots[id(obj)]


_transact_write_items = models.DynamoDBBackend.transact_write_items


def transact_write_items(self, transact_items):
    touched = {}
    for item in transact_items:
        for op_type, op in item.items():
            table = self.tables.get(op.get("TableName"))
            if table is None:
                continue
            source = op.get("Item") if op_type == "Put" else op.get("Key")
            if source and table.hash_key_attr in source:
                touched.setdefault(table.name, set()).add(DynamoType(source[table.hash_key_attr]))
    token = _transaction.set({"touched": touched, "snapshots": {}})
    try:
        return _transact_write_items(self, transact_items)
    finally:
        _transaction.reset(token)


models.DynamoDBBackend.transact_write_items = transact_write_items
models.copy = _Copy()

# Condition expressions parsed once per (expression, names, values) instead of once or twice per
# item: a transaction of 100 claims sends the same expression 100 times, and parsing it took most
# of the transaction's time. The parsed expression is only evaluated, never changed, so what moto
# answers is unchanged.
import functools  # noqa: E402
import json  # noqa: E402

import moto.dynamodb.comparisons as comparisons  # noqa: E402
import moto.dynamodb.models.table as table_module  # noqa: E402

_parse = comparisons.get_filter_expression


@functools.lru_cache(maxsize=512)
def _parse_cached(expr, names, values):
    return _parse(
        expr,
        None if names is None else json.loads(names),
        None if values is None else json.loads(values),
    )


def get_filter_expression(expr, names, values):
    try:
        names_key = None if names is None else json.dumps(names, sort_keys=True)
        values_key = None if values is None else json.dumps(values, sort_keys=True)
    except (TypeError, ValueError):
        return _parse(expr, names, values)
    return _parse_cached(expr, names_key, values_key)


comparisons.get_filter_expression = get_filter_expression
models.get_filter_expression = get_filter_expression
table_module.get_filter_expression = get_filter_expression

from moto.server import main  # noqa: E402

main(sys.argv[1:])
PY

"$venv/bin/python" "$work/patched_moto.py" -H 127.0.0.1 -p "$port" >"$work/moto.log" 2>&1 </dev/null &
moto_pid=$!
for _ in $(seq 1 120); do
  if answers "$endpoint"; then
    break
  fi
  if ! kill -0 "$moto_pid" 2>/dev/null; then
    say "the patched moto exited:"
    cat "$work/moto.log" >&2
    exit 1
  fi
  sleep 0.5
done
if ! answers "$endpoint"; then
  say "the patched moto did not answer at $endpoint within 60 s:"
  tail -20 "$work/moto.log" >&2
  exit 1
fi
say "patched moto (pid $moto_pid) at $endpoint"

cd "$repo"
status=0
KAFKA_ESM_MOTO_ENDPOINT="$endpoint" AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1 \
  IO_BENCH_MOTO="moto patched by infra/bench-io.sh" cargo bench --bench io || status=$?
exit "$status"
