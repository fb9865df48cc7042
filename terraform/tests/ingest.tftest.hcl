# The ingest module on its own (mocked apply): what the
# load balancer checks, keeps open and lets through, and how the service
# scales. Runs from each environment directory; the values are the module's.

mock_provider "aws" {
  source = "./tests/mocks"
}

variables {
  name                    = "courier-test"
  vpc_id                  = "vpc-0123456789abcdef0"
  vpc_cidr_block          = "10.40.0.0/16"
  public_subnet_ids       = ["subnet-0000000000000000a", "subnet-0000000000000000b"]
  private_subnet_ids      = ["subnet-0000000000000000c", "subnet-0000000000000000d"]
  s3_prefix_list_id       = "pl-6da54004"
  certificate_arn         = "arn:aws:acm:eu-west-1:123456789012:certificate/00000000-0000-0000-0000-000000000000"
  access_logs_bucket_name = "test-courier-access-logs"
  container_image         = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/ingest-api:0123456789ab"
  ecr_repository_arn      = "arn:aws:ecr:eu-west-1:123456789012:repository/ingest-api"
  stream_name             = "courier-test-positions"
  stream_arn              = "arn:aws:kinesis:eu-west-1:123456789012:stream/courier-test-positions"
  stream_kms_key_arn      = "arn:aws:kms:eu-west-1:123456789012:key/00000000-0000-0000-0000-000000000000"
}

run "ingest" {
  command = apply

  module {
    source = "../../modules/ingest"
  }

  # Liveness, not readiness: /readyz answers 503 while Kinesis is slow or the
  # in-flight budget is 90 % full, and a target group that checks it would
  # take every task out (and ECS would replace them) in exactly that spike.
  assert {
    condition     = aws_lb_target_group.this.health_check[0].path == "/healthz"
    error_message = "the target group must check liveness (/healthz), not readiness"
  }

  # The service's keep-alive must outlast the ALB's idle timeout, or the ALB
  # reuses a connection the service has just closed and answers 502.
  assert {
    condition     = aws_lb.this.idle_timeout == 60
    error_message = "ALB idle timeout is 60 s"
  }

  assert {
    condition = tonumber(one([
      for e in jsondecode(aws_ecs_task_definition.this.container_definitions)[0].environment : e.value
      if e.name == "INGEST_KEEP_ALIVE_SECS"
    ])) > aws_lb.this.idle_timeout
    error_message = "INGEST_KEEP_ALIVE_SECS in the task definition must be longer than the ALB idle timeout"
  }

  # Only the public API reaches the service; everything else is a 404 from the ALB.
  assert {
    condition     = aws_lb_listener.https.default_action[0].type == "fixed-response" && aws_lb_listener.https.default_action[0].fixed_response[0].status_code == "404"
    error_message = "the HTTPS listener's default action must be a fixed 404"
  }

  assert {
    condition = sort(flatten([
      for r in aws_lb_listener_rule.public : [for c in r.condition : c.path_pattern[0].values]
    ])) == sort(["/v1/*", "/map", "/track", "/assets/*"])
    error_message = "exactly /v1/* (with /v1/track), /map, /track and /assets/* are forwarded to the service"
  }

  # Customer tracking tokens travel in the X-Tracking-Token header (and API
  # keys in Authorization), never in a path, so the ALB access logs never
  # hold one; the WAF logs, which hold headers, redact both.
  assert {
    condition = toset(flatten([
      for f in aws_wafv2_web_acl_logging_configuration.this[0].redacted_fields : [for h in f.single_header : h.name]
    ])) == toset(["authorization", "x-api-key", "x-tracking-token"])
    error_message = "the WAF logs redact the authorization, x-api-key and x-tracking-token headers"
  }

  # The dispatch keys come from their own Secrets Manager secret, never from
  # a plain environment variable, and the execution role reads exactly the
  # secrets of the task.
  assert {
    condition = one([
      for s in jsondecode(aws_ecs_task_definition.this.container_definitions)[0].secrets : s.valueFrom
      if s.name == "INGEST_DISPATCH_API_KEYS"
    ]) == aws_secretsmanager_secret.dispatch_api_keys.arn
    error_message = "INGEST_DISPATCH_API_KEYS comes from the dispatch-keys secret"
  }

  assert {
    condition = length([
      for e in jsondecode(aws_ecs_task_definition.this.container_definitions)[0].environment : e
      if e.name == "INGEST_DISPATCH_API_KEYS"
    ]) == 0
    error_message = "the dispatch keys are never a plain environment variable"
  }

  assert {
    condition = toset(one([
      for st in data.aws_iam_policy_document.execution.statement : st.resources
      if contains(st.actions, "secretsmanager:GetSecretValue")
    ])) == toset([aws_secretsmanager_secret.api_keys.arn, aws_secretsmanager_secret.dispatch_api_keys.arn])
    error_message = "the execution role reads exactly the API-keys and dispatch-keys secrets"
  }

  assert {
    condition     = aws_secretsmanager_secret.dispatch_api_keys.kms_key_id == aws_kms_key.ingest.arn
    error_message = "the dispatch-keys secret is encrypted with the module's key"
  }

  assert {
    condition     = alltrue([for r in aws_lb_listener_rule.public : r.action[0].type == "forward"])
    error_message = "the public rules forward to the target group"
  }

  # Metrics: an ADOT collector sidecar scrapes /metrics inside the task and
  # sends them to CloudWatch as EMF.
  assert {
    condition = contains(
      [for c in jsondecode(aws_ecs_task_definition.this.container_definitions) : c.name],
      "metrics-collector"
    )
    error_message = "the task runs the metrics collector sidecar"
  }

  # Autoscaling on requests per target, sized from measured capacity.
  assert {
    condition     = aws_appautoscaling_policy.requests[0].target_tracking_scaling_policy_configuration[0].predefined_metric_specification[0].predefined_metric_type == "ALBRequestCountPerTarget"
    error_message = "the service scales on ALBRequestCountPerTarget"
  }
}

