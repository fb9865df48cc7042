variable "aws_region" {
  description = "AWS region of the environment."
  type        = string
}

variable "aws_account_id" {
  description = "AWS account ID the environment must be applied to (the provider refuses any other account). Operator-supplied."
  type        = string

  validation {
    condition     = can(regex("^[0-9]{12}$", var.aws_account_id))
    error_message = "aws_account_id must be a 12-digit AWS account ID."
  }
}

variable "project" {
  description = "Project name, first part of every resource name."
  type        = string
  default     = "courier"
}

variable "environment" {
  description = "Environment name, second part of every resource name."
  type        = string

  validation {
    condition     = contains(["dev", "prod"], var.environment)
    error_message = "environment must be dev or prod."
  }
}

variable "tags" {
  description = "Extra tags for every resource (Project, Environment and ManagedBy are always set)."
  type        = map(string)
  default     = {}
}

variable "bucket_name_prefix" {
  description = "Globally unique prefix of the S3 bucket names, e.g. \"<org>-courier-dev\". Operator-supplied."
  type        = string
}

variable "certificate_arn" {
  description = "ARN of the ACM certificate (same region) for the public ingest hostname. Operator-supplied."
  type        = string
}

variable "ingest_image_tag" {
  description = "Tag of the ingest-api image in ECR to deploy (immutable tags: use the git commit). Operator-supplied."
  type        = string
}

variable "compactor_image_tag" {
  description = "Tag of the compactor image in ECR to deploy (immutable tags: use the git commit). Operator-supplied."
  type        = string
}

variable "alert_email" {
  description = "E-mail address subscribed to the alerts topic, or null."
  type        = string
  default     = null
}

variable "vpc_cidr" {
  description = "IPv4 CIDR block of the VPC."
  type        = string
}

variable "availability_zones" {
  description = "Availability zones used (3 needed by Redshift Serverless)."
  type        = list(string)
}

variable "single_nat_gateway" {
  description = "One shared NAT gateway (true) or one per availability zone (false)."
  type        = bool
}

variable "log_retention_days" {
  description = "Retention in days of every CloudWatch log group (flow logs, containers, metrics, WAF, MWAA, Redshift)."
  type        = number
}

variable "stream_mode" {
  description = "Kinesis capacity mode: ON_DEMAND or PROVISIONED."
  type        = string
}

variable "stream_shard_count" {
  description = "Kinesis shard count, used only with PROVISIONED."
  type        = number
  default     = 1
}

# --- Retention policy: one setting per tier (docs/operations.md, "Retention") ---

variable "stream_retention_hours" {
  description = "Retention of the stream tier: hours records stay readable in the Kinesis stream (its retention_period)."
  type        = number
}

variable "lake_retention_days" {
  description = "Retention of the lake tier: the maintenance DAG removes the Delta table's event_date partitions older than today minus this many days (compactor retention), then vacuum deletes their files."
  type        = number

  validation {
    condition     = var.lake_retention_days >= 1 && var.lake_retention_days * 24 >= var.stream_retention_hours
    error_message = "lake_retention_days must be at least 1 and cover the stream retention (stream_retention_hours / 24): a replay from the stream must not write partitions that are already expired."
  }
}

variable "dead_letter_expiration_days" {
  description = "Retention of the dead-letter tier: days dead-letter records are kept in the lake bucket (S3 lifecycle rule on the dead-letter prefix)."
  type        = number

  validation {
    condition     = var.dead_letter_expiration_days >= 1 && var.dead_letter_expiration_days <= var.lake_retention_days
    error_message = "dead_letter_expiration_days must be at least 1 and at most lake_retention_days: dead letters hold raw payloads and must not outlive the positions."
  }
}

variable "warehouse_raw_retention_days" {
  description = "Retention of the warehouse's raw positions: the maintenance DAG deletes the courier.positions rows whose event_date is older than today minus this many days."
  type        = number

  validation {
    condition     = var.warehouse_raw_retention_days >= 1 && var.warehouse_raw_retention_days <= var.lake_retention_days
    error_message = "warehouse_raw_retention_days must be at least 1 and at most lake_retention_days (the warehouse is reloaded from the lake)."
  }
}

variable "gold_retention_days" {
  description = "Retention of the gold tables (courier_gold.courier_daily, courier_gold.positions_hourly): the maintenance DAG deletes their rows whose event_date is older than today minus this many days."
  type        = number

  validation {
    condition     = var.gold_retention_days >= var.warehouse_raw_retention_days
    error_message = "gold_retention_days must be at least warehouse_raw_retention_days: gold rows are computed from the raw positions of their date."
  }
}

variable "force_destroy_buckets" {
  description = "Allow terraform destroy to delete non-empty buckets and repositories (throw-away environments only)."
  type        = bool
  default     = false
}

variable "ecr_images_to_keep" {
  description = "Number of images each ECR repository keeps."
  type        = number
  default     = 30
}

variable "alb_deletion_protection" {
  description = "Deletion protection of the ingest load balancer."
  type        = bool
}

variable "enable_waf" {
  description = "Attach the WAF web ACL to the ingest load balancer."
  type        = bool
  default     = true
}

variable "ingest_cpu" {
  description = "CPU units of an ingest-api task."
  type        = number
}

variable "ingest_memory" {
  description = "Memory (MiB) of an ingest-api task."
  type        = number
}

variable "ingest_desired_count" {
  description = "Initial number of ingest-api tasks."
  type        = number
}

variable "ingest_min_capacity" {
  description = "Minimum number of ingest-api tasks."
  type        = number
}

variable "ingest_max_capacity" {
  description = "Maximum number of ingest-api tasks."
  type        = number
}

variable "position_store_node_type" {
  description = "ElastiCache node type of the shared position store, from scripts/capacity.py (position_store.node_type)."
  type        = string
}

variable "position_store_replicas" {
  description = "Replicas of the position store besides the primary, from scripts/capacity.py (0 in dev; 1 or more for failover across availability zones)."
  type        = number
}

variable "ingest_requests_per_target" {
  description = "ALBRequestCountPerTarget (requests per task per minute) the autoscaling keeps: half a task's measured capacity, from scripts/capacity.py."
  type        = number
}

variable "ingest_extra_environment" {
  description = "Extra non-secret environment variables of the ingest-api container (e.g. RUST_LOG)."
  type        = map(string)
  default     = {}
}

variable "compactor_cpu" {
  description = "CPU units of a compactor task."
  type        = number
}

variable "compactor_memory" {
  description = "Memory (MiB) of a compactor task."
  type        = number
}

variable "compactor_extra_environment" {
  description = "Extra non-secret environment variables of the compactor container (e.g. RUST_LOG)."
  type        = map(string)
  default     = {}
}

variable "redshift_base_capacity" {
  description = "Base RPUs of the Redshift Serverless workgroup."
  type        = number
}

variable "redshift_max_capacity" {
  description = "Maximum RPUs of the Redshift Serverless workgroup, or null."
  type        = number
  default     = null
}

variable "mwaa_environment_class" {
  description = "MWAA environment class."
  type        = string
}

variable "mwaa_min_workers" {
  description = "Minimum MWAA workers."
  type        = number
}

variable "mwaa_max_workers" {
  description = "Maximum MWAA workers."
  type        = number
}

variable "mwaa_webserver_access_cidr_blocks" {
  description = "CIDR blocks (VPN) allowed to reach the private Airflow web server."
  type        = list(string)
  default     = []
}

variable "iterator_age_threshold_ms" {
  description = "Kinesis iterator age alarm threshold in milliseconds."
  type        = number
}
