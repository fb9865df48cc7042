variable "name" {
  description = "Name prefix of the position store's resources, e.g. \"courier-prod\" (the replication group is <name>-positions)."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{0,29}$", var.name))
    error_message = "name must be 1-30 characters of lowercase letters, digits or '-', starting with a letter (the replication group id is <name>-positions, at most 40)."
  }
}

variable "vpc_id" {
  description = "VPC of the store."
  type        = string
}

variable "subnet_ids" {
  description = "Private subnets of the store's nodes, one per availability zone."
  type        = list(string)

  validation {
    condition     = length(var.subnet_ids) >= 1
    error_message = "subnet_ids needs at least one private subnet."
  }
}

variable "client_security_group_ids" {
  description = "Security groups allowed to reach the store on its port (the ingest-api tasks)."
  type        = list(string)
}

variable "engine" {
  description = "Cache engine: valkey or redis (Redis OSS)."
  type        = string
  default     = "valkey"

  validation {
    condition     = contains(["valkey", "redis"], var.engine)
    error_message = "engine must be valkey or redis."
  }
}

variable "engine_version" {
  description = "Engine version (Valkey 8.0, or Redis OSS 7.1); GEOSEARCH needs 6.2 or later."
  type        = string
  default     = "8.0"
}

variable "node_type" {
  description = "Node type, from scripts/capacity.py (position_store.node_type)."
  type        = string
  default     = "cache.t4g.small"

  validation {
    condition     = startswith(var.node_type, "cache.")
    error_message = "node_type must be an ElastiCache node type, e.g. cache.t4g.small."
  }
}

variable "replicas" {
  description = "Read replicas besides the primary (0 for dev; at least 1 for automatic failover across availability zones)."
  type        = number
  default     = 1

  validation {
    condition     = var.replicas >= 0 && var.replicas <= 5 && floor(var.replicas) == var.replicas
    error_message = "replicas must be a whole number from 0 to 5."
  }
}

variable "port" {
  description = "Port the store listens on."
  type        = number
  default     = 6379
}

variable "snapshot_retention_days" {
  description = "Days of daily snapshots kept (0: none; the store is a view of the stream and can be rebuilt from it)."
  type        = number
  default     = 1
}

variable "memory_alarm_percent" {
  description = "Alarm when DatabaseMemoryUsagePercentage exceeds this."
  type        = number
  default     = 80
}

variable "cpu_alarm_percent" {
  description = "Alarm when EngineCPUUtilization exceeds this."
  type        = number
  default     = 75
}

variable "alarm_actions" {
  description = "ARNs notified when an alarm fires or clears (the alerts SNS topic)."
  type        = list(string)
  default     = []
}

variable "log_retention_days" {
  description = "Retention of the engine and slow logs in CloudWatch, in days."
  type        = number
  default     = 365
}

variable "secret_recovery_window_days" {
  description = "Days a deleted auth-token secret can be restored (0: delete at once, for throw-away environments)."
  type        = number
  default     = 30
}

variable "kms_deletion_window_days" {
  description = "Waiting period in days before the store's KMS key is deleted after destroy."
  type        = number
  default     = 30
}

variable "tags" {
  description = "Tags added to every taggable resource of this module."
  type        = map(string)
  default     = {}
}