# The precondition refuses a keep-alive that does not outlast the idle timeout.
run "keep_alive_not_longer_than_idle_timeout_is_refused" {
  command = plan

  module {
    source = "../../modules/ingest"
  }

  variables {
    keep_alive_seconds   = 60
    idle_timeout_seconds = 60
  }

  expect_failures = [aws_lb.this]
}

# /metrics (and /readyz, /openapi.json) can never be made public by accident.
run "metrics_path_cannot_be_public" {
  command = plan

  module {
    source = "../../modules/ingest"
  }

  variables {
    public_paths = ["/v1/*", "/metrics"]
  }

  expect_failures = [var.public_paths]
}

# With the shared position store: its URL in the environment, its AUTH token
# as a secret (never in the environment), and egress from the tasks to it.
run "with_position_store" {
  command = apply

  module {
    source = "../../modules/ingest"
  }

  variables {
    position_store = {
      url                   = "rediss://courier-test-positions.abc123.euw1.cache.amazonaws.com:6379"
      auth_token_secret_arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:courier-test/position-store/auth-token-AbCdEf"
      kms_key_arn           = "arn:aws:kms:eu-west-1:123456789012:key/11111111-1111-1111-1111-111111111111"
      security_group_id     = "sg-0000000000000000e"
      port                  = 6379
    }
  }

  assert {
    condition = one([
      for e in jsondecode(aws_ecs_task_definition.this.container_definitions)[0].environment : e.value
      if e.name == "INGEST_REDIS_URL"
    ]) == var.position_store.url
    error_message = "the task gets the store's URL"
  }

  assert {
    condition = one([
      for s in jsondecode(aws_ecs_task_definition.this.container_definitions)[0].secrets : s.valueFrom
      if s.name == "INGEST_REDIS_PASSWORD"
    ]) == var.position_store.auth_token_secret_arn
    error_message = "the AUTH token comes from the store's secret"
  }

  assert {
    condition = length([
      for e in jsondecode(aws_ecs_task_definition.this.container_definitions)[0].environment : e
      if e.name == "INGEST_REDIS_PASSWORD"
    ]) == 0
    error_message = "the AUTH token is never a plain environment variable"
  }

  assert {
    condition     = aws_vpc_security_group_egress_rule.tasks_to_position_store[0].referenced_security_group_id == "sg-0000000000000000e" && aws_vpc_security_group_egress_rule.tasks_to_position_store[0].from_port == 6379
    error_message = "the tasks may reach the store's security group on its port"
  }
}
