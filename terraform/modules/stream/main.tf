data "aws_caller_identity" "current" {}

data "aws_partition" "current" {}

# Producers need kms:GenerateDataKey and consumers kms:Decrypt on this key;
# both are granted through IAM policies (see the ingest and compactor
# modules), which the account statement below enables.
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
      identifiers = ["arn:${data.aws_partition.current.partition}:iam::${data.aws_caller_identity.current.account_id}:root"]
    }
  }
}

resource "aws_kms_key" "stream" {
  description             = "Kinesis stream ${var.name}"
  enable_key_rotation     = true
  deletion_window_in_days = var.kms_deletion_window_days
  policy                  = data.aws_iam_policy_document.key.json

  tags = merge(var.tags, { Name = var.name })
}

resource "aws_kms_alias" "stream" {
  name          = "alias/${var.name}-kinesis"
  target_key_id = aws_kms_key.stream.key_id
}

resource "aws_kinesis_stream" "this" {
  name                = var.name
  shard_count         = var.stream_mode == "PROVISIONED" ? var.shard_count : null
  retention_period    = var.retention_hours
  shard_level_metrics = var.shard_level_metrics
  encryption_type     = "KMS"
  kms_key_id          = aws_kms_key.stream.arn

  stream_mode_details {
    stream_mode = var.stream_mode
  }

  tags = var.tags
}
