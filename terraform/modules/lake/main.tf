data "aws_caller_identity" "current" {}

data "aws_partition" "current" {}

# Account that delivers load balancer access logs in the regions that existed
# before August 2022; newer regions use the log-delivery service principal
# only (and this data source knows no account for them).
data "aws_elb_service_account" "current" {
  count = var.elb_legacy_log_delivery ? 1 : 0
}

locals {
  account_id  = data.aws_caller_identity.current.account_id
  partition   = data.aws_partition.current.partition
  lake_bucket = "${var.bucket_name_prefix}-lake"
  logs_bucket = "${var.bucket_name_prefix}-access-logs"

  # Prefix under which S3 server access logs of every bucket land in the logs bucket.
  s3_access_logs_prefix = "s3-access"
}

################################################################################
# KMS key for the lake bucket
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
}

resource "aws_kms_key" "lake" {
  description             = "S3 lake bucket ${local.lake_bucket}"
  enable_key_rotation     = true
  deletion_window_in_days = var.kms_deletion_window_days
  policy                  = data.aws_iam_policy_document.key.json

  tags = merge(var.tags, { Name = local.lake_bucket })
}

resource "aws_kms_alias" "lake" {
  name          = "alias/${local.lake_bucket}"
  target_key_id = aws_kms_key.lake.key_id
}

################################################################################
# Access-logs bucket (target of S3 server access logs and ALB access logs)
################################################################################

resource "aws_s3_bucket" "logs" {
  #checkov:skip=CKV_AWS_144:Access logs are kept in-region only; cross-region replication is not required for them.
  #checkov:skip=CKV_AWS_145:S3 server access logs and ALB access logs can only be delivered to buckets encrypted with SSE-S3, not SSE-KMS.
  #checkov:skip=CKV2_AWS_62:No consumer reacts to new log objects; event notifications would have no target.
  bucket        = local.logs_bucket
  force_destroy = var.force_destroy

  tags = merge(var.tags, { Name = local.logs_bucket, Purpose = "access-logs" })
}

