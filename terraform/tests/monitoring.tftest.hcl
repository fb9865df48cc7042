# The monitoring module on its own (mocked apply): alarms that can fire when
# something stops, and no page for what the DAG retries anyway.

mock_provider "aws" {
  source = "./tests/mocks"
}

variables {
  name                             = "courier-test"
  stream_name                      = "courier-test-positions"
  alb_arn_suffix                   = "app/courier-test-ingest/0123456789abcdef"
  target_group_arn_suffix          = "targetgroup/courier-test-ingest/0123456789abcdef"
  ecs_cluster_name                 = "courier-test"
  ecs_cluster_arn                  = "arn:aws:ecs:eu-west-1:123456789012:cluster/courier-test"
  ingest_service_name              = "ingest-api"
  compactor_task_definition_family = "courier-test-compactor"
  compactor_log_group_name         = "/ecs/courier-test/compactor"
  mwaa_environment_name            = "courier-test"
  iterator_age_threshold_ms        = 3600000
}

run "monitoring" {
  command = apply

  module {
    source = "../../modules/monitoring"
  }

  # Lake freshness: the compactor's one-line JSON run report (stdout, in its
  # log group) becomes a metric; no successful run in the window, or no data
  # at all (the DAG stopped), is an alarm.
  assert {
    condition     = aws_cloudwatch_log_metric_filter.compactor_runs.log_group_name == "/ecs/courier-test/compactor"
    error_message = "the run metric comes from the compactor's log group"
  }

  assert {
    condition     = aws_cloudwatch_metric_alarm.lake_freshness.treat_missing_data == "breaching"
    error_message = "the lake-freshness alarm must treat missing data as breaching (no run = no data)"
  }

  assert {
    condition = (
      aws_cloudwatch_metric_alarm.lake_freshness.metric_name == aws_cloudwatch_log_metric_filter.compactor_runs.metric_transformation[0].name &&
      aws_cloudwatch_metric_alarm.lake_freshness.namespace == aws_cloudwatch_log_metric_filter.compactor_runs.metric_transformation[0].namespace &&
      aws_cloudwatch_metric_alarm.lake_freshness.comparison_operator == "LessThanThreshold" &&
      aws_cloudwatch_metric_alarm.lake_freshness.threshold == 1
    )
    error_message = "the lake-freshness alarm fires when fewer than one successful run was reported"
  }

  # A stopped MWAA scheduler stops every DAG: its heartbeat metric, missing
  # data breaching.
  assert {
    condition = (
      aws_cloudwatch_metric_alarm.scheduler_heartbeat.namespace == "AmazonMWAA" &&
      aws_cloudwatch_metric_alarm.scheduler_heartbeat.metric_name == "SchedulerHeartbeat" &&
      aws_cloudwatch_metric_alarm.scheduler_heartbeat.dimensions["Environment"] == "courier-test" &&
      aws_cloudwatch_metric_alarm.scheduler_heartbeat.treat_missing_data == "breaching"
    )
    error_message = "the MWAA scheduler heartbeat alarm watches AmazonMWAA SchedulerHeartbeat, missing data breaching"
  }

  # Exit 3 (another run committed this run number first) and 4 (SIGTERM
  # before the commit) are retried by the DAG: no page for them.
  assert {
    condition     = jsondecode(aws_cloudwatch_event_rule.compactor_failed.event_pattern).detail["$or"][0].containers.exitCode[0]["anything-but"] == [0, 3, 4]
    error_message = "the compactor failure rule must ignore exit codes 0, 3 and 4"
  }
}
