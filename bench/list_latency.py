#!/usr/bin/env python3
"""GET /v1/containers under load, beside the same listing done directly against Incus.

With N managed environments on the node (default 200; R of them running), C concurrent
clients (default 32) each loop for D seconds over keep-alive connections against:

  1. the daemon:      GET /v1/containers                       (served from its inventory)
  2. Incus directly:  GET /1.0/instances?recursion=2 on its unix socket (state + addresses,
                      what the listing shows)
  3. Incus directly:  GET /1.0/instances?recursion=1           (config only, for reference)

and prints p50/p99 latency and throughput of each, plus the ratios, measured in the same run
by the same client: wrk (a C load generator; Incus's unix socket is bridged to loopback TCP by
socat) when both are installed (`apt-get install wrk socat`), else a Python client (whose own
overhead then dominates the daemon's tail latency).

Environments are made directly through Incus as stopped, managed instances (the daemon adopts
them through its reconciler), R of them are started, and all are removed at the end. Everything
happens in an Incus project of the benchmark's own, so nothing else on the node is touched and
both sides list exactly the same instances.

    python3 bench/list_latency.py [--count 200] [--running 20] [--clients 32] [--seconds 10]

Needs: the test bed (scripts/testbed.sh) and a built binary (CONTAINARIUM_BUILD_DIR or
.build/release, .build/debug).
"""
import argparse
import base64
import concurrent.futures
import http.client
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid

from benchlib import ROOT, build_dir, free_port


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("incus")
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.path)


def percentile(sorted_values, p):
    if not sorted_values:
        return float("nan")
    k = (len(sorted_values) - 1) * p
    f = int(k)
    c = min(f + 1, len(sorted_values) - 1)
    return sorted_values[f] + (sorted_values[c] - sorted_values[f]) * (k - f)


def load(make_conn, path, headers, clients, seconds):
    latencies = []
    errors = [0]
    lock = threading.Lock()
    stop_at = time.perf_counter() + seconds
    size = [0]

    def worker():
        conn = make_conn()
        mine = []
        while time.perf_counter() < stop_at:
            t0 = time.perf_counter()
            try:
                conn.request("GET", path, headers=headers)
                resp = conn.getresponse()
                body = resp.read()
                if resp.status != 200:
                    errors[0] += 1
                size[0] = len(body)
            except Exception:
                errors[0] += 1
                conn.close()
                conn = make_conn()
                continue
            mine.append(time.perf_counter() - t0)
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    latencies.sort()
    return {
        "requests": len(latencies), "errors": errors[0], "rps": len(latencies) / elapsed, "bytes": size[0],
        "p50_ms": percentile(latencies, 0.50) * 1000, "p99_ms": percentile(latencies, 0.99) * 1000,
        "mean_ms": (statistics.mean(latencies) * 1000) if latencies else float("nan"),
    }


PROJECT = "ctmbench" + uuid.uuid4().hex[:6]


def wrk_run(url, headers, clients, seconds):
    """Run wrk and parse p50, p99 (ms), requests/s and the request count."""
    args = ["wrk", "-t2", f"-c{clients}", f"-d{int(seconds)}s", "--timeout", "120s", "--latency"]
    for k, v in headers.items():
        args += ["-H", f"{k}: {v}"]
    out = subprocess.run(args + [url], capture_output=True, text=True).stdout

    def ms(token):
        token = token.strip()
        for unit, f in (("ms", 1), ("us", 0.001), ("s", 1000), ("m", 60000)):
            if token.endswith(unit):
                return float(token[: -len(unit)]) * f
        return float("nan")
    r = {"raw": out, "errors": 0, "bytes": 0}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] in ("50%", "99%"):
            r["p50_ms" if parts[0] == "50%" else "p99_ms"] = ms(parts[1])
        elif line.startswith("Requests/sec:"):
            r["rps"] = float(parts[1])
        elif "requests in" in line:
            r["requests"] = int(parts[0])
        elif line.strip().startswith("Non-2xx") or line.strip().startswith("Socket errors"):
            r["errors"] += sum(int(x.strip(",")) for x in parts if x.strip(",").isdigit())
    return r


