# The retention policy (docs/operations.md, "Retention"), tier by tier, on each
# module alone (mocked apply): the stream's retention period, the dead-letter
# lifecycle rule, and the DAG settings the maintenance DAG reads. The
# environment test (environment.tftest.hcl) checks that each environment's
# variables reach these modules.

mock_provider "aws" {
  source = "./tests/mocks"
}

run "stream_retention" {
  command = apply

  module {
    source = "../../modules/stream"
  }

  variables {
    name            = "courier-test-positions"
    retention_hours = 72
  }

  assert {
    condition     = aws_kinesis_stream.this.retention_period == 72
    error_message = "the stream keeps its records retention_hours hours"
  }

  assert {
    condition     = output.retention_hours == 72
    error_message = "the stream module reports the retention it set"
  }
}

run "dead_letter_lifecycle" {
  command = apply

  module {
    source = "../../modules/lake"
  }

  variables {
    bucket_name_prefix          = "courier-test"
    dead_letter_prefix          = "dead-letter"
    dead_letter_expiration_days = 9
  }

  # Current versions under the dead-letter prefix (and only there) expire after
  # the dead-letter retention; their noncurrent versions a day later.
  assert {
    condition = [
      for r in aws_s3_bucket_lifecycle_configuration.lake.rule : {
        prefix     = one(r.filter).prefix
        days       = one(r.expiration).days
        noncurrent = one(r.noncurrent_version_expiration).noncurrent_days
        status     = r.status
      } if r.id == "expire-dead-letter"
      ] == [{
        prefix     = "dead-letter/"
        days       = 9
        noncurrent = 1
        status     = "Enabled"
    }]
    error_message = "one enabled rule expires the dead-letter prefix after dead_letter_expiration_days, noncurrent versions after 1 day"
  }

  # No other rule expires current versions of the table's files: the lake tier is
  # enforced by the maintenance DAG (Delta commit, then vacuum), never by S3 deleting
  # files the Delta log still references.
  assert {
    condition = alltrue([
      for r in aws_s3_bucket_lifecycle_configuration.lake.rule :
      length(r.expiration) == 0 || contains(["dead-letter/", "manifests/"], one(r.filter).prefix)
    ])
    error_message = "only the dead-letter and manifest prefixes have expiring current versions"
  }

  assert {
    condition     = output.dead_letter_lifecycle == { prefix = "dead-letter/", expiration_days = 9, noncurrent_days = 1 }
    error_message = "the lake module reports the dead-letter rule it set"
  }
}

run "dag_retention_settings" {
  command = apply

  module {
    source = "../../modules/orchestration"
  }

  variables {
    name                             = "courier-test"
    vpc_id                           = "vpc-0123456789abcdef0"
    private_subnet_ids               = ["subnet-0123456789abcdef0", "subnet-0123456789abcdef1"]
    dag_bucket_name                  = "airflow-courier-test-dags"
    logs_bucket_name                 = "courier-test-logs"
    ecs_cluster_arn                  = "arn:aws:ecs:eu-west-1:123456789012:cluster/courier-test"
    compactor_task_definition_family = "courier-test-compactor"
    compactor_task_role_arn          = "arn:aws:iam::123456789012:role/courier-test-compactor-task"
    compactor_execution_role_arn     = "arn:aws:iam::123456789012:role/courier-test-compactor-execution"
    compactor_log_group_arn          = "arn:aws:logs:eu-west-1:123456789012:log-group:/ecs/courier-test/compactor"
    redshift_workgroup_arn           = "arn:aws:redshift-serverless:eu-west-1:123456789012:workgroup/00000000-0000-0000-0000-000000000000"
    redshift_security_group_id       = "sg-0123456789abcdef0"
    alerts_topic_arn                 = "arn:aws:sns:eu-west-1:123456789012:courier-test-alerts"
    alerts_topic_kms_key_arn         = "arn:aws:kms:eu-west-1:123456789012:key/00000000-0000-0000-0000-000000000000"
    lake_bucket_arn                  = "arn:aws:s3:::courier-test-lake"
    table_prefix                     = "tables/positions"
    manifest_prefix                  = "manifests"
    lake_kms_key_arn                 = "arn:aws:kms:eu-west-1:123456789012:key/11111111-1111-1111-1111-111111111111"

    # An attempt to set a retention a second time, through the generic map: ignored.
    airflow_configuration_options = {
      "courier.lake_retention_days" = "1"
      "courier.table_uri"           = "s3://courier-test-lake/tables/positions"
    }

    retention = {
      lake_days          = 30
      dead_letter_days   = 14
      warehouse_raw_days = 21
      gold_days          = 400
    }
  }

  # The maintenance DAG reads these as courier settings (conf.get("courier", ...)).
  assert {
    condition = {
      for k, v in aws_mwaa_environment.this.airflow_configuration_options : k => v if endswith(k, "_retention_days")
      } == {
      "courier.lake_retention_days"          = "30"
      "courier.dead_letter_retention_days"   = "14"
      "courier.warehouse_raw_retention_days" = "21"
      "courier.gold_retention_days"          = "400"
    }
    error_message = "the MWAA environment carries the retention policy as courier.<tier>_retention_days, from var.retention only"
  }

  assert {
    condition     = aws_mwaa_environment.this.airflow_configuration_options["courier.table_uri"] == "s3://courier-test-lake/tables/positions"
    error_message = "the other courier settings still reach the environment"
  }
}

run "raw_positions_outliving_the_lake_are_refused" {
  command = plan

  module {
    source = "../../modules/orchestration"
  }

  variables {
    name                             = "courier-test"
    vpc_id                           = "vpc-0123456789abcdef0"
    private_subnet_ids               = ["subnet-0123456789abcdef0", "subnet-0123456789abcdef1"]
    dag_bucket_name                  = "airflow-courier-test-dags"
    logs_bucket_name                 = "courier-test-logs"
    ecs_cluster_arn                  = "arn:aws:ecs:eu-west-1:123456789012:cluster/courier-test"
    compactor_task_definition_family = "courier-test-compactor"
    compactor_task_role_arn          = "arn:aws:iam::123456789012:role/courier-test-compactor-task"
    compactor_execution_role_arn     = "arn:aws:iam::123456789012:role/courier-test-compactor-execution"
    compactor_log_group_arn          = "arn:aws:logs:eu-west-1:123456789012:log-group:/ecs/courier-test/compactor"
    redshift_workgroup_arn           = "arn:aws:redshift-serverless:eu-west-1:123456789012:workgroup/00000000-0000-0000-0000-000000000000"
    redshift_security_group_id       = "sg-0123456789abcdef0"
    alerts_topic_arn                 = "arn:aws:sns:eu-west-1:123456789012:courier-test-alerts"
    alerts_topic_kms_key_arn         = "arn:aws:kms:eu-west-1:123456789012:key/00000000-0000-0000-0000-000000000000"
    lake_bucket_arn                  = "arn:aws:s3:::courier-test-lake"
    table_prefix                     = "tables/positions"
    manifest_prefix                  = "manifests"
    lake_kms_key_arn                 = "arn:aws:kms:eu-west-1:123456789012:key/11111111-1111-1111-1111-111111111111"

    retention = {
      lake_days          = 30
      dead_letter_days   = 14
      warehouse_raw_days = 60
      gold_days          = 90
    }
  }

  expect_failures = [var.retention]
}
