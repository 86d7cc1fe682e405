# Terraform and the providers this configuration needs. `terraform init` fetches them from
# Terraform's own registry (or your CLI configuration's mirror).
terraform {
  required_version = ">= 1.5.0"

  required_providers {
    google = {
      source  = "hashicorp/google"
      version = ">= 5.0, < 7.0"
    }
    # Only for the gateway host key the two machines share (share_gateway_host_key).
    random = {
      source  = "hashicorp/random"
      version = ">= 3.6.0"
    }
  }
}

provider "google" {
  project = var.project
  zone    = var.zone
}
