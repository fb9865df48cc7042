# The shared position store of ingest-api: ElastiCache for Valkey (or Redis
# OSS) in the private subnets, TLS in transit, encrypted at rest with a key of
# its own, AUTH token from Secrets Manager, engine logs and alarms.

data "aws_caller_identity" "current" {}
data "aws_region" "current" {}
data "aws_partition" "current" {}

locals {
  account_id = data.aws_caller_identity.current.account_id
  region     = data.aws_region.current.name
  partition  = data.aws_partition.current.partition
  group_id   = "${var.name}-positions"
  log_groups = {
    engine = "/aws/elasticache/${local.group_id}/engine"
    slow   = "/aws/elasticache/${local.group_id}/slow"
  }
  # ElastiCache names the nodes of a replication group <id>-001, -002, ...
  node_ids = [for i in range(var.replicas + 1) : format("%s-%03d", local.group_id, i + 1)]
}

################################################################################
# KMS key: data at rest, the auth-token secret and the logs
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
    sid = "CloudWatchLogsUseForStoreLogGroups"
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
      values   = [for g in values(local.log_groups) : "arn:${local.partition}:logs:${local.region}:${local.account_id}:log-group:${g}"]
    }
  }
}

resource "aws_kms_key" "store" {
  description             = "${var.name} position store (ElastiCache at rest, auth token, logs)"
  enable_key_rotation     = true
  deletion_window_in_days = var.kms_deletion_window_days
  policy                  = data.aws_iam_policy_document.key.json

  tags = merge(var.tags, { Name = "${var.name}-position-store" })
}

resource "aws_kms_alias" "store" {
  name          = "alias/${var.name}-position-store"
  target_key_id = aws_kms_key.store.key_id
}

################################################################################
# AUTH token: generated once by Secrets Manager, kept in a secret; the ECS
# task reads it from there (INGEST_REDIS_PASSWORD)
################################################################################

data "aws_secretsmanager_random_password" "auth_token" {
  password_length     = 64
  exclude_punctuation = true
}

resource "aws_secretsmanager_secret" "auth_token" {
  #checkov:skip=CKV2_AWS_57:Rotating an ElastiCache AUTH token needs the ROTATE/SET strategy run against the replication group while clients roll over; see the module README's runbook, no rotation Lambda.
  name                    = "${var.name}/position-store/auth-token"
  description             = "AUTH token of the ${local.group_id} ElastiCache replication group (ingest-api: INGEST_REDIS_PASSWORD)."
  kms_key_id              = aws_kms_key.store.arn
  recovery_window_in_days = var.secret_recovery_window_days

  tags = merge(var.tags, { Name = "${var.name}-position-store-auth-token" })
}

resource "aws_secretsmanager_secret_version" "auth_token" {
  secret_id     = aws_secretsmanager_secret.auth_token.id
  secret_string = data.aws_secretsmanager_random_password.auth_token.random_password

  # The data source draws a new password on every plan; the first one stays.
  lifecycle {
    ignore_changes = [secret_string]
  }
}

################################################################################
# Network: private subnets, reachable only from the client security groups
################################################################################

resource "aws_elasticache_subnet_group" "this" {
  name        = local.group_id
  description = "Private subnets of the ${var.name} position store"
  subnet_ids  = var.subnet_ids

  tags = merge(var.tags, { Name = local.group_id })
}

resource "aws_security_group" "store" {
  name        = "${var.name}-position-store"
  description = "Position store: the store's port from the ingest-api tasks only, no egress"
  vpc_id      = var.vpc_id

  tags = merge(var.tags, { Name = "${var.name}-position-store" })
}

resource "aws_vpc_security_group_ingress_rule" "from_clients" {
  count = length(var.client_security_group_ids)

  security_group_id            = aws_security_group.store.id
  description                  = "From the ingest-api tasks"
  ip_protocol                  = "tcp"
  from_port                    = var.port
  to_port                      = var.port
  referenced_security_group_id = var.client_security_group_ids[count.index]

  tags = merge(var.tags, { Name = "${var.name}-position-store-from-clients-${count.index}" })
}

################################################################################
# Logs
################################################################################

