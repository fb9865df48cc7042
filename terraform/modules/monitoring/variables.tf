variable "name" {
  description = "Name prefix of the topic, alarms, rule and dashboard, e.g. \"courier-dev\"."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,30}$", var.name))
    error_message = "name must be 2-31 lowercase letters, digits or hyphens, starting with a letter."
  }
}

variable "alert_email" {
  description = "E-mail address subscribed to the alerts topic (the recipient must confirm the subscription), or null for none."
  type        = string
  default     = null

  validation {
    condition     = var.alert_email == null ? true : can(regex("^[^@\\s]+@[^@\\s]+\\.[^@\\s]+$", var.alert_email))
    error_message = "alert_email must be null or an e-mail address."
  }
}

variable "stream_name" {
  description = "Name of the Kinesis stream to watch."
  type        = string
}

variable "alb_arn_suffix" {
  description = "ARN suffix of the ingest load balancer (LoadBalancer metric dimension)."
  type        = string
}

variable "target_group_arn_suffix" {
  description = "ARN suffix of the ingest target group (TargetGroup metric dimension)."
  type        = string
}

variable "ecs_cluster_name" {
  description = "Name of the ECS cluster running the ingest service and the compactor tasks."
  type        = string
}

variable "ecs_cluster_arn" {
  description = "ARN of the ECS cluster (the compactor failure rule matches tasks of this cluster only)."
  type        = string
}

variable "ingest_service_name" {
  description = "Name of the ingest-api ECS service."
  type        = string
}

variable "compactor_task_definition_family" {
  description = "Task definition family of the compactor; stopped tasks of this family with an exit code other than 0, 3 or 4 (retried by the DAG) raise an alert."
  type        = string
}

variable "compactor_log_group_name" {
  description = "Log group of the compactor tasks; its run reports (stdout JSON) feed the lake-freshness metric."
  type        = string
}

variable "mwaa_environment_name" {
  description = "Name of the MWAA environment whose scheduler heartbeat is watched."
  type        = string
}

variable "lake_metrics_namespace" {
  description = "CloudWatch namespace of the metrics taken from the compactor's run reports."
  type        = string
  default     = "Courier/Lake"
}

variable "lake_freshness_period_seconds" {
  description = "Period of the lake-freshness alarm; at least the compactor schedule interval."
  type        = number
  default     = 3600

  validation {
    condition     = contains([300, 900, 3600, 7200, 21600], var.lake_freshness_period_seconds)
    error_message = "lake_freshness_period_seconds must be 300, 900, 3600, 7200 or 21600."
  }
}

variable "lake_freshness_periods" {
  description = "Consecutive periods without a successful compactor run before the lake-freshness alarm fires."
  type        = number
  default     = 2

  validation {
    condition     = var.lake_freshness_periods >= 1
    error_message = "lake_freshness_periods must be at least 1."
  }
}

variable "alarm_period_seconds" {
  description = "Period of every alarm's metric, in seconds."
  type        = number
  default     = 300

  validation {
    condition     = contains([60, 300, 900, 3600], var.alarm_period_seconds)
    error_message = "alarm_period_seconds must be 60, 300, 900 or 3600."
  }
}

variable "alarm_evaluation_periods" {
  description = "Number of consecutive breaching periods before an alarm fires."
  type        = number
  default     = 2

  validation {
    condition     = var.alarm_evaluation_periods >= 1
    error_message = "alarm_evaluation_periods must be at least 1."
  }
}

variable "iterator_age_threshold_ms" {
  description = "Alarm when GetRecords.IteratorAgeMilliseconds (age of the oldest record read) exceeds this. Keep it well below the stream retention and above the compactor schedule interval."
  type        = number
  default     = 7200000
}

variable "write_throttle_threshold" {
  description = "Alarm when the stream rejects more than this many writes (WriteProvisionedThroughputExceeded, sum per period)."
  type        = number
  default     = 0
}

variable "elb_5xx_threshold" {
  description = "Alarm when the load balancer itself answers more than this many 5xx per period (HTTPCode_ELB_5XX_Count)."
  type        = number
  default     = 10
}

variable "target_5xx_threshold" {
  description = "Alarm when the ingest tasks answer more than this many 5xx per period (HTTPCode_Target_5XX_Count)."
  type        = number
  default     = 10
}

variable "target_response_time_p99_seconds" {
  description = "Alarm when the p99 TargetResponseTime exceeds this many seconds."
  type        = number
  default     = 1
}

variable "ecs_cpu_threshold_percent" {
  description = "Alarm when the ingest service's average CPUUtilization exceeds this percentage."
  type        = number
  default     = 85
}

variable "ecs_memory_threshold_percent" {
  description = "Alarm when the ingest service's average MemoryUtilization exceeds this percentage."
  type        = number
  default     = 85
}

variable "kms_deletion_window_days" {
  description = "Waiting period in days before the alerts KMS key is deleted after destroy."
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
