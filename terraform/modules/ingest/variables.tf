variable "name" {
  description = "Name prefix for every resource of this module (also the ECS cluster name), e.g. \"courier-dev\"."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,19}$", var.name))
    error_message = "name must be 2-20 lowercase letters, digits or hyphens, starting with a letter (load balancer names are limited to 32 characters)."
  }
}

variable "vpc_id" {
  description = "ID of the VPC."
  type        = string
}

variable "vpc_cidr_block" {
  description = "CIDR block of the VPC; tasks may reach the interface VPC endpoints inside it on 443."
  type        = string
}

variable "public_subnet_ids" {
  description = "Public subnets for the internet-facing load balancer (at least 2 availability zones)."
  type        = list(string)

  validation {
    condition     = length(var.public_subnet_ids) >= 2
    error_message = "public_subnet_ids must contain at least 2 subnets."
  }
}

variable "private_subnet_ids" {
  description = "Private subnets for the Fargate tasks."
  type        = list(string)

  validation {
    condition     = length(var.private_subnet_ids) >= 1
    error_message = "private_subnet_ids must contain at least 1 subnet."
  }
}

variable "s3_prefix_list_id" {
  description = "Prefix list ID of the S3 gateway endpoint (ECR image layers are downloaded from S3)."
  type        = string
}

variable "certificate_arn" {
  description = "ARN of the ACM certificate served by the HTTPS listener (issued for the public ingest hostname)."
  type        = string

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:acm:[a-z0-9-]+:[0-9]{12}:certificate/.+$", var.certificate_arn))
    error_message = "certificate_arn must be an ACM certificate ARN."
  }
}

variable "ssl_policy" {
  description = "TLS negotiation policy of the HTTPS listener; must allow only TLS 1.2 and newer."
  type        = string
  default     = "ELBSecurityPolicy-TLS13-1-2-2021-06"

  validation {
    condition = contains([
      "ELBSecurityPolicy-TLS13-1-2-2021-06",
      "ELBSecurityPolicy-TLS13-1-2-Res-2021-06",
      "ELBSecurityPolicy-TLS13-1-2-Ext1-2021-06",
      "ELBSecurityPolicy-TLS13-1-2-Ext2-2021-06",
      "ELBSecurityPolicy-TLS13-1-3-2021-06",
      "ELBSecurityPolicy-TLS-1-2-2017-01",
      "ELBSecurityPolicy-TLS-1-2-Ext-2018-06",
      "ELBSecurityPolicy-FS-1-2-Res-2020-10",
    ], var.ssl_policy)
    error_message = "ssl_policy must be one of the ELB security policies that refuse TLS 1.0 and 1.1."
  }
}

variable "alb_ingress_cidr_blocks" {
  description = "IPv4 CIDR blocks allowed to reach the load balancer on 443 (the courier apps: the whole internet by default)."
  type        = list(string)
  default     = ["0.0.0.0/0"]
}

variable "http_redirect_ingress_cidr_blocks" {
  description = "IPv4 CIDR blocks allowed to reach the HTTP->HTTPS redirect listener on port 80. Empty by default: clients must use HTTPS from the start, so API keys never travel in clear text."
  type        = list(string)
  default     = []
}

variable "deletion_protection" {
  description = "Protect the load balancer against deletion (terraform destroy fails until this is false)."
  type        = bool
  default     = true
}

variable "access_logs_bucket_name" {
  description = "Name of the bucket receiving the load balancer access logs (must be SSE-S3 encrypted and allow ELB log delivery)."
  type        = string
}

variable "access_logs_prefix" {
  description = "Key prefix (no trailing slash) of the load balancer access logs in access_logs_bucket_name."
  type        = string
  default     = "alb"
}

variable "enable_waf" {
  description = "Attach an AWS WAF web ACL (AWS managed common, known-bad-inputs and anonymous-IP rules, per-IP rate limit) to the load balancer."
  type        = bool
  default     = true
}

