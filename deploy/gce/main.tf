# A spot machine that runs the environments, and a small always-on sentinel in front of it
# (docs/sentinel.md):
#
#   users ──22/80/443──> sentinel (e2-micro, static address) ──internal──> spot machine
#                          containarium sentinel run             containarium daemon --preemptible
#                          gce-spot plugin (watch off):          gce-spot plugin (watch on):
#                          instances.get / instances.start       node.preempted / node.recovered
#
# The spot machine stops (never deletes) when Google reclaims it; its boot disk and its data
# disk (/var/lib/incus, /var/lib/containarium) stay, and the sentinel starts it again.

locals {
  region        = join("-", slice(split("-", var.zone), 0, 2))
  sentinel_name = "${var.name_prefix}-sentinel"
  spot_name     = "${var.name_prefix}-spot"

  network    = var.create_network ? google_compute_network.this[0].self_link : var.network
  subnetwork = var.create_network ? google_compute_subnetwork.this[0].self_link : (var.subnetwork != "" ? var.subnetwork : var.network)

  # The data disk's device name: the spot machine finds it at /dev/disk/by-id/google-NAME.
  data_disk_device = "containarium-data"
  pool_size        = var.incus_pool_size != "" ? var.incus_pool_size : "${floor(var.data_disk_gb * 3 / 4)}GiB"

  # The gateway host key both machines present, in the gateway's own key format
  # (Sources/ContainariumGateway/Keys.swift: the header, then the raw 32-byte Ed25519 seed in
  # base64), given to them as a metadata attribute.
  host_key_attribute = "containarium-gateway-host-key"
  host_key_value     = var.share_gateway_host_key ? "containarium-ed25519-v1 ${random_bytes.gateway_host_key[0].base64}" : ""
  host_key_metadata  = { for k, v in { (local.host_key_attribute) = local.host_key_value } : k => v if var.share_gateway_host_key }
  sentinel_key_dir   = "/var/lib/containarium/sentinel/gateway"

  # Shell single-quoted values for the startup scripts.
  quoted = { for k, v in {
    git_url          = var.containarium_git_url
    git_ref          = var.containarium_git_ref
    toolchain_url    = var.swift_toolchain_url
    toolchain_sha256 = var.swift_toolchain_sha256
  } : k => "'${replace(v, "'", "'\\''")}'" }

  common_script = templatefile("${path.module}/templates/common.sh.tftpl", {
    git_url          = local.quoted.git_url
    git_ref          = local.quoted.git_ref
    toolchain_url    = local.quoted.toolchain_url
    toolchain_sha256 = local.quoted.toolchain_sha256
    host_key_attr    = var.share_gateway_host_key ? local.host_key_attribute : ""
  })

  spot_address = google_compute_address.spot_internal.address

  # /etc/containarium/config.json of the spot machine: the Incus backend, and the gce-spot
  # plugin watching the metadata server of the machine it runs on (node.preempted,
  # node.maintenance, node.recovered). `instances` names the machine itself: the plugin reads
  # it for its health check and would act on nothing else.
  spot_config = {
    node = local.spot_name
    plugins = {
      "incus-lxc"  = { enabled = true, config = { socket = "/var/lib/incus/unix.socket", pool = "default" } }
      "nvidia-gpu" = { enabled = true, config = { sysfsPath = "/sys/bus/pci", vendor = "10de" } }
      "gce-spot" = { enabled = true, config = {
        project   = var.project
        zone      = var.zone
        instances = [local.spot_name]
        watch     = true
      } }
    }
    defaultImage = "containarium/debian12"
    images       = { debian12 = "containarium/debian12" }
    # autostart: environments come back by themselves when the machine does.
    defaults = { cpu = "2", memory = "2GB", disk = "10GB", autostart = true }
  }

  # /etc/containarium/config.json of the sentinel: the gce-spot plugin guarding the spot
  # machine (no metadata watch: the sentinel's own machine is not the one preempted) and the
  # `sentinel` block (Sources/ContainariumService/SentinelPolicy.swift).
  sentinel_config = {
    node = local.sentinel_name
    plugins = {
      "incus-lxc"  = { enabled = false }
      "nvidia-gpu" = { enabled = false }
      "gce-spot" = { enabled = true, config = {
        project   = var.project
        zone      = var.zone
        instances = [local.spot_name]
        watch     = false
      } }
    }
    sentinel = {
      instance  = local.spot_name
      lifecycle = "gce-spot"
      upstream  = local.spot_address
      routes = [
        { listen = "0.0.0.0:22", port = var.gateway_port, kind = "ssh" },
        { listen = "0.0.0.0:80", port = var.rest_port, kind = "http" },
        { listen = "0.0.0.0:443", port = var.tls_port, kind = "tcp" },
      ]
      health            = "http://${local.spot_address}:${var.rest_port}/healthz"
      probeSeconds      = var.probe_seconds
      failAfter         = var.fail_after
      backoffSeconds    = var.backoff_seconds
      maxBackoffSeconds = var.max_backoff_seconds
      retryAfterSeconds = var.retry_after_seconds
      sshKeyDir         = local.sentinel_key_dir
      timeline          = "/var/lib/containarium/sentinel/timeline.jsonl"
    }
  }

  daemon_args = concat([
    "--ssh-port", tostring(var.gateway_port),
    "--http-port", tostring(var.rest_port),
    "--preemptible",
    "--critical-on-preemptible", var.critical_on_preemptible,
    "--ban-failures", tostring(var.gateway_ban_failures),
    "--max-startups", tostring(var.gateway_max_startups),
    "--http-max-connections-per-address", tostring(var.rest_max_connections_per_address),
  ], var.daemon_extra_args)
}

