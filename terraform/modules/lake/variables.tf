variable "bucket_name_prefix" {
  description = "Globally unique prefix for the bucket names; the module creates \"<prefix>-lake\" and \"<prefix>-access-logs\"."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9-]{1,48}[a-z0-9]$", var.bucket_name_prefix))
    error_message = "bucket_name_prefix must be 3-50 lowercase letters, digits or hyphens, not starting or ending with a hyphen."
  }
}

variable "table_prefix" {
  description = "Key prefix (no leading or trailing slash) of the Delta table of courier positions inside the lake bucket."
  type        = string
  default     = "tables/positions"

  validation {
    condition     = can(regex("^[a-zA-Z0-9_=.-]+(/[a-zA-Z0-9_=.-]+)*$", var.table_prefix))
    error_message = "table_prefix must be a key prefix without leading or trailing slash."
  }
}

variable "dead_letter_prefix" {
  description = "Key prefix (no leading or trailing slash) of records the compactor could not decode or validate."
  type        = string
  default     = "dead-letter"

  validation {
    condition     = can(regex("^[a-zA-Z0-9_=.-]+(/[a-zA-Z0-9_=.-]+)*$", var.dead_letter_prefix))
    error_message = "dead_letter_prefix must be a key prefix without leading or trailing slash."
  }
}

variable "manifest_prefix" {
  description = "Key prefix (no leading or trailing slash) of the Redshift COPY manifests written by the compactor."
  type        = string
  default     = "manifests"

  validation {
    condition     = can(regex("^[a-zA-Z0-9_=.-]+(/[a-zA-Z0-9_=.-]+)*$", var.manifest_prefix))
    error_message = "manifest_prefix must be a key prefix without leading or trailing slash."
  }
}

variable "alb_logs_prefix" {
  description = "Key prefix (no leading or trailing slash) in the access-logs bucket under which the load balancer writes its access logs."
  type        = string
  default     = "alb"

  validation {
    condition     = can(regex("^[a-zA-Z0-9_=.-]+(/[a-zA-Z0-9_=.-]+)*$", var.alb_logs_prefix))
    error_message = "alb_logs_prefix must be a key prefix without leading or trailing slash."
  }
}

variable "elb_legacy_log_delivery" {
  description = "Also allow the regional Elastic Load Balancing account to write ALB access logs (needed in regions opened before August 2022; set false in newer regions, which only use the log-delivery service principal)."
  type        = bool
  default     = true
}

variable "noncurrent_version_expiration_days" {
  description = "Days after which noncurrent object versions (overwritten or deleted, e.g. by Delta VACUUM) are removed for good."
  type        = number
  default     = 30

  validation {
    condition     = var.noncurrent_version_expiration_days >= 1
    error_message = "noncurrent_version_expiration_days must be at least 1."
  }
}

variable "abort_incomplete_multipart_days" {
  description = "Days after which incomplete multipart uploads are aborted."
  type        = number
  default     = 7

  validation {
    condition     = var.abort_incomplete_multipart_days >= 1
    error_message = "abort_incomplete_multipart_days must be at least 1."
  }
}

variable "dead_letter_expiration_days" {
  description = "Days after which dead-letter records expire (the dead-letter tier of the retention policy; lifecycle rule expire-dead-letter on dead_letter_prefix)."
  type        = number
  default     = 30

  validation {
    condition     = var.dead_letter_expiration_days >= 1
    error_message = "dead_letter_expiration_days must be at least 1."
  }
}

variable "dead_letter_noncurrent_days" {
  description = "Days after which the noncurrent versions of expired or overwritten dead-letter records are removed for good (the bucket is versioned)."
  type        = number
  default     = 1

  validation {
    condition     = var.dead_letter_noncurrent_days >= 1
    error_message = "dead_letter_noncurrent_days must be at least 1."
  }
}

variable "manifest_expiration_days" {
  description = "Days after which Redshift COPY manifests expire (they are useless once loaded)."
  type        = number
  default     = 30

  validation {
    condition     = var.manifest_expiration_days >= 1
    error_message = "manifest_expiration_days must be at least 1."
  }
}

variable "access_logs_expiration_days" {
  description = "Days after which S3 server access logs and load balancer access logs expire."
  type        = number
  default     = 365

  validation {
    condition     = var.access_logs_expiration_days >= 1
    error_message = "access_logs_expiration_days must be at least 1."
  }
}

variable "s3_access_logging" {
  description = "Server access logging of the lake bucket into the logs bucket. Always true in the environments; false only where the API cannot take it (tests/infra/moto_apply: moto_server's PutBucketLogging never completes)."
  type        = bool
  default     = true
}

variable "tls_only_policy" {
  description = "The lake bucket policy that denies requests without TLS 1.2+. Always true in the environments; false only for tests/infra/moto_apply (moto_server applies a Deny statement without evaluating its condition, so it would deny every request)."
  type        = bool
  default     = true
}

variable "force_destroy" {
  description = "Allow terraform destroy to delete non-empty buckets. Keep false outside throw-away environments."
  type        = bool
  default     = false
}

variable "kms_deletion_window_days" {
  description = "Waiting period in days before the lake KMS key is deleted after destroy."
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
