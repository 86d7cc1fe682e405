#!/usr/bin/env python3
"""Create-to-guest-port-open for the Linux test guest on the qemu-windows backend, against
launching the same QEMU command by hand, as a ratio (median of --runs).

Ours: `containarium create --os-type linux-test` (plugin: spec, qcow2 overlay, QEMU started
daemonized, QMP says running) until the guest's TCP 3389 answers through the forwarded RDP
port. By hand: `qemu-img create` and the very argv the plugin used (read from /proc), with
another directory and port, until the same port check answers.

  bench/vm_boot.py --bin .build/debug [--guest DIR] [--accel tcg|kvm] [--runs 5]
"""
import argparse, json, os, shutil, statistics, subprocess, sys, tempfile, time, urllib.request

def default_accel():
    """kvm where the kernel has hardware KVM and /dev/kvm opens; tcg elsewhere (PVM runs no stock guest)."""
    if not any(os.path.exists(f"/sys/module/{m}") for m in ("kvm_intel", "kvm_amd")):
        return "tcg"
    try:
        os.close(os.open("/dev/kvm", os.O_RDWR))
        return "kvm"
    except OSError:
        return "tcg"


ap = argparse.ArgumentParser()
ap.add_argument("--bin", required=True, help="build directory with containarium and libQemuWindows.so")
ap.add_argument("--guest", default=os.environ.get("CONTAINARIUM_VM_GUEST", "/var/cache/containarium/vm-guest"))
ap.add_argument("--accel", default=os.environ.get("CONTAINARIUM_VM_ACCEL") or default_accel())
ap.add_argument("--runs", type=int, default=5)
args = ap.parse_args()
repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if not os.path.exists(os.path.join(args.guest, "initrd.img")):
    subprocess.run(["bash", os.path.join(repo, "scripts/vm-testguest.sh"), args.guest], check=True)

work = tempfile.mkdtemp(prefix="vmbench-")
plugins = os.path.join(work, "plugins", "qemu-windows")
os.makedirs(plugins)
shutil.copy(os.path.join(repo, "Plugins/QemuWindows/plugin.json"), plugins)
os.symlink(os.path.join(os.path.abspath(args.bin), "libQemuWindows.so"), os.path.join(plugins, "libQemuWindows.so"))
media = {"os": "linux", "kernel": os.path.join(args.guest, "vmlinuz"), "initrd": os.path.join(args.guest, "initrd.img"),
         "append": "console=ttyS0", "firmware": "bios"}
config = {"backend": "qemu-windows", "images": {"linux-test": "linux-test"},
          "plugins": {"qemu-windows": {"enabled": True, "config": {"stateDir": os.path.join(work, "vms"), "accel": args.accel,
                                                                    "rdpPortFirst": 35890, "rdpPortLast": 35990, "shutdownTimeout": 5,
                                                                    "supervise": False, "images": {"linux-test": media}}},
                      "incus-lxc": {"enabled": False}}}
json.dump(config, open(os.path.join(work, "config.json"), "w"))
env = dict(os.environ, CONTAINARIUM_PLUGIN_PATH=os.path.join(work, "plugins"), CONTAINARIUM_CONFIG=os.path.join(work, "config.json"))
cli = os.path.join(args.bin, "containarium")
key = os.path.join(work, "key")
subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key], check=True)


def wait_port(port, deadline=300):
    t = time.time()
    while time.time() - t < deadline:
        try:
            if b"test guest" in urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1).read():
                return
        except Exception:
            time.sleep(0.05)
    raise SystemExit(f"port {port} never answered")


ours, hand = [], []
for run in range(args.runs):
    name = f"vb{run}"
    t0 = time.time()
    subprocess.run([cli, "create", name, "--ssh-key", key + ".pub", "--os-type", "linux-test", "--memory", "512MB", "--disk", "2GB",
                    "--format", "json"], env=env, check=True, capture_output=True)
    spec = json.load(open(os.path.join(work, "vms", f"{name}-container", "vm.json")))
    wait_port(spec["rdpPort"])
    ours.append(time.time() - t0)
    pid = open(os.path.join(work, "vms", f"{name}-container", "qemu.pid")).read().strip()
    argv = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")[:-1]
    subprocess.run([cli, "delete", name, "--force"], env=env, check=True, capture_output=True)

    # The same command by hand, in a scratch directory, on another port.
    src = os.path.join(work, "vms", f"{name}-container")
    dst = os.path.join(work, f"hand{run}")
    os.makedirs(dst)
    port = 36890 + run
    argv = [a.decode().replace(src, dst).replace(f":{spec['rdpPort']}-:", f":{port}-:") for a in argv]
    t1 = time.time()
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", os.path.join(dst, "disk.qcow2"), str(spec["diskBytes"])], check=True)
    subprocess.run(argv, check=True)
    wait_port(port)
    hand.append(time.time() - t1)
    subprocess.run(["kill", open(os.path.join(dst, "qemu.pid")).read().strip()])

med = lambda xs: statistics.median(xs)
print(json.dumps({"accel": args.accel, "runs": args.runs, "oursSeconds": round(med(ours), 3), "byHandSeconds": round(med(hand), 3),
                  "ratio": round(med(ours) / med(hand), 3), "ours": [round(x, 3) for x in ours], "byHand": [round(x, 3) for x in hand]}))
shutil.rmtree(work, ignore_errors=True)