variable "waf_rate_limit_per_ip" {
  description = "Requests a single client IP may send in any 5-minute window before the WAF blocks it (only with enable_waf)."
  type        = number
  default     = 20000

  validation {
    condition     = var.waf_rate_limit_per_ip >= 100
    error_message = "waf_rate_limit_per_ip must be at least 100 (AWS WAF minimum)."
  }
}

variable "container_image" {
  description = "Full image reference of the ingest-api, e.g. \"<account>.dkr.ecr.<region>.amazonaws.com/ingest-api:<tag>\" (tags are immutable)."
  type        = string
}

variable "ecr_repository_arn" {
  description = "ARN of the ECR repository holding container_image; the execution role may pull only from it."
  type        = string
}

variable "cpu" {
  description = "Fargate task CPU units (256 = 0.25 vCPU)."
  type        = number
  default     = 512

  validation {
    condition     = contains([256, 512, 1024, 2048, 4096, 8192, 16384], var.cpu)
    error_message = "cpu must be a Fargate CPU size: 256, 512, 1024, 2048, 4096, 8192 or 16384."
  }
}

variable "memory" {
  description = "Fargate task memory in MiB (must be a valid combination with cpu)."
  type        = number
  default     = 1024

  validation {
    condition     = var.memory >= 512 && var.memory <= 122880
    error_message = "memory must be between 512 and 122880 MiB."
  }
}

variable "cpu_architecture" {
  description = "CPU architecture of the container image."
  type        = string
  default     = "X86_64"

  validation {
    condition     = contains(["X86_64", "ARM64"], var.cpu_architecture)
    error_message = "cpu_architecture must be X86_64 or ARM64."
  }
}

variable "container_user" {
  description = "Non-root \"uid:gid\" the container runs as."
  type        = string
  default     = "10001:10001"

  validation {
    condition     = can(regex("^[1-9][0-9]*(:[1-9][0-9]*)?$", var.container_user))
    error_message = "container_user must be a numeric, non-zero uid or uid:gid (never root)."
  }
}

variable "extra_environment" {
  description = "Additional plain (non-secret) environment variables for the container, e.g. RUST_LOG. Cannot override the ones this module sets."
  type        = map(string)
  default     = {}
}

variable "desired_count" {
  description = "Number of tasks at creation time; afterwards autoscaling owns the count."
  type        = number
  default     = 2
}

variable "enable_autoscaling" {
  description = "Target-tracking autoscaling of the service (CPU and requests per target). Always true in the environments; false only where the API lacks it (tests/infra/moto_apply: moto has no ListTagsForResource for Application Auto Scaling)."
  type        = bool
  default     = true
}

variable "min_capacity" {
  description = "Lower bound of the service autoscaling."
  type        = number
  default     = 2

  validation {
    condition     = var.min_capacity >= 1
    error_message = "min_capacity must be at least 1."
  }
}

variable "max_capacity" {
  description = "Upper bound of the service autoscaling."
  type        = number
  default     = 6
}

variable "cpu_target_percent" {
  description = "Average service CPU utilisation (percent) the autoscaling keeps."
  type        = number
  default     = 60

  validation {
    condition     = var.cpu_target_percent > 0 && var.cpu_target_percent <= 100
    error_message = "cpu_target_percent must be in (0, 100]."
  }
}

variable "requests_per_target" {
  description = "ALB requests per target per minute (ALBRequestCountPerTarget) the autoscaling keeps: a share of one task's measured capacity (scripts/capacity.py prints it per environment)."
  type        = number
  default     = 3000

  validation {
    condition     = var.requests_per_target > 0
    error_message = "requests_per_target must be positive."
  }
}

variable "idle_timeout_seconds" {
  description = "Idle timeout of the load balancer's connections, in seconds; must be shorter than keep_alive_seconds."
  type        = number
  default     = 60

  validation {
    condition     = var.idle_timeout_seconds >= 1 && var.idle_timeout_seconds <= 4000
    error_message = "idle_timeout_seconds must be between 1 and 4000."
  }
}

