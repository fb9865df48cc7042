variable "name" {
  description = "Name of the Redshift Serverless namespace and workgroup, and prefix of the other resources, e.g. \"courier-dev\"."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{2,63}$", var.name))
    error_message = "name must be 3-64 lowercase letters, digits or hyphens, starting with a letter."
  }
}

variable "vpc_id" {
  description = "ID of the VPC the workgroup lives in."
  type        = string
}

variable "subnet_ids" {
  description = "Private subnets of the workgroup; Redshift Serverless needs at least 3, in 3 availability zones."
  type        = list(string)

  validation {
    condition     = length(var.subnet_ids) >= 3
    error_message = "subnet_ids must contain at least 3 subnets (Redshift Serverless requirement)."
  }
}

variable "s3_prefix_list_id" {
  description = "Prefix list ID of the S3 gateway endpoint: with enhanced VPC routing, COPY reads S3 through the VPC."
  type        = string
}

variable "allowed_security_group_ids" {
  description = "Security groups allowed to connect to the workgroup on 5439, keyed by a static label (e.g. { mwaa = \"sg-...\" })."
  type        = map(string)
  default     = {}
}

variable "database_name" {
  description = "Name of the database created in the namespace."
  type        = string
  default     = "courier"

  validation {
    condition     = can(regex("^[a-z_][a-z0-9_]{0,62}$", var.database_name))
    error_message = "database_name must be 1-63 lowercase letters, digits or underscores, not starting with a digit."
  }
}

variable "admin_username" {
  description = "Admin user name. Its password is generated and kept by AWS in Secrets Manager (manage_admin_password); none is ever in code or state."
  type        = string
  default     = "courier_admin"

  validation {
    condition     = can(regex("^[a-z][a-z0-9_]{0,126}$", var.admin_username)) && !contains(["admin", "rdsadmin", "root"], var.admin_username)
    error_message = "admin_username must start with a letter, use lowercase letters, digits or underscores, and not be a reserved name."
  }
}

variable "base_capacity" {
  description = "Base Redshift Processing Units of the workgroup (multiples of 8, from 8 to 1024)."
  type        = number
  default     = 8

  validation {
    condition     = var.base_capacity >= 8 && var.base_capacity <= 1024 && var.base_capacity % 8 == 0
    error_message = "base_capacity must be a multiple of 8 between 8 and 1024."
  }
}

variable "max_capacity" {
  description = "Upper bound in RPUs the workgroup may scale to, or null for the AWS default."
  type        = number
  default     = null

  validation {
    condition     = var.max_capacity == null ? true : (var.max_capacity >= 8 && var.max_capacity <= 5632 && var.max_capacity % 8 == 0)
    error_message = "max_capacity must be null or a multiple of 8 between 8 and 5632."
  }
}

variable "lake_bucket_arn" {
  description = "ARN of the lake bucket; the COPY role may read only from it."
  type        = string
}

variable "copy_read_prefixes" {
  description = "Key prefixes (no trailing slash) of the lake bucket the COPY role may list and read: the Delta table's Parquet files and the manifests."
  type        = list(string)

  validation {
    condition     = length(var.copy_read_prefixes) > 0 && alltrue([for p in var.copy_read_prefixes : p != "" && !endswith(p, "/") && !startswith(p, "/")])
    error_message = "copy_read_prefixes must be non-empty prefixes without leading or trailing slash."
  }
}

variable "lake_kms_key_arn" {
  description = "ARN of the KMS key encrypting the lake bucket; the COPY role gets kms:Decrypt on it."
  type        = string
}

variable "log_exports" {
  description = "Redshift logs exported to CloudWatch Logs."
  type        = list(string)
  default     = ["connectionlog", "userlog", "useractivitylog"]

  validation {
    condition     = alltrue([for l in var.log_exports : contains(["connectionlog", "userlog", "useractivitylog"], l)])
    error_message = "log_exports may only contain connectionlog, userlog and useractivitylog."
  }
}

variable "kms_deletion_window_days" {
  description = "Waiting period in days before the warehouse KMS key is deleted after destroy."
  type        = number
  default     = 30

  validation {
    condition     = var.kms_deletion_window_days >= 7 && var.kms_deletion_window_days <= 30
    error_message = "kms_deletion_window_days must be between 7 and 30."
  }
}

variable "log_retention_days" {
  description = "Retention in days of the Redshift Serverless log groups (/aws/redshift/serverless/<log type>)."
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
