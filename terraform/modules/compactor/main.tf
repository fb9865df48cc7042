data "aws_region" "current" {}

data "aws_caller_identity" "current" {}

data "aws_partition" "current" {}

locals {
  region         = data.aws_region.current.id
  account_id     = data.aws_caller_identity.current.account_id
  partition      = data.aws_partition.current.partition
  container_name = "compactor"
  family         = "${var.name}-${local.container_name}"
  log_group_name = "/ecs/${var.name}/${local.container_name}"

  lake_prefixes = [var.table_prefix, var.dead_letter_prefix, var.manifest_prefix]

  # Set last so that extra_environment cannot override them.
  environment = merge(var.extra_environment, {
    COMPACTOR_SOURCE          = "kinesis"
    COMPACTOR_STREAM_NAME     = var.stream_name
    COMPACTOR_TABLE_URI       = "s3://${var.lake_bucket_name}/${var.table_prefix}"
    COMPACTOR_DEAD_LETTER_URI = "s3://${var.lake_bucket_name}/${var.dead_letter_prefix}"
    COMPACTOR_MANIFEST_URI    = "s3://${var.lake_bucket_name}/${var.manifest_prefix}"
    COMPACTOR_LOG_FORMAT      = "json"
    AWS_REGION                = local.region
  })
}

################################################################################
# Logs (KMS)
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
    sid = "CloudWatchLogsUseForCompactorLogs"
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
      test     = "ArnEquals"
      variable = "kms:EncryptionContext:aws:logs:arn"
      values   = ["arn:${local.partition}:logs:${local.region}:${local.account_id}:log-group:${local.log_group_name}"]
    }
  }
}

resource "aws_kms_key" "logs" {
  description             = "${var.name} compactor logs"
  enable_key_rotation     = true
  deletion_window_in_days = var.kms_deletion_window_days
  policy                  = data.aws_iam_policy_document.key.json

  tags = merge(var.tags, { Name = "${var.name}-compactor-logs" })
}

resource "aws_kms_alias" "logs" {
  name          = "alias/${var.name}-compactor-logs"
  target_key_id = aws_kms_key.logs.key_id
}

resource "aws_cloudwatch_log_group" "compactor" {
  #checkov:skip=CKV_AWS_338:Retention is a per-environment input (log_retention_days, default 365); dev keeps less on purpose.
  name              = local.log_group_name
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.logs.arn

  tags = var.tags
}

################################################################################
# IAM
################################################################################

data "aws_iam_policy_document" "ecs_tasks_assume" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["ecs-tasks.amazonaws.com"]
    }

    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }

    condition {
      test     = "ArnLike"
      variable = "aws:SourceArn"
      values   = ["arn:${local.partition}:ecs:${local.region}:${local.account_id}:*"]
    }
  }
}

resource "aws_iam_role" "task" {
  name               = "${var.name}-compactor-task"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json

  tags = var.tags
}

data "aws_iam_policy_document" "task" {
  statement {
    sid = "ReadStream"
    actions = [
      "kinesis:GetRecords",
      "kinesis:GetShardIterator",
      "kinesis:DescribeStream",
      "kinesis:DescribeStreamSummary",
      "kinesis:ListShards",
    ]
    resources = [var.stream_arn]
  }

  statement {
    sid       = "DecryptStreamRecords"
    actions   = ["kms:Decrypt"]
    resources = [var.stream_kms_key_arn]
  }

  statement {
    sid       = "ListLakePrefixes"
    actions   = ["s3:ListBucket"]
    resources = [var.lake_bucket_arn]

    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = flatten([for p in local.lake_prefixes : [p, "${p}/*"]])
    }
  }

  statement {
    sid       = "LocateLakeBucket"
    actions   = ["s3:GetBucketLocation"]
    resources = [var.lake_bucket_arn]
  }

  # Delta commits, checkpoints and VACUUM need read, write and delete on the
  # table prefix; dead letters and manifests are written the same way.
  statement {
    sid = "ReadWriteLakePrefixes"
    actions = [
      "s3:GetObject",
      "s3:PutObject",
      "s3:DeleteObject",
      "s3:AbortMultipartUpload",
      "s3:ListMultipartUploadParts",
    ]
    resources = [for p in local.lake_prefixes : "${var.lake_bucket_arn}/${p}/*"]
  }

  statement {
    sid       = "UseLakeKey"
    actions   = ["kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey"]
    resources = [var.lake_kms_key_arn]
  }
}