# --- network ------------------------------------------------------------------------------

resource "google_compute_network" "this" {
  count                   = var.create_network ? 1 : 0
  name                    = "${var.name_prefix}-net"
  auto_create_subnetworks = false
}

resource "google_compute_subnetwork" "this" {
  count         = var.create_network ? 1 : 0
  name          = "${var.name_prefix}-subnet"
  region        = local.region
  network       = google_compute_network.this[0].id
  ip_cidr_range = var.subnet_cidr
}

# The sentinel's public address: what users and DNS point at. It never changes, whatever
# happens to the spot machine.
resource "google_compute_address" "sentinel" {
  name         = "${var.name_prefix}-sentinel-ip"
  region       = local.region
  address_type = "EXTERNAL"
}

# The spot machine's internal address, reserved so that the sentinel's `upstream` stays right
# across stops and restarts.
resource "google_compute_address" "spot_internal" {
  name         = "${var.name_prefix}-spot-internal-ip"
  region       = local.region
  address_type = "INTERNAL"
  subnetwork   = local.subnetwork
}

# Anyone may reach the sentinel's public ports.
resource "google_compute_firewall" "sentinel_public" {
  name                    = "${var.name_prefix}-sentinel-public"
  network                 = local.network
  direction               = "INGRESS"
  source_ranges           = var.public_source_ranges
  target_service_accounts = [google_service_account.sentinel.email]

  allow {
    protocol = "tcp"
    ports    = ["22", "80", "443"]
  }
}

# Only the sentinel may reach the spot machine's gateway, REST and TLS ports (matched by the
# machines' service accounts, which only an admin of this project can change).
resource "google_compute_firewall" "sentinel_to_spot" {
  name                    = "${var.name_prefix}-sentinel-to-spot"
  network                 = local.network
  direction               = "INGRESS"
  source_service_accounts = [google_service_account.sentinel.email]
  target_service_accounts = [google_service_account.spot.email]

  allow {
    protocol = "tcp"
    ports    = [tostring(var.gateway_port), tostring(var.rest_port), tostring(var.tls_port)]
  }
}

# Administration: each machine's own OpenSSH.
resource "google_compute_firewall" "admin_sentinel" {
  count                   = length(var.admin_source_ranges) > 0 ? 1 : 0
  name                    = "${var.name_prefix}-admin-sentinel"
  network                 = local.network
  direction               = "INGRESS"
  source_ranges           = var.admin_source_ranges
  target_service_accounts = [google_service_account.sentinel.email]

  allow {
    protocol = "tcp"
    ports    = [tostring(var.sentinel_admin_ssh_port)]
  }
}

resource "google_compute_firewall" "admin_spot" {
  count                   = length(var.admin_source_ranges) > 0 ? 1 : 0
  name                    = "${var.name_prefix}-admin-spot"
  network                 = local.network
  direction               = "INGRESS"
  source_ranges           = var.admin_source_ranges
  target_service_accounts = [google_service_account.spot.email]

  allow {
    protocol = "tcp"
    ports    = ["22"]
  }
}

# --- identities ---------------------------------------------------------------------------

resource "google_service_account" "sentinel" {
  account_id   = "${var.name_prefix}-sentinel"
  display_name = "Containarium sentinel: reads and starts ${local.spot_name}"
}

resource "google_service_account" "spot" {
  account_id   = "${var.name_prefix}-spot"
  display_name = "Containarium spot machine ${local.spot_name}"
}

# The sentinel's gce-spot plugin calls instances.get, instances.start, zoneOperations.get
# (until the start is DONE) and zoneOperations.list (the preemption operations). Operations
# are project resources, so the role is granted on the project (README: "Permissions").
resource "google_project_iam_member" "sentinel" {
  project = var.project
  role    = var.sentinel_role
  member  = "serviceAccount:${google_service_account.sentinel.email}"
}