def incus(*args, check=True, project=True):
    return subprocess.run(["incus", *(["--project", PROJECT] if project else []), *args], check=check, capture_output=True, text=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=200)
    ap.add_argument("--running", type=int, default=20)
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--image", default=os.environ.get("CONTAINARIUM_IMAGE", "containarium/debian12"))
    ap.add_argument("--socket", default=os.environ.get("INCUS_SOCKET", "/var/lib/incus/unix.socket"))
    ap.add_argument("--reuse-project", help="measure an existing project's managed instances (made by an earlier --keep run)")
    ap.add_argument("--keep", action="store_true", help="keep the project and its instances for later --reuse-project runs")
    a = ap.parse_args()
    global PROJECT
    if a.reuse_project:
        PROJECT = a.reuse_project

    bdir = build_dir()
    work = tempfile.mkdtemp(prefix="ctm-bench-")
    plugins = os.path.join(work, "plugins", "incus-lxc")
    os.makedirs(plugins)
    shutil.copy(os.path.join(bdir, "libIncusLXC.so"), plugins)
    shutil.copy(os.path.join(ROOT, "Plugins/IncusLXC/plugin.json"), plugins)
    config = os.path.join(work, "config.json")
    with open(config, "w") as f:
        json.dump({"plugins": {"incus-lxc": {"enabled": True, "config": {"project": PROJECT}}}, "defaultImage": a.image}, f)
    secret = base64.b64encode(os.urandom(32)).decode()
    secret_file = os.path.join(work, "jwt.secret")
    with open(secret_file, "w") as f:
        f.write(secret)
    os.chmod(secret_file, 0o600)
    env = dict(os.environ, CONTAINARIUM_PLUGIN_PATH=os.path.dirname(plugins), CONTAINARIUM_CONFIG=config)
    http_port = free_port()
    cli = os.path.join(bdir, "containarium")
    tag = uuid.uuid4().hex[:5]
    names = [f"b{i:03d}{tag}-container" for i in range(a.count)]
    daemon = None
    try:
        # 1. the environments, made directly through Incus as managed instances
        if a.reuse_project:
            names = [n for n in incus("list", "--format", "csv", "--columns", "n").stdout.split() if n]
            a.count = len(names)
            a.running = incus("list", "--format", "csv", "--columns", "s").stdout.split().count("RUNNING")
        else:
            incus("project", "create", PROJECT, "-c", "features.images=false", "-c", "features.profiles=false",
                  "-c", "features.storage.volumes=false", "-c", "features.networks=false", project=False)
            t0 = time.time()

            def make(name):
                owner = name[: -len("-container")]
                incus("init", a.image, name, "-c", "user.containarium.managed=true", "-c", f"user.containarium.owner={owner}",
                      "-c", "user.containarium.provisioned=true", "-c", "limits.memory=256MiB")
            with concurrent.futures.ThreadPoolExecutor(4) as ex:
                list(ex.map(make, names))
            with concurrent.futures.ThreadPoolExecutor(4) as ex:
                list(ex.map(lambda n: incus("start", n), names[: a.running]))
            print(f"made {a.count} environments ({a.running} running) in {time.time() - t0:.0f}s", file=sys.stderr)

        # 2. the daemon
        daemon = subprocess.Popen(
            [cli, "daemon", "--jwt-secret-file", secret_file, "--state-dir", os.path.join(work, "state"), "--http-host", "127.0.0.1",
             "--http-port", str(http_port), "--port", "0"],
            env=env, stdout=open(os.path.join(work, "daemon.log"), "w"), stderr=subprocess.STDOUT)
        token = subprocess.run([cli, "token", "generate", "--username", "admin", "--roles", "admin", "--secret-file", secret_file],
                               check=True, capture_output=True, text=True).stdout.strip()
        auth = {"Authorization": f"Bearer {token}"}
        deadline = time.time() + 120
        total = 0
        while time.time() < deadline:
            try:
                c = http.client.HTTPConnection("127.0.0.1", http_port, timeout=5)
                c.request("GET", "/v1/containers", headers=auth)
                total = json.loads(c.getresponse().read()).get("totalCount", 0)
                if total >= a.count:
                    break
            except OSError:
                pass
            time.sleep(0.5)
        if total < a.count:
            sys.exit(f"the daemon lists {total} of {a.count} environments")

        # 3. measurements (warm both sides once)
        runs = {}
        bridge = None
        use_wrk = shutil.which("wrk") and shutil.which("socat")
        if use_wrk:
            bridge_port = free_port()
            bridge = subprocess.Popen(["socat", f"TCP-LISTEN:{bridge_port},bind=127.0.0.1,reuseaddr,fork", f"UNIX-CONNECT:{a.socket}"],
                                      stderr=subprocess.DEVNULL)
            time.sleep(0.5)
            for label, url, hdr, secs in [
                ("daemon GET /v1/containers", f"http://127.0.0.1:{http_port}/v1/containers", auth, a.seconds),
                ("incus GET /1.0/instances?recursion=2", f"http://127.0.0.1:{bridge_port}/1.0/instances?recursion=2&project={PROJECT}", {}, a.seconds * 3),
                ("incus GET /1.0/instances?recursion=1", f"http://127.0.0.1:{bridge_port}/1.0/instances?recursion=1&project={PROJECT}", {}, a.seconds * 2),
            ]:
                wrk_run(url, hdr, 2, 1)
                runs[label] = wrk_run(url, hdr, a.clients, secs)
                runs[label]["bytes"] = 0
            bridge.terminate()
            client = "wrk"
        else:
            client = "python"
        mk_daemon = lambda: http.client.HTTPConnection("127.0.0.1", http_port, timeout=30)
        mk_incus = lambda: UnixHTTPConnection(a.socket)
        for label, mk, path, hdr in ([] if use_wrk else [
            ("daemon GET /v1/containers", mk_daemon, "/v1/containers", auth),
            ("incus GET /1.0/instances?recursion=2", mk_incus, f"/1.0/instances?recursion=2&project={PROJECT}", {}),
            ("incus GET /1.0/instances?recursion=1", mk_incus, f"/1.0/instances?recursion=1&project={PROJECT}", {}),
        ]):
            load(mk, path, hdr, 2, 1)
            runs[label] = load(mk, path, hdr, a.clients, a.seconds)

        print(f"\nGET listing with {a.count} environments ({a.running} running), {a.clients} concurrent clients, client: {client}\n")
        print(f"{'target':42} {'p50 ms':>9} {'p99 ms':>9} {'req/s':>9} {'requests':>9} {'errors':>7}")
        for label, r in runs.items():
            print(f"{label:42} {r['p50_ms']:9.2f} {r['p99_ms']:9.2f} {r['rps']:9.1f} {r['requests']:9d} {r['errors']:7d}")
        d = runs["daemon GET /v1/containers"]
        i2 = runs["incus GET /1.0/instances?recursion=2"]
        i1 = runs["incus GET /1.0/instances?recursion=1"]
        print(f"\nratios (daemon / incus recursion=2): p50 {d['p50_ms'] / i2['p50_ms']:.3f}x, p99 {d['p99_ms'] / i2['p99_ms']:.3f}x, "
              f"throughput {d['rps'] / i2['rps']:.1f}x")
        print(f"ratios (daemon / incus recursion=1): p50 {d['p50_ms'] / i1['p50_ms']:.3f}x, p99 {d['p99_ms'] / i1['p99_ms']:.3f}x, "
              f"throughput {d['rps'] / i1['rps']:.1f}x")
        print(f"target p99 < 50 ms: {'met' if d['p99_ms'] < 50 else 'NOT met'} ({d['p99_ms']:.2f} ms)")
    finally:
        if daemon:
            daemon.send_signal(signal.SIGTERM)
            try:
                daemon.wait(30)
            except subprocess.TimeoutExpired:
                daemon.kill()
        if not (a.keep or a.reuse_project):
            with concurrent.futures.ThreadPoolExecutor(4) as ex:
                list(ex.map(lambda n: incus("delete", "--force", n, check=False), names))
            incus("project", "delete", PROJECT, check=False, project=False)
        elif a.keep:
            print(f"kept project {PROJECT}: rerun with --reuse-project {PROJECT}", file=sys.stderr)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
