output "sentinel_address" {
  description = "The public address users reach (SSH on 22, the dashboard and REST on 80, TLS passed through on 443). Point DNS here."
  value       = google_compute_address.sentinel.address
}

output "ssh_example" {
  description = "How a user logs into their environment through the sentinel (the gateway routes by user name)."
  value       = "ssh USER@${google_compute_address.sentinel.address}"
}

output "dashboard_url" {
  description = "The dashboard and REST API through the sentinel (plain HTTP on 80)."
  value       = "http://${google_compute_address.sentinel.address}/webui/"
}

output "spot_instance" {
  description = "The spot machine's instance name (the sentinel's `instance`, the gce-spot plugin's `instances`)."
  value       = google_compute_instance.spot.name
}

output "spot_internal_address" {
  description = "The spot machine's reserved internal address (the sentinel's `upstream`)."
  value       = google_compute_address.spot_internal.address
}

output "sentinel_instance" {
  description = "The sentinel's instance name."
  value       = google_compute_instance.sentinel.name
}

output "sentinel_service_account" {
  description = "The service account the sentinel's gce-spot plugin calls the Compute API as."
  value       = google_service_account.sentinel.email
}

output "data_disk" {
  description = "The spot machine's persistent data disk (/var/lib/incus and /var/lib/containarium). Snapshot it for backups."
  value       = google_compute_disk.data.name
}

output "admin_commands" {
  description = "Administration: each machine's own OpenSSH through IAP, the install log, the sentinel's timeline, an admin token."
  value = join("\n", [
    "gcloud compute ssh ${google_compute_instance.spot.name} --zone ${var.zone} --tunnel-through-iap",
    "ssh -p ${var.sentinel_admin_ssh_port} -o ProxyCommand='gcloud compute start-iap-tunnel ${google_compute_instance.sentinel.name} %p --listen-on-stdin --zone ${var.zone}' YOUR_LOGIN@${google_compute_instance.sentinel.name}",
    "install log, on either machine:  sudo journalctl -u google-startup-scripts.service",
    "on the sentinel:                 sudo containarium sentinel timeline",
    "on the spot machine:             sudo containarium token generate --username admin --roles admin --expiry 24h --secret-file /var/lib/containarium/jwt.secret",
  ])
}
