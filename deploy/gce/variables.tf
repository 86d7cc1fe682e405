# Every setting of deploy/gce. Only `project` and `containarium_git_url` have no default.
# docs/sentinel.md explains how the pieces fit together.

# --- where --------------------------------------------------------------------------------

variable "project" {
  description = "The GCE project id both machines live in (6-30 of a-z, 0-9 and -)."
  type        = string
}

variable "zone" {
  description = "The zone of both machines and the data disk (the region is derived from it). The gce-spot plugin guards instances of one zone."
  type        = string
  default     = "us-central1-a"
}

variable "name_prefix" {
  description = "Prefix of every resource's name: PREFIX-sentinel, PREFIX-spot, PREFIX-data, PREFIX-net and so on. Lower-case letters, digits and dashes, starting with a letter."
  type        = string
  default     = "containarium"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{0,19}$", var.name_prefix))
    error_message = "name_prefix must be 1-20 of a-z, 0-9 and -, starting with a letter (GCE names are at most 63 characters and service account ids at most 30)."
  }
}

variable "labels" {
  description = "Labels put on both machines and the data disk."
  type        = map(string)
  default     = {}
}

# --- what to install ----------------------------------------------------------------------

variable "containarium_git_url" {
  description = "Git URL of the Containarium repository the machines clone and build (your fork or mirror; anything `git clone` takes)."
  type        = string
}

variable "containarium_git_ref" {
  description = "Branch, tag or commit to build. A machine rebuilds at boot only when the ref points somewhere new."
  type        = string
  default     = "main"
}

variable "swift_toolchain_url" {
  description = "URL of a Swift toolchain tarball for Debian 12 (x86_64; tools version 6.1 or newer), unpacked into /opt/swift. Empty: the image must already have `swift` (on PATH or in /opt/swift/usr/bin). The toolchain stays installed: the binaries load the Swift runtime from it."
  type        = string
  default     = ""
}

variable "swift_toolchain_sha256" {
  description = "SHA-256 of the tarball at swift_toolchain_url; when given, a download that does not match is refused."
  type        = string
  default     = ""

  validation {
    condition     = var.swift_toolchain_sha256 == "" || can(regex("^[0-9a-f]{64}$", var.swift_toolchain_sha256))
    error_message = "swift_toolchain_sha256 must be empty or 64 lower-case hex digits."
  }
}

variable "image" {
  description = "Boot image of both machines (a Debian 12 image or family, as PROJECT/FAMILY). An image with Swift (and Containarium) already installed makes the first boot much shorter."
  type        = string
  default     = "debian-cloud/debian-12"
}

# --- network ------------------------------------------------------------------------------

variable "create_network" {
  description = "Create a VPC network and subnet of its own, so that only the firewall rules below apply (the project's `default` network allows all internal traffic and SSH from anywhere). False: use `network` and `subnetwork`."
  type        = bool
  default     = true
}

variable "subnet_cidr" {
  description = "The IPv4 range of the subnet made when create_network is true."
  type        = string
  default     = "10.42.0.0/24"

  validation {
    condition     = can(cidrhost(var.subnet_cidr, 0))
    error_message = "subnet_cidr must be an IPv4 CIDR range such as 10.42.0.0/24."
  }
}

variable "network" {
  description = "The existing VPC network to use when create_network is false (name or self link)."
  type        = string
  default     = "default"
}

variable "subnetwork" {
  description = "The existing subnet to use when create_network is false (name or self link); empty: the network's auto-mode subnet of the region."
  type        = string
  default     = ""
}

variable "public_source_ranges" {
  description = "Who may reach the sentinel's public ports (22, 80, 443)."
  type        = list(string)
  default     = ["0.0.0.0/0"]
}

variable "admin_source_ranges" {
  description = "Who may reach the machines' own OpenSSH for administration: the sentinel's on sentinel_admin_ssh_port, the spot machine's on 22. Default: Google's IAP TCP-forwarding range (`gcloud compute ssh --tunnel-through-iap`). Empty: no rule."
  type        = list(string)
  default     = ["35.235.240.0/20"]
}

# --- the sentinel -------------------------------------------------------------------------

variable "sentinel_machine_type" {
  description = "Machine type of the always-on sentinel. e2-micro is enough to run it; building Containarium on it at first boot is slow (see sentinel_build_swap_gb and the README)."
  type        = string
  default     = "e2-micro"
}

