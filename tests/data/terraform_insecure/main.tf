# Deliberately insecure: the deployment tests check that every custom policy in
# terraform/policies fails here (so a policy that can never fail is noticed).
resource "ovh_cloud_project_storage" "open" {
  service_name = "project"
  region_name  = "GRA"
  name         = "open-bucket"
}

resource "ovh_cloud_project_database" "public" {
  service_name = "project"
  engine       = "postgresql"
  version      = "16"
  plan         = "essential"
  flavor       = "db1-4"
  nodes {
    region = "GRA"
  }
  ip_restrictions {
    ip = "0.0.0.0/0"
  }
}

resource "ovh_cloud_project_kube" "public" {
  service_name = "project"
  name         = "public"
  region       = "GRA11"
}

resource "ovh_cloud_project_kube_nodepool" "fixed" {
  service_name  = "project"
  kube_id       = ovh_cloud_project_kube.public.id
  name          = "fixed"
  flavor_name   = "b3-8"
  desired_nodes = 3
}
