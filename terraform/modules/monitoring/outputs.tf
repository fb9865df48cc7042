output "alerts_topic_arn" {
  description = "ARN of the SNS alerts topic."
  value       = aws_sns_topic.alerts.arn
}

output "alerts_topic_kms_key_arn" {
  description = "ARN of the KMS key encrypting the alerts topic (publishers need kms:GenerateDataKey* and kms:Decrypt on it)."
  value       = aws_kms_key.alerts.arn
}

output "compactor_failure_rule_arn" {
  description = "ARN of the EventBridge rule that turns failed compactor tasks into alerts."
  value       = aws_cloudwatch_event_rule.compactor_failed.arn
}

output "dashboard_name" {
  description = "Name of the CloudWatch dashboard."
  value       = aws_cloudwatch_dashboard.this.dashboard_name
}

output "alarm_arns" {
  description = "Map of alarm purpose to CloudWatch alarm ARN."
  value = {
    iterator_age         = aws_cloudwatch_metric_alarm.iterator_age.arn
    write_throttled      = aws_cloudwatch_metric_alarm.write_throttled.arn
    elb_5xx              = aws_cloudwatch_metric_alarm.elb_5xx.arn
    target_5xx           = aws_cloudwatch_metric_alarm.target_5xx.arn
    target_response_time = aws_cloudwatch_metric_alarm.target_response_time.arn
    ecs_cpu              = aws_cloudwatch_metric_alarm.ecs_cpu.arn
    ecs_memory           = aws_cloudwatch_metric_alarm.ecs_memory.arn
  }
}
