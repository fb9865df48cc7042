output "primary_endpoint_address" {
  description = "Host name of the primary (writes and reads), TLS only."
  value       = aws_elasticache_replication_group.this.primary_endpoint_address
}

output "store_port" {
  description = "Port of the store."
  value       = var.port
}

output "store_url" {
  description = "URL for ingest-api's INGEST_REDIS_URL: rediss:// (TLS) to the primary; the auth token comes from auth_token_secret_arn."
  value       = "rediss://${aws_elasticache_replication_group.this.primary_endpoint_address}:${var.port}"
}

output "auth_token_secret_arn" {
  description = "ARN of the Secrets Manager secret holding the AUTH token (INGEST_REDIS_PASSWORD)."
  value       = aws_secretsmanager_secret.auth_token.arn
}

output "kms_key_arn" {
  description = "ARN of the KMS key encrypting the store at rest and its secret (readers of the secret need kms:Decrypt)."
  value       = aws_kms_key.store.arn
}

output "security_group_id" {
  description = "ID of the store's security group."
  value       = aws_security_group.store.id
}

output "replication_group_id" {
  description = "ID of the ElastiCache replication group."
  value       = aws_elasticache_replication_group.this.id
}
