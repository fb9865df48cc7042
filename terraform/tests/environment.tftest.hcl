# terraform test of one environment (run from terraform/envs/dev and
# terraform/envs/prod (their tests/ is a link to this directory), by
# scripts/check-terraform.sh): a plan, then an apply, against a mocked AWS
# provider, with the environment's own terraform.tfvars. The mocked provider
# answers every read and fills computed attributes, so these runs check the
# configuration (types, validations, preconditions, expressions, count and
# for_each) and the values we decide, not AWS itself; tests/infra/moto_apply
# applies the modules moto can emulate for real.

mock_provider "aws" {
  source = "./tests/mocks"
}

# The operator-supplied inputs (no defaults, not in terraform.tfvars).
variables {
  aws_account_id      = "123456789012"
  bucket_name_prefix  = "test-courier"
  certificate_arn     = "arn:aws:acm:eu-west-1:123456789012:certificate/00000000-0000-0000-0000-000000000000"
  ingest_image_tag    = "0123456789ab"
  compactor_image_tag = "0123456789ab"
  alert_email         = "oncall@example.org"
}

run "plan" {
  command = plan

  assert {
    condition     = length(module.network.private_subnet_ids) == length(var.availability_zones)
    error_message = "one private subnet per availability zone"
  }
}

run "apply" {
  command = apply

  assert {
    condition     = output.compactor_task_definition_family == "courier-${var.environment}-compactor"
    error_message = "the compactor task definition is registered under its family"
  }

  # The retention policy, declared once in terraform.tfvars, reaches every tier:
  # the stream, the dead-letter lifecycle rule, and the maintenance DAG's settings.
  assert {
    condition     = module.stream.retention_hours == var.stream_retention_hours
    error_message = "the stream keeps its records stream_retention_hours"
  }

  assert {
    condition = module.lake.dead_letter_lifecycle == {
      prefix          = "${module.lake.dead_letter_prefix}/"
      expiration_days = var.dead_letter_expiration_days
      noncurrent_days = 1
    }
    error_message = "dead letters expire after dead_letter_expiration_days on the dead-letter prefix"
  }

  assert {
    condition = module.orchestration.retention_settings == {
      "courier.lake_retention_days"          = tostring(var.lake_retention_days)
      "courier.dead_letter_retention_days"   = tostring(var.dead_letter_expiration_days)
      "courier.warehouse_raw_retention_days" = tostring(var.warehouse_raw_retention_days)
      "courier.gold_retention_days"          = tostring(var.gold_retention_days)
    }
    error_message = "the maintenance DAG gets the lake, dead-letter, warehouse raw and gold retention of the environment"
  }
}
