output "cluster_arn" {
  description = "ARN of the ECS cluster (shared with the compactor's one-off tasks)."
  value       = aws_ecs_cluster.this.arn
}

output "cluster_name" {
  description = "Name of the ECS cluster."
  value       = aws_ecs_cluster.this.name
}

output "service_name" {
  description = "Name of the ingest-api ECS service."
  value       = aws_ecs_service.this.name
}

output "task_definition_arn" {
  description = "ARN (with revision) of the ingest-api task definition."
  value       = aws_ecs_task_definition.this.arn
}

output "alb_arn" {
  description = "ARN of the internet-facing load balancer."
  value       = aws_lb.this.arn
}

output "alb_arn_suffix" {
  description = "ARN suffix of the load balancer (the LoadBalancer dimension of its CloudWatch metrics)."
  value       = aws_lb.this.arn_suffix
}

output "alb_dns_name" {
  description = "DNS name of the load balancer; point the public ingest hostname (CNAME or alias) at it."
  value       = aws_lb.this.dns_name
}

output "alb_zone_id" {
  description = "Route 53 hosted zone ID of the load balancer, for alias records."
  value       = aws_lb.this.zone_id
}

output "target_group_arn_suffix" {
  description = "ARN suffix of the target group (the TargetGroup dimension of its CloudWatch metrics)."
  value       = aws_lb_target_group.this.arn_suffix
}

output "alb_security_group_id" {
  description = "ID of the load balancer's security group."
  value       = aws_security_group.alb.id
}

output "task_security_group_id" {
  description = "ID of the ingest-api tasks' security group."
  value       = aws_security_group.tasks.id
}

output "task_role_arn" {
  description = "ARN of the ingest-api task role (Kinesis writes only)."
  value       = aws_iam_role.task.arn
}

output "execution_role_arn" {
  description = "ARN of the ingest-api task execution role."
  value       = aws_iam_role.execution.arn
}

output "api_keys_secret_arn" {
  description = "ARN of the Secrets Manager secret holding the API keys (INGEST_API_KEYS); its value is put by the operator."
  value       = aws_secretsmanager_secret.api_keys.arn
}

output "dispatch_api_keys_secret_arn" {
  description = "ARN of the Secrets Manager secret holding the dispatch keys (INGEST_DISPATCH_API_KEYS); its value is put by the operator."
  value       = aws_secretsmanager_secret.dispatch_api_keys.arn
}

output "dispatch_api_keys_secret_name" {
  description = "Name of the Secrets Manager secret holding the dispatch keys."
  value       = aws_secretsmanager_secret.dispatch_api_keys.name
}

output "api_keys_secret_name" {
  description = "Name of the Secrets Manager secret holding the API keys."
  value       = aws_secretsmanager_secret.api_keys.name
}

output "log_group_name" {
  description = "Name of the CloudWatch log group of the ingest-api containers."
  value       = aws_cloudwatch_log_group.ingest.name
}

output "kms_key_arn" {
  description = "ARN of the KMS key encrypting the module's log groups and the API-keys secret."
  value       = aws_kms_key.ingest.arn
}

output "web_acl_arn" {
  description = "ARN of the WAF web ACL in front of the load balancer, or null when enable_waf is false."
  value       = var.enable_waf ? aws_wafv2_web_acl.this[0].arn : null
}
