data "aws_region" "current" {}

data "aws_caller_identity" "current" {}

data "aws_partition" "current" {}

locals {
  region       = data.aws_region.current.id
  account_id   = data.aws_caller_identity.current.account_id
  partition    = data.aws_partition.current.partition
  cluster_name = element(split("/", var.ecs_cluster_arn), 1)
  env_arn      = "arn:${local.partition}:airflow:${local.region}:${local.account_id}:environment/${var.name}"
  log_groups   = "arn:${local.partition}:logs:${local.region}:${local.account_id}:log-group:airflow-${var.name}-*"

  # What the DAGs read under the Delta table's prefix (courier_common.reports_base,
  # courier_positions_maintenance's lake count): the compactor's reports and the Delta log.
  reports_prefix   = "${var.table_prefix}/_reports"
  delta_log_prefix = "${var.table_prefix}/_delta_log"

  # The retention policy the maintenance DAG enforces (courier_common.retention_policy),
  # as `courier` settings. Merged last: airflow_configuration_options cannot
  # override it, so the environment declares it in one place (var.retention).
  retention_options = {
    "courier.lake_retention_days"          = tostring(var.retention.lake_days)
    "courier.dead_letter_retention_days"   = tostring(var.retention.dead_letter_days)
    "courier.warehouse_raw_retention_days" = tostring(var.retention.warehouse_raw_days)
    "courier.gold_retention_days"          = tostring(var.retention.gold_days)
  }

  airflow_configuration_options = merge({
    "core.load_examples" = "False"
  }, var.airflow_configuration_options, local.retention_options)
}

################################################################################
# KMS key: environment data, logs, DAG bucket
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

  statement {
    sid = "CloudWatchLogsUseForAirflowLogs"
    actions = [
      "kms:Encrypt*",
      "kms:Decrypt*",
      "kms:ReEncrypt*",
      "kms:GenerateDataKey*",
      "kms:Describe*",
    ]
    resources = ["*"]

    principals {
      type        = "Service"
      identifiers = ["logs.${local.region}.amazonaws.com"]
    }

    condition {
      test     = "ArnLike"
      variable = "kms:EncryptionContext:aws:logs:arn"
      values   = [local.log_groups]
    }
  }
}

resource "aws_kms_key" "mwaa" {
  description             = "MWAA environment ${var.name}"
  enable_key_rotation     = true
  deletion_window_in_days = var.kms_deletion_window_days
  policy                  = data.aws_iam_policy_document.key.json

  tags = merge(var.tags, { Name = "${var.name}-mwaa" })
}

resource "aws_kms_alias" "mwaa" {
  name          = "alias/${var.name}-mwaa"
  target_key_id = aws_kms_key.mwaa.key_id
}

################################################################################
# Log groups: created here with a retention, before MWAA would create them
# itself with "never expire" (it uses existing groups of the same name)
################################################################################

resource "aws_cloudwatch_log_group" "airflow" {
  #checkov:skip=CKV_AWS_338:Retention is a per-environment input (log_retention_days, default 365); dev keeps less on purpose.
  for_each = toset(["DAGProcessing", "Scheduler", "Task", "WebServer", "Worker"])

  name              = "airflow-${var.name}-${each.key}"
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.mwaa.arn

  tags = var.tags
}

################################################################################
# DAG bucket
################################################################################

resource "aws_s3_bucket" "dags" {
  #checkov:skip=CKV_AWS_144:DAGs are deployed from git; the repository is the copy of record, replication adds nothing.
  #checkov:skip=CKV2_AWS_62:MWAA polls the bucket itself; no event consumer exists.
  bucket        = var.dag_bucket_name
  force_destroy = var.force_destroy

  tags = merge(var.tags, { Name = var.dag_bucket_name, Purpose = "mwaa-dags" })
}

resource "aws_s3_bucket_ownership_controls" "dags" {
  bucket = aws_s3_bucket.dags.id

  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_public_access_block" "dags" {
  bucket                  = aws_s3_bucket.dags.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_versioning" "dags" {
  bucket = aws_s3_bucket.dags.id

  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "dags" {
  bucket = aws_s3_bucket.dags.id

  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = "aws:kms"
      kms_master_key_id = aws_kms_key.mwaa.arn
    }
    bucket_key_enabled = true
  }
}

resource "aws_s3_bucket_logging" "dags" {
  bucket        = aws_s3_bucket.dags.id
  target_bucket = var.logs_bucket_name
  target_prefix = "${var.s3_access_logs_prefix}/${var.dag_bucket_name}/"
}

