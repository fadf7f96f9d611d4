#!/usr/bin/env bash
# Deletes the kafka-esm stack with `sam delete`.
#
#   bash infra/teardown.sh                          # stack and region from samconfig.toml
#   bash infra/teardown.sh STACK [--region REGION]  # or named here
#   bash infra/teardown.sh ... --yes                # no questions (sam delete --no-prompts)
#
# What goes and what stays (template.yaml):
#   - deleted with the stack: both functions, the event source mapping (its consumer group's committed offsets
#     stay in Kafka), the IAM roles, the log groups and their logs, the metric filters, alarms, SNS topic and
#     schedule, and the DynamoDB idempotency table with every key in it: a new stack starts with an empty
#     table, so records redelivered or redriven after a redeploy are processed again, not seen as duplicates;
#   - kept: the on-failure SQS queue or S3 bucket (DeletionPolicy: Retain). Their messages and objects are the
#     only record of the batches the mapping gave up on; this script prints the queue's URL and message count,
#     or the bucket's name and object count, before deleting the stack: drain it with `esm redrive` first,
#     delete it yourself afterwards (aws sqs delete-queue / aws s3 rb --force). An SNS destination topic goes
#     with the stack. Kafka topics (a Kafka on-failure topic too), secrets and the cluster were never part of it.
# Needs the same AWS credentials as the deploy (see infra/deploy.sh).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${KAFKA_ESM_CACHE:-$HOME/.cache/kafka-esm}"
config="$repo/samconfig.toml"

say() { echo "teardown: $*" >&2; }
die() { say "$*"; exit 1; }

usage() { sed -n '2,6p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

stack=""
region=""
yes=0
while [ "$#" -gt 0 ]; do
  case "$1" in
    --region) [ "$#" -ge 2 ] || die "--region needs a value"; region="$2"; shift ;;
    --region=*) region="${1#--region=}" ;;
    --yes | -y) yes=1 ;;
    -h | --help) usage; exit 0 ;;
    -*) usage >&2; die "unknown option: $1" ;;
    *) [ -z "$stack" ] || die "one stack name only"; stack="$1" ;;
  esac
  shift
done

# find_sam, sam_python, config_value.
# shellcheck source=infra/sam-tools.sh
source "$repo/infra/sam-tools.sh"

sam="$(find_sam || true)"
[ -n "$sam" ] || die "the SAM CLI is missing: bash infra/build-lambdas.sh (or bash infra/lint-template.sh) installs it"
py="$(sam_python "$sam" || true)"
if [ -z "$py" ] && command -v python3 >/dev/null && python3 -c 'import boto3' 2>/dev/null; then
  py=python3
fi

[ -n "$stack" ] || stack="$(config_value stack_name)"
[ -n "$stack" ] || die "which stack? give its name (bash infra/teardown.sh STACK) or keep samconfig.toml with stack_name"
[ -n "$region" ] || region="$(config_value region)"
[ -n "$region" ] || region="${AWS_REGION:-${AWS_DEFAULT_REGION:-}}"

# What stays behind, before it becomes hard to find: the retained queue or bucket and what it holds.
if [ -n "$py" ]; then
  if ! report="$("$py" - "$stack" "$region" <<'EOF' 2>&1
import sys
import boto3
stack, region = sys.argv[1], sys.argv[2] or None
session = boto3.session.Session(region_name=region)
if session.get_credentials() is None:
    sys.exit("no AWS credentials found")
cfn = session.client("cloudformation")
outputs = {o["OutputKey"]: o["OutputValue"]
           for o in cfn.describe_stacks(StackName=stack)["Stacks"][0].get("Outputs", [])}
queue = outputs.get("OnFailureQueueUrl")
table = outputs.get("IdempotencyTableName")
if queue:
    attributes = session.client("sqs").get_queue_attributes(
        QueueUrl=queue,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    waiting = int(attributes["ApproximateNumberOfMessages"]) + int(attributes["ApproximateNumberOfMessagesNotVisible"])
    print(f"kept:    on-failure queue {queue} ({waiting} message(s) now)")
    if waiting:
        print("         redrive them before the stack goes, while its idempotency table still skips what is done:")
        print(f"         IDEMPOTENCY_STORE=dynamodb IDEMPOTENCY_TABLE={table} esm redrive --queue-url {queue}")
    print(f"         delete the queue when you no longer need it: aws sqs delete-queue --queue-url {queue}")
bucket = outputs.get("OnFailureBucketName")
if bucket:
    pages = session.client("s3").get_paginator("list_objects_v2").paginate(Bucket=bucket)
    objects = sum(page.get("KeyCount", 0) for page in pages)
    print(f"kept:    on-failure bucket {bucket} ({objects} object(s) now)")
    if objects:
        print("         redrive them before the stack goes, while its idempotency table still skips what is done:")
        print(f"         IDEMPOTENCY_STORE=dynamodb IDEMPOTENCY_TABLE={table} esm redrive --s3 s3://{bucket}/ --delete")
    print(f"         delete the bucket when you no longer need it: aws s3 rb s3://{bucket} --force")
kafka_topic = outputs.get("OnFailureKafkaTopicName")
if kafka_topic:
    print(f"kept:    on-failure Kafka topic {kafka_topic} (in the cluster): esm redrive --topic {kafka_topic}")
if table:
    print(f"deleted: idempotency table {table} with its keys (a new stack starts with an empty table)")
EOF
  )"; then
    say "cannot read the stack $stack${region:+ in $region}: $(echo "$report" | tail -1)"
    say "check the name, the region (--region) and the credentials (AWS_PROFILE, or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY)"
    exit 1
  fi
  while IFS= read -r line; do say "$line"; done <<<"$report"
fi

say "deleting stack $stack${region:+ in $region} (sam delete): functions, event source mapping, roles, log groups,"
say "alarms and the idempotency table go; the on-failure queue or bucket stays (DeletionPolicy: Retain)"
args=(delete --stack-name "$stack")
[ -z "$region" ] || args+=(--region "$region")
[ "$yes" = 0 ] || args+=(--no-prompts)
export SAM_CLI_TELEMETRY="${SAM_CLI_TELEMETRY:-0}"
"$sam" "${args[@]}"
