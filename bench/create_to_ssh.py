#!/usr/bin/env python3
"""Benchmark: `containarium create` to a successful SSH login, against plain Incus, in two rows
measured in the same run, interleaved, median of N.

    python3 bench/create_to_ssh.py [--runs 7] [--image containarium/debian12] [--bin containarium]
                                   [--no-host-keys] [--json out.json]

Three paths are timed in every round (their order rotates from round to round):

  raw-port  `incus launch IMAGE` until TCP port 22 of the container's IPv4 accepts a
            connection. Plain Incus out of the box: no account, no key, no login.
  raw-full  The same work our create does, scripted with plain `incus` commands, until a real
            OpenSSH login (`ssh -i KEY -o BatchMode=yes USER@IP true`) succeeds with the same
            user key: host keys made on the host the way the IncusLXC plugin makes them
            (`ssh-keygen` ed25519 and ECDSA, in parallel) and pushed into the stopped container
            with an sshd_config.d file naming them, /etc/hostname and /etc/hosts, the same
            container config (nesting on, as `containarium create` defaults to), then start,
            `useradd` with sudo, a sudoers file, `getent passwd`, ~/.ssh (0700) and
            authorized_keys (0600), then the IPv4 and the login.
  ours      `containarium create USER --ssh-key KEY.pub` until the same OpenSSH login succeeds.

Rows printed, each with the medians of its two paths and their ratio:

  1. product vs plain Incus (NOT like-for-like): ours / raw-port. The raw path stops at an open
     port and lets the image make its own host keys at first boot.
  2. like-for-like: ours / raw-full. Both end at the same full SSH login with the same key and
     make host keys the same way.

--no-host-keys turns host-key generation off in both ours (plugin config hostKeys: false) and
raw-full: the image then makes its keys at first boot in both.

Needs the test bed (scripts/testbed.sh), an installed containarium (scripts/install.sh) and
ssh/ssh-keygen (OpenSSH). Everything it creates is deleted at the end. Documented in
docs/benchmarks.md.
"""
import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

LOGIN_TIMEOUT = 120


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def quiet(cmd, **kw):
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kw)


def ipv4_from_state(state):
    for ifname, net in ((state or {}).get("network") or {}).items():
        if ifname == "lo":
            continue
        for a in net.get("addresses") or []:
            if a.get("family") == "inet" and a.get("scope") == "global":
                return a["address"]
    return None


