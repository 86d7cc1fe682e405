#!/usr/bin/env python3
"""The SSH gateway against OpenSSH connecting directly to the environment's sshd, same run.

One environment is made in an Incus project of the benchmark's own, and a gateway
(`containarium gateway`) is started in front of it. Then, alternating gateway and direct so
both see the same machine state:

  1. connection-to-command latency: `ssh HOST true`, a fresh connection each time (handshake,
     authentication, session, command, exit), --rounds times each way;
  2. scp throughput: a --megabytes file of random bytes, uploaded and downloaded, --scp-rounds
     times each way, checksums verified;
  3. --sessions concurrent sessions through the gateway, opened at once and held for
     --hold seconds, each printing a line every second; every session must see every line
     and exit 0.

The client is the real OpenSSH client in both cases with its defaults (the direct path
negotiates chacha20-poly1305 with sshd; the gateway offers AES-GCM, the only ciphers of
swift-nio-ssh). Prints medians, ratios and a JSON summary.

    python3 bench/ssh_gateway.py [--rounds 30] [--megabytes 100] [--scp-rounds 3] [--sessions 50] [--hold 60]

Needs: the test bed (scripts/testbed.sh) and a release build (CONTAINARIUM_BUILD_DIR or
.build/release; a debug build works but measures unoptimized Swift).
"""
import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid

from benchlib import ROOT, build_dir, free_port
PROJECT = "ctmgw" + uuid.uuid4().hex[:6]


def incus(*args, check=True):
    return subprocess.run(["incus", "--project", PROJECT, *args], check=check, capture_output=True, text=True)


