# Thin composition: module calls and the wiring between them, nothing else.

locals {
  name = "${var.project}-${var.environment}"

  tags = merge(var.tags, {
    Project     = var.project
    Environment = var.environment
    ManagedBy   = "terraform"
  })
}

module "network" {
  source = "../../modules/network"

  name                     = local.name
  vpc_cidr                 = var.vpc_cidr
  availability_zones       = var.availability_zones
  single_nat_gateway       = var.single_nat_gateway
  flow_logs_retention_days = var.log_retention_days
  tags                     = local.tags
}

module "stream" {
  source = "../../modules/stream"

  name            = "${local.name}-positions"
  stream_mode     = var.stream_mode
  shard_count     = var.stream_shard_count
  retention_hours = var.stream_retention_hours
  tags            = local.tags
}

module "lake" {
  source = "../../modules/lake"

  bucket_name_prefix          = var.bucket_name_prefix
  dead_letter_expiration_days = var.dead_letter_expiration_days
  force_destroy               = var.force_destroy_buckets
  tags                        = local.tags
}

module "registry" {
  source = "../../modules/registry"

  repository_names = ["ingest-api", "compactor"]
  images_to_keep   = var.ecr_images_to_keep
  force_delete     = var.force_destroy_buckets
  tags             = local.tags
}

module "ingest" {
  source = "../../modules/ingest"

  name                    = local.name
  vpc_id                  = module.network.vpc_id
  vpc_cidr_block          = module.network.vpc_cidr_block
  public_subnet_ids       = module.network.public_subnet_ids
  private_subnet_ids      = module.network.private_subnet_ids
  s3_prefix_list_id       = module.network.s3_endpoint_prefix_list_id
  certificate_arn         = var.certificate_arn
  deletion_protection     = var.alb_deletion_protection
  enable_waf              = var.enable_waf
  access_logs_bucket_name = module.lake.logs_bucket_name
  access_logs_prefix      = module.lake.alb_logs_prefix
  container_image         = "${module.registry.repository_urls["ingest-api"]}:${var.ingest_image_tag}"
  ecr_repository_arn      = module.registry.repository_arns["ingest-api"]
  cpu                     = var.ingest_cpu
  memory                  = var.ingest_memory
  desired_count           = var.ingest_desired_count
  min_capacity            = var.ingest_min_capacity
  max_capacity            = var.ingest_max_capacity
  requests_per_target     = var.ingest_requests_per_target
  extra_environment       = var.ingest_extra_environment
  log_retention_days      = var.log_retention_days
  stream_name             = module.stream.stream_name
  stream_arn              = module.stream.stream_arn
  stream_kms_key_arn      = module.stream.kms_key_arn
  tags                    = local.tags

  position_store = {
    url                   = module.position_store.store_url
    auth_token_secret_arn = module.position_store.auth_token_secret_arn
    kms_key_arn           = module.position_store.kms_key_arn
    security_group_id     = module.position_store.security_group_id
    port                  = module.position_store.store_port
  }
}

module "position_store" {
  source = "../../modules/position_store"

  name                        = local.name
  vpc_id                      = module.network.vpc_id
  subnet_ids                  = module.network.private_subnet_ids
  client_security_group_ids   = [module.ingest.task_security_group_id]
  node_type                   = var.position_store_node_type
  replicas                    = var.position_store_replicas
  alarm_actions               = [module.monitoring.alerts_topic_arn]
  log_retention_days          = var.log_retention_days
  secret_recovery_window_days = var.force_destroy_buckets ? 0 : 30
  tags                        = local.tags
}

module "compactor" {
  source = "../../modules/compactor"

  name               = local.name
  vpc_id             = module.network.vpc_id
  vpc_cidr_block     = module.network.vpc_cidr_block
  s3_prefix_list_id  = module.network.s3_endpoint_prefix_list_id
  container_image    = "${module.registry.repository_urls["compactor"]}:${var.compactor_image_tag}"
  ecr_repository_arn = module.registry.repository_arns["compactor"]
  cpu                = var.compactor_cpu
  memory             = var.compactor_memory
  extra_environment  = var.compactor_extra_environment
  stream_name        = module.stream.stream_name
  stream_arn         = module.stream.stream_arn
  stream_kms_key_arn = module.stream.kms_key_arn
  lake_bucket_name   = module.lake.lake_bucket_name
  lake_bucket_arn    = module.lake.lake_bucket_arn
  lake_kms_key_arn   = module.lake.kms_key_arn
  table_prefix       = module.lake.table_prefix
  dead_letter_prefix = module.lake.dead_letter_prefix
  manifest_prefix    = module.lake.manifest_prefix
  log_retention_days = var.log_retention_days
  tags               = local.tags
}

