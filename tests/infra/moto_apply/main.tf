# Test composition: every module that moto_server can emulate, applied for
# real against it (tests/infra/moto_apply/run.py starts moto, applies this,
# runs the ingest-api and compactor binaries against what it created, then
# destroys it). Not an environment: the provider points at moto, and the
# values are the dev environment's where they matter.
#
# Not applied here, covered only by the mocked plan and apply of
# terraform/tests (moto has no Redshift Serverless and no MWAA):
#   module "warehouse"      Redshift Serverless namespace and workgroup
#   module "orchestration"  MWAA environment (and its DAG bucket, role, logs)
# Applied with three toggles, for what moto_server lacks (covered by the
# mocked plan and apply instead):
#   module.lake    s3_access_logging = false   PutBucketLogging never completes
#   module.lake    tls_only_policy = false     moto applies the policy's Deny
#                  statements without evaluating their aws:SecureTransport /
#                  s3:TlsVersion conditions, so they would deny every request
#   module.ingest  enable_autoscaling = false  no ListTagsForResource in
#                  Application Auto Scaling (the provider retries it forever)

terraform {
  required_version = ">= 1.10"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.100"
    }
  }
}

variable "endpoint" {
  description = "URL of the moto_server the test started."
  type        = string
}

variable "name" {
  description = "Name prefix of the resources, like local.name of an environment."
  type        = string
  default     = "courier-moto"
}

variable "bucket_name_prefix" {
  description = "Prefix of the bucket names."
  type        = string
  default     = "courier-moto"
}

variable "certificate_pem" {
  description = "Self-signed certificate for the HTTPS listener (moto's ELBv2 looks the ARN up in its ACM)."
  type        = string
}

variable "certificate_private_key_pem" {
  description = "Its private key, made by the test for this run only."
  type        = string
  sensitive   = true
}

locals {
  region = "eu-west-1"
  tags = {
    Project     = "courier"
    Environment = "moto"
    ManagedBy   = "terraform"
  }
}

provider "aws" {
  region                      = local.region
  access_key                  = "test"
  secret_key                  = "test"
  skip_credentials_validation = true
  skip_requesting_account_id  = true
  skip_metadata_api_check     = true
  skip_region_validation      = true
  s3_use_path_style           = true

  endpoints {
    acm                    = var.endpoint
    applicationautoscaling = var.endpoint
    cloudwatch             = var.endpoint
    cloudwatchlogs         = var.endpoint
    ec2                    = var.endpoint
    ecr                    = var.endpoint
    ecs                    = var.endpoint
    elbv2                  = var.endpoint
    events                 = var.endpoint
    iam                    = var.endpoint
    kinesis                = var.endpoint
    kms                    = var.endpoint
    s3                     = var.endpoint
    secretsmanager         = var.endpoint
    sns                    = var.endpoint
    sts                    = var.endpoint
    wafv2                  = var.endpoint
  }
}

resource "aws_acm_certificate" "ingest" {
  certificate_body = var.certificate_pem
  private_key      = var.certificate_private_key_pem

  tags = local.tags
}

module "network" {
  source = "../../../terraform/modules/network"

  name                     = var.name
  vpc_cidr                 = "10.40.0.0/16"
  availability_zones       = ["eu-west-1a", "eu-west-1b", "eu-west-1c"]
  single_nat_gateway       = true
  flow_logs_retention_days = 14
  kms_deletion_window_days = 7
  tags                     = local.tags
}

module "stream" {
  source = "../../../terraform/modules/stream"

  name                     = "${var.name}-positions"
  stream_mode              = "PROVISIONED"
  shard_count              = 2
  retention_hours          = 24
  kms_deletion_window_days = 7
  tags                     = local.tags
}

module "lake" {
  source = "../../../terraform/modules/lake"

  bucket_name_prefix          = var.bucket_name_prefix
  dead_letter_expiration_days = 14
  force_destroy               = true
  s3_access_logging           = false
  tls_only_policy             = false
  kms_deletion_window_days    = 7
  tags                        = local.tags
}

module "registry" {
  source = "../../../terraform/modules/registry"

  repository_names         = ["ingest-api", "compactor"]
  images_to_keep           = 10
  force_delete             = true
  kms_deletion_window_days = 7
  tags                     = local.tags
}

