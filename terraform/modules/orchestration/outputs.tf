output "environment_name" {
  description = "Name of the MWAA environment."
  value       = aws_mwaa_environment.this.name
}

output "environment_arn" {
  description = "ARN of the MWAA environment."
  value       = aws_mwaa_environment.this.arn
}

output "webserver_url" {
  description = "URL of the (private) Airflow web server."
  value       = aws_mwaa_environment.this.webserver_url
}

output "execution_role_arn" {
  description = "ARN of the environment's execution role (identity of the DAGs)."
  value       = aws_iam_role.execution.arn
}

output "dag_bucket_name" {
  description = "Name of the DAG bucket; deploy DAGs under dag_s3_path."
  value       = aws_s3_bucket.dags.id
}

output "dag_bucket_arn" {
  description = "ARN of the DAG bucket."
  value       = aws_s3_bucket.dags.arn
}

output "security_group_id" {
  description = "ID of the environment's security group (allowed into the warehouse on 5439)."
  value       = aws_security_group.mwaa.id
}

output "kms_key_arn" {
  description = "ARN of the KMS key encrypting the environment, its logs and the DAG bucket."
  value       = aws_kms_key.mwaa.arn
}

output "retention_settings" {
  description = "The retention policy as the DAGs read it: the `courier.<tier>_retention_days` Airflow configuration options set on the environment."
  value       = local.retention_options
}
