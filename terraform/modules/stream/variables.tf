variable "name" {
  description = "Name of the Kinesis data stream carrying courier positions, e.g. \"courier-dev-positions\"."
  type        = string

  validation {
    condition     = can(regex("^[a-zA-Z0-9_.-]{1,128}$", var.name))
    error_message = "name must be 1-128 characters of letters, digits, '_', '.' or '-'."
  }
}

variable "stream_mode" {
  description = "Capacity mode of the stream: ON_DEMAND (AWS scales shards) or PROVISIONED (shard_count shards)."
  type        = string
  default     = "ON_DEMAND"

  validation {
    condition     = contains(["ON_DEMAND", "PROVISIONED"], var.stream_mode)
    error_message = "stream_mode must be ON_DEMAND or PROVISIONED."
  }
}

variable "shard_count" {
  description = "Number of shards; used only when stream_mode is PROVISIONED (each shard takes 1 MB/s or 1000 records/s in)."
  type        = number
  default     = 1

  validation {
    condition     = var.shard_count >= 1 && floor(var.shard_count) == var.shard_count
    error_message = "shard_count must be a positive whole number."
  }
}

variable "retention_hours" {
  description = "How long records stay readable in the stream, in hours (24 to 8760): the stream tier of the retention policy (docs/operations.md, \"Retention\"). Must exceed the longest compactor outage you want to survive."
  type        = number
  default     = 24

  validation {
    condition     = var.retention_hours >= 24 && var.retention_hours <= 8760
    error_message = "retention_hours must be between 24 and 8760."
  }
}

variable "shard_level_metrics" {
  description = "Enhanced shard-level CloudWatch metrics to enable."
  type        = list(string)
  default = [
    "IncomingBytes",
    "IncomingRecords",
    "OutgoingBytes",
    "OutgoingRecords",
    "WriteProvisionedThroughputExceeded",
    "ReadProvisionedThroughputExceeded",
    "IteratorAgeMilliseconds",
  ]
}

variable "kms_deletion_window_days" {
  description = "Waiting period in days before the stream KMS key is deleted after destroy."
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
