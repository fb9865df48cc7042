variable "name" {
  description = "Name of the MWAA environment and prefix of the other resources, e.g. \"courier-dev\"."
  type        = string

  validation {
    condition     = can(regex("^[a-zA-Z][0-9a-zA-Z-]{1,79}$", var.name))
    error_message = "name must start with a letter and contain only letters, digits and hyphens (at most 80 characters)."
  }
}

variable "airflow_version" {
  description = "Apache Airflow version of the environment. Check `aws mwaa list-environments`/the MWAA release notes for newer supported versions before upgrading."
  type        = string
  default     = "3.0.6"

  validation {
    condition     = can(regex("^[0-9]+\\.[0-9]+\\.[0-9]+$", var.airflow_version))
    error_message = "airflow_version must look like MAJOR.MINOR.PATCH, e.g. 3.0.6."
  }
}

variable "environment_class" {
  description = "MWAA environment class (size of scheduler, web server and worker containers)."
  type        = string
  default     = "mw1.small"

  validation {
    condition     = contains(["mw1.micro", "mw1.small", "mw1.medium", "mw1.large", "mw1.xlarge", "mw1.2xlarge"], var.environment_class)
    error_message = "environment_class must be one of mw1.micro, mw1.small, mw1.medium, mw1.large, mw1.xlarge, mw1.2xlarge."
  }
}

variable "min_workers" {
  description = "Minimum number of Celery workers."
  type        = number
  default     = 1

  validation {
    condition     = var.min_workers >= 1
    error_message = "min_workers must be at least 1."
  }
}

variable "max_workers" {
  description = "Maximum number of Celery workers."
  type        = number
  default     = 2

  validation {
    condition     = var.max_workers >= 1 && var.max_workers <= 25
    error_message = "max_workers must be between 1 and 25."
  }
}

variable "log_level" {
  description = "Level of every MWAA log type (DAG processing, scheduler, task, web server, worker)."
  type        = string
  default     = "INFO"

  validation {
    condition     = contains(["CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG"], var.log_level)
    error_message = "log_level must be CRITICAL, ERROR, WARNING, INFO or DEBUG."
  }
}

variable "airflow_configuration_options" {
  description = "Airflow configuration overrides (\"section.key\" = \"value\"), merged over this module's defaults."
  type        = map(string)
  default     = {}
}

variable "retention" {
  description = "Retention policy in days, enforced daily by the courier_positions_maintenance DAG and set as `courier` settings: lake_days (Delta event_date partitions older than today - N are removed, then vacuumed), warehouse_raw_days (courier.positions rows), gold_days (courier_gold tables), dead_letter_days (the lake bucket's lifecycle rule expires them in AWS; the DAG only in local mode). See docs/operations.md, \"Retention\"."
  type = object({
    lake_days          = number
    dead_letter_days   = number
    warehouse_raw_days = number
    gold_days          = number
  })

  validation {
    condition     = alltrue([for d in values(var.retention) : d >= 1 && floor(d) == d])
    error_message = "every retention is a whole number of days, at least 1."
  }

  validation {
    condition     = var.retention.warehouse_raw_days <= var.retention.lake_days
    error_message = "retention.warehouse_raw_days must not exceed retention.lake_days: the lake is the source the warehouse is reloaded from."
  }

  validation {
    condition     = var.retention.gold_days >= var.retention.warehouse_raw_days
    error_message = "retention.gold_days must be at least retention.warehouse_raw_days: gold rows are computed from the raw positions of their date."
  }
}

variable "weekly_maintenance_window_start" {
  description = "Start of the weekly maintenance window, \"DDD:HH:MM\" in UTC."
  type        = string
  default     = "SUN:03:00"

  validation {
    condition     = can(regex("^(MON|TUE|WED|THU|FRI|SAT|SUN):([01][0-9]|2[0-3]):(00|30)$", var.weekly_maintenance_window_start))
    error_message = "weekly_maintenance_window_start must look like SUN:03:00 (minutes 00 or 30)."
  }
}

variable "vpc_id" {
  description = "ID of the VPC the environment runs in."
  type        = string
}

variable "private_subnet_ids" {
  description = "Private subnets; MWAA uses the first two (they must be in different availability zones)."
  type        = list(string)

  validation {
    condition     = length(var.private_subnet_ids) >= 2
    error_message = "private_subnet_ids must contain at least 2 subnets."
  }
}

variable "webserver_access_cidr_blocks" {
  description = "IPv4 CIDR blocks (VPN, bastion) allowed to reach the private Airflow web server on 443. Empty: only from inside the environment's security group."
  type        = list(string)
  default     = []
}

