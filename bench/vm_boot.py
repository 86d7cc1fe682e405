#!/usr/bin/env python3
"""Create-to-guest-port-open for the Linux test guest on the qemu-windows backend, against
launching the same QEMU command by hand, as a ratio (median of --runs).

Ours: `containarium create --os-type linux-test` (plugin: spec, qcow2 overlay, QEMU started in
the background as the plugin's runAs user under setpriv, QMP answers) until the guest's TCP
3389 answers through the forwarded RDP port. By hand: `qemu-img create` and the very argv the
plugin's QEMU runs (read from /proc), started the way the plugin starts it (the same user,
groups and no_new_privs through setpriv, a session of its own, / as its working directory, a
bare environment; the argv carries the same -sandbox and restricted network), with another
directory and port, until the same port check answers.

QEMU runs as the plugin's `runAs` user (default containarium-vm; scripts/testbed.sh makes it),
so that user must reach the scratch directory and read the test guest: the script opens both
to it (o+x on the scratch directory, o+rx on the guest's directory, o+r on its two files).

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


def add_mode(path, bits):
    mode = os.stat(path).st_mode & 0o7777
    if mode & bits != bits:
        os.chmod(path, mode | bits)


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
# QEMU runs as the plugin's runAs user: it must traverse the scratch directory and read the guest.
add_mode(work, 0o001)
add_mode(args.guest, 0o005)
for f in ("vmlinuz", "initrd.img"):
    add_mode(os.path.join(args.guest, f), 0o004)
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
# Its own state directory: a daemon running on this machine would otherwise take the verbs,
# with its own config and plugins.
env = dict(os.environ, CONTAINARIUM_PLUGIN_PATH=os.path.join(work, "plugins"), CONTAINARIUM_CONFIG=os.path.join(work, "config.json"),
           CONTAINARIUM_STATE_DIR=os.path.join(work, "state"))
cli = os.path.join(args.bin, "containarium")


def run_cli(argv):
    r = subprocess.run([cli] + argv, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"containarium {' '.join(argv)} failed ({r.returncode}): {r.stderr.strip() or r.stdout.strip()}")
    return r


def status(pid, key):
    """The values of one line of /proc/PID/status ("Uid:\t0\t0\t0\t0" -> ["0", "0", "0", "0"])."""
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(key + ":"):
            return line[len(key) + 1:].split()
    return []


def privileges(pid):
    """How the plugin started QEMU `pid`, as setpriv's argv prefix (empty when it runs as root):
    the same uid, gid and supplementary groups, no inheritable capability, no_new_privs."""
    uid, gid = int(status(pid, "Uid")[0]), int(status(pid, "Gid")[0])
    if uid == 0:
        return [], None
    groups = status(pid, "Groups")
    prefix = [shutil.which("setpriv") or "/usr/bin/setpriv", f"--reuid={uid}", f"--regid={gid}",
              f"--groups={','.join(groups)}" if groups else "--clear-groups", "--inh-caps=-all"]
    if status(pid, "NoNewPrivs") == ["1"]:
        prefix.append("--no-new-privs")
    return prefix + ["--"], gid


def wait_port(port, proc=None, log=None, deadline=300):
    t = time.time()
    while time.time() - t < deadline:
        if proc is not None and proc.poll() is not None:
            said = open(log, errors="replace").read()[-2000:] if log and os.path.exists(log) else ""
            raise SystemExit(f"QEMU exited ({proc.returncode}) before port {port} answered: {said}")
        try:
            if b"test guest" in urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1).read():
                return
        except Exception:
            time.sleep(0.05)
    raise SystemExit(f"port {port} never answered")


def stop(proc):
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


ours, hand = [], []
for run in range(args.runs):
    name = f"vb{run}"
    t0 = time.time()
    run_cli(["create", name, "--os-type", "linux-test", "--memory", "512MB", "--disk", "2GB", "--format", "json"])
    src = os.path.join(work, "vms", f"{name}-container")
    spec = json.load(open(os.path.join(src, "vm.json")))
    wait_port(spec["rdpPort"])
    ours.append(time.time() - t0)
    # The plugin writes qemu.pid; setpriv execs QEMU, so the pid is QEMU's and /proc shows its argv.
    pid = open(os.path.join(src, "qemu.pid")).read().strip()
    argv = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")[:-1]
    prefix, gid = privileges(pid)
    run_cli(["delete", name, "--force"])

    # The same command by hand, in a scratch directory, on another port, started as the plugin
    # starts it. The directory and disk are handed to QEMU's group as the plugin hands them.
    dst = os.path.join(work, f"hand{run}")
    port = 36890 + run
    argv = [a.decode().replace(src, dst).replace(f":{spec['rdpPort']}-:", f":{port}-:") for a in argv]
    log = os.path.join(work, f"hand{run}.log")
    t1 = time.time()
    os.makedirs(dst)
    disk = os.path.join(dst, "disk.qcow2")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", disk, str(spec["diskBytes"])], check=True)
    if gid is not None:
        os.chown(dst, 0, gid)
        os.chmod(dst, 0o1770)
        os.chown(disk, 0, gid)
        os.chmod(disk, 0o660)
    with open(log, "ab") as out:
        proc = subprocess.Popen(prefix + argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd="/",
                                env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}, start_new_session=True, close_fds=True)
    try:
        with open(os.path.join(dst, "qemu.pid"), "w") as f:
            f.write(f"{proc.pid}\n")
        wait_port(port, proc, log)
        hand.append(time.time() - t1)
    finally:
        stop(proc)

med = lambda xs: statistics.median(xs)
print(json.dumps({"accel": args.accel, "runs": args.runs, "oursSeconds": round(med(ours), 3), "byHandSeconds": round(med(hand), 3),
                  "ratio": round(med(ours) / med(hand), 3), "ours": [round(x, 3) for x in ours], "byHand": [round(x, 3) for x in hand]}))
shutil.rmtree(work, ignore_errors=True)
