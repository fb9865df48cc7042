data "aws_region" "current" {}

data "aws_caller_identity" "current" {}

data "aws_partition" "current" {}

locals {
  region         = data.aws_region.current.id
  account_id     = data.aws_caller_identity.current.account_id
  partition      = data.aws_partition.current.partition
  container_name = "ingest-api"
  container_port = 8080
  log_group_name = "/ecs/${var.name}/${local.container_name}"
  waf_log_group  = "aws-waf-logs-${var.name}-ingest"

  # EMF log group of the metrics collector sidecar: CloudWatch extracts the
  # metrics (namespace var.metrics_namespace) from the events written here.
  metrics_log_group = "/ecs/${var.name}/${local.container_name}-metrics"
  collector_name    = "metrics-collector"

  # ADOT collector: scrape the service's Prometheus endpoint inside the task
  # (localhost: /metrics is not reachable through the load balancer) and send
  # the samples to CloudWatch as embedded metric format (EMF) log events.
  collector_config = yamlencode({
    receivers = {
      prometheus = {
        config = {
          global = { scrape_interval = "${var.metrics_scrape_interval_seconds}s", scrape_timeout = "5s" }
          scrape_configs = [{
            job_name       = local.container_name
            metrics_path   = "/metrics"
            static_configs = [{ targets = ["localhost:${local.container_port}"], labels = { ServiceName = local.container_name } }]
            metric_relabel_configs = [{
              source_labels = ["__name__"]
              regex         = "ingest_.*"
              action        = "keep"
            }]
          }]
        }
      }
    }
    processors = { batch = { timeout = "60s" } }
    exporters = {
      awsemf = {
        namespace               = var.metrics_namespace
        log_group_name          = local.metrics_log_group
        log_stream_name         = "{TaskId}"
        region                  = local.region
        dimension_rollup_option = "NoDimensionRollup"
        # Per service, not per task: the alarms and the dashboard aggregate
        # over the tasks.
        metric_declarations = [{
          dimensions            = [["ServiceName"], ["ServiceName", "route", "status"], ["ServiceName", "reason"], ["ServiceName", "result"]]
          metric_name_selectors = ["^ingest_.*"]
        }]
        resource_to_telemetry_conversion = { enabled = false }
      }
    }
    service = {
      pipelines = {
        metrics = { receivers = ["prometheus"], processors = ["batch"], exporters = ["awsemf"] }
      }
    }
  })

  # Set last so that extra_environment cannot override them.
  environment = merge(var.extra_environment, {
    INGEST_SINK        = "kinesis"
    INGEST_STREAM_NAME = var.stream_name
    INGEST_LISTEN      = "0.0.0.0:${local.container_port}"
    INGEST_LOG_FORMAT  = "json"
    AWS_REGION         = local.region
    # Longer than the load balancer's idle timeout: the ALB, not the
    # service, closes idle connections, so it never reuses one the service
    # has just closed (which it would answer with a 502).
    INGEST_KEEP_ALIVE_SECS = tostring(var.keep_alive_seconds)
    }, var.position_store == null ? {} : {
    # The shared position store (TLS); its AUTH token is a secret below.
    INGEST_REDIS_URL = var.position_store.url
  })

  secrets = concat(
    [
      { name = "INGEST_API_KEYS", valueFrom = aws_secretsmanager_secret.api_keys.arn },
      { name = "INGEST_DISPATCH_API_KEYS", valueFrom = aws_secretsmanager_secret.dispatch_api_keys.arn },
    ],
    var.position_store == null ? [] : [{ name = "INGEST_REDIS_PASSWORD", valueFrom = var.position_store.auth_token_secret_arn }],
  )
}

################################################################################
# KMS key: container logs, WAF logs and the API-keys secret
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
    sid = "CloudWatchLogsUseForIngestLogGroups"
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
      values = [
        "arn:${local.partition}:logs:${local.region}:${local.account_id}:log-group:${local.log_group_name}",
        "arn:${local.partition}:logs:${local.region}:${local.account_id}:log-group:${local.waf_log_group}",
        "arn:${local.partition}:logs:${local.region}:${local.account_id}:log-group:${local.metrics_log_group}",
      ]
    }
  }
}

