#!/usr/bin/env python3
"""Benchmark: `containarium create` to a successful SSH login, against raw `incus launch` of
the same image to SSH port open, measured in the same run, interleaved, median of N.

    python3 bench/create_to_ssh.py [--runs 7] [--image containarium/debian12] [--bin containarium]

Prints each sample, the medians and the ratio (target: at most 1.2x). Needs the test bed
(scripts/testbed.sh) and an installed containarium (scripts/install.sh). Documented in
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


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def incus_ipv4(name):
    out = run(["incus", "list", name, "--format", "json"]).stdout
    for inst in json.loads(out):
        if inst["name"] != name:
            continue
        for ifname, net in ((inst.get("state") or {}).get("network") or {}).items():
            if ifname == "lo":
                continue
            for a in net.get("addresses", []):
                if a["family"] == "inet" and a["scope"] == "global":
                    return a["address"]
    return None


def port_open(ip, port=22, timeout=0.2):
    try:
        with socket.create_connection((ip, port), timeout=timeout):
            return True
    except OSError:
        return False


def raw_sample(image, name):
    """incus launch -> IPv4 -> TCP port 22 accepts."""
    t0 = time.monotonic()
    run(["incus", "launch", image, name, "--quiet"])
    deadline = t0 + 120
    ip = None
    while time.monotonic() < deadline:
        ip = ip or incus_ipv4(name)
        if ip and port_open(ip):
            return time.monotonic() - t0
        time.sleep(0.01)
    raise RuntimeError(f"{name}: SSH port never opened")


def ours_sample(binary, user, key, env):
    """containarium create -> ssh user@ip true succeeds (real login with the injected key)."""
    t0 = time.monotonic()
    run([binary, "create", user, "--ssh-key", key + ".pub", "--format", "json"], env=env)
    info = json.loads(run([binary, "info", user, "--format", "json"], env=env).stdout)
    ip = info["ipv4"][0]
    deadline = t0 + 120
    while time.monotonic() < deadline:
        r = subprocess.run(
            ["ssh", "-i", key, "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
             "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "ConnectTimeout=2", "-o", "LogLevel=ERROR",
             f"{user}@{ip}", "true"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if r.returncode == 0:
            return time.monotonic() - t0
        time.sleep(0.01)
    raise RuntimeError(f"{user}: SSH login never succeeded")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--image", default=os.environ.get("CONTAINARIUM_IMAGE", "containarium/debian12"))
    ap.add_argument("--bin", default=os.environ.get("CONTAINARIUM_BIN", shutil.which("containarium") or "containarium"))
    ap.add_argument("--json", help="also write the samples here")
    ap.add_argument("--no-host-keys", action="store_true",
                    help="let the image generate its SSH host keys at first boot, as the raw path does")
    args = ap.parse_args()

    tmp = tempfile.mkdtemp(prefix="ctm-bench-")
    key = os.path.join(tmp, "id")
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key])
    env = dict(os.environ)
    # Same resources as the raw launch: no limits beyond the default profile's.
    cfg = os.path.join(tmp, "config.json")
    with open(cfg, "w") as f:
        json.dump({"plugins": {"incus-lxc": {"enabled": True, "config": {"hostKeys": not args.no_host_keys}}},
                   "defaultImage": args.image}, f)
    env["CONTAINARIUM_CONFIG"] = cfg

    # Warm-up: the first launch of an image on btrfs pays for the image volume.
    run(["incus", "launch", args.image, "bench-warm", "--quiet"])
    run(["incus", "delete", "--force", "bench-warm"])

    ours, raw = [], []
    try:
        for i in range(args.runs):
            name = f"bench-raw-{i}"
            user = f"bench{i}"
            raw.append(raw_sample(args.image, name))
            subprocess.run(["incus", "delete", "--force", name], stdout=subprocess.DEVNULL)
            ours.append(ours_sample(args.bin, user, key, env))
            subprocess.run([args.bin, "delete", user, "--force"], env=env, stdout=subprocess.DEVNULL)
            print(f"run {i + 1}/{args.runs}: raw launch->ssh port {raw[-1]:.3f}s   containarium create->ssh login {ours[-1]:.3f}s", flush=True)
    finally:
        for i in range(args.runs):
            subprocess.run(["incus", "delete", "--force", f"bench-raw-{i}", f"bench{i}-container"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        shutil.rmtree(tmp, ignore_errors=True)

    m_raw, m_ours = statistics.median(raw), statistics.median(ours)
    ratio = m_ours / m_raw
    print()
    print(f"raw incus launch -> SSH port open : median {m_raw:.3f}s  (min {min(raw):.3f}, max {max(raw):.3f})")
    print(f"containarium create -> SSH login  : median {m_ours:.3f}s  (min {min(ours):.3f}, max {max(ours):.3f})")
    print(f"ratio (ours / raw)                : {ratio:.2f}x   target <= 1.20x   {'OK' if ratio <= 1.2 else 'OVER TARGET'}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"raw": raw, "ours": ours, "median_raw": m_raw, "median_ours": m_ours, "ratio": ratio}, f, indent=2)


if __name__ == "__main__":
    sys.exit(main())
