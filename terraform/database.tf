# Managed PostgreSQL on the private network: the Dagster instance (runs, event log,
# schedules), the MLflow backend store and the Optuna study storage, one database and one
# user each. Only the private subnet may connect.

resource "ovh_cloud_project_database" "postgres" {
  service_name        = var.project_id
  description         = "${var.name_prefix}-postgres"
  engine              = "postgresql"
  version             = var.postgres_version
  plan                = var.postgres_plan
  flavor              = var.postgres_flavor
  disk_size           = var.postgres_disk_gb
  deletion_protection = true

  # essential: 1 node, business: 2, enterprise: 3 (all in the same region).
  dynamic "nodes" {
    for_each = range(lookup({ essential = 1, business = 2, enterprise = 3 }, var.postgres_plan))
    content {
      region     = var.storage_region
      network_id = local.private_network_openstack_id
      subnet_id  = ovh_cloud_project_network_private_subnet.nodes.id
    }
  }

  ip_restrictions {
    description = "private subnet of the cluster nodes"
    ip          = var.subnet_cidr
  }
}

locals {
  postgres_databases = toset(["dagster", "mlflow", "optuna"])
}

resource "ovh_cloud_project_database_database" "db" {
  for_each = local.postgres_databases

  service_name = var.project_id
  engine       = "postgresql"
  cluster_id   = ovh_cloud_project_database.postgres.id
  name         = each.key
}

resource "ovh_cloud_project_database_postgresql_user" "user" {
  for_each = local.postgres_databases

  service_name = var.project_id
  cluster_id   = ovh_cloud_project_database.postgres.id
  name         = each.key
}
