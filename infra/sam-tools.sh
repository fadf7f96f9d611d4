# shellcheck shell=bash disable=SC2154  # cache and config are set by the caller
# Sourced by infra/deploy.sh and infra/teardown.sh: finding the SAM CLI, its Python (which has boto3), and
# values in samconfig.toml. The caller sets `cache` and `config`; `config_value` uses `py` when set.

# The SAM CLI: the lint venv's, the one on PATH, or the build venv's.
find_sam() {
  local candidate
  for candidate in "$cache/venv/bin/sam" "$(command -v sam || true)" "$cache/cargo-lambda-venv/bin/sam"; do
    if [ -n "$candidate" ] && [ -x "$candidate" ]; then
      echo "$candidate"
      return 0
    fi
  done
  return 1
}

# The SAM CLI's own Python (it has boto3), for calls to AWS.
sam_python() {
  local dir candidate
  dir="$(dirname "$(readlink -f "$1")")"
  for candidate in "$dir/python3" "$dir/python"; do
    if [ -x "$candidate" ] && "$candidate" -c 'import boto3' 2>/dev/null; then
      echo "$candidate"
      return 0
    fi
  done
  return 1
}

# The value of KEY in samconfig.toml ([default.deploy.parameters], then [default.global.parameters]).
config_value() {
  [ -f "$config" ] || return 0
  "${py:-python3}" - "$config" "$1" <<'PY' 2>/dev/null || true
import sys, tomllib
with open(sys.argv[1], "rb") as f:
    default = tomllib.load(f).get("default", {})
for section in ("deploy", "global"):
    value = default.get(section, {}).get("parameters", {}).get(sys.argv[2])
    if value:
        print(value)
        break
PY
}
