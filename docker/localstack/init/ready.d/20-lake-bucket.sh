#!/bin/bash
# LocalStack READY hook: create the lake bucket (terraform/modules/lake in AWS).
# The Delta table, the dead letters and the COPY manifests are prefixes of this
# one bucket, as in AWS (TABLE_PREFIX, DEAD_LETTER_PREFIX, MANIFEST_PREFIX, the
# lake module's defaults); S3 needs no object to make a prefix exist.
# Idempotent. Variables come from the localstack service in docker-compose.yml.
set -euo pipefail

region="${AWS_DEFAULT_REGION:-eu-west-1}"
bucket="${LAKE_BUCKET:-courier-local-lake}"

if awslocal s3api head-bucket --region "$region" --bucket "$bucket" >/dev/null 2>&1; then
  echo "bucket $bucket exists"
else
  awslocal s3 mb "s3://$bucket" --region "$region"
fi
awslocal s3api put-bucket-versioning --region "$region" --bucket "$bucket" \
  --versioning-configuration Status=Enabled
echo "lake bucket s3://$bucket ready (tables under ${TABLE_PREFIX:-tables/positions}/, dead letters under ${DEAD_LETTER_PREFIX:-dead-letter}/, manifests under ${MANIFEST_PREFIX:-manifests}/)"
