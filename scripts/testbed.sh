#!/usr/bin/env bash
# Idempotent test bed for Containarium on a fresh Debian 12 machine (root).
#
#   - enables bookworm-backports, deriving the archive URI from this machine's own apt sources
#   - installs Incus 6.0 LTS (backports), btrfs-progs, debootstrap, OpenSSH client and the
#     design card's -dev packages
#   - creates the system user containarium-vm (the qemu-windows plugin runs QEMU as it) when missing
#   - starts incusd when no init system runs it
#   - applies the Incus production sysctls
#   - creates a btrfs storage pool and a NAT bridge when missing
#   - builds an offline Debian 12 image (systemd, udev, dbus, openssh-server, sudo, DHCP)
#     and imports it under the alias $CONTAINARIUM_IMAGE (default: containarium/debian12)
#
# Safe to run again: every step checks before it acts.
set -euo pipefail

IMAGE_ALIAS="${CONTAINARIUM_IMAGE:-containarium/debian12}"
# Bump when the image recipe below changes: an older image under the alias is rebuilt.
IMAGE_VERSION=2
POOL="${CONTAINARIUM_POOL:-default}"
POOL_SIZE="${CONTAINARIUM_POOL_SIZE:-40GiB}"
BRIDGE="${CONTAINARIUM_BRIDGE:-incusbr0}"
BRIDGE_CIDR="${CONTAINARIUM_BRIDGE_CIDR:-10.87.0.1/24}"
CACHE_DIR="${CONTAINARIUM_CACHE:-/var/cache/containarium}"

log() { printf '==> %s\n' "$*" >&2; }

[ "$(id -u)" = 0 ] || { echo "testbed.sh must run as root" >&2; exit 1; }
export DEBIAN_FRONTEND=noninteractive

