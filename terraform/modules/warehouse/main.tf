data "aws_region" "current" {}

data "aws_caller_identity" "current" {}

data "aws_partition" "current" {}

locals {
  region     = data.aws_region.current.id
  account_id = data.aws_caller_identity.current.account_id
  partition  = data.aws_partition.current.partition
}

################################################################################
# KMS key: namespace data and the AWS-managed admin secret
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
    sid = "CloudWatchLogsUseForRedshiftLogs"
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
      values   = ["arn:${local.partition}:logs:${local.region}:${local.account_id}:log-group:/aws/redshift/serverless/*"]
    }
  }
}

resource "aws_kms_key" "warehouse" {
  description             = "Redshift Serverless namespace ${var.name}"
  enable_key_rotation     = true
  deletion_window_in_days = var.kms_deletion_window_days
  policy                  = data.aws_iam_policy_document.key.json

  tags = merge(var.tags, { Name = "${var.name}-warehouse" })
}

resource "aws_kms_alias" "warehouse" {
  name          = "alias/${var.name}-warehouse"
  target_key_id = aws_kms_key.warehouse.key_id
}

################################################################################
# COPY role: read the lake (table files and manifests), nothing else
################################################################################

data "aws_iam_policy_document" "copy_assume" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["redshift.amazonaws.com", "redshift-serverless.amazonaws.com"]
    }

    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }
}

resource "aws_iam_role" "copy" {
  name               = "${var.name}-redshift-copy"
  assume_role_policy = data.aws_iam_policy_document.copy_assume.json

  tags = var.tags
}

data "aws_iam_policy_document" "copy" {
  statement {
    sid       = "ListLakePrefixes"
    actions   = ["s3:ListBucket"]
    resources = [var.lake_bucket_arn]

    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = flatten([for p in var.copy_read_prefixes : [p, "${p}/*"]])
    }
  }

  statement {
    sid       = "ReadLakeObjects"
    actions   = ["s3:GetObject"]
    resources = [for p in var.copy_read_prefixes : "${var.lake_bucket_arn}/${p}/*"]
  }

  statement {
    sid       = "DecryptLakeObjects"
    actions   = ["kms:Decrypt"]
    resources = [var.lake_kms_key_arn]
  }
}

resource "aws_iam_role_policy" "copy" {
  name   = "read-lake"
  role   = aws_iam_role.copy.id
  policy = data.aws_iam_policy_document.copy.json
}

################################################################################
# Network
################################################################################

resource "aws_security_group" "warehouse" {
  name        = "${var.name}-warehouse"
  description = "Redshift Serverless workgroup: 5439 from the allowed security groups only"
  vpc_id      = var.vpc_id

  tags = merge(var.tags, { Name = "${var.name}-warehouse" })
}

resource "aws_vpc_security_group_ingress_rule" "redshift" {
  for_each = var.allowed_security_group_ids

  security_group_id            = aws_security_group.warehouse.id
  description                  = "Redshift from ${each.key}"
  ip_protocol                  = "tcp"
  from_port                    = 5439
  to_port                      = 5439
  referenced_security_group_id = each.value

  tags = merge(var.tags, { Name = "${var.name}-redshift-from-${each.key}" })
}

resource "aws_vpc_security_group_egress_rule" "s3" {
  security_group_id = aws_security_group.warehouse.id
  description       = "HTTPS to S3 through the gateway endpoint (COPY with enhanced VPC routing)"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  prefix_list_id    = var.s3_prefix_list_id

  tags = merge(var.tags, { Name = "${var.name}-warehouse-to-s3" })
}

################################################################################
# Log groups of the exported logs: Redshift Serverless writes to
# /aws/redshift/serverless/<log type> (one per account and type) and creates
# them with "never expire" unless they exist
################################################################################

resource "aws_cloudwatch_log_group" "redshift" {
  #checkov:skip=CKV_AWS_338:Retention is a per-environment input (log_retention_days, default 365); dev keeps less on purpose.
  for_each = toset(var.log_exports)

  name              = "/aws/redshift/serverless/${each.value}"
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.warehouse.arn

  tags = var.tags
}

################################################################################
# Namespace and workgroup
################################################################################

resource "aws_redshiftserverless_namespace" "this" {
  namespace_name                   = var.name
  db_name                          = var.database_name
  admin_username                   = var.admin_username
  manage_admin_password            = true
  admin_password_secret_kms_key_id = aws_kms_key.warehouse.arn
  kms_key_id                       = aws_kms_key.warehouse.arn
  iam_roles                        = [aws_iam_role.copy.arn]
  default_iam_role_arn             = aws_iam_role.copy.arn
  log_exports                      = var.log_exports

  tags = merge(var.tags, { Name = var.name })

  depends_on = [aws_cloudwatch_log_group.redshift]

  lifecycle {
    # Changing the admin user of a namespace with an AWS-managed password
    # fails in the provider (hashicorp/terraform-provider-aws#39266).
    ignore_changes = [admin_username]
  }
}

resource "aws_redshiftserverless_workgroup" "this" {
  namespace_name       = aws_redshiftserverless_namespace.this.namespace_name
  workgroup_name       = var.name
  base_capacity        = var.base_capacity
  max_capacity         = var.max_capacity
  enhanced_vpc_routing = true
  publicly_accessible  = false
  subnet_ids           = var.subnet_ids
  security_group_ids   = [aws_security_group.warehouse.id]
  port                 = 5439

  config_parameter {
    parameter_key   = "require_ssl"
    parameter_value = "true"
  }

  config_parameter {
    parameter_key   = "enable_user_activity_logging"
    parameter_value = "true"
  }

  tags = merge(var.tags, { Name = var.name })
}
