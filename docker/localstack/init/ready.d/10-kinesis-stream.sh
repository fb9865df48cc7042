#!/bin/bash
# LocalStack READY hook: create the Kinesis stream ingest-api writes to and the
# compactor reads (terraform/modules/stream in AWS). Idempotent: a restart of
# the container with the stream still there changes nothing.
# Variables come from the localstack service in docker-compose.yml.
set -euo pipefail

region="${AWS_DEFAULT_REGION:-eu-west-1}"
stream="${STREAM_NAME:-courier-positions}"
shards="${STREAM_SHARDS:-2}"

if awslocal kinesis describe-stream-summary --region "$region" --stream-name "$stream" >/dev/null 2>&1; then
  echo "kinesis stream $stream exists"
else
  awslocal kinesis create-stream --region "$region" --stream-name "$stream" --shard-count "$shards"
  echo "kinesis stream $stream created with $shards shards"
fi
awslocal kinesis wait stream-exists --region "$region" --stream-name "$stream"
