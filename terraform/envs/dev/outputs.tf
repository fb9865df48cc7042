output "alb_dns_name" {
  description = "DNS name of the ingest load balancer; point the public ingest hostname at it."
  value       = module.ingest.alb_dns_name
}

output "api_keys_secret_name" {
  description = "Secrets Manager secret to fill with the API keys (see terraform/README.md)."
  value       = module.ingest.api_keys_secret_name
}

output "dispatch_api_keys_secret_name" {
  description = "Secrets Manager secret to fill with the dispatch keys (tracking links, courier erasure; see modules/ingest/README.md)."
  value       = module.ingest.dispatch_api_keys_secret_name
}

output "ecr_repository_urls" {
  description = "ECR repository URLs to push the images to."
  value       = module.registry.repository_urls
}

output "stream_name" {
  description = "Kinesis stream name."
  value       = module.stream.stream_name
}

output "lake_bucket_name" {
  description = "Lake bucket name."
  value       = module.lake.lake_bucket_name
}

output "table_uri" {
  description = "s3:// URI of the Delta table."
  value       = module.lake.table_uri
}

output "manifest_uri" {
  description = "s3:// URI of the Redshift COPY manifests."
  value       = module.lake.manifest_uri
}

output "ecs_cluster_arn" {
  description = "ECS cluster ARN (ingest service and compactor tasks)."
  value       = module.ingest.cluster_arn
}

output "compactor_task_definition_family" {
  description = "Compactor task definition family."
  value       = module.compactor.task_definition_family
}

output "compactor_security_group_id" {
  description = "Security group for compactor tasks."
  value       = module.compactor.security_group_id
}

output "private_subnet_ids" {
  description = "Private subnet IDs (for compactor RunTask)."
  value       = module.network.private_subnet_ids
}

output "redshift_workgroup_endpoint" {
  description = "Private endpoint address of the Redshift Serverless workgroup."
  value       = module.warehouse.workgroup_endpoint
}

output "redshift_admin_secret_arn" {
  description = "AWS-managed secret with the Redshift admin credentials."
  value       = module.warehouse.admin_secret_arn
}

output "redshift_copy_role_arn" {
  description = "IAM role for COPY."
  value       = module.warehouse.copy_role_arn
}

output "mwaa_webserver_url" {
  description = "Private Airflow web server URL."
  value       = module.orchestration.webserver_url
}

output "mwaa_dag_bucket_name" {
  description = "Bucket to upload the DAGs to."
  value       = module.orchestration.dag_bucket_name
}

output "alerts_topic_arn" {
  description = "SNS alerts topic ARN."
  value       = module.monitoring.alerts_topic_arn
}

output "dashboard_name" {
  description = "CloudWatch dashboard name."
  value       = module.monitoring.dashboard_name
}
