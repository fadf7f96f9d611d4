#!/usr/bin/env bash
# Lints template.yaml offline: cfn-lint, `sam validate --lint`, then infra/check-template.py (invariants
# cfn-lint cannot see: Rules-level wiring of each on-failure destination, the 22-entry limit of
# SourceAccessConfigurations, IAM against the store's DynamoDB calls, parameters against
# docs/template-parameters.md, every secret read is granted, the schema registry in provisioned mode only
# with its Glue statements under the Glue condition). Exits non-zero on any finding.
#
#   bash infra/lint-template.sh
#
# cfn-lint and the SAM CLI live in a virtualenv outside the clone so CI runs reuse it:
# ${KAFKA_ESM_CACHE:-$HOME/.cache/kafka-esm}/venv, installed (about 45 s) only when venv/bin/cfn-lint or
# venv/bin/sam is missing, or when the pinned versions below changed. Both tools lint offline; no
# credentials are needed, and placeholder ones are exported so a real profile is never picked up.
# (The SAM CLI may ask PyPI once a week whether it is outdated; it ignores a failed check.)
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${KAFKA_ESM_CACHE:-$HOME/.cache/kafka-esm}"
venv="$cache/venv"
template="template.yaml"
# Pinned: a newer cfn-lint can add rules, and CI should not start failing on its own. Bump both together
# (pip resolves them as a pair) and fix whatever the new rules find.
requirements=('cfn-lint==1.58.0' 'aws-sam-cli==1.170.0')
stamp="$venv/.kafka-esm-requirements"

say() { echo "lint-template: $*" >&2; }

install_tools() {
  if [ -x "$venv/bin/cfn-lint" ] && [ -x "$venv/bin/sam" ] \
    && [ "$(cat "$stamp" 2>/dev/null)" = "${requirements[*]}" ]; then
    return 0
  fi
  command -v python3 >/dev/null || { say "python3 is missing: install Python 3 (with venv) first"; exit 1; }
  mkdir -p "$cache"
  say "installing ${requirements[*]} into $venv"
  local began=$SECONDS
  rm -rf "$venv"
  python3 -m venv "$venv" || { say "python3 -m venv failed: install the python3-venv package"; exit 1; }
  "$venv/bin/pip" install --quiet --disable-pip-version-check "${requirements[@]}" \
    || { say "pip install failed (see above)"; rm -rf "$venv"; exit 1; }
  echo "${requirements[*]}" >"$stamp"
  say "cfn-lint and aws-sam-cli installed in $((SECONDS - began)) s"
}

install_tools
cd "$repo"
[ -f "$template" ] || { say "$repo/$template not found"; exit 1; }

# Offline and anonymous: no telemetry, placeholder credentials, a fixed region.
export SAM_CLI_TELEMETRY=0
export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_SESSION_TOKEN=test
export AWS_DEFAULT_REGION=us-east-1 AWS_REGION=us-east-1
export AWS_EC2_METADATA_DISABLED=true
unset AWS_PROFILE

status=0
say "cfn-lint $("$venv/bin/cfn-lint" --version 2>&1 | awk '{print $NF}') $template"
"$venv/bin/cfn-lint" "$template" || status=1
say "sam validate --lint ($("$venv/bin/sam" --version 2>&1 | awk '{print $NF}'))"
"$venv/bin/sam" validate --lint --region us-east-1 --template-file "$template" || status=1
say "check-template.py (invariants: destinations, SourceAccessConfigurations, IAM, docs, schema registry)"
"$venv/bin/python" infra/check-template.py "$template" docs/template-parameters.md || status=1

if [ "$status" -eq 0 ]; then
  say "ok: no findings"
else
  say "FAILED: see the findings above"
fi
exit "$status"
