output "lake_bucket_name" {
  description = "Name of the lake bucket (Delta table, dead-letter records and COPY manifests, under separate prefixes)."
  value       = aws_s3_bucket.lake.id
}

output "lake_bucket_arn" {
  description = "ARN of the lake bucket."
  value       = aws_s3_bucket.lake.arn
}

output "logs_bucket_name" {
  description = "Name of the access-logs bucket (S3 server access logs and load balancer access logs)."
  value       = aws_s3_bucket.logs.id

  # Log producers (ALB, other buckets) check their write access on creation.
  depends_on = [aws_s3_bucket_policy.logs]
}

output "logs_bucket_arn" {
  description = "ARN of the access-logs bucket."
  value       = aws_s3_bucket.logs.arn
}

output "kms_key_arn" {
  description = "ARN of the customer managed KMS key encrypting the lake bucket."
  value       = aws_kms_key.lake.arn
}

output "table_prefix" {
  description = "Key prefix of the Delta table (no trailing slash)."
  value       = var.table_prefix
}

output "dead_letter_prefix" {
  description = "Key prefix of the dead-letter records (no trailing slash)."
  value       = var.dead_letter_prefix
}

output "manifest_prefix" {
  description = "Key prefix of the Redshift COPY manifests (no trailing slash)."
  value       = var.manifest_prefix
}

output "table_uri" {
  description = "s3:// URI of the Delta table."
  value       = "s3://${aws_s3_bucket.lake.id}/${var.table_prefix}"
}

output "dead_letter_uri" {
  description = "s3:// URI under which dead-letter records are written."
  value       = "s3://${aws_s3_bucket.lake.id}/${var.dead_letter_prefix}"
}

output "manifest_uri" {
  description = "s3:// URI under which Redshift COPY manifests are written."
  value       = "s3://${aws_s3_bucket.lake.id}/${var.manifest_prefix}"
}

output "alb_logs_prefix" {
  description = "Key prefix in the access-logs bucket reserved for load balancer access logs."
  value       = var.alb_logs_prefix
}

output "s3_access_logs_prefix" {
  description = "Key prefix in the access-logs bucket under which S3 server access logs land (one sub-prefix per source bucket)."
  value       = local.s3_access_logs_prefix
}

output "dead_letter_lifecycle" {
  description = "The lifecycle rule expiring dead letters, as applied: its key prefix, the days after which current versions expire and the days noncurrent versions are kept."
  value = one([
    for r in aws_s3_bucket_lifecycle_configuration.lake.rule : {
      prefix          = one(r.filter).prefix
      expiration_days = one(r.expiration).days
      noncurrent_days = one(r.noncurrent_version_expiration).noncurrent_days
    } if r.id == "expire-dead-letter"
  ])
}
