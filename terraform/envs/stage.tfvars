# Same shape as prod, smaller: where a release is checked before prod.
environment       = "stage"
name_prefix       = "tomosight-stage"
region            = "GRA11"
storage_region    = "GRA"
kube_version      = "1.32"
api_allowed_cidrs = ["192.0.2.0/24"] # replace with your operators' and CI's egress CIDRs
vlan_id           = 102
subnet_cidr       = "10.43.0.0/16"

cpu_flavor    = "b3-16"
cpu_min_nodes = 2
cpu_max_nodes = 4

gpu_flavor    = "l40s-90"
gpu_product   = "NVIDIA-L40S"
gpu_min_nodes = 2 # two serving replicas (PodDisruptionBudget)
gpu_max_nodes = 3

postgres_plan    = "business"
postgres_flavor  = "db1-7"
postgres_disk_gb = 40