# Starting a machine that runs as a service account may require acting as that account.
# Granted on the spot machine's account only, which itself holds no more than spot_role.
resource "google_service_account_iam_member" "sentinel_acts_as_spot" {
  service_account_id = google_service_account.spot.name
  role               = "roles/iam.serviceAccountUser"
  member             = "serviceAccount:${google_service_account.sentinel.email}"
}

resource "google_project_iam_member" "spot" {
  count   = var.spot_role != "" ? 1 : 0
  project = var.project
  role    = var.spot_role
  member  = "serviceAccount:${google_service_account.spot.email}"
}

resource "random_bytes" "gateway_host_key" {
  count  = var.share_gateway_host_key ? 1 : 0
  length = 32
}

# --- the spot machine ---------------------------------------------------------------------

resource "google_compute_disk" "data" {
  name   = "${var.name_prefix}-data"
  zone   = var.zone
  type   = var.data_disk_type
  size   = var.data_disk_gb
  labels = var.labels
}

resource "google_compute_instance" "spot" {
  name                      = local.spot_name
  zone                      = var.zone
  machine_type              = var.spot_machine_type
  labels                    = var.labels
  allow_stopping_for_update = true

  boot_disk {
    auto_delete = true
    initialize_params {
      image = var.image
      size  = var.spot_boot_disk_gb
      type  = "pd-balanced"
    }
  }

  attached_disk {
    source      = google_compute_disk.data.id
    device_name = local.data_disk_device
  }

  network_interface {
    subnetwork = local.subnetwork
    network_ip = local.spot_address

    dynamic "access_config" {
      for_each = var.spot_external_ip ? [1] : []
      content {}
    }
  }

  # Spot: when Google reclaims the machine it is stopped, not deleted, so a start brings back
  # the same disks. No automatic restart: the sentinel starts it.
  scheduling {
    provisioning_model          = "SPOT"
    preemptible                 = true
    automatic_restart           = false
    on_host_maintenance         = "TERMINATE"
    instance_termination_action = "STOP"
  }

  service_account {
    email  = google_service_account.spot.email
    scopes = ["compute-ro"]
  }

  metadata = merge(local.host_key_metadata, {
    startup-script = templatefile("${path.module}/templates/spot.sh.tftpl", {
      common      = local.common_script
      config_b64  = base64encode(jsonencode(local.spot_config))
      data_device = local.data_disk_device
      pool_size   = local.pool_size
      daemon_args = join(" ", [for a in local.daemon_args : "'${replace(a, "'", "'\\''")}'"])
      rest_port   = var.rest_port
    })
  })

  lifecycle {
    precondition {
      condition     = length(distinct([var.gateway_port, var.rest_port, var.tls_port, 22])) == 4
      error_message = "gateway_port, rest_port and tls_port must differ from each other and from 22."
    }
  }

  depends_on = [google_project_iam_member.spot]
}

# --- the sentinel -------------------------------------------------------------------------

resource "google_compute_instance" "sentinel" {
  name                      = local.sentinel_name
  zone                      = var.zone
  machine_type              = var.sentinel_machine_type
  labels                    = var.labels
  allow_stopping_for_update = true

  boot_disk {
    auto_delete = true
    initialize_params {
      image = var.image
      size  = var.sentinel_boot_disk_gb
      type  = "pd-balanced"
    }
  }

  network_interface {
    subnetwork = local.subnetwork
    access_config {
      nat_ip = google_compute_address.sentinel.address
    }
  }

  # Always on: live-migrated during host maintenance, restarted if it crashes.
  scheduling {
    provisioning_model  = "STANDARD"
    preemptible         = false
    automatic_restart   = true
    on_host_maintenance = "MIGRATE"
  }

  service_account {
    email  = google_service_account.sentinel.email
    scopes = ["compute-rw"]
  }

  metadata = merge(local.host_key_metadata, {
    startup-script = templatefile("${path.module}/templates/sentinel.sh.tftpl", {
      common         = local.common_script
      config_b64     = base64encode(jsonencode(local.sentinel_config))
      admin_ssh_port = var.sentinel_admin_ssh_port
      swap_gb        = var.sentinel_build_swap_gb
      key_dir        = local.sentinel_key_dir
      log_level      = var.sentinel_log_level
    })
  })

  lifecycle {
    precondition {
      condition     = var.max_backoff_seconds >= var.backoff_seconds
      error_message = "max_backoff_seconds must be at least backoff_seconds."
    }
  }

  depends_on = [
    google_project_iam_member.sentinel,
    google_service_account_iam_member.sentinel_acts_as_spot,
  ]
}
