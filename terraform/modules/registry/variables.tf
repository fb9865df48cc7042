variable "repository_names" {
  description = "Names of the ECR repositories to create, one per service image."
  type        = list(string)
  default     = ["ingest-api", "compactor"]

  validation {
    condition     = length(var.repository_names) > 0 && alltrue([for n in var.repository_names : can(regex("^[a-z0-9]+([._/-][a-z0-9]+)*$", n))])
    error_message = "repository_names must be non-empty lowercase ECR repository names."
  }
}

variable "images_to_keep" {
  description = "How many most recent images each repository keeps; older ones are expired by the lifecycle policy."
  type        = number
  default     = 30

  validation {
    condition     = var.images_to_keep >= 1
    error_message = "images_to_keep must be at least 1."
  }
}

variable "untagged_image_expiry_days" {
  description = "Days after which untagged images (e.g. superseded manifest lists) are expired."
  type        = number
  default     = 7

  validation {
    condition     = var.untagged_image_expiry_days >= 1
    error_message = "untagged_image_expiry_days must be at least 1."
  }
}

variable "kms_deletion_window_days" {
  description = "Waiting period in days before the ECR KMS key is deleted after destroy."
  type        = number
  default     = 30

  validation {
    condition     = var.kms_deletion_window_days >= 7 && var.kms_deletion_window_days <= 30
    error_message = "kms_deletion_window_days must be between 7 and 30."
  }
}

variable "force_delete" {
  description = "Allow terraform destroy to delete repositories that still contain images."
  type        = bool
  default     = false
}

variable "tags" {
  description = "Tags added to every taggable resource of this module."
  type        = map(string)
  default     = {}
}
