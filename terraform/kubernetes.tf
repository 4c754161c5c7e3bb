# Managed Kubernetes: a CPU pool for the control-plane-like workloads (Dagster webserver,
# daemon, code server, run pods, CPU steps, MLflow, Orthanc) and a tainted GPU pool that only
# pods tolerating the taint land on: the training and scoring steps (op tags in
# dbt_assets/k8s.py) and the serving replicas.

resource "ovh_cloud_project_kube" "this" {
  service_name = var.project_id
  name         = "${var.name_prefix}-k8s"
  region       = var.region
  version      = var.kube_version

  private_network_id = local.private_network_openstack_id
  nodes_subnet_id    = ovh_cloud_project_network_private_subnet.nodes.id
  private_network_configuration {
    default_vrack_gateway              = ""
    private_network_routing_as_default = true
  }

  update_policy = "MINIMAL_DOWNTIME"

  customization_apiserver {
    admissionplugins {
      enabled  = ["NodeRestriction", "AlwaysPullImages"]
      disabled = []
    }
  }

  depends_on = [ovh_cloud_project_gateway.this]
}

# Only the listed networks may reach the API server.
resource "ovh_cloud_project_kube_iprestrictions" "this" {
  service_name = var.project_id
  kube_id      = ovh_cloud_project_kube.this.id
  ips          = var.api_allowed_cidrs
}

resource "ovh_cloud_project_kube_nodepool" "cpu" {
  service_name  = var.project_id
  kube_id       = ovh_cloud_project_kube.this.id
  name          = "cpu"
  flavor_name   = var.cpu_flavor
  autoscale     = true
  min_nodes     = var.cpu_min_nodes
  desired_nodes = var.cpu_min_nodes
  max_nodes     = var.cpu_max_nodes
  anti_affinity = false

  template {
    metadata {
      annotations = {}
      finalizers  = []
      labels = {
        "tomosight.io/pool" = "cpu"
      }
    }
    spec {
      unschedulable = false
      taints        = []
    }
  }

  lifecycle {
    # The autoscaler moves desired_nodes; Terraform must not reset it.
    ignore_changes = [desired_nodes]
  }
}

resource "ovh_cloud_project_kube_nodepool" "gpu" {
  service_name  = var.project_id
  kube_id       = ovh_cloud_project_kube.this.id
  name          = "gpu"
  flavor_name   = var.gpu_flavor
  autoscale     = true
  min_nodes     = var.gpu_min_nodes
  desired_nodes = var.gpu_min_nodes
  max_nodes     = var.gpu_max_nodes
  anti_affinity = false

  # Scale a GPU node down soon after its last step ends: GPU hours are the main cost.
  autoscaling_scale_down_unneeded_time_seconds = 600

  template {
    metadata {
      annotations = {}
      finalizers  = []
      labels = {
        "tomosight.io/pool"      = "gpu"
        "nvidia.com/gpu.product" = var.gpu_product
      }
    }
    spec {
      unschedulable = false
      # Tolerated by GPU_STEP_TAGS (dbt_assets/k8s.py) and the serving pods; nothing else lands here.
      taints = [
        {
          key    = "nvidia.com/gpu"
          value  = "present"
          effect = "NoSchedule"
        }
      ]
    }
  }

  lifecycle {
    ignore_changes = [desired_nodes]
  }
}