resource "aws_kms_key" "ingest" {
  description             = "${var.name} ingest-api logs and API-keys secret"
  enable_key_rotation     = true
  deletion_window_in_days = var.kms_deletion_window_days
  policy                  = data.aws_iam_policy_document.key.json

  tags = merge(var.tags, { Name = "${var.name}-ingest" })
}

resource "aws_kms_alias" "ingest" {
  name          = "alias/${var.name}-ingest"
  target_key_id = aws_kms_key.ingest.key_id
}

################################################################################
# API keys secret (value put by the operator, never by Terraform)
################################################################################

resource "aws_secretsmanager_secret" "api_keys" {
  #checkov:skip=CKV2_AWS_57:The API keys are issued to courier clients by operators; rotating them needs a client roll-out, not a rotation Lambda. See the module README.
  name                    = "${var.name}/ingest-api/api-keys"
  description             = "Ingest API keys, one per line: NAME:SHA256_HEX[:RPS]. Set with: aws secretsmanager put-secret-value."
  kms_key_id              = aws_kms_key.ingest.arn
  recovery_window_in_days = var.secret_recovery_window_days

  tags = merge(var.tags, { Name = "${var.name}-ingest-api-keys" })
}

# Dispatch keys (INGEST_DISPATCH_API_KEYS): the only credentials that create
# and revoke customer tracking links and erase a courier from the live store.
# Separate from the courier-app keys so that a leaked app key cannot.
resource "aws_secretsmanager_secret" "dispatch_api_keys" {
  #checkov:skip=CKV2_AWS_57:Dispatch keys are issued to the dispatch system by operators; rotating them needs a client roll-out, not a rotation Lambda. See the module README.
  name                    = "${var.name}/ingest-api/dispatch-api-keys"
  description             = "Ingest API dispatch keys, one per line: NAME:SHA256_HEX[:RPS]. Set with: aws secretsmanager put-secret-value."
  kms_key_id              = aws_kms_key.ingest.arn
  recovery_window_in_days = var.secret_recovery_window_days

  tags = merge(var.tags, { Name = "${var.name}-ingest-dispatch-api-keys" })
}

################################################################################
# Logs
################################################################################

resource "aws_cloudwatch_log_group" "ingest" {
  #checkov:skip=CKV_AWS_338:Retention is a per-environment input (log_retention_days, default 365); dev keeps less on purpose.
  name              = local.log_group_name
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.ingest.arn

  tags = var.tags
}

resource "aws_cloudwatch_log_group" "metrics" {
  #checkov:skip=CKV_AWS_338:Retention is a per-environment input (log_retention_days, default 365); dev keeps less on purpose.
  name              = local.metrics_log_group
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.ingest.arn

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

# Task role: what the ingest-api process itself may do.
resource "aws_iam_role" "task" {
  name               = "${var.name}-ingest-api-task"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json

  tags = var.tags
}

data "aws_iam_policy_document" "task" {
  statement {
    sid = "WriteToStream"
    actions = [
      "kinesis:PutRecords",
      "kinesis:PutRecord",
      "kinesis:ListShards",
      "kinesis:DescribeStreamSummary",
    ]
    resources = [var.stream_arn]
  }

  statement {
    sid       = "EncryptStreamRecords"
    actions   = ["kms:GenerateDataKey"]
    resources = [var.stream_kms_key_arn]
  }

  # The metrics collector sidecar runs with the task role.
  statement {
    sid       = "WriteMetricsAsEmf"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"]
    resources = [aws_cloudwatch_log_group.metrics.arn, "${aws_cloudwatch_log_group.metrics.arn}:*"]
  }
}

resource "aws_iam_role_policy" "task" {
  name   = "write-kinesis"
  role   = aws_iam_role.task.id
  policy = data.aws_iam_policy_document.task.json
}

# Execution role: what ECS needs to start the task (pull image, read secret, ship logs).
resource "aws_iam_role" "execution" {
  name               = "${var.name}-ingest-api-execution"
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
    resources = ["${aws_cloudwatch_log_group.ingest.arn}:*"]
  }

  statement {
    sid       = "ReadApiKeys"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = compact([aws_secretsmanager_secret.api_keys.arn, aws_secretsmanager_secret.dispatch_api_keys.arn, try(var.position_store.auth_token_secret_arn, "")])
  }

  statement {
    sid       = "DecryptApiKeys"
    actions   = ["kms:Decrypt"]
    resources = compact([aws_kms_key.ingest.arn, try(var.position_store.kms_key_arn, "")])

    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["secretsmanager.${local.region}.amazonaws.com"]
    }
  }
}

