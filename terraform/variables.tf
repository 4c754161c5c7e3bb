# Inputs. Environment values are in envs/<env>.tfvars; nothing here is a secret.

variable "ovh_endpoint" {
  description = "OVH API endpoint (ovh-eu, ovh-ca, ovh-us)."
  type        = string
  default     = "ovh-eu"
}

variable "project_id" {
  description = "Public Cloud project id (the service name of the project)."
  type        = string
}

variable "vrack_id" {
  description = "vRack service name (pn-xxxxx) the project is attached to for the private network."
  type        = string
}

variable "environment" {
  description = "Environment name: dev, stage or prod."
  type        = string
  validation {
    condition     = contains(["dev", "stage", "prod"], var.environment)
    error_message = "environment must be dev, stage or prod."
  }
}

variable "name_prefix" {
  description = "Prefix of every resource and bucket name (bucket names are unique per region)."
  type        = string
  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{2,40}$", var.name_prefix))
    error_message = "name_prefix: lowercase letters, digits and dashes, 3 to 41 characters."
  }
}

variable "region" {
  description = "Public Cloud region of the cluster, its private network and node pools (e.g. GRA11)."
  type        = string
}

variable "storage_region" {
  description = "Object Storage and managed database region (e.g. GRA)."
  type        = string
}

variable "kube_version" {
  description = "Kubernetes minor version of the managed cluster."
  type        = string
  default     = "1.32"
}

variable "api_allowed_cidrs" {
  description = "CIDRs allowed to reach the Kubernetes API server (CI runners, operators' VPN)."
  type        = list(string)
  validation {
    condition     = length(var.api_allowed_cidrs) > 0 && alltrue([for c in var.api_allowed_cidrs : can(cidrhost(c, 0))])
    error_message = "api_allowed_cidrs must list at least one valid CIDR."
  }
}

variable "vlan_id" {
  description = "vRack VLAN id of the private network."
  type        = number
  default     = 100
}

variable "subnet_cidr" {
  description = "Private subnet of the nodes and the managed PostgreSQL."
  type        = string
  default     = "10.42.0.0/16"
}

variable "cpu_flavor" {
  description = "Flavor of the CPU node pool (Dagster, MLflow, ingestion and preprocessing steps)."
  type        = string
  default     = "b3-16"
}

variable "cpu_min_nodes" {
  description = "Autoscaling floor of the CPU pool."
  type        = number
  default     = 2
}

variable "cpu_max_nodes" {
  description = "Autoscaling ceiling of the CPU pool."
  type        = number
  default     = 6
}

variable "gpu_flavor" {
  description = "Flavor of the GPU node pool (training and scoring steps, serving replicas)."
  type        = string
  default     = "l40s-90"
}

variable "gpu_product" {
  description = "Value of the nvidia.com/gpu.product node label for gpu_flavor (what NVIDIA GPU feature discovery reports); TOMOSIGHT_GPU_PRODUCT of the overlay must be the same."
  type        = string
  default     = "NVIDIA-L40S"
}

variable "gpu_min_nodes" {
  description = "Autoscaling floor of the GPU pool: at least the serving deployment's minimum replicas (one GPU each)."
  type        = number
  default     = 1
}

variable "gpu_max_nodes" {
  description = "Autoscaling ceiling of the GPU pool: serving's maximum replicas plus concurrent GPU steps."
  type        = number
  default     = 4
}

variable "postgres_version" {
  description = "Managed PostgreSQL major version."
  type        = string
  default     = "16"
}

variable "postgres_plan" {
  description = "Managed PostgreSQL plan: essential (1 node), business (2 nodes), enterprise (3 nodes)."
  type        = string
  default     = "business"
  validation {
    condition     = contains(["essential", "business", "enterprise"], var.postgres_plan)
    error_message = "postgres_plan must be essential, business or enterprise."
  }
}

variable "postgres_flavor" {
  description = "Managed PostgreSQL node flavor."
  type        = string
  default     = "db1-7"
}

variable "postgres_disk_gb" {
  description = "Managed PostgreSQL disk size in GB (Dagster event log, MLflow, Optuna)."
  type        = number
  default     = 80
}