resource "aws_s3_bucket_lifecycle_configuration" "dags" {
  bucket = aws_s3_bucket.dags.id

  rule {
    id     = "noncurrent-versions-and-multipart"
    status = "Enabled"

    filter {
      prefix = ""
    }

    noncurrent_version_expiration {
      noncurrent_days = var.noncurrent_version_expiration_days
    }

    abort_incomplete_multipart_upload {
      days_after_initiation = 7
    }
  }

  depends_on = [aws_s3_bucket_versioning.dags]
}

data "aws_iam_policy_document" "dags_bucket" {
  statement {
    sid       = "DenyInsecureTransport"
    effect    = "Deny"
    actions   = ["s3:*"]
    resources = [aws_s3_bucket.dags.arn, "${aws_s3_bucket.dags.arn}/*"]

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

resource "aws_s3_bucket_policy" "dags" {
  bucket = aws_s3_bucket.dags.id
  policy = data.aws_iam_policy_document.dags_bucket.json

  depends_on = [aws_s3_bucket_public_access_block.dags]
}

################################################################################
# Execution role
################################################################################

data "aws_iam_policy_document" "assume" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["airflow.amazonaws.com", "airflow-env.amazonaws.com"]
    }

    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }
}

resource "aws_iam_role" "execution" {
  name               = "${var.name}-mwaa-execution"
  assume_role_policy = data.aws_iam_policy_document.assume.json

  tags = var.tags
}