resource "aws_iam_role_policy" "execution" {
  name   = "start-ingest-api"
  role   = aws_iam_role.execution.id
  policy = data.aws_iam_policy_document.execution.json
}

################################################################################
# Security groups
################################################################################

resource "aws_security_group" "alb" {
  name        = "${var.name}-ingest-alb"
  description = "Ingest API load balancer: HTTPS from clients, HTTP to the tasks"
  vpc_id      = var.vpc_id

  tags = merge(var.tags, { Name = "${var.name}-ingest-alb" })
}

resource "aws_vpc_security_group_ingress_rule" "alb_https" {
  for_each = toset(var.alb_ingress_cidr_blocks)

  security_group_id = aws_security_group.alb.id
  description       = "HTTPS from clients"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv4         = each.value

  tags = merge(var.tags, { Name = "${var.name}-alb-https" })
}

resource "aws_vpc_security_group_ingress_rule" "alb_http_redirect" {
  for_each = toset(var.http_redirect_ingress_cidr_blocks)

  security_group_id = aws_security_group.alb.id
  description       = "HTTP, answered only with a redirect to HTTPS"
  ip_protocol       = "tcp"
  from_port         = 80
  to_port           = 80
  cidr_ipv4         = each.value

  tags = merge(var.tags, { Name = "${var.name}-alb-http-redirect" })
}

resource "aws_vpc_security_group_egress_rule" "alb_to_tasks" {
  security_group_id            = aws_security_group.alb.id
  description                  = "To the ingest-api tasks"
  ip_protocol                  = "tcp"
  from_port                    = local.container_port
  to_port                      = local.container_port
  referenced_security_group_id = aws_security_group.tasks.id

  tags = merge(var.tags, { Name = "${var.name}-alb-to-tasks" })
}

resource "aws_security_group" "tasks" {
  name        = "${var.name}-ingest-tasks"
  description = "Ingest API tasks: traffic from the load balancer, HTTPS to AWS APIs"
  vpc_id      = var.vpc_id

  tags = merge(var.tags, { Name = "${var.name}-ingest-tasks" })
}

resource "aws_vpc_security_group_ingress_rule" "tasks_from_alb" {
  security_group_id            = aws_security_group.tasks.id
  description                  = "From the load balancer"
  ip_protocol                  = "tcp"
  from_port                    = local.container_port
  to_port                      = local.container_port
  referenced_security_group_id = aws_security_group.alb.id

  tags = merge(var.tags, { Name = "${var.name}-tasks-from-alb" })
}

resource "aws_vpc_security_group_egress_rule" "tasks_to_endpoints" {
  security_group_id = aws_security_group.tasks.id
  description       = "HTTPS to the interface VPC endpoints (Kinesis, ECR, logs, Secrets Manager, STS)"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv4         = var.vpc_cidr_block

  tags = merge(var.tags, { Name = "${var.name}-tasks-to-endpoints" })
}

resource "aws_vpc_security_group_egress_rule" "tasks_to_position_store" {
  count = var.position_store == null ? 0 : 1

  security_group_id            = aws_security_group.tasks.id
  description                  = "To the shared position store (ElastiCache, TLS)"
  ip_protocol                  = "tcp"
  from_port                    = var.position_store.port
  to_port                      = var.position_store.port
  referenced_security_group_id = var.position_store.security_group_id

  tags = merge(var.tags, { Name = "${var.name}-tasks-to-position-store" })
}

resource "aws_vpc_security_group_egress_rule" "tasks_to_s3" {
  security_group_id = aws_security_group.tasks.id
  description       = "HTTPS to S3 through the gateway endpoint (ECR image layers)"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  prefix_list_id    = var.s3_prefix_list_id

  tags = merge(var.tags, { Name = "${var.name}-tasks-to-s3" })
}

################################################################################
# Load balancer
################################################################################