resource "aws_s3_bucket_ownership_controls" "logs" {
  bucket = aws_s3_bucket.logs.id

  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_public_access_block" "logs" {
  bucket                  = aws_s3_bucket.logs.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_versioning" "logs" {
  bucket = aws_s3_bucket.logs.id

  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "logs" {
  bucket = aws_s3_bucket.logs.id

  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm = "AES256"
    }
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "logs" {
  bucket = aws_s3_bucket.logs.id

  rule {
    id     = "expire-logs"
    status = "Enabled"

    filter {
      prefix = ""
    }

    expiration {
      days = var.access_logs_expiration_days
    }

    noncurrent_version_expiration {
      noncurrent_days = var.noncurrent_version_expiration_days
    }

    abort_incomplete_multipart_upload {
      days_after_initiation = var.abort_incomplete_multipart_days
    }
  }

  depends_on = [aws_s3_bucket_versioning.logs]
}

data "aws_iam_policy_document" "logs" {
  statement {
    sid       = "DenyInsecureTransport"
    effect    = "Deny"
    actions   = ["s3:*"]
    resources = [aws_s3_bucket.logs.arn, "${aws_s3_bucket.logs.arn}/*"]

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

  statement {
    sid       = "S3ServerAccessLogDelivery"
    actions   = ["s3:PutObject"]
    resources = ["${aws_s3_bucket.logs.arn}/${local.s3_access_logs_prefix}/*"]

    principals {
      type        = "Service"
      identifiers = ["logging.s3.amazonaws.com"]
    }

    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }

  dynamic "statement" {
    for_each = data.aws_elb_service_account.current

    content {
      sid       = "AlbAccessLogDeliveryLegacyRegions"
      actions   = ["s3:PutObject"]
      resources = ["${aws_s3_bucket.logs.arn}/${var.alb_logs_prefix}/AWSLogs/${local.account_id}/*"]

      principals {
        type        = "AWS"
        identifiers = [statement.value.arn]
      }
    }
  }

  statement {
    sid       = "AlbAccessLogDelivery"
    actions   = ["s3:PutObject"]
    resources = ["${aws_s3_bucket.logs.arn}/${var.alb_logs_prefix}/AWSLogs/${local.account_id}/*"]

    principals {
      type        = "Service"
      identifiers = ["logdelivery.elasticloadbalancing.amazonaws.com"]
    }
  }
}

resource "aws_s3_bucket_policy" "logs" {
  bucket = aws_s3_bucket.logs.id
  policy = data.aws_iam_policy_document.logs.json

  depends_on = [aws_s3_bucket_public_access_block.logs]
}

################################################################################
# Lake bucket: Delta table, dead-letter records and COPY manifests, as prefixes
################################################################################

resource "aws_s3_bucket" "lake" {
  #checkov:skip=CKV_AWS_144:Single-region platform; the table can be rebuilt from the stream within its retention, and replication doubles the storage cost. Revisit if a DR region is required.
  #checkov:skip=CKV2_AWS_62:Nothing consumes object events; the compactor and the DAGs find new files through the Delta log and the manifests.
  bucket        = local.lake_bucket
  force_destroy = var.force_destroy

  tags = merge(var.tags, { Name = local.lake_bucket, Purpose = "lake" })
}

resource "aws_s3_bucket_ownership_controls" "lake" {
  bucket = aws_s3_bucket.lake.id

  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_public_access_block" "lake" {
  bucket                  = aws_s3_bucket.lake.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_versioning" "lake" {
  bucket = aws_s3_bucket.lake.id

  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "lake" {
  bucket = aws_s3_bucket.lake.id

  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = "aws:kms"
      kms_master_key_id = aws_kms_key.lake.arn
    }
    bucket_key_enabled = true
  }
}

resource "aws_s3_bucket_logging" "lake" {
  count = var.s3_access_logging ? 1 : 0

  bucket        = aws_s3_bucket.lake.id
  target_bucket = aws_s3_bucket.logs.id
  target_prefix = "${local.s3_access_logs_prefix}/${local.lake_bucket}/"

  depends_on = [aws_s3_bucket_policy.logs]
}

resource "aws_s3_bucket_lifecycle_configuration" "lake" {
  bucket = aws_s3_bucket.lake.id

  # Covers the whole bucket. Current versions of the Delta table are never
  # expired; files removed by VACUUM become noncurrent and go after N days.
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
      days_after_initiation = var.abort_incomplete_multipart_days
    }
  }

  # The dead-letter tier of the retention policy: dead letters hold raw
  # payloads (personal data). The bucket is versioned, so expiration leaves a
  # noncurrent version behind: it goes dead_letter_noncurrent_days later (the
  # shorter of two overlapping expirations wins over the bucket-wide rule).
  rule {
    id     = "expire-dead-letter"
    status = "Enabled"

    filter {
      prefix = "${var.dead_letter_prefix}/"
    }

    expiration {
      days = var.dead_letter_expiration_days
    }

    noncurrent_version_expiration {
      noncurrent_days = var.dead_letter_noncurrent_days
    }
  }

  rule {
    id     = "expire-manifests"
    status = "Enabled"

    filter {
      prefix = "${var.manifest_prefix}/"
    }

    expiration {
      days = var.manifest_expiration_days
    }
  }

  depends_on = [aws_s3_bucket_versioning.lake]
}

data "aws_iam_policy_document" "lake" {
  statement {
    sid       = "DenyInsecureTransport"
    effect    = "Deny"
    actions   = ["s3:*"]
    resources = [aws_s3_bucket.lake.arn, "${aws_s3_bucket.lake.arn}/*"]

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

  statement {
    sid       = "DenyTlsOlderThan12"
    effect    = "Deny"
    actions   = ["s3:*"]
    resources = [aws_s3_bucket.lake.arn, "${aws_s3_bucket.lake.arn}/*"]

    principals {
      type        = "*"
      identifiers = ["*"]
    }

    condition {
      test     = "NumericLessThan"
      variable = "s3:TlsVersion"
      values   = ["1.2"]
    }
  }
}

resource "aws_s3_bucket_policy" "lake" {
  count = var.tls_only_policy ? 1 : 0

  bucket = aws_s3_bucket.lake.id
  policy = data.aws_iam_policy_document.lake.json

  depends_on = [aws_s3_bucket_public_access_block.lake]
}
