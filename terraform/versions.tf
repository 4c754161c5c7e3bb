# Terraform and provider versions, and the remote state backend.
#
# The state lives in an OVHcloud Object Storage (S3-compatible) bucket. The backend block is
# partial: `terraform init -backend-config=backend/<env>.s3.tfbackend` fills it per
# environment, and the state bucket's credentials come from AWS_ACCESS_KEY_ID /
# AWS_SECRET_ACCESS_KEY in the environment (never from a file in this repository).
terraform {
  required_version = ">= 1.6.0"

  required_providers {
    ovh = {
      source  = "ovh/ovh"
      version = "~> 2.5"
    }
  }

  backend "s3" {}
}

# OVH API credentials come from OVH_APPLICATION_KEY, OVH_APPLICATION_SECRET and
# OVH_CONSUMER_KEY in the environment; only the API endpoint is configuration.
provider "ovh" {
  endpoint = var.ovh_endpoint
}