resource "aws_lb" "this" {
  #checkov:skip=CKV_AWS_150:Deletion protection is the deletion_protection input (default true); only the throw-away dev environment turns it off.
  name                       = "${var.name}-ingest"
  load_balancer_type         = "application"
  internal                   = false
  subnets                    = var.public_subnet_ids
  security_groups            = [aws_security_group.alb.id]
  drop_invalid_header_fields = true
  desync_mitigation_mode     = "strictest"
  enable_deletion_protection = var.deletion_protection
  idle_timeout               = var.idle_timeout_seconds

  access_logs {
    bucket  = var.access_logs_bucket_name
    prefix  = var.access_logs_prefix
    enabled = true
  }

  tags = merge(var.tags, { Name = "${var.name}-ingest" })

  lifecycle {
    precondition {
      condition     = var.keep_alive_seconds > var.idle_timeout_seconds
      error_message = "keep_alive_seconds (the service's) must be longer than idle_timeout_seconds (the load balancer's), or the ALB reuses connections the service has closed and answers 502."
    }
  }
}

resource "aws_lb_target_group" "this" {
  #checkov:skip=CKV_AWS_378:TLS ends at the load balancer; the hop to the tasks stays inside private subnets and the service speaks plain HTTP on 8080.
  name                 = "${var.name}-ingest"
  vpc_id               = var.vpc_id
  target_type          = "ip"
  protocol             = "HTTP"
  port                 = local.container_port
  deregistration_delay = 30

  # Liveness (/healthz), not readiness: /readyz answers 503 while Kinesis is
  # slow or the in-flight budget is 90 % full; checking it here would take
  # every task out of service (and ECS would replace them) in exactly such a
  # spike. Overload is answered by the service itself (503 + Retry-After on
  # POST), and draining is ECS deregistering the target before SIGTERM.
  health_check {
    enabled             = true
    protocol            = "HTTP"
    path                = "/healthz"
    port                = "traffic-port"
    matcher             = "200"
    interval            = 15
    timeout             = 5
    healthy_threshold   = 2
    unhealthy_threshold = 3
  }

  tags = merge(var.tags, { Name = "${var.name}-ingest" })
}

resource "aws_lb_listener" "https" {
  load_balancer_arn = aws_lb.this.arn
  port              = 443
  protocol          = "HTTPS"
  ssl_policy        = var.ssl_policy
  certificate_arn   = var.certificate_arn

  # Anything not matched by a rule below (/metrics, /readyz, /openapi.json,
  # scanners' guesses) never reaches the service.
  default_action {
    type = "fixed-response"

    fixed_response {
      content_type = "application/json"
      message_body = "{\"error\":\"not_found\"}"
      status_code  = "404"
    }
  }

  tags = merge(var.tags, { Name = "${var.name}-ingest-https" })
}