variable "dag_bucket_name" {
  description = "Name of the bucket created for DAGs (MWAA requires the \"airflow-\" prefix)."
  type        = string

  validation {
    condition     = can(regex("^airflow-[a-z0-9][a-z0-9-]{1,53}[a-z0-9]$", var.dag_bucket_name))
    error_message = "dag_bucket_name must start with \"airflow-\" and be a valid lowercase bucket name."
  }
}

variable "dag_s3_path" {
  description = "Key prefix of the DAG files in the DAG bucket."
  type        = string
  default     = "dags/"
}

variable "requirements_s3_path" {
  description = "Key of a requirements.txt in the DAG bucket, or null for none."
  type        = string
  default     = null
}

variable "requirements_s3_object_version" {
  description = "S3 object version of requirements_s3_path (MWAA installs that exact version), or null."
  type        = string
  default     = null
}

variable "logs_bucket_name" {
  description = "Bucket receiving the S3 server access logs of the DAG bucket."
  type        = string
}

variable "s3_access_logs_prefix" {
  description = "Key prefix (no trailing slash) for S3 server access logs in logs_bucket_name."
  type        = string
  default     = "s3-access"
}

variable "ecs_cluster_arn" {
  description = "ARN of the ECS cluster the compactor tasks are run on."
  type        = string
}

variable "compactor_task_definition_family" {
  description = "Task definition family of the compactor; the execution role may run only this family."
  type        = string
}

variable "compactor_task_role_arn" {
  description = "ARN of the compactor task role (the only task role the environment may pass)."
  type        = string
}

variable "compactor_execution_role_arn" {
  description = "ARN of the compactor execution role (the only execution role the environment may pass)."
  type        = string
}

variable "compactor_log_group_arn" {
  description = "ARN of the compactor log group; the environment may read it to show task logs in Airflow."
  type        = string
}

variable "redshift_workgroup_arn" {
  description = "ARN of the Redshift Serverless workgroup the DAGs load into through the Data API."
  type        = string
}

variable "redshift_security_group_id" {
  description = "Security group of the Redshift Serverless workgroup (egress on 5439 is allowed to it only)."
  type        = string
}

variable "alerts_topic_arn" {
  description = "ARN of the SNS topic DAGs may publish alerts to."
  type        = string
}

variable "alerts_topic_kms_key_arn" {
  description = "ARN of the KMS key encrypting the alerts topic."
  type        = string
}

variable "lake_bucket_arn" {
  description = "ARN of the lake bucket; DAGs may list and read the COPY manifests in it (e.g. to wait for one)."
  type        = string
}

variable "table_prefix" {
  description = "Key prefix (no trailing slash) of the Delta table in the lake bucket; DAGs may list and read its `_reports/` (the compactor's JSON reports) and `_delta_log/` (row counts per event_date), nothing else under it."
  type        = string

  validation {
    condition     = length(var.table_prefix) > 0 && !endswith(var.table_prefix, "/") && !startswith(var.table_prefix, "/")
    error_message = "table_prefix is a key prefix without leading or trailing slash."
  }
}

variable "manifest_prefix" {
  description = "Key prefix (no trailing slash) of the COPY manifests in the lake bucket."
  type        = string
}

variable "lake_kms_key_arn" {
  description = "ARN of the KMS key encrypting the lake bucket."
  type        = string
}

variable "noncurrent_version_expiration_days" {
  description = "Days after which noncurrent versions of DAG bucket objects are removed."
  type        = number
  default     = 90

  validation {
    condition     = var.noncurrent_version_expiration_days >= 1
    error_message = "noncurrent_version_expiration_days must be at least 1."
  }
}

variable "force_destroy" {
  description = "Allow terraform destroy to delete the DAG bucket when it is not empty."
  type        = bool
  default     = false
}

variable "kms_deletion_window_days" {
  description = "Waiting period in days before the MWAA KMS key is deleted after destroy."
  type        = number
  default     = 30

  validation {
    condition     = var.kms_deletion_window_days >= 7 && var.kms_deletion_window_days <= 30
    error_message = "kms_deletion_window_days must be between 7 and 30."
  }
}

variable "log_retention_days" {
  description = "Retention in days of the MWAA log groups (airflow-<name>-<DAGProcessing|Scheduler|Task|WebServer|Worker>)."
  type        = number
  default     = 365

  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.log_retention_days)
    error_message = "log_retention_days must be a retention period CloudWatch Logs accepts (1, 3, 5, 7, 14, 30, 60, 90, ... 3653)."
  }
}

variable "tags" {
  description = "Tags added to every taggable resource of this module."
  type        = map(string)
  default     = {}
}
