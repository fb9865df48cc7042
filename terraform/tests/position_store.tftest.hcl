# The position store module on its own (mocked apply): private, TLS, encrypted
# at rest with its own key, AUTH from Secrets Manager, failover with a
# replica, an alarm of each kind per node. Runs from each environment
# directory; the values are the module's.

mock_provider "aws" {
  source = "./tests/mocks"
}

variables {
  name                      = "courier-test"
  vpc_id                    = "vpc-0123456789abcdef0"
  subnet_ids                = ["subnet-0000000000000000c", "subnet-0000000000000000d"]
  client_security_group_ids = ["sg-0000000000000000a"]
  node_type                 = "cache.m7g.large"
  replicas                  = 1
  alarm_actions             = ["arn:aws:sns:eu-west-1:123456789012:courier-test-alerts"]
}

run "position_store" {
  command = apply

  module {
    source = "../../modules/position_store"
  }

  assert {
    condition     = aws_elasticache_replication_group.this.transit_encryption_enabled && aws_elasticache_replication_group.this.transit_encryption_mode == "required"
    error_message = "the store must require TLS in transit"
  }

  assert {
    condition     = aws_elasticache_replication_group.this.at_rest_encryption_enabled && aws_elasticache_replication_group.this.kms_key_id == aws_kms_key.store.arn
    error_message = "the store must be encrypted at rest with its own key"
  }

  assert {
    condition     = aws_elasticache_replication_group.this.auth_token == aws_secretsmanager_secret_version.auth_token.secret_string && aws_secretsmanager_secret.auth_token.kms_key_id == aws_kms_key.store.arn
    error_message = "the AUTH token is the one kept in the module's secret, encrypted with its key"
  }

  assert {
    condition     = aws_elasticache_replication_group.this.engine == "valkey" && aws_elasticache_replication_group.this.num_cache_clusters == 2 && aws_elasticache_replication_group.this.automatic_failover_enabled && aws_elasticache_replication_group.this.multi_az_enabled
    error_message = "one replica means two nodes with Multi-AZ automatic failover"
  }

  assert {
    condition     = aws_elasticache_subnet_group.this.subnet_ids == toset(var.subnet_ids)
    error_message = "the store lives in the given private subnets"
  }

  assert {
    condition     = length(aws_vpc_security_group_ingress_rule.from_clients) == 1 && aws_vpc_security_group_ingress_rule.from_clients[0].referenced_security_group_id == "sg-0000000000000000a" && aws_vpc_security_group_ingress_rule.from_clients[0].from_port == 6379
    error_message = "only the client security group reaches the store, on its port"
  }

  assert {
    condition     = length(aws_cloudwatch_metric_alarm.memory) == 2 && length(aws_cloudwatch_metric_alarm.cpu) == 2 && length(aws_cloudwatch_metric_alarm.evictions) == 2
    error_message = "an alarm of each kind per node"
  }

  assert {
    condition     = aws_cloudwatch_metric_alarm.memory[1].dimensions.CacheClusterId == "courier-test-positions-002" && aws_cloudwatch_metric_alarm.evictions[0].alarm_actions == toset(var.alarm_actions)
    error_message = "alarms watch the nodes by their ElastiCache names and notify the alerts topic"
  }

  assert {
    condition     = output.store_url == "rediss://${aws_elasticache_replication_group.this.primary_endpoint_address}:6379"
    error_message = "the URL uses TLS (rediss://)"
  }
}

run "single_node" {
  command = plan

  module {
    source = "../../modules/position_store"
  }

  variables {
    replicas = 0
  }

  assert {
    condition     = aws_elasticache_replication_group.this.num_cache_clusters == 1 && !aws_elasticache_replication_group.this.automatic_failover_enabled
    error_message = "no replica: one node, no failover"
  }
}
