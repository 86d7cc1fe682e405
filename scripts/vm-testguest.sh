#!/usr/bin/env bash
# A small Linux guest for the VM backend's tests and benchmark, built from Debian's packages:
# the Debian kernel (linux-image-amd64) and a busybox initramfs (busybox-static). No download
# of images. The guest brings up its virtio NIC (10.0.2.15 on QEMU's user network), serves
# HTTP on TCP 3389 (standing in for RDP), and powers off on the ACPI power button, unless its
# kernel command line says ctm.hang=1 (a guest that ignores it, for the hard-stop path). A shell
# runs on its serial console and one on its screen (tty1).
#
#   scripts/vm-testguest.sh DEST     -> DEST/vmlinuz, DEST/initrd.img
set -euo pipefail
DEST=${1:?usage: vm-testguest.sh DEST}
need=()
for p in linux-image-amd64 busybox-static cpio qemu-utils ovmf; do dpkg -s "$p" >/dev/null 2>&1 || need+=("$p"); done
[ -x /usr/bin/qemu-system-x86_64 ] || need+=(qemu-system-x86)   # Incus from backports brings QEMU 10
if [ ${#need[@]} -gt 0 ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
KVER=$(ls /lib/modules | sort -V | tail -n1)
mkdir -p "$DEST"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root="$work/root"
mkdir -p "$root"/{bin,dev,proc,sys,www,lib/modules}
cp /bin/busybox "$root/bin/busybox"
# Modules in load order: dependencies first.
order=()
add() {
  local m=$1 d
  for d in $(modinfo -k "$KVER" -F depends "$m" | tr ',' ' '); do add "$d"; done
  case " ${order[*]} " in *" $m "*) ;; *) order+=("$m") ;; esac
}
for m in virtio_pci virtio_net virtio_blk button evdev; do add "$m"; done
for m in "${order[@]}"; do cp "$(modinfo -k "$KVER" -n "$m")" "$root/lib/modules/$m.ko"; done
printf '%s\n' "${order[@]}" > "$root/modules.order"
echo '<html><body>containarium test guest</body></html>' > "$root/www/index.html"
cat > "$root/init" <<'SH'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in $(cat /modules.order); do insmod /lib/modules/$m.ko 2>/dev/null; done
ip link set lo up
ip link set eth0 up
ip addr add 10.0.2.15/24 dev eth0
ip route add default via 10.0.2.2
httpd -p 3389 -h /www
if grep -q 'ctm.hang=1' /proc/cmdline; then
  echo "containarium-testguest: ignoring the power button" > /dev/console
else
  # The ACPI power button is an input device: its first event powers the guest off.
  for e in /sys/class/input/event*; do
    if grep -q "Power Button" "$e/device/name" 2>/dev/null; then pb=/dev/input/${e##*/}; fi
  done
  if [ -n "$pb" ]; then
    ( dd if="$pb" bs=24 count=1 of=/dev/null 2>/dev/null
      echo "containarium-testguest: power button, powering off" > /dev/console
      sync; poweroff -f ) &
  fi
fi
# A shell on the serial console and one on the screen (tty1, the VNC console): the console/1
# paths of the tests.
( while true; do setsid sh -c 'exec sh -i </dev/ttyS0 >/dev/ttyS0 2>&1'; sleep 1; done ) &
printf '\033[2J\033[Hcontainarium test guest: a shell on the screen\n' > /dev/tty1
( while true; do setsid sh -c 'exec sh -i </dev/tty1 >/dev/tty1 2>&1'; sleep 1; done ) &
echo "containarium-testguest: ready" > /dev/console
while true; do sleep 3600; done
SH
chmod 755 "$root/init"
(cd "$root" && find . | cpio -o -H newc --quiet | gzip -9) > "$DEST/initrd.img.new"
mv "$DEST/initrd.img.new" "$DEST/initrd.img"
cp "/boot/vmlinuz-$KVER" "$DEST/vmlinuz"
echo "test guest: kernel $KVER, modules ${order[*]}" >&2
