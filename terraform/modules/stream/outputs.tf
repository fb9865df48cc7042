output "stream_name" {
  description = "Name of the Kinesis data stream."
  value       = aws_kinesis_stream.this.name
}

output "stream_arn" {
  description = "ARN of the Kinesis data stream."
  value       = aws_kinesis_stream.this.arn
}

output "stream_mode" {
  description = "Capacity mode of the stream (ON_DEMAND or PROVISIONED)."
  value       = var.stream_mode
}

output "kms_key_arn" {
  description = "ARN of the customer managed KMS key encrypting the stream."
  value       = aws_kms_key.stream.arn
}

output "retention_hours" {
  description = "Hours records stay readable in the stream (the stream tier of the retention policy, as set on the stream)."
  value       = aws_kinesis_stream.this.retention_period
}