# --- 1. apt: backports from the machine's own archive ---------------------------------------
archive_uri() {
  local uri=""
  if compgen -G '/etc/apt/sources.list.d/*.sources' >/dev/null; then
    # deb822: the URIs line of the stanza whose Suites carries plain "bookworm"
    uri=$(awk '
      /^[[:space:]]*$/ { if (u != "" && s ~ /(^|[[:space:]])bookworm([[:space:]]|$)/) { print u; exit } u=""; s=""; next }
      /^URIs:/ { u=$2 }
      /^Suites:/ { $1=""; s=$0 }
      END { if (u != "" && s ~ /(^|[[:space:]])bookworm([[:space:]]|$)/) print u }
    ' /etc/apt/sources.list.d/*.sources | head -n1)
  fi
  if [ -z "$uri" ] && [ -f /etc/apt/sources.list ]; then
    uri=$(awk '$1=="deb" && $3=="bookworm" { for (i=2;i<=NF;i++) if ($i ~ /:\/\//) { print $i; exit } }' /etc/apt/sources.list)
  fi
  printf '%s' "$uri"
}

BACKPORTS_LIST=/etc/apt/sources.list.d/containarium-backports.list
if ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
  uri=$(archive_uri)
  [ -n "$uri" ] || { echo "cannot find the Debian archive in this machine's apt sources" >&2; exit 1; }
  log "enabling bookworm-backports from $uri"
  echo "deb $uri bookworm-backports main" > "$BACKPORTS_LIST"
  rm -f /var/lib/containarium-apt-updated
fi

need_pkgs=()
for p in btrfs-progs debootstrap openssh-client libsqlite3-dev libssl-dev libffi-dev libpci-dev pci.ids \
         iproute2 xz-utils gcc make curl; do
  dpkg -s "$p" >/dev/null 2>&1 || need_pkgs+=("$p")
done
if ! command -v incus >/dev/null 2>&1 || ! [ -x /usr/libexec/incus/incusd ]; then need_incus=1; else need_incus=0; fi
if [ ${#need_pkgs[@]} -gt 0 ] || [ "$need_incus" = 1 ]; then
  log "apt-get update"
  apt-get update -qq
  if [ ${#need_pkgs[@]} -gt 0 ]; then
    log "installing ${need_pkgs[*]}"
    apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
  fi
  if [ "$need_incus" = 1 ]; then
    log "installing incus from bookworm-backports"
    apt-get install -y -qq -t bookworm-backports incus >/dev/null
  fi
fi

# --- 1b. the user QEMU runs as (qemu-windows' default runAs) --------------------------------
# Made only when missing; an existing user is left as it is.
if ! getent passwd containarium-vm >/dev/null; then
  log "creating the system user containarium-vm (QEMU of the qemu-windows plugin runs as it)"
  useradd --system --no-create-home --shell /usr/sbin/nologin containarium-vm
fi

# --- 2. sysctls (Incus production settings) -------------------------------------------------
log "applying production sysctls"
for kv in fs.inotify.max_queued_events=1048576 fs.inotify.max_user_instances=1048576 \
          fs.inotify.max_user_watches=1048576 vm.max_map_count=262144 \
          kernel.keys.maxkeys=2000 kernel.keys.maxbytes=2000000 \
          net.ipv4.neigh.default.gc_thresh3=8192 net.ipv6.neigh.default.gc_thresh3=8192 \
          kernel.dmesg_restrict=1 net.ipv4.ip_forward=1; do
  sysctl -q -w "$kv" >/dev/null 2>&1 || log "warning: could not set $kv"
done

# --- 3. incusd ------------------------------------------------------------------------------
if ! incus info >/dev/null 2>&1; then
  getent group incus-admin >/dev/null || groupadd --system incus-admin
  mkdir -p /var/log/incus
  if [ -d /run/systemd/system ] && command -v systemctl >/dev/null; then
    log "starting incus via systemd"
    systemctl start incus.socket incus.service || true
  fi
  if ! incus info >/dev/null 2>&1; then
    log "starting incusd (no init system)"
    # lxcfs gives containers a truthful /proc/meminfo and cpuinfo when it is installed.
    if command -v lxcfs >/dev/null && ! pgrep -x lxcfs >/dev/null; then
      # A FUSE mount whose lxcfs process died (a machine that kept its mounts but not its
      # processes) answers "Transport endpoint is not connected": detach it before reuse.
      if ! stat /var/lib/incus-lxcfs >/dev/null 2>&1 && grep -q ' /var/lib/incus-lxcfs ' /proc/mounts; then
        log "detaching stale lxcfs mount"
        fusermount -uz /var/lib/incus-lxcfs 2>/dev/null || umount -l /var/lib/incus-lxcfs
      fi
      mkdir -p /var/lib/incus-lxcfs
      setsid lxcfs /var/lib/incus-lxcfs >/var/log/incus/lxcfs.log 2>&1 < /dev/null &
    fi
    export INCUS_OVMF_PATH=/usr/share/ovmf
    setsid /usr/libexec/incus/incusd --group incus-admin --logfile /var/log/incus/incusd.log \
      >/var/log/incus/incusd.stdout 2>&1 < /dev/null &
  fi
  for _ in $(seq 1 60); do incus info >/dev/null 2>&1 && break; sleep 0.5; done
  incus info >/dev/null 2>&1 || { echo "incusd did not come up; see /var/log/incus/incusd.log" >&2; exit 1; }
fi
log "incus $(incus version 2>/dev/null | awk '/Server version/ {print $3}')"

# --- 4. storage pool and bridge -------------------------------------------------------------
if ! incus storage show "$POOL" >/dev/null 2>&1; then
  log "creating btrfs pool $POOL ($POOL_SIZE, loop file)"
  incus storage create "$POOL" btrfs size="$POOL_SIZE"
fi
# Disk quotas on btrfs are qgroup limits, enforced only while btrfs's qgroup accounting is
# consistent. Containers killed mid-write (crash tests, a host crash) can leave it marked
# inconsistent, and then no quota holds: rescan (seconds) so limits bind again.
if [ "$(incus storage show "$POOL" | sed -n "s/^driver: //p")" = btrfs ]; then
  pool_dir="/var/lib/incus/storage-pools/$POOL"
  if [ -d "$pool_dir" ] && btrfs qgroup show "$pool_dir" 2>&1 | grep -qi 'inconsistent'; then
    log "btrfs qgroup accounting of pool $POOL is inconsistent: rescanning so disk quotas hold"
    btrfs quota rescan -w "$pool_dir" >/dev/null
  fi
fi
if ! incus network show "$BRIDGE" >/dev/null 2>&1; then
  log "creating bridge $BRIDGE ($BRIDGE_CIDR, NAT)"
  incus network create "$BRIDGE" ipv4.address="$BRIDGE_CIDR" ipv4.nat=true ipv6.address=none
fi
if ! incus profile device show default 2>/dev/null | grep -q '^root:'; then
  incus profile device add default root disk path=/ pool="$POOL"
fi
if ! incus profile device show default 2>/dev/null | grep -q '^eth0:'; then
  incus profile device add default eth0 nic name=eth0 network="$BRIDGE"
fi

# --- 5. the offline Debian 12 image ---------------------------------------------------------
if incus image info "$IMAGE_ALIAS" >/dev/null 2>&1 && \
   [ "$(incus image get-property "$IMAGE_ALIAS" containarium_image_version 2>/dev/null)" != "$IMAGE_VERSION" ]; then
  log "image $IMAGE_ALIAS is older than recipe $IMAGE_VERSION; rebuilding"
  incus image delete "$IMAGE_ALIAS"
fi
if ! incus image info "$IMAGE_ALIAS" >/dev/null 2>&1; then
  mkdir -p "$CACHE_DIR"
  work=$(mktemp -d "$CACHE_DIR/image.XXXXXX")
  trap 'umount -R "$work/rootfs/proc" 2>/dev/null || true; rm -rf "$work"' EXIT
  rootfs="$work/rootfs"
  log "debootstrap Debian 12 into $rootfs (about 2 minutes)"
  debootstrap --variant=minbase \
    --include=systemd,systemd-sysv,systemd-resolved,udev,dbus,openssh-server,iproute2,sudo,ca-certificates,procps,less \
    bookworm "$rootfs" >"$work/debootstrap.log" 2>&1 || { tail -n 30 "$work/debootstrap.log" >&2; exit 1; }
  mkdir -p "$rootfs/etc/systemd/network"
  printf '[Match]\nName=eth0\n\n[Network]\nDHCP=ipv4\n' > "$rootfs/etc/systemd/network/eth0.network"
  chroot "$rootfs" systemctl enable systemd-networkd ssh >/dev/null 2>&1
  chroot "$rootfs" systemctl enable systemd-resolved >/dev/null 2>&1
  # resolved answers on 127.0.0.53 with the DNS server that DHCP hands out (the bridge's dnsmasq)
  ln -sf ../run/systemd/resolve/stub-resolv.conf "$rootfs/etc/resolv.conf"
  # host keys are generated at first boot, never shared between containers
  rm -f "$rootfs"/etc/ssh/ssh_host_*
  mkdir -p "$rootfs/etc/systemd/system/ssh.service.d"
  # Generate host keys only when none were provided: Containarium places keys made on the
  # host before first boot (faster first login, and the host knows the keys).
  cat > "$rootfs/etc/systemd/system/ssh.service.d/containarium-hostkeys.conf" <<'UNIT'
[Service]
ExecStartPre=
ExecStartPre=/bin/sh -c 'ls /etc/ssh/ssh_host_*_key >/dev/null 2>&1 || exec /usr/bin/ssh-keygen -A'
ExecStartPre=/usr/sbin/sshd -t
UNIT
  printf 'PasswordAuthentication no\nKbdInteractiveAuthentication no\nPermitRootLogin no\n' \
    > "$rootfs/etc/ssh/sshd_config.d/containarium.conf"
  : > "$rootfs/etc/machine-id"
  rm -f "$rootfs/var/lib/dbus/machine-id"
  echo debian > "$rootfs/etc/hostname"
  chroot "$rootfs" apt-get clean
  rm -rf "$rootfs"/var/lib/apt/lists/*
  cat > "$work/metadata.yaml" <<META
architecture: x86_64
creation_date: $(date +%s)
properties:
  description: Debian 12 (bookworm) for Containarium
  os: debian
  release: bookworm
  architecture: amd64
  variant: containarium
  containarium_image_version: "$IMAGE_VERSION"
META
  tar -C "$work" -czf "$work/meta.tar.gz" metadata.yaml
  log "packing rootfs"
  tar -C "$rootfs" --numeric-owner -czf "$work/rootfs.tar.gz" .
  log "importing image as $IMAGE_ALIAS"
  incus image import "$work/meta.tar.gz" "$work/rootfs.tar.gz" --alias "$IMAGE_ALIAS" >/dev/null
  rm -rf "$work"; trap - EXIT
fi
log "test bed ready: image $IMAGE_ALIAS, pool $POOL, bridge $BRIDGE"
