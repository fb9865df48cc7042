data "aws_region" "current" {}

data "aws_caller_identity" "current" {}

data "aws_partition" "current" {}

locals {
  region     = data.aws_region.current.id
  account_id = data.aws_caller_identity.current.account_id
  partition  = data.aws_partition.current.partition

  compactor_task_definition_prefix = "arn:${local.partition}:ecs:${local.region}:${local.account_id}:task-definition/${var.compactor_task_definition_family}:"

  alarm_actions = [aws_sns_topic.alerts.arn]
}

################################################################################
# Alerts topic (KMS)
################################################################################

data "aws_iam_policy_document" "key" {
  #checkov:skip=CKV_AWS_109:A key policy's Resource "*" means this key only; the account root statement is required so IAM can delegate.
  #checkov:skip=CKV_AWS_111:A key policy's Resource "*" means this key only; the account root statement is required so IAM can delegate.
  #checkov:skip=CKV_AWS_356:A key policy's Resource "*" means this key only.
  statement {
    sid       = "AccountAdministration"
    actions   = ["kms:*"]
    resources = ["*"]

    principals {
      type        = "AWS"
      identifiers = ["arn:${local.partition}:iam::${local.account_id}:root"]
    }
  }

  # CloudWatch alarms and EventBridge publish to the encrypted topic.
  statement {
    sid       = "AlarmAndEventPublishers"
    actions   = ["kms:GenerateDataKey*", "kms:Decrypt"]
    resources = ["*"]

    principals {
      type        = "Service"
      identifiers = ["cloudwatch.amazonaws.com", "events.amazonaws.com"]
    }

    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }
}

resource "aws_kms_key" "alerts" {
  description             = "${var.name} alerts topic"
  enable_key_rotation     = true
  deletion_window_in_days = var.kms_deletion_window_days
  policy                  = data.aws_iam_policy_document.key.json

  tags = merge(var.tags, { Name = "${var.name}-alerts" })
}

resource "aws_kms_alias" "alerts" {
  name          = "alias/${var.name}-alerts"
  target_key_id = aws_kms_key.alerts.key_id
}

resource "aws_sns_topic" "alerts" {
  name              = "${var.name}-alerts"
  kms_master_key_id = aws_kms_key.alerts.arn

  tags = merge(var.tags, { Name = "${var.name}-alerts" })
}