module "warehouse" {
  source = "../../modules/warehouse"

  name               = local.name
  vpc_id             = module.network.vpc_id
  subnet_ids         = module.network.private_subnet_ids
  s3_prefix_list_id  = module.network.s3_endpoint_prefix_list_id
  base_capacity      = var.redshift_base_capacity
  max_capacity       = var.redshift_max_capacity
  lake_bucket_arn    = module.lake.lake_bucket_arn
  lake_kms_key_arn   = module.lake.kms_key_arn
  copy_read_prefixes = [module.lake.table_prefix, module.lake.manifest_prefix]
  log_retention_days = var.log_retention_days
  tags               = local.tags

  allowed_security_group_ids = {
    mwaa = module.orchestration.security_group_id
  }
}

module "monitoring" {
  source = "../../modules/monitoring"

  name                             = local.name
  alert_email                      = var.alert_email
  stream_name                      = module.stream.stream_name
  alb_arn_suffix                   = module.ingest.alb_arn_suffix
  target_group_arn_suffix          = module.ingest.target_group_arn_suffix
  ecs_cluster_name                 = module.ingest.cluster_name
  ecs_cluster_arn                  = module.ingest.cluster_arn
  ingest_service_name              = module.ingest.service_name
  compactor_task_definition_family = module.compactor.task_definition_family
  compactor_log_group_name         = module.compactor.log_group_name
  mwaa_environment_name            = local.name # the orchestration module's name (it needs the alerts topic first)
  iterator_age_threshold_ms        = var.iterator_age_threshold_ms
  tags                             = local.tags
}

module "orchestration" {
  source = "../../modules/orchestration"

  name                             = local.name
  environment_class                = var.mwaa_environment_class
  min_workers                      = var.mwaa_min_workers
  max_workers                      = var.mwaa_max_workers
  vpc_id                           = module.network.vpc_id
  private_subnet_ids               = module.network.private_subnet_ids
  webserver_access_cidr_blocks     = var.mwaa_webserver_access_cidr_blocks
  dag_bucket_name                  = "airflow-${var.bucket_name_prefix}-dags"
  force_destroy                    = var.force_destroy_buckets
  logs_bucket_name                 = module.lake.logs_bucket_name
  s3_access_logs_prefix            = module.lake.s3_access_logs_prefix
  ecs_cluster_arn                  = module.ingest.cluster_arn
  compactor_task_definition_family = module.compactor.task_definition_family
  compactor_task_role_arn          = module.compactor.task_role_arn
  compactor_execution_role_arn     = module.compactor.execution_role_arn
  compactor_log_group_arn          = module.compactor.log_group_arn
  redshift_workgroup_arn           = module.warehouse.workgroup_arn
  redshift_security_group_id       = module.warehouse.security_group_id
  alerts_topic_arn                 = module.monitoring.alerts_topic_arn
  alerts_topic_kms_key_arn         = module.monitoring.alerts_topic_kms_key_arn
  lake_bucket_arn                  = module.lake.lake_bucket_arn
  table_prefix                     = module.lake.table_prefix
  manifest_prefix                  = module.lake.manifest_prefix
  lake_kms_key_arn                 = module.lake.kms_key_arn
  log_level                        = "INFO"
  log_retention_days               = var.log_retention_days
  tags                             = local.tags

  # Everything the DAGs need to know about this environment, readable in a
  # DAG as conf.get("courier", "<key>") or AIRFLOW__COURIER__<KEY>.
  airflow_configuration_options = {
    "courier.environment"               = var.environment
    "courier.ecs_cluster"               = module.ingest.cluster_arn
    "courier.compactor_task_definition" = module.compactor.task_definition_family
    "courier.compactor_container"       = module.compactor.container_name
    "courier.compactor_subnets"         = join(",", module.network.private_subnet_ids)
    "courier.compactor_security_group"  = module.compactor.security_group_id
    "courier.compactor_log_group"       = module.compactor.log_group_name
    "courier.redshift_workgroup"        = module.warehouse.workgroup_name
    "courier.redshift_database"         = module.warehouse.database_name
    "courier.redshift_copy_role_arn"    = module.warehouse.copy_role_arn
    "courier.table_uri"                 = module.lake.table_uri
    "courier.manifest_uri"              = module.lake.manifest_uri
    "courier.alerts_topic_arn"          = module.monitoring.alerts_topic_arn
  }

  # The retention policy the maintenance DAG enforces (courier.<tier>_retention_days).
  retention = {
    lake_days          = var.lake_retention_days
    dead_letter_days   = var.dead_letter_expiration_days
    warehouse_raw_days = var.warehouse_raw_retention_days
    gold_days          = var.gold_retention_days
  }
}
