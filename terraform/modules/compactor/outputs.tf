output "task_definition_arn" {
  description = "ARN (with revision) of the compactor task definition."
  value       = aws_ecs_task_definition.this.arn
}

output "task_definition_family" {
  description = "Family of the compactor task definition (RunTask with the family runs the latest revision)."
  value       = aws_ecs_task_definition.this.family
}

output "container_name" {
  description = "Name of the compactor container (for RunTask overrides and log stream names)."
  value       = local.container_name
}

output "task_role_arn" {
  description = "ARN of the compactor task role."
  value       = aws_iam_role.task.arn
}

output "execution_role_arn" {
  description = "ARN of the compactor task execution role."
  value       = aws_iam_role.execution.arn
}

output "security_group_id" {
  description = "ID of the security group to attach to compactor tasks (no ingress, HTTPS egress to AWS APIs)."
  value       = aws_security_group.tasks.id
}

output "log_group_name" {
  description = "Name of the compactor CloudWatch log group."
  value       = aws_cloudwatch_log_group.compactor.name
}

output "log_group_arn" {
  description = "ARN of the compactor CloudWatch log group."
  value       = aws_cloudwatch_log_group.compactor.arn
}
