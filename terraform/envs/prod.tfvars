environment       = "prod"
name_prefix       = "tomosight-prod"
region            = "GRA11"
storage_region    = "GRA"
kube_version      = "1.32"
api_allowed_cidrs = ["192.0.2.0/24"] # replace with your operators' and CI's egress CIDRs
vlan_id           = 103
subnet_cidr       = "10.44.0.0/16"

cpu_flavor    = "b3-16"
cpu_min_nodes = 2
cpu_max_nodes = 8

gpu_flavor    = "l40s-90"
gpu_product   = "NVIDIA-L40S"
gpu_min_nodes = 2 # the serving floor (minReplicas 2, one GPU each)
gpu_max_nodes = 8 # serving maxReplicas 6 + 2 concurrent training/scoring steps

postgres_plan    = "business"
postgres_flavor  = "db1-15"
postgres_disk_gb = 160