# The paths the internet may reach (public_paths: the /v1 API and the live
# map page, see the variable), one rule each, forwarded to the service.
resource "aws_lb_listener_rule" "public" {
  for_each = { for i, p in var.public_paths : p => i }

  listener_arn = aws_lb_listener.https.arn
  priority     = 100 + each.value

  action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.this.arn
  }

  condition {
    path_pattern {
      values = [each.key]
    }
  }

  tags = merge(var.tags, { Name = "${var.name}-ingest-${replace(trim(each.key, "/*"), "/", "-")}" })
}

resource "aws_lb_listener" "http_redirect" {
  load_balancer_arn = aws_lb.this.arn
  port              = 80
  protocol          = "HTTP"

  default_action {
    type = "redirect"

    redirect {
      protocol    = "HTTPS"
      port        = "443"
      status_code = "HTTP_301"
    }
  }

  tags = merge(var.tags, { Name = "${var.name}-ingest-http-redirect" })
}

################################################################################
# WAF
################################################################################

resource "aws_wafv2_web_acl" "this" {
  count = var.enable_waf ? 1 : 0

  name        = "${var.name}-ingest"
  description = "Ingest API: AWS managed rules and a per-IP rate limit"
  scope       = "REGIONAL"

  default_action {
    allow {}
  }

  rule {
    name     = "aws-common"
    priority = 10

    override_action {
      none {}
    }

    statement {
      managed_rule_group_statement {
        vendor_name = "AWS"
        name        = "AWSManagedRulesCommonRuleSet"

        # Position batches are larger than the 8 KB body limit of this rule.
        rule_action_override {
          name = "SizeRestrictions_BODY"

          action_to_use {
            count {}
          }
        }
      }
    }

    visibility_config {
      cloudwatch_metrics_enabled = true
      metric_name                = "${var.name}-ingest-aws-common"
      sampled_requests_enabled   = true
    }
  }

  rule {
    name     = "aws-known-bad-inputs"
    priority = 20

    override_action {
      none {}
    }

    statement {
      managed_rule_group_statement {
        vendor_name = "AWS"
        name        = "AWSManagedRulesKnownBadInputsRuleSet"
      }
    }

    visibility_config {
      cloudwatch_metrics_enabled = true
      metric_name                = "${var.name}-ingest-known-bad-inputs"
      sampled_requests_enabled   = true
    }
  }

  # Blocks Tor exit nodes and anonymising VPNs; requests from cloud hosting
  # ranges are only counted, because partner back ends may send from there.
  rule {
    name     = "aws-anonymous-ip"
    priority = 25

    override_action {
      none {}
    }

    statement {
      managed_rule_group_statement {
        vendor_name = "AWS"
        name        = "AWSManagedRulesAnonymousIpList"

        rule_action_override {
          name = "HostingProviderIPList"

          action_to_use {
            count {}
          }
        }
      }
    }

    visibility_config {
      cloudwatch_metrics_enabled = true
      metric_name                = "${var.name}-ingest-anonymous-ip"
      sampled_requests_enabled   = true
    }
  }

  rule {
    name     = "rate-limit-per-ip"
    priority = 30

    action {
      block {}
    }

    statement {
      rate_based_statement {
        limit              = var.waf_rate_limit_per_ip
        aggregate_key_type = "IP"
      }
    }

    visibility_config {
      cloudwatch_metrics_enabled = true
      metric_name                = "${var.name}-ingest-rate-limit"
      sampled_requests_enabled   = true
    }
  }

  visibility_config {
    cloudwatch_metrics_enabled = true
    metric_name                = "${var.name}-ingest"
    sampled_requests_enabled   = true
  }

  tags = merge(var.tags, { Name = "${var.name}-ingest" })
}

resource "aws_wafv2_web_acl_association" "this" {
  count = var.enable_waf ? 1 : 0

  resource_arn = aws_lb.this.arn
  web_acl_arn  = aws_wafv2_web_acl.this[0].arn
}

resource "aws_cloudwatch_log_group" "waf" {
  #checkov:skip=CKV_AWS_338:Retention is a per-environment input (log_retention_days, default 365); dev keeps less on purpose.
  count = var.enable_waf ? 1 : 0

  name              = local.waf_log_group
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.ingest.arn

  tags = var.tags
}

resource "aws_wafv2_web_acl_logging_configuration" "this" {
  count = var.enable_waf ? 1 : 0

  resource_arn            = aws_wafv2_web_acl.this[0].arn
  log_destination_configs = [aws_cloudwatch_log_group.waf[0].arn]

  # Never write API keys or customer tracking tokens into the WAF logs.
  redacted_fields {
    single_header {
      name = "authorization"
    }
  }

  redacted_fields {
    single_header {
      name = "x-tracking-token"
    }
  }

  redacted_fields {
    single_header {
      name = "x-api-key"
    }
  }
}

################################################################################
# ECS cluster, task definition, service
################################################################################

resource "aws_ecs_cluster" "this" {
  name = var.name

  setting {
    name  = "containerInsights"
    value = "enabled"
  }

  tags = merge(var.tags, { Name = var.name })
}

resource "aws_ecs_task_definition" "this" {
  family                   = "${var.name}-${local.container_name}"
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

      portMappings = [
        {
          name          = "http"
          containerPort = local.container_port
          hostPort      = local.container_port
          protocol      = "tcp"
          appProtocol   = "http"
        },
      ]

      environment = [for k in sort(keys(local.environment)) : { name = k, value = local.environment[k] }]

      secrets = local.secrets

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
          awslogs-group         = aws_cloudwatch_log_group.ingest.name
          awslogs-region        = local.region
          awslogs-stream-prefix = local.container_name
          mode                  = "non-blocking"
          max-buffer-size       = "25m"
        }
      }
    },
    {
      # Not essential: losing metrics must not take ingestion down.
      name                   = local.collector_name
      image                  = var.metrics_collector_image
      essential              = false
      user                   = var.container_user
      readonlyRootFilesystem = true
      cpu                    = 0
      memoryReservation      = 64

      environment = [{ name = "AOT_CONFIG_CONTENT", value = local.collector_config }]

      linuxParameters = {
        initProcessEnabled = true
        capabilities = {
          drop = ["ALL"]
        }
      }

      logConfiguration = {
        logDriver = "awslogs"
        options = {
          awslogs-group         = aws_cloudwatch_log_group.ingest.name
          awslogs-region        = local.region
          awslogs-stream-prefix = local.collector_name
          mode                  = "non-blocking"
          max-buffer-size       = "4m"
        }
      }
    },
  ])

  tags = merge(var.tags, { Name = "${var.name}-${local.container_name}" })
}

resource "aws_ecs_service" "this" {
  name                               = local.container_name
  cluster                            = aws_ecs_cluster.this.id
  task_definition                    = aws_ecs_task_definition.this.arn
  desired_count                      = var.desired_count
  launch_type                        = "FARGATE"
  platform_version                   = "LATEST"
  health_check_grace_period_seconds  = 30
  deployment_minimum_healthy_percent = 100
  deployment_maximum_percent         = 200
  enable_ecs_managed_tags            = true
  propagate_tags                     = "SERVICE"

  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }

  network_configuration {
    subnets          = var.private_subnet_ids
    security_groups  = [aws_security_group.tasks.id]
    assign_public_ip = false
  }

  load_balancer {
    target_group_arn = aws_lb_target_group.this.arn
    container_name   = local.container_name
    container_port   = local.container_port
  }

  tags = merge(var.tags, { Name = "${var.name}-${local.container_name}" })

  lifecycle {
    # Autoscaling owns the task count after creation.
    ignore_changes = [desired_count]

    precondition {
      condition     = var.min_capacity <= var.desired_count && var.desired_count <= var.max_capacity
      error_message = "desired_count must lie between min_capacity and max_capacity."
    }
  }

  depends_on = [aws_lb_listener_rule.public, aws_iam_role_policy.execution]
}

################################################################################
# Autoscaling
################################################################################

resource "aws_appautoscaling_target" "this" {
  count = var.enable_autoscaling ? 1 : 0

  service_namespace  = "ecs"
  resource_id        = "service/${aws_ecs_cluster.this.name}/${aws_ecs_service.this.name}"
  scalable_dimension = "ecs:service:DesiredCount"
  min_capacity       = var.min_capacity
  max_capacity       = var.max_capacity

  tags = var.tags
}

resource "aws_appautoscaling_policy" "cpu" {
  count = var.enable_autoscaling ? 1 : 0

  name               = "${var.name}-ingest-cpu"
  policy_type        = "TargetTrackingScaling"
  service_namespace  = aws_appautoscaling_target.this[0].service_namespace
  resource_id        = aws_appautoscaling_target.this[0].resource_id
  scalable_dimension = aws_appautoscaling_target.this[0].scalable_dimension

  target_tracking_scaling_policy_configuration {
    target_value       = var.cpu_target_percent
    scale_in_cooldown  = 300
    scale_out_cooldown = 60

    predefined_metric_specification {
      predefined_metric_type = "ECSServiceAverageCPUUtilization"
    }
  }
}

resource "aws_appautoscaling_policy" "requests" {
  count = var.enable_autoscaling ? 1 : 0

  name               = "${var.name}-ingest-requests"
  policy_type        = "TargetTrackingScaling"
  service_namespace  = aws_appautoscaling_target.this[0].service_namespace
  resource_id        = aws_appautoscaling_target.this[0].resource_id
  scalable_dimension = aws_appautoscaling_target.this[0].scalable_dimension

  target_tracking_scaling_policy_configuration {
    target_value       = var.requests_per_target
    scale_in_cooldown  = 300
    scale_out_cooldown = 60

    predefined_metric_specification {
      predefined_metric_type = "ALBRequestCountPerTarget"
      resource_label         = "${aws_lb.this.arn_suffix}/${aws_lb_target_group.this.arn_suffix}"
    }
  }
}
