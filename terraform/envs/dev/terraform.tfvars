# Development: small and cheap, easy to tear down.

aws_region         = "eu-west-1"
environment        = "dev"
vpc_cidr           = "10.40.0.0/16"
availability_zones = ["eu-west-1a", "eu-west-1b", "eu-west-1c"]
single_nat_gateway = true
log_retention_days = 14

stream_mode        = "ON_DEMAND"
stream_shard_count = 1 # ignored with ON_DEMAND

# Retention policy, one setting per tier (docs/operations.md, "Retention"):
# stream, lake (Delta partitions), dead letters (S3 lifecycle), warehouse raw
# positions, gold tables. Enforced by Kinesis, S3 and the daily maintenance DAG.
stream_retention_hours       = 24
lake_retention_days          = 30
dead_letter_expiration_days  = 14
warehouse_raw_retention_days = 30
gold_retention_days          = 90

force_destroy_buckets = true
ecr_images_to_keep    = 10

alb_deletion_protection = false
enable_waf              = true
# Sizes below follow from the capacity model for 1,000 couriers sending a
# fix every 5 s, one per request: scripts/capacity.py --env dev
# (tests/infra/test_capacity.py fails when they drift apart).
ingest_requests_per_target = 100406
ingest_cpu                 = 256
ingest_memory              = 512
ingest_desired_count       = 1
ingest_min_capacity        = 1
ingest_max_capacity        = 2

position_store_node_type = "cache.t4g.micro"
position_store_replicas  = 0

compactor_cpu    = 1024
compactor_memory = 2048

redshift_base_capacity = 8
redshift_max_capacity  = 32

mwaa_environment_class = "mw1.small"
mwaa_min_workers       = 1
mwaa_max_workers       = 2

# The compactor runs every few minutes in dev; alarm after 1 h of lag.
iterator_age_threshold_ms = 3600000

# --- Operator-supplied values (required, no defaults) ------------------------
# They identify your account, domain and build, so they cannot be committed as
# defaults. Uncomment and fill in here, or pass them at apply time, e.g.
#   export TF_VAR_certificate_arn=arn:aws:acm:eu-west-1:<account>:certificate/<id>
# See terraform/README.md ("Inputs an operator must supply").
#
# aws_account_id      = "<12-digit account id of the dev account>"
# bucket_name_prefix  = "<globally unique prefix, e.g. yourorg-courier-dev>"
# certificate_arn     = "<ACM certificate ARN for the dev ingest hostname, in aws_region>"
# ingest_image_tag    = "<git commit of the ingest-api image pushed to ECR>"
# compactor_image_tag = "<git commit of the compactor image pushed to ECR>"
# alert_email         = "<on-call mailbox>" # optional
