# The orchestration module on its own (mocked apply): what the DAGs may read in
# the lake bucket, and nothing more.

mock_provider "aws" {
  source = "./tests/mocks"
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
    warehouse_raw_days = 21
    gold_days          = 90
  }
}

run "orchestration" {
  command = apply

  module {
    source = "../../modules/orchestration"
  }

  # The DAGs list only the manifests, the compactor's reports and the Delta log.
  assert {
    condition = toset(flatten([
      for s in data.aws_iam_policy_document.execution.statement : [for c in s.condition : c.values]
      if s.sid == "ListLakeMetadata"
      ])) == toset([
      "manifests", "manifests/*",
      "tables/positions/_reports", "tables/positions/_reports/*",
      "tables/positions/_delta_log", "tables/positions/_delta_log/*",
    ])
    error_message = "the execution role lists the lake bucket only under the manifest, report and Delta log prefixes"
  }

  # The compactor's reports (every compactor task's --output-uri) are readable: the DAG
  # reads its load plan there.
  assert {
    condition = one([
      for s in data.aws_iam_policy_document.execution.statement : s.resources
      if s.sid == "ReadCompactorReports"
    ]) == toset(["arn:aws:s3:::courier-test-lake/tables/positions/_reports/*"])
    error_message = "the execution role reads the compactor's reports under <table_prefix>/_reports/"
  }

  # Nothing else of the table: no object read on the table prefix itself (data files).
  assert {
    condition = length([
      for s in data.aws_iam_policy_document.execution.statement : s
      if contains(s.actions, "s3:GetObject") && anytrue([
        for r in s.resources : r == "arn:aws:s3:::courier-test-lake/tables/positions/*" || r == "arn:aws:s3:::courier-test-lake/*"
      ])
    ]) == 0
    error_message = "the execution role must not read the table's data files"
  }

  # It writes only the reload DAG's COPY manifests, under the reports prefix.
  assert {
    condition = toset(flatten([
      for s in data.aws_iam_policy_document.execution.statement : s.resources
      if contains(s.actions, "s3:PutObject")
    ])) == toset(["arn:aws:s3:::courier-test-lake/tables/positions/_reports/reload-manifests/*"])
    error_message = "the execution role writes in the lake bucket only the reload manifests under <table_prefix>/_reports/reload-manifests/"
  }
}
