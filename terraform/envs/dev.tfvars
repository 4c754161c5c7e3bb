# terraform plan -var-file=envs/dev.tfvars -var project_id=... -var vrack_id=...
# (project_id and vrack_id are account identifiers: pass them on the command line or as
# TF_VAR_project_id / TF_VAR_vrack_id.)
environment       = "dev"
name_prefix       = "tomosight-dev"
region            = "GRA11"
storage_region    = "GRA"
kube_version      = "1.32"
api_allowed_cidrs = ["192.0.2.0/24"] # replace with your operators' and CI's egress CIDRs
vlan_id           = 101
subnet_cidr       = "10.42.0.0/16"

cpu_flavor    = "b3-8"
cpu_min_nodes = 1
cpu_max_nodes = 3

gpu_flavor    = "l4-90"
gpu_product   = "NVIDIA-L4"
gpu_min_nodes = 1 # one serving replica
gpu_max_nodes = 2

postgres_plan    = "essential"
postgres_flavor  = "db1-4"
postgres_disk_gb = 20
