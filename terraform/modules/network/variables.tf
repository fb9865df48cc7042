variable "name" {
  description = "Name prefix for every resource of this module, e.g. \"courier-dev\"."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,30}$", var.name))
    error_message = "name must be 2-31 lowercase letters, digits or hyphens, starting with a letter."
  }
}

variable "vpc_cidr" {
  description = "IPv4 CIDR block of the VPC. Public subnets take /24s from the first /20, private subnets take the following /20s."
  type        = string
  default     = "10.40.0.0/16"

  validation {
    condition     = can(cidrnetmask(var.vpc_cidr)) && tonumber(split("/", var.vpc_cidr)[1]) <= 16
    error_message = "vpc_cidr must be a valid IPv4 CIDR block of size /16 or larger."
  }
}

variable "availability_zones" {
  description = "Availability zones to spread the subnets over (one public and one private subnet each). At least 2; Redshift Serverless needs 3."
  type        = list(string)

  validation {
    condition     = length(var.availability_zones) >= 2 && length(var.availability_zones) <= 15
    error_message = "availability_zones must list between 2 and 15 zones."
  }
}

variable "single_nat_gateway" {
  description = "true: one NAT gateway shared by every private subnet (cheaper, dev); false: one NAT gateway per availability zone (prod)."
  type        = bool
  default     = false
}

variable "interface_endpoint_services" {
  description = "AWS services reached through interface VPC endpoints from the private subnets (short service names, e.g. \"kinesis-streams\")."
  type        = list(string)
  default     = ["kinesis-streams", "ecr.api", "ecr.dkr", "logs", "secretsmanager", "sts"]
}

variable "flow_logs_retention_days" {
  description = "Retention in days of the VPC flow logs log group."
  type        = number
  default     = 365

  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.flow_logs_retention_days)
    error_message = "flow_logs_retention_days must be a retention period CloudWatch Logs accepts (1, 3, 5, 7, 14, 30, 60, 90, ... 3653)."
  }
}

variable "flow_logs_traffic_type" {
  description = "Traffic recorded by the VPC flow logs."
  type        = string
  default     = "ALL"

  validation {
    condition     = contains(["ACCEPT", "REJECT", "ALL"], var.flow_logs_traffic_type)
    error_message = "flow_logs_traffic_type must be ACCEPT, REJECT or ALL."
  }
}

variable "kms_deletion_window_days" {
  description = "Waiting period in days before the flow-logs KMS key is deleted after destroy."
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