variable "sentinel_boot_disk_gb" {
  description = "Boot disk of the sentinel, in GB (the toolchain, the source and its build live there)."
  type        = number
  default     = 30
}

variable "sentinel_build_swap_gb" {
  description = "Swap file made on the sentinel so that the build fits in a small machine's memory (0: none)."
  type        = number
  default     = 4

  validation {
    condition     = var.sentinel_build_swap_gb >= 0 && var.sentinel_build_swap_gb <= 64
    error_message = "sentinel_build_swap_gb must be 0-64."
  }
}

variable "sentinel_admin_ssh_port" {
  description = "Port the sentinel machine's own OpenSSH moves to, since the sentinel takes 22 for the SSH gateway."
  type        = number
  default     = 2022

  validation {
    condition     = var.sentinel_admin_ssh_port >= 1024 && var.sentinel_admin_ssh_port <= 65535
    error_message = "sentinel_admin_ssh_port must be 1024-65535."
  }
}

variable "sentinel_role" {
  description = "The role the sentinel's service account gets on the project, to read and start the spot machine. roles/compute.instanceAdmin.v1 is more than it needs (see the README); give a custom role (projects/PROJECT/roles/ID) with compute.instances.get, compute.instances.start, compute.zoneOperations.get and compute.zoneOperations.list for the least."
  type        = string
  default     = "roles/compute.instanceAdmin.v1"
}

variable "sentinel_log_level" {
  description = "CONTAINARIUM_LOG_LEVEL of the sentinel: info logs every timeline entry to the journal; warning only outages."
  type        = string
  default     = "info"

  validation {
    condition     = contains(["trace", "debug", "info", "notice", "warning", "error", "critical"], var.sentinel_log_level)
    error_message = "sentinel_log_level must be trace, debug, info, notice, warning, error or critical."
  }
}

variable "probe_seconds" {
  description = "sentinel.probeSeconds: seconds between health probes of the spot machine's daemon (0.1-60)."
  type        = number
  default     = 1

  validation {
    condition     = var.probe_seconds >= 0.1 && var.probe_seconds <= 60
    error_message = "probe_seconds must be 0.1-60."
  }
}

variable "fail_after" {
  description = "sentinel.failAfter: failed probes in a row before an outage is declared (1-100)."
  type        = number
  default     = 3

  validation {
    condition     = var.fail_after >= 1 && var.fail_after <= 100 && floor(var.fail_after) == var.fail_after
    error_message = "fail_after must be a whole number 1-100."
  }
}

variable "backoff_seconds" {
  description = "sentinel.backoffSeconds: the wait after the first failed start, doubling after each further failure (with jitter)."
  type        = number
  default     = 5

  validation {
    condition     = var.backoff_seconds >= 0.1
    error_message = "backoff_seconds must be at least 0.1."
  }
}

variable "max_backoff_seconds" {
  description = "sentinel.maxBackoffSeconds: the longest wait between start attempts (at least backoff_seconds, at most 3600)."
  type        = number
  default     = 300

  validation {
    condition     = var.max_backoff_seconds >= 0.1 && var.max_backoff_seconds <= 3600
    error_message = "max_backoff_seconds must be at most 3600 (and at least backoff_seconds)."
  }
}

variable "retry_after_seconds" {
  description = "sentinel.retryAfterSeconds: what the maintenance page (Retry-After) and the SSH banner tell users to wait (1-3600). A spot machine's restart takes a minute or two."
  type        = number
  default     = 60

  validation {
    condition     = var.retry_after_seconds >= 1 && var.retry_after_seconds <= 3600 && floor(var.retry_after_seconds) == var.retry_after_seconds
    error_message = "retry_after_seconds must be a whole number 1-3600."
  }
}

variable "share_gateway_host_key" {
  description = "Generate the SSH gateway's host key here and give it to both machines through instance metadata, so that the sentinel's maintenance SSH server presents the same key as the spot machine's gateway. The key is then in the Terraform state and readable by whoever can read the instances' metadata. False: copy the key by hand (README)."
  type        = bool
  default     = true
}

# --- the spot machine ---------------------------------------------------------------------

variable "spot_machine_type" {
  description = "Machine type of the spot machine that runs the environments (and builds Containarium at first boot)."
  type        = string
  default     = "e2-standard-4"
}

variable "spot_boot_disk_gb" {
  description = "Boot disk of the spot machine, in GB (system, toolchain, source and build; the environments live on the data disk)."
  type        = number
  default     = 50
}