resource "aws_iam_role_policy" "task" {
  name   = "read-stream-write-lake"
  role   = aws_iam_role.task.id
  policy = data.aws_iam_policy_document.task.json
}

resource "aws_iam_role" "execution" {
  name               = "${var.name}-compactor-execution"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json

  tags = var.tags
}

data "aws_iam_policy_document" "execution" {
  statement {
    sid       = "EcrAuthToken"
    actions   = ["ecr:GetAuthorizationToken"]
    resources = ["*"] # GetAuthorizationToken supports no resource-level permission.
  }

  statement {
    sid = "PullImage"
    actions = [
      "ecr:BatchCheckLayerAvailability",
      "ecr:GetDownloadUrlForLayer",
      "ecr:BatchGetImage",
    ]
    resources = [var.ecr_repository_arn]
  }

  statement {
    sid       = "ShipLogs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.compactor.arn}:*"]
  }
}

resource "aws_iam_role_policy" "execution" {
  name   = "start-compactor"
  role   = aws_iam_role.execution.id
  policy = data.aws_iam_policy_document.execution.json
}

################################################################################
# Security group: no ingress, HTTPS out to AWS APIs only
################################################################################

resource "aws_security_group" "tasks" {
  #checkov:skip=CKV2_AWS_5:Attached at run time: the orchestration DAG passes it to ecs:RunTask (output security_group_id).
  name        = "${var.name}-compactor-tasks"
  description = "Compactor tasks: no inbound traffic, HTTPS to AWS APIs"
  vpc_id      = var.vpc_id

  tags = merge(var.tags, { Name = "${var.name}-compactor-tasks" })
}

resource "aws_vpc_security_group_egress_rule" "tasks_to_endpoints" {
  security_group_id = aws_security_group.tasks.id
  description       = "HTTPS to the interface VPC endpoints (Kinesis, ECR, logs, STS)"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv4         = var.vpc_cidr_block

  tags = merge(var.tags, { Name = "${var.name}-compactor-to-endpoints" })
}

resource "aws_vpc_security_group_egress_rule" "tasks_to_s3" {
  security_group_id = aws_security_group.tasks.id
  description       = "HTTPS to S3 through the gateway endpoint (lake bucket, ECR image layers)"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  prefix_list_id    = var.s3_prefix_list_id

  tags = merge(var.tags, { Name = "${var.name}-compactor-to-s3" })
}

################################################################################
# Task definition (run by the orchestration DAGs with ecs:RunTask)
################################################################################

resource "aws_ecs_task_definition" "this" {
  family                   = local.family
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = var.cpu
  memory                   = var.memory
  task_role_arn            = aws_iam_role.task.arn
  execution_role_arn       = aws_iam_role.execution.arn

  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = var.cpu_architecture
  }

  ephemeral_storage {
    size_in_gib = var.ephemeral_storage_gib
  }

  # Writable scratch space: the root filesystem is read-only.
  volume {
    name = "tmp"
  }

  container_definitions = jsonencode([
    {
      name                   = local.container_name
      image                  = var.container_image
      essential              = true
      user                   = var.container_user
      readonlyRootFilesystem = true
      stopTimeout            = 30

      environment = [for k in sort(keys(local.environment)) : { name = k, value = local.environment[k] }]

      mountPoints = [
        {
          sourceVolume  = "tmp"
          containerPath = "/tmp"
          readOnly      = false
        },
      ]

      linuxParameters = {
        initProcessEnabled = true
        capabilities = {
          drop = ["ALL"]
        }
      }

      logConfiguration = {
        logDriver = "awslogs"
        options = {
          awslogs-group         = aws_cloudwatch_log_group.compactor.name
          awslogs-region        = local.region
          awslogs-stream-prefix = local.container_name
        }
      }
    },
  ])

  tags = merge(var.tags, { Name = local.family })
}
