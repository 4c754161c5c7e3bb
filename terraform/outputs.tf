# What the Kubernetes side needs. Credentials are sensitive: read them with
# `terraform output -raw NAME` and write them to Vault (deployment/README.md), nowhere else.

output "kubeconfig" {
  description = "Kubeconfig of the cluster."
  value       = ovh_cloud_project_kube.this.kubeconfig
  sensitive   = true
}

output "cluster_id" {
  description = "Managed Kubernetes cluster id."
  value       = ovh_cloud_project_kube.this.id
}

output "gpu_pool_taint" {
  description = "Taint of the GPU pool (the GPU pods' tolerations must match it)."
  value       = one(ovh_cloud_project_kube_nodepool.gpu.template[0].spec[0].taints)
}

output "gpu_product" {
  description = "nvidia.com/gpu.product label of the GPU pool: set TOMOSIGHT_GPU_PRODUCT to it."
  value       = var.gpu_product
}

output "buckets" {
  description = "Bucket names by role (raw, processed, mlflow)."
  value       = { for role, bucket in ovh_cloud_project_storage.bucket : role => bucket.name }
}

output "s3_endpoint" {
  description = "S3 endpoint of the buckets (AWS_ENDPOINT_URL)."
  value       = "https://s3.${lower(var.storage_region)}.io.cloud.ovh.net"
}

output "s3_access_key_ids" {
  description = "S3 access key id of each workload user (pipeline, mlflow, serving)."
  value       = { for name, cred in ovh_cloud_project_user_s3_credential.s3 : name => cred.access_key_id }
}

output "s3_secret_access_keys" {
  description = "S3 secret key of each workload user."
  value       = { for name, cred in ovh_cloud_project_user_s3_credential.s3 : name => cred.secret_access_key }
  sensitive   = true
}

output "postgres_host" {
  description = "Private host name of the managed PostgreSQL (the ExternalName of the postgresql Service)."
  value       = one([for e in ovh_cloud_project_database.postgres.endpoints : e.domain if e.component == "postgresql"])
}

output "postgres_port" {
  description = "Port of the managed PostgreSQL."
  value       = one([for e in ovh_cloud_project_database.postgres.endpoints : e.port if e.component == "postgresql"])
}

output "postgres_passwords" {
  description = "Password of each database user (dagster, mlflow, optuna)."
  value       = { for name, user in ovh_cloud_project_database_postgresql_user.user : name => user.password }
  sensitive   = true
}