def timed(cmd):
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({r.returncode}): {r.stderr.strip()}")
    return dt


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--megabytes", type=int, default=100)
    ap.add_argument("--scp-rounds", type=int, default=3)
    ap.add_argument("--sessions", type=int, default=50)
    ap.add_argument("--hold", type=int, default=60)
    ap.add_argument("--image", default=os.environ.get("CONTAINARIUM_IMAGE", "containarium/debian12"))
    a = ap.parse_args()

    bdir = build_dir()
    work = tempfile.mkdtemp(prefix="ctm-gwbench-")
    plugins = os.path.join(work, "plugins", "incus-lxc")
    os.makedirs(plugins)
    shutil.copy(os.path.join(bdir, "libIncusLXC.so"), plugins)
    shutil.copy(os.path.join(ROOT, "Plugins/IncusLXC/plugin.json"), plugins)
    config = os.path.join(work, "config.json")
    with open(config, "w") as f:
        json.dump({"plugins": {"incus-lxc": {"enabled": True, "config": {"project": PROJECT}}}, "defaultImage": a.image}, f)
    state = os.path.join(work, "state")
    env = dict(os.environ, CONTAINARIUM_PLUGIN_PATH=os.path.dirname(plugins), CONTAINARIUM_CONFIG=config,
               CONTAINARIUM_STATE_DIR=state, CONTAINARIUM_LOG_LEVEL="warning")
    cli = os.path.join(bdir, "containarium")
    key = os.path.join(work, "id")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key], check=True)
    user = "bench" + uuid.uuid4().hex[:4]
    port = free_port()
    gateway = None
    subprocess.run(["incus", "project", "create", PROJECT, "-c", "features.images=false", "-c", "features.profiles=false",
                    "-c", "features.storage.volumes=false", "-c", "features.networks=false"], check=True, capture_output=True)
    try:
        r = subprocess.run([cli, "create", user, "--ssh-key", key + ".pub"], env=env, capture_output=True, text=True)
        if r.returncode != 0:
            sys.exit(f"create failed: {r.stderr}")
        ip = incus("list", f"{user}-container", "--format", "csv", "--columns", "4").stdout.split()[0]
        gateway = subprocess.Popen([cli, "gateway", "--ssh-port", str(port), "--ssh-host", "127.0.0.1", "--state-dir", state],
                                   env=env, stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, "gateway.log"), "w"))
        common = ["-i", key, "-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
                  "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR"]
        via_gw = ["ssh", "-p", str(port), *common, f"{user}@127.0.0.1"]
        direct = ["ssh", *common, f"{user}@{ip}"]
        # OpenSSH's defaults with sshd are a post-quantum key exchange (sntrup761x25519) and
        # chacha20-poly1305, which swift-nio-ssh does not offer. The same algorithms as the
        # gateway's, for a like-for-like baseline:
        same = ["-o", "KexAlgorithms=curve25519-sha256", "-o", "Ciphers=aes128-gcm@openssh.com,aes256-gcm@openssh.com"]
        direct_same = ["ssh", *common, *same, f"{user}@{ip}"]
        deadline = time.time() + 60
        while True:  # the gateway is up and has enrolled the environment
            if subprocess.run(via_gw + ["true"], capture_output=True).returncode == 0 and \
               subprocess.run(direct + ["true"], capture_output=True).returncode == 0:
                break
            if time.time() > deadline:
                sys.exit("gateway or environment did not come up; see " + os.path.join(work, "gateway.log"))
            time.sleep(0.5)

        # 1. latency
        gw_t, d_t, s_t = [], [], []
        for _ in range(a.rounds):
            gw_t.append(timed(via_gw + ["true"]))
            d_t.append(timed(direct + ["true"]))
            s_t.append(timed(direct_same + ["true"]))
        lat = {"gateway_median_ms": statistics.median(gw_t) * 1000, "direct_median_ms": statistics.median(d_t) * 1000,
               "direct_same_algorithms_median_ms": statistics.median(s_t) * 1000,
               "gateway_p90_ms": sorted(gw_t)[int(len(gw_t) * 0.9) - 1] * 1000, "direct_p90_ms": sorted(d_t)[int(len(d_t) * 0.9) - 1] * 1000}
        lat["added_ms"] = lat["gateway_median_ms"] - lat["direct_median_ms"]
        lat["ratio"] = lat["gateway_median_ms"] / lat["direct_median_ms"]
        lat["added_vs_same_algorithms_ms"] = lat["gateway_median_ms"] - lat["direct_same_algorithms_median_ms"]

        # 2. throughput
        src = os.path.join(work, "payload")
        with open(src, "wb") as f:
            for _ in range(a.megabytes):
                f.write(os.urandom(1 << 20))
        digest = sha256(src)
        scp_gw = ["scp", "-P", str(port), *common]
        scp_d = ["scp", *common]
        scp_s = ["scp", *common, *same]
        ups = {"gateway": [], "direct": [], "same": []}
        downs = {"gateway": [], "direct": [], "same": []}
        for _ in range(a.scp_rounds):
            for name, scp, host in (("gateway", scp_gw, "127.0.0.1"), ("direct", scp_d, ip), ("same", scp_s, ip)):
                ups[name].append(timed(scp + [src, f"{user}@{host}:/tmp/payload"]))
                back = os.path.join(work, "back-" + name)
                downs[name].append(timed(scp + [f"{user}@{host}:/tmp/payload", back]))
                if sha256(back) != digest:
                    sys.exit(f"checksum mismatch on the {name} download")
                os.remove(back)
        mb = a.megabytes
        tput = {
            "upload_gateway_MBps": mb / statistics.median(ups["gateway"]), "upload_direct_MBps": mb / statistics.median(ups["direct"]),
            "download_gateway_MBps": mb / statistics.median(downs["gateway"]), "download_direct_MBps": mb / statistics.median(downs["direct"]),
        }
        tput["upload_direct_same_algorithms_MBps"] = mb / statistics.median(ups["same"])
        tput["download_direct_same_algorithms_MBps"] = mb / statistics.median(downs["same"])
        tput["upload_ratio"] = tput["upload_gateway_MBps"] / tput["upload_direct_MBps"]
        tput["download_ratio"] = tput["download_gateway_MBps"] / tput["download_direct_MBps"]

        # 3. concurrent sessions
        results = [None] * a.sessions
        script = f"for i in $(seq 1 {a.hold}); do echo tick-$i; sleep 1; done"

        def hold(i):
            r = subprocess.run(via_gw + [script], capture_output=True, text=True, timeout=a.hold + 120)
            ticks = sum(1 for line in r.stdout.splitlines() if line.startswith("tick-"))
            results[i] = (r.returncode, ticks, r.stderr.strip()[-200:])

        t0 = time.perf_counter()
        threads = [threading.Thread(target=hold, args=(i,)) for i in range(a.sessions)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        held = time.perf_counter() - t0
        failures = [r for r in results if r is None or r[0] != 0 or r[1] != a.hold]
        conc = {"sessions": a.sessions, "held_seconds": a.hold, "wall_seconds": held, "failures": len(failures),
                "failure_samples": [str(f) for f in failures[:3]]}

        print(f"connection-to-command latency ({a.rounds} rounds, median / p90):")
        print(f"  gateway  {lat['gateway_median_ms']:7.1f} ms / {lat['gateway_p90_ms']:7.1f} ms")
        print(f"  direct   {lat['direct_median_ms']:7.1f} ms / {lat['direct_p90_ms']:7.1f} ms   (OpenSSH defaults)")
        print(f"  direct   {lat['direct_same_algorithms_median_ms']:7.1f} ms            (curve25519 + AES-GCM, as the gateway)")
        print(f"  added    {lat['added_ms']:+7.1f} ms vs defaults (ratio {lat['ratio']:.2f}x), {lat['added_vs_same_algorithms_ms']:+7.1f} ms vs same algorithms; target: under +50 ms")
        print(f"scp {mb} MB (median of {a.scp_rounds}):")
        print(f"  upload   gateway {tput['upload_gateway_MBps']:6.1f} MB/s  direct {tput['upload_direct_MBps']:6.1f} MB/s  ratio {tput['upload_ratio']:.2f}x")
        print(f"  download gateway {tput['download_gateway_MBps']:6.1f} MB/s  direct {tput['download_direct_MBps']:6.1f} MB/s  ratio {tput['download_ratio']:.2f}x")
        print(f"  direct with the gateway's algorithms: upload {tput['upload_direct_same_algorithms_MBps']:6.1f} MB/s, download {tput['download_direct_same_algorithms_MBps']:6.1f} MB/s")
        print("  (target: at least 0.8x direct)")
        print(f"{a.sessions} concurrent sessions held {a.hold} s: {len(failures)} failures (wall {held:.1f} s)")
        print(json.dumps({"latency": lat, "throughput": tput, "concurrency": conc}, indent=2))
        return 1 if failures else 0
    finally:
        if gateway:
            gateway.terminate()
            try:
                gateway.wait(timeout=20)
            except subprocess.TimeoutExpired:
                gateway.kill()
        for n in incus("list", "--format", "csv", "--columns", "n", check=False).stdout.split():
            incus("delete", "--force", n, check=False)
        subprocess.run(["incus", "project", "delete", PROJECT], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