data "aws_iam_policy_document" "execution" {
  # --- What MWAA itself needs ------------------------------------------------
  statement {
    sid       = "PublishEnvironmentMetrics"
    actions   = ["airflow:PublishMetrics"]
    resources = [local.env_arn]
  }

  statement {
    sid       = "ReadDagBucket"
    actions   = ["s3:GetObject*", "s3:GetBucket*", "s3:List*"]
    resources = [aws_s3_bucket.dags.arn, "${aws_s3_bucket.dags.arn}/*"]
  }

  statement {
    sid       = "CheckAccountPublicAccessBlock"
    actions   = ["s3:GetAccountPublicAccessBlock"]
    resources = ["*"] # Account-level setting, no resource ARN exists.
  }

  statement {
    sid = "WriteAirflowLogs"
    actions = [
      "logs:CreateLogStream",
      "logs:CreateLogGroup",
      "logs:PutLogEvents",
      "logs:GetLogEvents",
      "logs:GetLogRecord",
      "logs:GetLogGroupFields",
      "logs:GetQueryResults",
    ]
    resources = [local.log_groups, "${local.log_groups}:*"]
  }

  statement {
    sid       = "DescribeLogGroups"
    actions   = ["logs:DescribeLogGroups"]
    resources = ["*"] # DescribeLogGroups supports no resource-level permission.
  }

  statement {
    sid       = "PutMetrics"
    actions   = ["cloudwatch:PutMetricData"]
    resources = ["*"] # PutMetricData supports no resource-level permission.
  }

  statement {
    sid = "CeleryQueue"
    actions = [
      "sqs:ChangeMessageVisibility",
      "sqs:DeleteMessage",
      "sqs:GetQueueAttributes",
      "sqs:GetQueueUrl",
      "sqs:ReceiveMessage",
      "sqs:SendMessage",
    ]
    # The Celery queue lives in an account owned by MWAA.
    resources = ["arn:${local.partition}:sqs:${local.region}:*:airflow-celery-*"]
  }

  statement {
    sid       = "UseEnvironmentKey"
    actions   = ["kms:Decrypt", "kms:DescribeKey", "kms:GenerateDataKey*", "kms:Encrypt"]
    resources = [aws_kms_key.mwaa.arn]

    condition {
      test     = "StringLike"
      variable = "kms:ViaService"
      values   = ["sqs.${local.region}.amazonaws.com", "s3.${local.region}.amazonaws.com"]
    }
  }

  # --- What the DAGs need ----------------------------------------------------
  statement {
    sid       = "RunCompactorTask"
    actions   = ["ecs:RunTask"]
    resources = ["arn:${local.partition}:ecs:${local.region}:${local.account_id}:task-definition/${var.compactor_task_definition_family}:*"]

    condition {
      test     = "ArnEquals"
      variable = "ecs:cluster"
      values   = [var.ecs_cluster_arn]
    }
  }

  statement {
    sid       = "WatchAndStopCompactorTasks"
    actions   = ["ecs:DescribeTasks", "ecs:StopTask"]
    resources = ["arn:${local.partition}:ecs:${local.region}:${local.account_id}:task/${local.cluster_name}/*"]

    condition {
      test     = "ArnEquals"
      variable = "ecs:cluster"
      values   = [var.ecs_cluster_arn]
    }
  }

  # RunTask with tags (EcsRunTaskOperator(tags=...) or propagateTags) also
  # needs TagResource on the new task.
  statement {
    sid       = "TagCompactorTasksAtLaunch"
    actions   = ["ecs:TagResource"]
    resources = ["arn:${local.partition}:ecs:${local.region}:${local.account_id}:task/${local.cluster_name}/*"]

    condition {
      test     = "StringEquals"
      variable = "ecs:CreateAction"
      values   = ["RunTask"]
    }
  }

  statement {
    sid       = "PassCompactorRoles"
    actions   = ["iam:PassRole"]
    resources = [var.compactor_task_role_arn, var.compactor_execution_role_arn]

    condition {
      test     = "StringEquals"
      variable = "iam:PassedToService"
      values   = ["ecs-tasks.amazonaws.com"]
    }
  }

  statement {
    sid       = "ReadCompactorLogs"
    actions   = ["logs:GetLogEvents", "logs:FilterLogEvents"]
    resources = [var.compactor_log_group_arn, "${var.compactor_log_group_arn}:*"]
  }

  statement {
    sid       = "RunWarehouseStatements"
    actions   = ["redshift-data:ExecuteStatement", "redshift-data:BatchExecuteStatement"]
    resources = [var.redshift_workgroup_arn]
  }

  # These Data API actions take a statement id, not a resource ARN; the Data
  # API only returns statements that the calling role itself ran.
  statement {
    sid = "ReadWarehouseStatementResults"
    actions = [
      "redshift-data:DescribeStatement",
      "redshift-data:GetStatementResult",
      "redshift-data:CancelStatement",
      "redshift-data:ListStatements",
    ]
    resources = ["*"]
  }

  statement {
    sid       = "WarehouseCredentials"
    actions   = ["redshift-serverless:GetCredentials"]
    resources = [var.redshift_workgroup_arn]
  }

  statement {
    sid       = "PublishAlerts"
    actions   = ["sns:Publish"]
    resources = [var.alerts_topic_arn]
  }

  statement {
    sid       = "EncryptAlerts"
    actions   = ["kms:GenerateDataKey*", "kms:Decrypt"]
    resources = [var.alerts_topic_kms_key_arn]
  }

  # The DAGs read three things in the lake bucket, each under its own prefix:
  # the COPY manifests (to validate a load plan), the compactor's JSON reports
  # under <table_prefix>/_reports/ (every compactor task writes its report there
  # with --output-uri; the DAG reads it instead of log lines), and the Delta
  # log under <table_prefix>/_delta_log/ (the daily lake-versus-warehouse row
  # count per event_date sums the numRecords of the active files). Nothing
  # else: not the data files, not the dead letters.
  statement {
    sid       = "ListLakeMetadata"
    actions   = ["s3:ListBucket"]
    resources = [var.lake_bucket_arn]

    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values = [
        var.manifest_prefix, "${var.manifest_prefix}/*",
        local.reports_prefix, "${local.reports_prefix}/*",
        local.delta_log_prefix, "${local.delta_log_prefix}/*",
      ]
    }
  }

  statement {
    sid       = "ReadManifests"
    actions   = ["s3:GetObject"]
    resources = ["${var.lake_bucket_arn}/${var.manifest_prefix}/*"]
  }

  statement {
    sid       = "ReadCompactorReports"
    actions   = ["s3:GetObject"]
    resources = ["${var.lake_bucket_arn}/${local.reports_prefix}/*"]
  }

  statement {
    sid       = "ReadDeltaLog"
    actions   = ["s3:GetObject"]
    resources = ["${var.lake_bucket_arn}/${local.delta_log_prefix}/*"]
  }

  # The one object the DAGs write in the lake bucket: courier_reload's COPY manifest
  # (courier_common setting reload_manifest_uri, default <reports>/reload-manifests),
  # which Redshift's COPY then reads under the table prefix.
  statement {
    sid       = "WriteReloadManifests"
    actions   = ["s3:PutObject"]
    resources = ["${var.lake_bucket_arn}/${local.reports_prefix}/reload-manifests/*"]
  }

  statement {
    sid       = "EncryptReloadManifests"
    actions   = ["kms:GenerateDataKey"]
    resources = [var.lake_kms_key_arn]

    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["s3.${local.region}.amazonaws.com"]
    }
  }

  statement {
    sid       = "DecryptManifests"
    actions   = ["kms:Decrypt"]
    resources = [var.lake_kms_key_arn]

    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["s3.${local.region}.amazonaws.com"]
    }
  }
}