def incus_ipv4(name):
    """The container's IPv4 from Incus's state endpoint (what the plugin polls), or None."""
    r = subprocess.run(["incus", "query", f"/1.0/instances/{name}/state"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    if r.returncode != 0:
        return None
    return ipv4_from_state(json.loads(r.stdout))


def port_open(ip, port=22, timeout=0.2):
    try:
        with socket.create_connection((ip, port), timeout=timeout):
            return True
    except OSError:
        return False


def ssh_login(user, ip, key):
    """One real OpenSSH login running `true`; True when it succeeded."""
    r = subprocess.run(
        ["ssh", "-i", key, "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
         "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none", "-o", "ConnectTimeout=2", "-o", "LogLevel=ERROR",
         f"{user}@{ip}", "true"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return r.returncode == 0


def wait_login(user, ip, key, t0, what):
    """Retry the login until it succeeds; the elapsed time since t0."""
    while time.monotonic() < t0 + LOGIN_TIMEOUT:
        if ssh_login(user, ip, key):
            return time.monotonic() - t0
        time.sleep(0.01)
    raise RuntimeError(f"{what}: SSH login as {user}@{ip} never succeeded")


def wait_ipv4(name, t0):
    while time.monotonic() < t0 + LOGIN_TIMEOUT:
        ip = incus_ipv4(name)
        if ip:
            return ip
        time.sleep(0.01)
    raise RuntimeError(f"{name}: no IPv4 address")


# --- the three paths -----------------------------------------------------------------------

def raw_port_sample(image, name, user, key, host_keys):
    """incus launch -> IPv4 -> TCP port 22 accepts (no account, no login)."""
    t0 = time.monotonic()
    run(["incus", "launch", image, name, "--quiet"])
    ip = None
    while time.monotonic() < t0 + LOGIN_TIMEOUT:
        ip = ip or incus_ipv4(name)
        if ip and port_open(ip):
            return time.monotonic() - t0
        time.sleep(0.01)
    raise RuntimeError(f"{name}: SSH port never opened")


def make_host_keys(workdir, comment):
    """ed25519 and ECDSA host keys with ssh-keygen, both at once: as HostKeys.swift does."""
    os.makedirs(workdir, mode=0o700)
    procs = []
    for t in ("ed25519", "ecdsa"):
        procs.append(subprocess.Popen(["ssh-keygen", "-q", "-t", t, "-N", "", "-C", comment, "-f", os.path.join(workdir, f"ssh_host_{t}_key")],
                                      stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    for p in procs:
        if p.wait() != 0:
            raise RuntimeError("ssh-keygen failed to make a host key")
    with open(os.path.join(workdir, "10-containarium-hostkeys.conf"), "w") as f:
        f.write("# Written by Containarium: host keys generated on the host at create time.\n"
                "HostKey /etc/ssh/ssh_host_ed25519_key\nHostKey /etc/ssh/ssh_host_ecdsa_key\n")


def raw_full_sample(image, name, user, key, host_keys, tmp):
    """Plain `incus` commands doing what IncusLXC's create does, in the same order, then the
    same OpenSSH login as ours. Files with the same owner and mode go in one `incus file push`."""
    work = os.path.join(tmp, name)
    os.makedirs(work)
    t0 = time.monotonic()
    if host_keys:
        make_host_keys(os.path.join(work, "keys"), f"root@{name}")
    # The container config containarium create sets (nesting on by default); no limits.
    run(["incus", "init", image, name, "--quiet",
         "-c", "security.privileged=false", "-c", "boot.autostart=false", "-c", "security.nesting=true",
         "-c", "security.syscalls.intercept.mknod=true", "-c", "security.syscalls.intercept.setxattr=true"])
    ident = os.path.join(work, "identity")
    os.makedirs(ident)
    with open(os.path.join(ident, "hostname"), "w") as f:
        f.write(f"{name}\n")
    with open(os.path.join(ident, "hosts"), "w") as f:
        f.write(f"127.0.0.1\tlocalhost\n127.0.1.1\t{name}\n::1\tlocalhost ip6-localhost ip6-loopback\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n")
    push = ["incus", "file", "push", "--quiet", "--uid", "0", "--gid", "0"]
    run(push + ["--mode", "0644", os.path.join(ident, "hostname"), os.path.join(ident, "hosts"), f"{name}/etc/"])
    if host_keys:
        k = os.path.join(work, "keys")
        run(push + ["--mode", "0600", os.path.join(k, "ssh_host_ed25519_key"), os.path.join(k, "ssh_host_ecdsa_key"), f"{name}/etc/ssh/"])
        run(push + ["--mode", "0644", os.path.join(k, "ssh_host_ed25519_key.pub"), os.path.join(k, "ssh_host_ecdsa_key.pub"), f"{name}/etc/ssh/"])
        run(push + ["--mode", "0644", os.path.join(k, "10-containarium-hostkeys.conf"), f"{name}/etc/ssh/sshd_config.d/"])
    run(["incus", "start", name])
    run(["incus", "exec", name, "--", "useradd", "--create-home", "--shell", "/bin/bash", "--user-group", "--groups", "sudo", user])
    sudoers = os.path.join(work, f"90-containarium-{user}")
    with open(sudoers, "w") as f:
        f.write(f"{user} ALL=(ALL:ALL) NOPASSWD: ALL\n")
    run(push + ["--mode", "0440", sudoers, f"{name}/etc/sudoers.d/"])
    ent = run(["incus", "exec", name, "--", "getent", "passwd", user]).stdout.strip().split(":")
    uid, gid, home = ent[2], ent[3], ent[5]
    run(["incus", "file", "create", "--quiet", "--type", "directory", "--uid", uid, "--gid", gid, "--mode", "0700", f"{name}{home}/.ssh"])
    run(["incus", "file", "push", "--quiet", "--uid", uid, "--gid", gid, "--mode", "0600", key + ".pub", f"{name}{home}/.ssh/authorized_keys"])
    ip = wait_ipv4(name, t0)
    return wait_login(user, ip, key, t0, name)


def ours_sample(binary, user, key, env):
    """containarium create -> the same OpenSSH login with the same key."""
    t0 = time.monotonic()
    out = run([binary, "create", user, "--ssh-key", key + ".pub", "--format", "json"], env=env).stdout
    ip = None
    try:
        ip = (json.loads(out).get("ipv4") or [None])[0]
    except (ValueError, AttributeError):
        pass
    if not ip:  # create returns once the IPv4 is there; ask if its output did not say
        info = json.loads(run([binary, "info", user, "--format", "json"], env=env).stdout)
        ip = info["ipv4"][0]
    return wait_login(user, ip, key, t0, f"{user}-container")


# --- statistics and report -----------------------------------------------------------------

def summary(xs):
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "n": len(xs)}


ROWS = [
    ("1", "product vs plain Incus (NOT like-for-like)", "raw-port",
     "incus launch -> TCP 22 open", "containarium create -> SSH login"),
    ("2", "like-for-like", "raw-full",
     "scripted incus, same steps -> SSH login", "containarium create -> SSH login"),
]


def report(samples, host_keys):
    keys_note = "host keys made on the host (ours and raw-full); raw-port: image makes them at first boot" if host_keys \
        else "--no-host-keys: every path lets the image make its host keys at first boot"
    s = {k: summary(v) for k, v in samples.items()}
    print()
    print(f"Medians of {s['ours']['n']} interleaved rounds ({keys_note})")
    print()
    hdr = f"{'row':3} {'what it compares':43} {'raw path (stop point)':40} {'raw median':>10} {'ours median':>11} {'ratio':>7}"
    print(hdr)
    print("-" * len(hdr))
    rows = []
    for num, label, raw, raw_desc, _ in ROWS:
        ratio = s["ours"]["median"] / s[raw]["median"]
        rows.append({"row": num, "label": label, "raw": raw, "median_raw": s[raw]["median"], "median_ours": s["ours"]["median"], "ratio": ratio})
        print(f"{num:3} {label:43} {raw_desc:40} {s[raw]['median']:9.3f}s {s['ours']['median']:10.3f}s {ratio:6.2f}x")
    print()
    for k, desc in (("raw-port", "incus launch -> TCP 22 open"), ("raw-full", "scripted incus -> SSH login"),
                    ("ours", "containarium create -> SSH login")):
        print(f"  {k:8} {desc:34} median {s[k]['median']:.3f}s  min {s[k]['min']:.3f}s  max {s[k]['max']:.3f}s")
    like = rows[1]["ratio"]
    print()
    print(f"target: ours <= 1.20x raw on the like-for-like row (2): {like:.2f}x  {'met' if like <= 1.2 else 'NOT met'}")
    return rows, s


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--image", default=os.environ.get("CONTAINARIUM_IMAGE", "containarium/debian12"))
    ap.add_argument("--bin", default=os.environ.get("CONTAINARIUM_BIN", shutil.which("containarium") or "containarium"))
    ap.add_argument("--json", help="also write the samples here")
    ap.add_argument("--no-host-keys", action="store_true",
                    help="no host keys made on the host, in ours and raw-full: the image makes them at first boot")
    args = ap.parse_args()
    if args.runs < 1:
        ap.error("--runs must be at least 1")
    host_keys = not args.no_host_keys
    for tool in ("incus", "ssh", "ssh-keygen"):
        if not shutil.which(tool):
            sys.exit(f"{tool} is not installed")

    tag = uuid.uuid4().hex[:4]
    tmp = tempfile.mkdtemp(prefix="ctm-bench-")
    key = os.path.join(tmp, "id")
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key])
    env = dict(os.environ)
    # Same resources as the raw paths: no limits beyond the default profile's.
    cfg = os.path.join(tmp, "config.json")
    with open(cfg, "w") as f:
        json.dump({"plugins": {"incus-lxc": {"enabled": True, "config": {"hostKeys": host_keys}}},
                   "defaultImage": args.image}, f)
    env["CONTAINARIUM_CONFIG"] = cfg

    raw_names, users = [], []

    def one(path, i):
        """Run one sample of a path; returns seconds. Cleans up what it made (untimed)."""
        user = f"b{tag}{path[0]}{i}"  # a valid username: letter first, a-z0-9
        if path == "ours":
            users.append(user)
            t = ours_sample(args.bin, user, key, env)
            quiet([args.bin, "delete", user, "--force"], env=env)
            return t
        name = f"bench-{tag}-{path}-{i}"
        raw_names.append(name)
        if path == "raw-port":
            t = raw_port_sample(args.image, name, user, key, host_keys)
        else:
            t = raw_full_sample(args.image, name, user, key, host_keys, tmp)
        quiet(["incus", "delete", "--force", name])
        return t

    paths = ["raw-port", "raw-full", "ours"]
    samples = {p: [] for p in paths}
    try:
        # Warm-up round, not counted: the first launch of an image on btrfs pays for the image
        # volume, and the first containarium run for loading the binary and plugin from disk.
        for p in paths:
            one(p, "w")
        for i in range(args.runs):
            order = paths[i % 3:] + paths[:i % 3]
            got = {p: one(p, i) for p in order}
            for p in paths:
                samples[p].append(got[p])
            print(f"round {i + 1}/{args.runs} (order {', '.join(order)}): raw-port {got['raw-port']:.3f}s   "
                  f"raw-full {got['raw-full']:.3f}s   ours {got['ours']:.3f}s", flush=True)
    finally:
        for u in users:
            quiet([args.bin, "delete", u, "--force"], env=env)
        for n in raw_names + [f"{u}-container" for u in users]:
            quiet(["incus", "delete", "--force", n])
        shutil.rmtree(tmp, ignore_errors=True)

    rows, s = report(samples, host_keys)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"host_keys": host_keys, "runs": args.runs, "samples": samples, "summary": s, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    sys.exit(main())
