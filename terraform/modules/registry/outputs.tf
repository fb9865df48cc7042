output "repository_urls" {
  description = "Map of repository name to repository URL (registry/name, append \":<tag>\" or \"@<digest>\")."
  value       = { for name, repo in aws_ecr_repository.this : name => repo.repository_url }
}

output "repository_arns" {
  description = "Map of repository name to repository ARN."
  value       = { for name, repo in aws_ecr_repository.this : name => repo.arn }
}

output "kms_key_arn" {
  description = "ARN of the customer managed KMS key encrypting the repositories."
  value       = aws_kms_key.ecr.arn
}
