# Private network (vRack): the nodes and the managed PostgreSQL talk over it, never over the
# public internet. A managed gateway gives the private nodes their outbound access (images,
# Object Storage, the OIDC issuer).

locals {
  nodes_subnet_start = cidrhost(var.subnet_cidr, 10)
  nodes_subnet_end   = cidrhost(var.subnet_cidr, -10)
}

resource "ovh_vrack_cloudproject" "this" {
  service_name = var.vrack_id
  project_id   = var.project_id
}

resource "ovh_cloud_project_network_private" "this" {
  service_name = var.project_id
  name         = "${var.name_prefix}-private"
  vlan_id      = var.vlan_id
  regions      = [var.region]

  depends_on = [ovh_vrack_cloudproject.this]
}

resource "ovh_cloud_project_network_private_subnet" "nodes" {
  service_name = var.project_id
  network_id   = ovh_cloud_project_network_private.this.id
  region       = var.region
  network      = var.subnet_cidr
  start        = local.nodes_subnet_start
  end          = local.nodes_subnet_end
  dhcp         = true
  no_gateway   = false
}

resource "ovh_cloud_project_gateway" "this" {
  service_name = var.project_id
  name         = "${var.name_prefix}-gateway"
  model        = "s"
  region       = var.region
  network_id   = local.private_network_openstack_id
  subnet_id    = ovh_cloud_project_network_private_subnet.nodes.id
}

locals {
  # The regional (OpenStack) id of the private network, which the cluster and the database take.
  private_network_openstack_id = one([
    for r in ovh_cloud_project_network_private.this.regions_attributes : r.openstackid if r.region == var.region
  ])
}