variable "spot_external_ip" {
  description = "Give the spot machine an ephemeral external address for its outbound traffic (packages, git, the toolchain). Inbound traffic is still limited by the firewall. False: provide outbound access yourself (Cloud NAT)."
  type        = bool
  default     = true
}

variable "spot_role" {
  description = "The role the spot machine's service account gets on the project: its gce-spot plugin reads its own instance for its health check. Empty: none (the plugin's health is then degraded, the metadata watch still works)."
  type        = string
  default     = "roles/compute.viewer"
}

variable "data_disk_gb" {
  description = "The persistent data disk of the spot machine, in GB: /var/lib/incus (the environments' storage pool) and /var/lib/containarium (the daemon's state). It outlives the machine's stops and preemptions."
  type        = number
  default     = 200

  validation {
    condition     = var.data_disk_gb >= 20
    error_message = "data_disk_gb must be at least 20."
  }
}

variable "data_disk_type" {
  description = "Type of the data disk (pd-balanced, pd-ssd, pd-standard, hyperdisk-balanced where the machine type supports it)."
  type        = string
  default     = "pd-balanced"
}

variable "incus_pool_size" {
  description = "Size of the Incus btrfs pool (a file on the data disk, CONTAINARIUM_POOL_SIZE of scripts/testbed.sh), e.g. 150GiB. Empty: three quarters of data_disk_gb."
  type        = string
  default     = ""

  validation {
    condition     = var.incus_pool_size == "" || can(regex("^[0-9]+(GiB|GB|TiB|TB)$", var.incus_pool_size))
    error_message = "incus_pool_size must be empty or a size such as 150GiB."
  }
}

variable "gateway_port" {
  description = "The spot machine's SSH gateway port (daemon --ssh-port); the sentinel forwards 22 there."
  type        = number
  default     = 2222

  validation {
    condition     = var.gateway_port >= 1 && var.gateway_port <= 65535 && var.gateway_port != 22
    error_message = "gateway_port must be 1-65535 and not 22 (the machine's own OpenSSH)."
  }
}

variable "rest_port" {
  description = "The spot machine's REST and dashboard port (daemon --http-port); the sentinel forwards 80 there and probes /healthz on it."
  type        = number
  default     = 8080

  validation {
    condition     = var.rest_port >= 1 && var.rest_port <= 65535
    error_message = "rest_port must be 1-65535."
  }
}

variable "tls_port" {
  description = "The port on the spot machine the sentinel forwards 443 to, as plain TCP (TLS passes through untouched). The daemon serves REST on one port only, so nothing listens here unless you run a TLS endpoint on it (README)."
  type        = number
  default     = 8443

  validation {
    condition     = var.tls_port >= 1 && var.tls_port <= 65535
    error_message = "tls_port must be 1-65535."
  }
}

variable "critical_on_preemptible" {
  description = "The daemon's --critical-on-preemptible: whether environments created with --critical may still land on this preemptible machine: never (they are refused) or last-resort (when nothing else fits; with a single machine, always)."
  type        = string
  default     = "never"

  validation {
    condition     = contains(["never", "last-resort"], var.critical_on_preemptible)
    error_message = "critical_on_preemptible must be never or last-resort."
  }
}

variable "gateway_ban_failures" {
  description = "The daemon's --ban-failures. Every SSH connection reaches the gateway from the sentinel's address, so a ban there locks everyone out: keep it high."
  type        = number
  default     = 1000

  validation {
    condition     = var.gateway_ban_failures >= 1
    error_message = "gateway_ban_failures must be positive."
  }
}

variable "gateway_max_startups" {
  description = "The daemon's --max-startups: connections from one address not yet logged in. All of them come from the sentinel's address."
  type        = number
  default     = 256

  validation {
    condition     = var.gateway_max_startups >= 1
    error_message = "gateway_max_startups must be positive."
  }
}

variable "rest_max_connections_per_address" {
  description = "The daemon's --http-max-connections-per-address. All REST connections come from the sentinel's address."
  type        = number
  default     = 4096

  validation {
    condition     = var.rest_max_connections_per_address >= 1
    error_message = "rest_max_connections_per_address must be positive."
  }
}

variable "daemon_extra_args" {
  description = "More flags for the spot machine's `containarium daemon` (e.g. [\"--node-label\", \"zone=a\"]), after the ones this configuration sets."
  type        = list(string)
  default     = []
}
