#!/usr/bin/env bash
# Build Containarium and install it under PREFIX (default /usr/local):
#   PREFIX/bin/containarium
#   PREFIX/lib/containarium/plugins/incus-lxc/{plugin.json,libIncusLXC.so}
#   PREFIX/lib/containarium/plugins/example-secrets/{plugin.json,libexample_secrets.so}  (disabled by default)
#   PREFIX/lib/containarium/plugins/nvidia-gpu/{plugin.json,libnvidia_gpu.so}  (GPU discovery, libpci)
#   PREFIX/lib/containarium/plugins/qemu-windows/{plugin.json,libQemuWindows.so}  (VMs; disabled by default)
#   PREFIX/lib/containarium/plugins/{clamav,trivy}/{plugin.json,lib*Scanner.so}  (security scans; disabled by default)
#   PREFIX/lib/containarium/plugins/gce-spot/{plugin.json,libGCESpot.so}  (spot VM lifecycle, the sentinel's; disabled by default)
#   PREFIX/share/containarium/stacks/*.json
#   PREFIX/share/containarium/webui/ (the dashboard, with its libraries from Debian's packages)
# and, when missing, a node config at /etc/containarium/config.json.
#
#   CONFIGURATION=release|debug (default release)
set -euo pipefail
cd "$(dirname "$0")/.."
PREFIX="${1:-/usr/local}"
CONFIGURATION="${CONFIGURATION:-release}"
log() { printf '==> %s\n' "$*" >&2; }

# CONTAINARIUM_RELEASE_BUILD_PATH: reuse a build directory outside the clone (CI does).
build_args=(-c "$CONFIGURATION")
if [ -n "${CONTAINARIUM_RELEASE_BUILD_PATH:-}" ]; then build_args+=(--scratch-path "$CONTAINARIUM_RELEASE_BUILD_PATH"); fi
log "swift build -c $CONFIGURATION"
swift build "${build_args[@]}" --product containarium
swift build "${build_args[@]}" --product IncusLXC
swift build "${build_args[@]}" --product QemuWindows
swift build "${build_args[@]}" --product ClamAVScanner
swift build "${build_args[@]}" --product TrivyScanner
swift build "${build_args[@]}" --product GCESpot
bin="$(swift build "${build_args[@]}" --show-bin-path)"

install -d "$PREFIX/bin" "$PREFIX/lib/containarium/plugins/incus-lxc" "$PREFIX/share/containarium/stacks"
install -m 0755 "$bin/containarium" "$PREFIX/bin/containarium.new"
mv -f "$PREFIX/bin/containarium.new" "$PREFIX/bin/containarium"
install -m 0644 Plugins/IncusLXC/plugin.json "$PREFIX/lib/containarium/plugins/incus-lxc/plugin.json"
# Replace, never overwrite in place: a running process may have the old library mapped.
install -m 0755 "$bin/libIncusLXC.so" "$PREFIX/lib/containarium/plugins/incus-lxc/libIncusLXC.so.new"
mv -f "$PREFIX/lib/containarium/plugins/incus-lxc/libIncusLXC.so.new" "$PREFIX/lib/containarium/plugins/incus-lxc/libIncusLXC.so"
make -s -C Plugins/ExampleScanner OUT="$PREFIX/lib/containarium/plugins/example-secrets" \
  "$PREFIX/lib/containarium/plugins/example-secrets/libexample_secrets.so"
install -d "$PREFIX/lib/containarium/plugins/qemu-windows"
install -m 0644 Plugins/QemuWindows/plugin.json "$PREFIX/lib/containarium/plugins/qemu-windows/plugin.json"
install -m 0755 "$bin/libQemuWindows.so" "$PREFIX/lib/containarium/plugins/qemu-windows/libQemuWindows.so.new"
mv -f "$PREFIX/lib/containarium/plugins/qemu-windows/libQemuWindows.so.new" "$PREFIX/lib/containarium/plugins/qemu-windows/libQemuWindows.so"
# The scanners (docs/scanning.md) and the spot VM lifecycle (docs/sentinel.md), disabled by default.
for p in "clamav ClamAV ClamAVScanner" "trivy Trivy TrivyScanner" "gce-spot GCESpot GCESpot"; do
  set -- $p
  install -d "$PREFIX/lib/containarium/plugins/$1"
  install -m 0644 "Plugins/$2/plugin.json" "$PREFIX/lib/containarium/plugins/$1/plugin.json"
  install -m 0755 "$bin/lib$3.so" "$PREFIX/lib/containarium/plugins/$1/lib$3.so.new"
  mv -f "$PREFIX/lib/containarium/plugins/$1/lib$3.so.new" "$PREFIX/lib/containarium/plugins/$1/lib$3.so"
done
make -s -C Plugins/NvidiaGPU OUT="$PREFIX/lib/containarium/plugins/nvidia-gpu" \
  "$PREFIX/lib/containarium/plugins/nvidia-gpu/libnvidia_gpu.so"
install -m 0644 stacks/*.json "$PREFIX/share/containarium/stacks/"
# The dashboard (/webui/): our files plus xterm.js and Chart.js from Debian's packages.
install -d "$PREFIX/share/containarium/webui"
install -m 0644 web/*.html web/*.js web/*.css "$PREFIX/share/containarium/webui/"
bash scripts/webui-assets.sh "$PREFIX/share/containarium/webui"
# Swagger UI for the daemon's /swagger-ui/, from local files (no CDN at run time).
bash scripts/swagger-ui.sh "$PREFIX/share/containarium/swagger-ui" || log "warning: Swagger UI assets not installed (pip unavailable?); /swagger-ui/ will say so"

if [ ! -f /etc/containarium/config.json ]; then
  install -d -m 0755 /etc/containarium
  cat > /etc/containarium/config.json <<JSON
{
  "plugins": {
    "incus-lxc": { "enabled": true, "config": { "socket": "/var/lib/incus/unix.socket", "pool": "default" } },
    "example-secrets": { "enabled": false, "config": { "root": "/srv" } },
    "nvidia-gpu": { "enabled": true, "config": { "sysfsPath": "/sys/bus/pci", "vendor": "10de" } }
  },
  "defaultImage": "${CONTAINARIUM_IMAGE:-containarium/debian12}",
  "images": { "debian12": "${CONTAINARIUM_IMAGE:-containarium/debian12}" },
  "defaults": { "cpu": "2", "memory": "2GB", "disk": "10GB" }
}
JSON
  log "wrote /etc/containarium/config.json"
fi
log "installed $("$PREFIX/bin/containarium" version)"
