#!/usr/bin/env bash
# Builds both Lambdas and deploys template.yaml with the SAM CLI.
#
#   bash infra/deploy.sh                    # build, then `sam deploy --guided` (asks every parameter; can save samconfig.toml)
#   bash infra/deploy.sh                    # once samconfig.toml exists: build, then `sam deploy --config-file samconfig.toml`
#   bash infra/deploy.sh --skip-build       # deploy what .aws-sam/build holds
#   bash infra/deploy.sh --guided           # ask again even though samconfig.toml exists
#   bash infra/deploy.sh -- ARGS...         # extra arguments for `sam deploy` (e.g. --no-confirm-changeset)
#
# Needs AWS credentials for the target account (AWS_PROFILE, or AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY
# [/ AWS_SESSION_TOKEN]) and a region (AWS_DEFAULT_REGION or AWS_REGION, the profile's, or samconfig.toml's).
# They are checked first (sts:GetCallerIdentity) so a missing login fails in a second, not after the build.
# The identity needs to create the stack's resources: CloudFormation, S3 (SAM's managed artifact bucket,
# `resolve_s3`), IAM (two roles: CAPABILITY_IAM), Lambda (functions, event source mapping), SQS, DynamoDB,
# CloudWatch Logs and alarms, EventBridge and SNS. The Kafka side is not created: give the cluster (MSK ARN + IAM bootstrap
# string, or self-managed brokers + a Secrets Manager secret) as parameters, see docs/template-parameters.md.
# A sample configuration: cp infra/samconfig.toml.example samconfig.toml, then edit.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${KAFKA_ESM_CACHE:-$HOME/.cache/kafka-esm}"
config="$repo/samconfig.toml"

say() { echo "deploy: $*" >&2; }
die() { say "$*"; exit 1; }

usage() { sed -n '2,9p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

build=1
guided=0
extra=()
while [ "$#" -gt 0 ]; do
  case "$1" in
    --skip-build) build=0 ;;
    --guided | -g) guided=1 ;;
    -h | --help) usage; exit 0 ;;
    --) shift; extra=("$@"); break ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
  shift
done
[ -f "$config" ] || guided=1

# find_sam, sam_python, config_value.
# shellcheck source=infra/sam-tools.sh
source "$repo/infra/sam-tools.sh"

# --- credentials first ---------------------------------------------------------------------------
sam="$(find_sam || true)"
py=""
if [ -n "$sam" ]; then
  py="$(sam_python "$sam" || true)"
fi
region="${AWS_REGION:-${AWS_DEFAULT_REGION:-}}"
[ -n "$region" ] || region="$(config_value region)"
if [ -n "$py" ]; then
  if ! identity="$("$py" - "$region" <<'EOF' 2>&1
import sys
import boto3
session = boto3.session.Session(region_name=sys.argv[1] or None)
if session.get_credentials() is None:
    sys.exit("no AWS credentials found")
who = session.client("sts").get_caller_identity()
print(f"account {who['Account']} as {who['Arn']}, region {session.region_name or '(not set: sam deploy --guided asks)'}")
EOF
  )"; then
    say "cannot use AWS credentials: $(echo "$identity" | tail -1)"
    say "log in first: AWS_PROFILE=<profile> (after 'aws configure' or 'aws sso login --profile <profile>'),"
    say "or export AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN), plus AWS_DEFAULT_REGION;"
    say "an endpoint error means AWS cannot be reached from here (network, proxy, region name)."
    exit 1
  fi
  say "deploying to $identity"
else
  say "the SAM CLI is not installed yet: the credential check runs after the build installs it"
fi

# --- build ---------------------------------------------------------------------------------------
if [ "$build" = 1 ]; then
  bash "$repo/infra/build-lambdas.sh"
else
  [ -f "$repo/.aws-sam/build/template.yaml" ] || die "nothing built in .aws-sam/build: run without --skip-build"
fi
sam="$(find_sam)" || die "the SAM CLI is missing (infra/build-lambdas.sh installs it)"

# --- deploy --------------------------------------------------------------------------------------
cd "$repo"
export SAM_CLI_TELEMETRY="${SAM_CLI_TELEMETRY:-0}"
if [ "$guided" = 1 ]; then
  say "sam deploy --guided: answer each parameter (docs/template-parameters.md); allow IAM role creation;"
  say "save the answers to samconfig.toml so the next run deploys without questions"
  "$sam" deploy --guided ${extra[@]+"${extra[@]}"}
else
  say "sam deploy --config-file samconfig.toml"
  "$sam" deploy --config-file "$config" ${extra[@]+"${extra[@]}"}
fi

stack="$(config_value stack_name)"
region="${region:-$(config_value region)}"
if [ -n "$stack" ]; then
  say "stack outputs (also: $sam list stack-outputs --stack-name $stack${region:+ --region $region}):"
  "$sam" list stack-outputs --stack-name "$stack" ${region:+--region "$region"} --output table || true
fi
cat >&2 <<'EOF'
deploy: what the outputs are for:
  OnFailureDestination   where the event source mapping writes the batches it gave up on; redrive them with
                         esm redrive --queue-url (OnFailureQueueUrl) | --s3 s3://<OnFailureBucketName>/ |
                         --topic <OnFailureKafkaTopicName> (docs/redrive.md)
  RedriveOperatorPolicyArn  attach to whoever runs esm redrive: exactly the permissions it needs
  IdempotencyTableName   IDEMPOTENCY_TABLE for esm redrive, so it skips what the consumer already did
  EventSourceMappingUuid aws lambda get-event-source-mapping --uuid <it>: State should become Enabled
  *AlarmName             the CloudWatch alarms; AlarmTopicArn (with AlarmEmail): confirm the e-mail subscription
  *LogGroupName          the functions' logs (one JSON line per batch from the consumer)
EOF
