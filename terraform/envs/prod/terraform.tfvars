# Production: redundant NAT, provisioned stream, longer retention, protected
# load balancer.

aws_region         = "eu-west-1"
environment        = "prod"
vpc_cidr           = "10.41.0.0/16"
availability_zones = ["eu-west-1a", "eu-west-1b", "eu-west-1c"]
single_nat_gateway = false
log_retention_days = 365

stream_mode        = "PROVISIONED"
stream_shard_count = 1 # scripts/capacity.py --env prod

# Retention policy, one setting per tier (docs/operations.md, "Retention"):
# stream, lake (Delta partitions), dead letters (S3 lifecycle), warehouse raw
# positions, gold tables. Enforced by Kinesis, S3 and the daily maintenance DAG.
stream_retention_hours       = 168
lake_retention_days          = 90
dead_letter_expiration_days  = 90
warehouse_raw_retention_days = 90
gold_retention_days          = 730

force_destroy_buckets = false
ecr_images_to_keep    = 50

alb_deletion_protection = true
enable_waf              = true
# Sizes below follow from the capacity model for 20,000 couriers sending a
# fix every 5 s, one per request: scripts/capacity.py --env prod
# (tests/infra/test_capacity.py fails when they drift apart).
ingest_requests_per_target = 401625
ingest_cpu                 = 1024
ingest_memory              = 2048
ingest_desired_count       = 2
ingest_min_capacity        = 2
ingest_max_capacity        = 3

position_store_node_type = "cache.m7g.large"
position_store_replicas  = 1

compactor_cpu    = 1024
compactor_memory = 2048

redshift_base_capacity = 32
redshift_max_capacity  = 128

mwaa_environment_class = "mw1.medium"
mwaa_min_workers       = 2
mwaa_max_workers       = 6

# Alarm after 2 h of compactor lag; retention is 7 days.
iterator_age_threshold_ms = 7200000

# --- Operator-supplied values (required, no defaults) ------------------------
# They identify your account, domain and build, so they cannot be committed as
# defaults. Uncomment and fill in here, or pass them at apply time, e.g.
#   export TF_VAR_certificate_arn=arn:aws:acm:eu-west-1:<account>:certificate/<id>
# See terraform/README.md ("Inputs an operator must supply").
#
# aws_account_id      = "<12-digit account id of the prod account>"
# bucket_name_prefix  = "<globally unique prefix, e.g. yourorg-courier-prod>"
# certificate_arn     = "<ACM certificate ARN for the prod ingest hostname, in aws_region>"
# ingest_image_tag    = "<git commit of the ingest-api image pushed to ECR>"
# compactor_image_tag = "<git commit of the compactor image pushed to ECR>"
# alert_email         = "<on-call mailbox>" # optional