module "ingest" {
  source = "../../../terraform/modules/ingest"

  name                        = var.name
  vpc_id                      = module.network.vpc_id
  vpc_cidr_block              = module.network.vpc_cidr_block
  public_subnet_ids           = module.network.public_subnet_ids
  private_subnet_ids          = module.network.private_subnet_ids
  s3_prefix_list_id           = module.network.s3_endpoint_prefix_list_id
  certificate_arn             = aws_acm_certificate.ingest.arn
  deletion_protection         = false
  enable_waf                  = true
  access_logs_bucket_name     = module.lake.logs_bucket_name
  access_logs_prefix          = module.lake.alb_logs_prefix
  container_image             = "${module.registry.repository_urls["ingest-api"]}:moto"
  ecr_repository_arn          = module.registry.repository_arns["ingest-api"]
  cpu                         = 256
  memory                      = 512
  desired_count               = 1
  min_capacity                = 1
  max_capacity                = 2
  enable_autoscaling          = false
  log_retention_days          = 14
  stream_name                 = module.stream.stream_name
  stream_arn                  = module.stream.stream_arn
  stream_kms_key_arn          = module.stream.kms_key_arn
  secret_recovery_window_days = 0
  kms_deletion_window_days    = 7
  tags                        = local.tags
}

module "compactor" {
  source = "../../../terraform/modules/compactor"

  name                     = var.name
  vpc_id                   = module.network.vpc_id
  vpc_cidr_block           = module.network.vpc_cidr_block
  s3_prefix_list_id        = module.network.s3_endpoint_prefix_list_id
  container_image          = "${module.registry.repository_urls["compactor"]}:moto"
  ecr_repository_arn       = module.registry.repository_arns["compactor"]
  cpu                      = 1024
  memory                   = 2048
  stream_name              = module.stream.stream_name
  stream_arn               = module.stream.stream_arn
  stream_kms_key_arn       = module.stream.kms_key_arn
  lake_bucket_name         = module.lake.lake_bucket_name
  lake_bucket_arn          = module.lake.lake_bucket_arn
  lake_kms_key_arn         = module.lake.kms_key_arn
  table_prefix             = module.lake.table_prefix
  dead_letter_prefix       = module.lake.dead_letter_prefix
  manifest_prefix          = module.lake.manifest_prefix
  log_retention_days       = 14
  kms_deletion_window_days = 7
  tags                     = local.tags
}

module "monitoring" {
  source = "../../../terraform/modules/monitoring"

  name                             = var.name
  stream_name                      = module.stream.stream_name
  alb_arn_suffix                   = module.ingest.alb_arn_suffix
  target_group_arn_suffix          = module.ingest.target_group_arn_suffix
  ecs_cluster_name                 = module.ingest.cluster_name
  ecs_cluster_arn                  = module.ingest.cluster_arn
  ingest_service_name              = module.ingest.service_name
  compactor_task_definition_family = module.compactor.task_definition_family
  compactor_log_group_name         = module.compactor.log_group_name
  mwaa_environment_name            = var.name
  iterator_age_threshold_ms        = 3600000
  kms_deletion_window_days         = 7
  tags                             = local.tags
}

output "stream_name" {
  description = "Kinesis stream name."
  value       = module.stream.stream_name
}

output "lake_bucket_name" {
  description = "Lake bucket name."
  value       = module.lake.lake_bucket_name
}

output "table_uri" {
  description = "s3:// URI of the Delta table."
  value       = module.lake.table_uri
}

output "ingest_task_definition_arn" {
  description = "ARN of the ingest-api task definition."
  value       = module.ingest.task_definition_arn
}

output "compactor_task_definition_arn" {
  description = "ARN of the compactor task definition."
  value       = module.compactor.task_definition_arn
}

output "compactor_container_name" {
  description = "Name of the compactor container."
  value       = module.compactor.container_name
}

output "alb_arn" {
  description = "ARN of the load balancer."
  value       = module.ingest.alb_arn
}

output "api_keys_secret_arn" {
  description = "ARN of the API-keys secret."
  value       = module.ingest.api_keys_secret_arn
}

output "dispatch_api_keys_secret_arn" {
  description = "ARN of the dispatch-keys secret."
  value       = module.ingest.dispatch_api_keys_secret_arn
}