variable "keep_alive_seconds" {
  description = "HTTP keep-alive of the service (INGEST_KEEP_ALIVE_SECS), in seconds; must be longer than idle_timeout_seconds so the load balancer closes idle connections first."
  type        = number
  default     = 75
}

variable "public_paths" {
  description = "ALB path patterns forwarded to the service; everything else gets a 404 from the load balancer. Public by default: the /v1 API (GET /v1/track takes the customer's tracking token in the X-Tracking-Token header, never in the path), /map (a static page with no data that asks for an API key before it reads anything), /track (the customer's tracking page; the token is in the URL fragment, which browsers never send) and /assets/* (the pages' script and Leaflet)."
  type        = list(string)
  default     = ["/v1/*", "/map", "/track", "/assets/*"]

  validation {
    condition     = length(var.public_paths) >= 1 && length(var.public_paths) <= 50 && alltrue([for p in var.public_paths : startswith(p, "/") && !contains(["/metrics", "/readyz", "/openapi.json", "/*"], p)])
    error_message = "public_paths must be 1-50 absolute path patterns, and never /metrics, /readyz, /openapi.json or /*."
  }
}

variable "metrics_collector_image" {
  description = "Image of the metrics collector sidecar (AWS Distro for OpenTelemetry collector) that scrapes /metrics and writes CloudWatch EMF."
  type        = string
  default     = "public.ecr.aws/aws-observability/aws-otel-collector:v0.43.3"
}

variable "metrics_namespace" {
  description = "CloudWatch namespace of the service's Prometheus metrics (dimension ServiceName)."
  type        = string
  default     = "Courier/IngestApi"
}

variable "metrics_scrape_interval_seconds" {
  description = "How often the sidecar scrapes /metrics, in seconds."
  type        = number
  default     = 60

  validation {
    condition     = var.metrics_scrape_interval_seconds >= 10
    error_message = "metrics_scrape_interval_seconds must be at least 10."
  }
}

variable "log_retention_days" {
  description = "Retention in days of the container and WAF log groups."
  type        = number
  default     = 365

  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.log_retention_days)
    error_message = "log_retention_days must be a retention period CloudWatch Logs accepts (1, 3, 5, 7, 14, 30, 60, 90, ... 3653)."
  }
}

variable "stream_name" {
  description = "Name of the Kinesis stream the API writes to (INGEST_STREAM_NAME)."
  type        = string
}

variable "stream_arn" {
  description = "ARN of the Kinesis stream; the task role may write only to it."
  type        = string
}

variable "stream_kms_key_arn" {
  description = "ARN of the KMS key encrypting the stream; the task role gets kms:GenerateDataKey on it."
  type        = string
}

variable "secret_recovery_window_days" {
  description = "Days Secrets Manager keeps the API-keys secret recoverable after deletion (0 deletes at once)."
  type        = number
  default     = 30

  validation {
    condition     = var.secret_recovery_window_days == 0 || (var.secret_recovery_window_days >= 7 && var.secret_recovery_window_days <= 30)
    error_message = "secret_recovery_window_days must be 0 or between 7 and 30."
  }
}

variable "kms_deletion_window_days" {
  description = "Waiting period in days before the module's KMS key is deleted after destroy."
  type        = number
  default     = 30

  validation {
    condition     = var.kms_deletion_window_days >= 7 && var.kms_deletion_window_days <= 30
    error_message = "kms_deletion_window_days must be between 7 and 30."
  }
}

variable "position_store" {
  description = "The shared position store (modules/position_store outputs: url, auth_token_secret_arn, kms_key_arn, security_group_id, port), or null for each task's embedded store."
  type = object({
    url                   = string
    auth_token_secret_arn = string
    kms_key_arn           = string
    security_group_id     = string
    port                  = number
  })
  default = null
}

variable "tags" {
  description = "Tags added to every taggable resource of this module."
  type        = map(string)
  default     = {}
}
