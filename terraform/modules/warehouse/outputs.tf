output "workgroup_name" {
  description = "Name of the Redshift Serverless workgroup."
  value       = aws_redshiftserverless_workgroup.this.workgroup_name
}

output "workgroup_arn" {
  description = "ARN of the Redshift Serverless workgroup (resource of the Data API and GetCredentials permissions)."
  value       = aws_redshiftserverless_workgroup.this.arn
}

output "workgroup_endpoint" {
  description = "Private DNS address of the workgroup endpoint."
  value       = aws_redshiftserverless_workgroup.this.endpoint[0].address
}

output "workgroup_port" {
  description = "Port of the workgroup endpoint."
  value       = aws_redshiftserverless_workgroup.this.port
}

output "namespace_name" {
  description = "Name of the Redshift Serverless namespace."
  value       = aws_redshiftserverless_namespace.this.namespace_name
}

output "namespace_arn" {
  description = "ARN of the Redshift Serverless namespace."
  value       = aws_redshiftserverless_namespace.this.arn
}

output "database_name" {
  description = "Name of the database in the namespace."
  value       = aws_redshiftserverless_namespace.this.db_name
}

output "copy_role_arn" {
  description = "ARN of the IAM role COPY uses (IAM_ROLE '<arn>' or IAM_ROLE default): read-only on the lake bucket prefixes."
  value       = aws_iam_role.copy.arn
}

output "admin_secret_arn" {
  description = "ARN of the AWS-managed Secrets Manager secret holding the admin credentials."
  value       = aws_redshiftserverless_namespace.this.admin_password_secret_arn
}

output "security_group_id" {
  description = "ID of the workgroup's security group."
  value       = aws_security_group.warehouse.id
}

output "kms_key_arn" {
  description = "ARN of the KMS key encrypting the namespace and the admin secret."
  value       = aws_kms_key.warehouse.arn
}