data "aws_iam_policy_document" "topic" {
  statement {
    sid       = "CloudWatchAlarms"
    actions   = ["sns:Publish"]
    resources = [aws_sns_topic.alerts.arn]

    principals {
      type        = "Service"
      identifiers = ["cloudwatch.amazonaws.com"]
    }

    condition {
      test     = "ArnLike"
      variable = "aws:SourceArn"
      values   = ["arn:${local.partition}:cloudwatch:${local.region}:${local.account_id}:alarm:${var.name}-*"]
    }
  }

  statement {
    sid       = "CompactorFailureRule"
    actions   = ["sns:Publish"]
    resources = [aws_sns_topic.alerts.arn]

    principals {
      type        = "Service"
      identifiers = ["events.amazonaws.com"]
    }

    condition {
      test     = "ArnEquals"
      variable = "aws:SourceArn"
      values   = [aws_cloudwatch_event_rule.compactor_failed.arn]
    }
  }

  statement {
    sid       = "DenyInsecureTransport"
    effect    = "Deny"
    actions   = ["sns:Publish"]
    resources = [aws_sns_topic.alerts.arn]

    principals {
      type        = "*"
      identifiers = ["*"]
    }

    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_sns_topic_policy" "alerts" {
  arn    = aws_sns_topic.alerts.arn
  policy = data.aws_iam_policy_document.topic.json
}

resource "aws_sns_topic_subscription" "email" {
  count = var.alert_email == null ? 0 : 1

  topic_arn = aws_sns_topic.alerts.arn
  protocol  = "email"
  endpoint  = var.alert_email
}

################################################################################
# Compactor task failures: EventBridge -> SNS
################################################################################

resource "aws_cloudwatch_event_rule" "compactor_failed" {
  name        = "${var.name}-compactor-failed"
  description = "A compactor task stopped with an exit code the DAG does not retry (not 0, 3 or 4) or failed to start"

  event_pattern = jsonencode({
    source        = ["aws.ecs"]
    "detail-type" = ["ECS Task State Change"]
    detail = {
      clusterArn        = [var.ecs_cluster_arn]
      lastStatus        = ["STOPPED"]
      taskDefinitionArn = [{ prefix = local.compactor_task_definition_prefix }]
      # Exit 3 (another run committed this run number first) and 4
      # (SIGTERM before the commit, nothing committed) are retried by the
      # DAG; if retries run out, the DAG alerts, and lake_freshness fires.
      "$or" = [
        { containers = { exitCode = [{ "anything-but" = [0, 3, 4] }] } },
        { stopCode = ["TaskFailedToStart"] },
      ]
    }
  })

  tags = merge(var.tags, { Name = "${var.name}-compactor-failed" })
}

resource "aws_cloudwatch_event_target" "compactor_failed" {
  rule = aws_cloudwatch_event_rule.compactor_failed.name
  arn  = aws_sns_topic.alerts.arn

  input_transformer {
    input_paths = {
      task     = "$.detail.taskArn"
      stopCode = "$.detail.stopCode"
      reason   = "$.detail.stoppedReason"
    }
    input_template = "\"${var.name}: compactor task <task> failed (<stopCode>): <reason>\""
  }
}

################################################################################
# Lake freshness: the compactor's run reports become a metric
################################################################################

# `compactor run` prints one JSON report line on stdout when it finishes
# without error (exit 0), e.g. {"stream":"...","run":42,"committed":true,
# "rows_written":1200,"table_version":43,...}. Its JSON logs (stderr, same
# log group) are flat too, and "compactor run started" carries run and
# table_version, but no log line has rows_written: only the report matches.
# tests/infra/moto_apply checks this against the real binary's output.
resource "aws_cloudwatch_log_metric_filter" "compactor_runs" {
  name           = "${var.name}-compactor-successful-runs"
  log_group_name = var.compactor_log_group_name
  pattern        = "{ ($.rows_written >= 0) && ($.table_version >= 0) }"

  metric_transformation {
    namespace = var.lake_metrics_namespace
    name      = "CompactorSuccessfulRuns"
    value     = "1"
    unit      = "Count"
  }
}

resource "aws_cloudwatch_log_metric_filter" "compactor_rows" {
  name           = "${var.name}-compactor-rows-written"
  log_group_name = var.compactor_log_group_name
  pattern        = "{ ($.rows_written >= 0) && ($.table_version >= 0) }"

  metric_transformation {
    namespace = var.lake_metrics_namespace
    name      = "CompactorRowsWritten"
    value     = "$.rows_written"
    unit      = "Count"
  }
}

################################################################################
# Alarms
################################################################################

# Missing data is breaching: the metric exists only when a run reports, so
# a stopped DAG, a scheduler that is down or runs that all fail look alike:
# no data, and the alarm fires after lake_freshness_periods periods.
resource "aws_cloudwatch_metric_alarm" "lake_freshness" {
  alarm_name          = "${var.name}-lake-freshness"
  alarm_description   = "No successful compactor run reported in the last ${var.lake_freshness_periods} x ${var.lake_freshness_period_seconds} s: the Delta table is going stale and Kinesis records will expire after the stream retention. See docs/operations.md."
  namespace           = var.lake_metrics_namespace
  metric_name         = aws_cloudwatch_log_metric_filter.compactor_runs.metric_transformation[0].name
  statistic           = "Sum"
  period              = var.lake_freshness_period_seconds
  evaluation_periods  = var.lake_freshness_periods
  comparison_operator = "LessThanThreshold"
  threshold           = 1
  treat_missing_data  = "breaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions

  tags = var.tags
}

# MWAA publishes SchedulerHeartbeat every few seconds while the scheduler
# runs; nothing at all means it is down (and no DAG runs).
resource "aws_cloudwatch_metric_alarm" "scheduler_heartbeat" {
  alarm_name          = "${var.name}-mwaa-scheduler-heartbeat"
  alarm_description   = "The MWAA scheduler of ${var.mwaa_environment_name} sent no heartbeat: no DAG is scheduled."
  namespace           = "AmazonMWAA"
  metric_name         = "SchedulerHeartbeat"
  dimensions          = { Function = "Scheduler", Environment = var.mwaa_environment_name }
  statistic           = "Sum"
  period              = 300
  evaluation_periods  = 3
  comparison_operator = "LessThanThreshold"
  threshold           = 1
  treat_missing_data  = "breaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions

  tags = var.tags
}

# The iterator age exists only while a compactor run reads the stream, so
# missing data here is normal between runs (notBreaching); lake_freshness
# covers runs that stop.

resource "aws_cloudwatch_metric_alarm" "iterator_age" {
  alarm_name          = "${var.name}-kinesis-iterator-age"
  alarm_description   = "The compactor is falling behind the stream; records expire after the stream retention."
  namespace           = "AWS/Kinesis"
  metric_name         = "GetRecords.IteratorAgeMilliseconds"
  dimensions          = { StreamName = var.stream_name }
  statistic           = "Maximum"
  period              = var.alarm_period_seconds
  evaluation_periods  = var.alarm_evaluation_periods
  comparison_operator = "GreaterThanThreshold"
  threshold           = var.iterator_age_threshold_ms
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions

  tags = var.tags
}

resource "aws_cloudwatch_metric_alarm" "write_throttled" {
  alarm_name          = "${var.name}-kinesis-write-throttled"
  alarm_description   = "The stream rejects writes: add shards or switch to ON_DEMAND."
  namespace           = "AWS/Kinesis"
  metric_name         = "WriteProvisionedThroughputExceeded"
  dimensions          = { StreamName = var.stream_name }
  statistic           = "Sum"
  period              = var.alarm_period_seconds
  evaluation_periods  = var.alarm_evaluation_periods
  comparison_operator = "GreaterThanThreshold"
  threshold           = var.write_throttle_threshold
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions

  tags = var.tags
}

resource "aws_cloudwatch_metric_alarm" "elb_5xx" {
  alarm_name          = "${var.name}-alb-elb-5xx"
  alarm_description   = "The load balancer answers 5xx itself (no healthy target, target timeouts)."
  namespace           = "AWS/ApplicationELB"
  metric_name         = "HTTPCode_ELB_5XX_Count"
  dimensions          = { LoadBalancer = var.alb_arn_suffix }
  statistic           = "Sum"
  period              = var.alarm_period_seconds
  evaluation_periods  = var.alarm_evaluation_periods
  comparison_operator = "GreaterThanThreshold"
  threshold           = var.elb_5xx_threshold
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions

  tags = var.tags
}

resource "aws_cloudwatch_metric_alarm" "target_5xx" {
  alarm_name          = "${var.name}-alb-target-5xx"
  alarm_description   = "The ingest-api answers 5xx (e.g. Kinesis writes failing)."
  namespace           = "AWS/ApplicationELB"
  metric_name         = "HTTPCode_Target_5XX_Count"
  dimensions          = { LoadBalancer = var.alb_arn_suffix, TargetGroup = var.target_group_arn_suffix }
  statistic           = "Sum"
  period              = var.alarm_period_seconds
  evaluation_periods  = var.alarm_evaluation_periods
  comparison_operator = "GreaterThanThreshold"
  threshold           = var.target_5xx_threshold
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions

  tags = var.tags
}

resource "aws_cloudwatch_metric_alarm" "target_response_time" {
  alarm_name          = "${var.name}-alb-target-response-time-p99"
  alarm_description   = "p99 latency of the ingest-api is above the threshold."
  namespace           = "AWS/ApplicationELB"
  metric_name         = "TargetResponseTime"
  dimensions          = { LoadBalancer = var.alb_arn_suffix, TargetGroup = var.target_group_arn_suffix }
  extended_statistic  = "p99"
  period              = var.alarm_period_seconds
  evaluation_periods  = var.alarm_evaluation_periods
  comparison_operator = "GreaterThanThreshold"
  threshold           = var.target_response_time_p99_seconds
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions

  tags = var.tags
}

resource "aws_cloudwatch_metric_alarm" "ecs_cpu" {
  alarm_name          = "${var.name}-ingest-cpu"
  alarm_description   = "The ingest service runs hot although autoscaling should add tasks (max_capacity reached?)."
  namespace           = "AWS/ECS"
  metric_name         = "CPUUtilization"
  dimensions          = { ClusterName = var.ecs_cluster_name, ServiceName = var.ingest_service_name }
  statistic           = "Average"
  period              = var.alarm_period_seconds
  evaluation_periods  = var.alarm_evaluation_periods
  comparison_operator = "GreaterThanThreshold"
  threshold           = var.ecs_cpu_threshold_percent
  treat_missing_data  = "breaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions

  tags = var.tags
}

resource "aws_cloudwatch_metric_alarm" "ecs_memory" {
  alarm_name          = "${var.name}-ingest-memory"
  alarm_description   = "The ingest service is close to its memory limit."
  namespace           = "AWS/ECS"
  metric_name         = "MemoryUtilization"
  dimensions          = { ClusterName = var.ecs_cluster_name, ServiceName = var.ingest_service_name }
  statistic           = "Average"
  period              = var.alarm_period_seconds
  evaluation_periods  = var.alarm_evaluation_periods
  comparison_operator = "GreaterThanThreshold"
  threshold           = var.ecs_memory_threshold_percent
  treat_missing_data  = "breaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions

  tags = var.tags
}

################################################################################
# Dashboard
################################################################################

resource "aws_cloudwatch_dashboard" "this" {
  dashboard_name = "${var.name}-ingestion"

  dashboard_body = jsonencode({
    widgets = [
      {
        type = "metric", x = 0, y = 0, width = 12, height = 6
        properties = {
          title  = "Ingest requests and errors"
          region = local.region
          stat   = "Sum"
          period = 60
          metrics = [
            ["AWS/ApplicationELB", "RequestCount", "LoadBalancer", var.alb_arn_suffix],
            [".", "HTTPCode_Target_2XX_Count", ".", "."],
            [".", "HTTPCode_Target_4XX_Count", ".", "."],
            [".", "HTTPCode_Target_5XX_Count", ".", "."],
            [".", "HTTPCode_ELB_5XX_Count", ".", "."],
          ]
        }
      },
      {
        type = "metric", x = 12, y = 0, width = 12, height = 6
        properties = {
          title  = "Ingest latency (TargetResponseTime)"
          region = local.region
          period = 60
          metrics = [
            ["AWS/ApplicationELB", "TargetResponseTime", "LoadBalancer", var.alb_arn_suffix, { stat = "p50" }],
            ["...", { stat = "p99" }],
          ]
          annotations = { horizontal = [{ label = "p99 alarm", value = var.target_response_time_p99_seconds }] }
        }
      },
      {
        type = "metric", x = 0, y = 6, width = 12, height = 6
        properties = {
          title  = "Kinesis records in / out"
          region = local.region
          stat   = "Sum"
          period = 60
          metrics = [
            ["AWS/Kinesis", "IncomingRecords", "StreamName", var.stream_name],
            [".", "GetRecords.Records", ".", "."],
            [".", "WriteProvisionedThroughputExceeded", ".", "."],
          ]
        }
      },
      {
        type = "metric", x = 12, y = 6, width = 12, height = 6
        properties = {
          title  = "Kinesis iterator age (compactor lag)"
          region = local.region
          stat   = "Maximum"
          period = 60
          metrics = [
            ["AWS/Kinesis", "GetRecords.IteratorAgeMilliseconds", "StreamName", var.stream_name],
          ]
          annotations = { horizontal = [{ label = "alarm", value = var.iterator_age_threshold_ms }] }
        }
      },
      {
        type = "metric", x = 0, y = 12, width = 12, height = 6
        properties = {
          title  = "Ingest service CPU / memory (%)"
          region = local.region
          stat   = "Average"
          period = 60
          metrics = [
            ["AWS/ECS", "CPUUtilization", "ClusterName", var.ecs_cluster_name, "ServiceName", var.ingest_service_name],
            [".", "MemoryUtilization", ".", ".", ".", "."],
          ]
        }
      },
      {
        type = "metric", x = 12, y = 12, width = 12, height = 6
        properties = {
          title  = "Ingest tasks"
          region = local.region
          stat   = "Average"
          period = 60
          metrics = [
            ["AWS/ApplicationELB", "HealthyHostCount", "TargetGroup", var.target_group_arn_suffix, "LoadBalancer", var.alb_arn_suffix],
            [".", "UnHealthyHostCount", ".", ".", ".", "."],
          ]
        }
      },
      {
        type = "alarm", x = 0, y = 18, width = 24, height = 4
        properties = {
          title = "Alarms"
          alarms = [
            aws_cloudwatch_metric_alarm.lake_freshness.arn,
            aws_cloudwatch_metric_alarm.scheduler_heartbeat.arn,
            aws_cloudwatch_metric_alarm.iterator_age.arn,
            aws_cloudwatch_metric_alarm.write_throttled.arn,
            aws_cloudwatch_metric_alarm.elb_5xx.arn,
            aws_cloudwatch_metric_alarm.target_5xx.arn,
            aws_cloudwatch_metric_alarm.target_response_time.arn,
            aws_cloudwatch_metric_alarm.ecs_cpu.arn,
            aws_cloudwatch_metric_alarm.ecs_memory.arn,
          ]
        }
      },
    ]
  })
}