resource "aws_iam_role_policy" "execution" {
  name   = "mwaa-environment-and-dags"
  role   = aws_iam_role.execution.id
  policy = data.aws_iam_policy_document.execution.json
}

################################################################################
# Security group
################################################################################

resource "aws_security_group" "mwaa" {
  name        = "${var.name}-mwaa"
  description = "MWAA environment: traffic between its own components, HTTPS to AWS APIs, Redshift"
  vpc_id      = var.vpc_id

  tags = merge(var.tags, { Name = "${var.name}-mwaa" })
}

# MWAA requires a self-referencing rule: scheduler, workers, web server and
# the metadata database talk to each other on several ports.
resource "aws_vpc_security_group_ingress_rule" "self" {
  security_group_id            = aws_security_group.mwaa.id
  description                  = "Between MWAA components"
  ip_protocol                  = "-1"
  referenced_security_group_id = aws_security_group.mwaa.id

  tags = merge(var.tags, { Name = "${var.name}-mwaa-self" })
}

resource "aws_vpc_security_group_ingress_rule" "webserver" {
  for_each = toset(var.webserver_access_cidr_blocks)

  security_group_id = aws_security_group.mwaa.id
  description       = "Airflow web server from operators"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv4         = each.value

  tags = merge(var.tags, { Name = "${var.name}-mwaa-webserver" })
}

resource "aws_vpc_security_group_egress_rule" "self" {
  security_group_id            = aws_security_group.mwaa.id
  description                  = "Between MWAA components"
  ip_protocol                  = "-1"
  referenced_security_group_id = aws_security_group.mwaa.id

  tags = merge(var.tags, { Name = "${var.name}-mwaa-self" })
}

resource "aws_vpc_security_group_egress_rule" "https" {
  security_group_id = aws_security_group.mwaa.id
  description       = "HTTPS to AWS APIs (through the NAT gateway or VPC endpoints)"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv4         = "0.0.0.0/0"

  tags = merge(var.tags, { Name = "${var.name}-mwaa-https" })
}

resource "aws_vpc_security_group_egress_rule" "redshift" {
  security_group_id            = aws_security_group.mwaa.id
  description                  = "Redshift Serverless workgroup"
  ip_protocol                  = "tcp"
  from_port                    = 5439
  to_port                      = 5439
  referenced_security_group_id = var.redshift_security_group_id

  tags = merge(var.tags, { Name = "${var.name}-mwaa-redshift" })
}

################################################################################
# Environment
################################################################################

resource "aws_mwaa_environment" "this" {
  name                            = var.name
  airflow_version                 = var.airflow_version
  environment_class               = var.environment_class
  min_workers                     = var.min_workers
  max_workers                     = var.max_workers
  execution_role_arn              = aws_iam_role.execution.arn
  kms_key                         = aws_kms_key.mwaa.arn
  source_bucket_arn               = aws_s3_bucket.dags.arn
  dag_s3_path                     = var.dag_s3_path
  requirements_s3_path            = var.requirements_s3_path
  requirements_s3_object_version  = var.requirements_s3_object_version
  webserver_access_mode           = "PRIVATE_ONLY"
  weekly_maintenance_window_start = var.weekly_maintenance_window_start
  airflow_configuration_options   = local.airflow_configuration_options

  network_configuration {
    security_group_ids = [aws_security_group.mwaa.id]
    subnet_ids         = slice(var.private_subnet_ids, 0, 2)
  }

  logging_configuration {
    dag_processing_logs {
      enabled   = true
      log_level = var.log_level
    }

    scheduler_logs {
      enabled   = true
      log_level = var.log_level
    }

    task_logs {
      enabled   = true
      log_level = var.log_level
    }

    webserver_logs {
      enabled   = true
      log_level = var.log_level
    }

    worker_logs {
      enabled   = true
      log_level = var.log_level
    }
  }

  tags = merge(var.tags, { Name = var.name })

  lifecycle {
    precondition {
      condition     = var.min_workers <= var.max_workers
      error_message = "min_workers must not exceed max_workers."
    }
  }

  depends_on = [
    aws_cloudwatch_log_group.airflow,
    aws_iam_role_policy.execution,
    aws_s3_bucket_policy.dags,
    aws_s3_bucket_public_access_block.dags,
  ]
}