resource "aws_cloudwatch_log_group" "store" {
  #checkov:skip=CKV_AWS_338:Retention is a per-environment input (log_retention_days, default 365); dev keeps less on purpose.
  for_each = local.log_groups

  name              = each.value
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.store.arn

  tags = merge(var.tags, { Name = each.value })
}

################################################################################
# The replication group
################################################################################

resource "aws_elasticache_replication_group" "this" {
  #checkov:skip=CKV2_AWS_50:Failover follows replicas (prod 1: Multi-AZ automatic failover); dev runs one node on purpose, the store being a view of the stream that refills within seconds.
  replication_group_id = local.group_id
  description          = "${var.name} courier positions: latest per courier, geo index, live feed"
  engine               = var.engine
  engine_version       = var.engine_version
  node_type            = var.node_type
  port                 = var.port

  num_cache_clusters         = var.replicas + 1
  automatic_failover_enabled = var.replicas > 0
  multi_az_enabled           = var.replicas > 0

  subnet_group_name  = aws_elasticache_subnet_group.this.name
  security_group_ids = [aws_security_group.store.id]

  at_rest_encryption_enabled = true
  kms_key_id                 = aws_kms_key.store.arn
  transit_encryption_enabled = true
  transit_encryption_mode    = "required"
  auth_token                 = aws_secretsmanager_secret_version.auth_token.secret_string

  snapshot_retention_limit   = var.snapshot_retention_days
  auto_minor_version_upgrade = true
  apply_immediately          = false

  log_delivery_configuration {
    destination      = aws_cloudwatch_log_group.store["slow"].name
    destination_type = "cloudwatch-logs"
    log_format       = "json"
    log_type         = "slow-log"
  }

  log_delivery_configuration {
    destination      = aws_cloudwatch_log_group.store["engine"].name
    destination_type = "cloudwatch-logs"
    log_format       = "json"
    log_type         = "engine-log"
  }

  tags = merge(var.tags, { Name = local.group_id })
}

################################################################################
# Alarms, per node
################################################################################

resource "aws_cloudwatch_metric_alarm" "memory" {
  count = length(local.node_ids)

  alarm_name          = "${local.node_ids[count.index]}-memory"
  alarm_description   = "Position store node ${local.node_ids[count.index]} uses over ${var.memory_alarm_percent}% of its memory: a larger node_type (see docs/operations.md)."
  namespace           = "AWS/ElastiCache"
  metric_name         = "DatabaseMemoryUsagePercentage"
  dimensions          = { CacheClusterId = local.node_ids[count.index] }
  statistic           = "Maximum"
  period              = 300
  evaluation_periods  = 2
  threshold           = var.memory_alarm_percent
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "breaching"
  alarm_actions       = var.alarm_actions
  ok_actions          = var.alarm_actions

  tags = var.tags
}

resource "aws_cloudwatch_metric_alarm" "cpu" {
  count = length(local.node_ids)

  alarm_name          = "${local.node_ids[count.index]}-engine-cpu"
  alarm_description   = "Position store node ${local.node_ids[count.index]}: the engine thread is over ${var.cpu_alarm_percent}% busy (update scripts and nearby queries)."
  namespace           = "AWS/ElastiCache"
  metric_name         = "EngineCPUUtilization"
  dimensions          = { CacheClusterId = local.node_ids[count.index] }
  statistic           = "Average"
  period              = 300
  evaluation_periods  = 3
  threshold           = var.cpu_alarm_percent
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "breaching"
  alarm_actions       = var.alarm_actions
  ok_actions          = var.alarm_actions

  tags = var.tags
}

resource "aws_cloudwatch_metric_alarm" "evictions" {
  count = length(local.node_ids)

  alarm_name          = "${local.node_ids[count.index]}-evictions"
  alarm_description   = "Position store node ${local.node_ids[count.index]} evicted keys: it is full and couriers' latest positions are being forgotten before their TTL."
  namespace           = "AWS/ElastiCache"
  metric_name         = "Evictions"
  dimensions          = { CacheClusterId = local.node_ids[count.index] }
  statistic           = "Sum"
  period              = 300
  evaluation_periods  = 1
  threshold           = 0
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = var.alarm_actions
  ok_actions          = var.alarm_actions

  tags = var.tags
}
