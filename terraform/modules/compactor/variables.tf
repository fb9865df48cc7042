variable "name" {
  description = "Name prefix for every resource of this module, e.g. \"courier-dev\"."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,30}$", var.name))
    error_message = "name must be 2-31 lowercase letters, digits or hyphens, starting with a letter."
  }
}

variable "vpc_id" {
  description = "ID of the VPC the compactor tasks run in."
  type        = string
}

variable "vpc_cidr_block" {
  description = "CIDR block of the VPC; tasks may reach the interface VPC endpoints inside it on 443."
  type        = string
}

variable "s3_prefix_list_id" {
  description = "Prefix list ID of the S3 gateway endpoint (lake bucket and ECR image layers)."
  type        = string
}

variable "container_image" {
  description = "Full image reference of the compactor, e.g. \"<account>.dkr.ecr.<region>.amazonaws.com/compactor:<tag>\"."
  type        = string
}

variable "ecr_repository_arn" {
  description = "ARN of the ECR repository holding container_image; the execution role may pull only from it."
  type        = string
}

variable "cpu" {
  description = "Fargate task CPU units (1024 = 1 vCPU)."
  type        = number
  default     = 1024

  validation {
    condition     = contains([256, 512, 1024, 2048, 4096, 8192, 16384], var.cpu)
    error_message = "cpu must be a Fargate CPU size: 256, 512, 1024, 2048, 4096, 8192 or 16384."
  }
}

variable "memory" {
  description = "Fargate task memory in MiB (must be a valid combination with cpu)."
  type        = number
  default     = 4096

  validation {
    condition     = var.memory >= 512 && var.memory <= 122880
    error_message = "memory must be between 512 and 122880 MiB."
  }
}

variable "ephemeral_storage_gib" {
  description = "Fargate ephemeral storage in GiB (scratch space mounted at /tmp; the root filesystem is read-only)."
  type        = number
  default     = 21

  validation {
    condition     = var.ephemeral_storage_gib >= 21 && var.ephemeral_storage_gib <= 200
    error_message = "ephemeral_storage_gib must be between 21 and 200."
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

variable "stream_name" {
  description = "Name of the Kinesis stream the compactor reads (COMPACTOR_STREAM_NAME)."
  type        = string
}

variable "stream_arn" {
  description = "ARN of the Kinesis stream; the task role may read only from it."
  type        = string
}

variable "stream_kms_key_arn" {
  description = "ARN of the KMS key encrypting the stream; the task role gets kms:Decrypt on it."
  type        = string
}

variable "lake_bucket_name" {
  description = "Name of the lake bucket."
  type        = string
}

variable "lake_bucket_arn" {
  description = "ARN of the lake bucket."
  type        = string
}

variable "lake_kms_key_arn" {
  description = "ARN of the KMS key encrypting the lake bucket."
  type        = string
}

variable "table_prefix" {
  description = "Key prefix (no trailing slash) of the Delta table in the lake bucket."
  type        = string
}

variable "dead_letter_prefix" {
  description = "Key prefix (no trailing slash) of dead-letter records in the lake bucket."
  type        = string
}

variable "manifest_prefix" {
  description = "Key prefix (no trailing slash) of the Redshift COPY manifests in the lake bucket."
  type        = string
}

variable "log_retention_days" {
  description = "Retention in days of the compactor log group."
  type        = number
  default     = 365

  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.log_retention_days)
    error_message = "log_retention_days must be a retention period CloudWatch Logs accepts (1, 3, 5, 7, 14, 30, 60, 90, ... 3653)."
  }
}

variable "kms_deletion_window_days" {
  description = "Waiting period in days before the compactor log KMS key is deleted after destroy."
  type        = number
  default     = 30

  validation {
    condition     = var.kms_deletion_window_days >= 7 && var.kms_deletion_window_days <= 30
    error_message = "kms_deletion_window_days must be between 7 and 30."
  }
}

variable "tags" {
  description = "Tags added to every taggable resource of this module."
  type        = map(string)
  default     = {}
}
