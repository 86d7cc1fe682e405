#!/usr/bin/env python3
"""GET /v1/containers under load, beside the same listing done directly against Incus.

With N managed environments on the node (default 200; R of them running), C concurrent
clients (default 32) each loop for D seconds over keep-alive connections against:

  1. the daemon:      GET /v1/containers                       (served from its inventory)
  2. Incus directly:  GET /1.0/instances?recursion=2 on its unix socket (state + addresses,
                      what the listing shows), for 3 x D seconds
  3. Incus directly:  GET /1.0/instances?recursion=1           (config only, for reference),
                      for 2 x D seconds

and prints p50/p99 latency and throughput of each, plus the ratios, measured in the same run
by the same client: wrk (a C load generator; Incus's unix socket is bridged to loopback TCP by
socat) when both are installed (`apt-get install wrk socat`), else a Python client (whose own
overhead then dominates the daemon's tail latency).

--repeat N measures the three targets N times, in turn (daemon, rec=2, rec=1, daemon, ...),
against the same environments and daemon, and reports the spread across repetitions: min,
median and max of p50, p99 and req/s. Latencies exist only for requests that completed inside
a window: a target that completed none in a repetition (Incus's recursion=2 listing can take
longer than the window) is reported as "0 completed" with p50/p99 n/a, and a ratio with a
missing side is n/a. Before each window the script waits (up to --settle seconds) for incusd's
CPU use to drop, so requests abandoned by the previous window do not load the next.

Environments are made directly through Incus as stopped, managed instances (the daemon adopts
them through its reconciler), R of them are started, and all are removed at the end. Everything
happens in an Incus project of the benchmark's own, so nothing else on the node is touched and
both sides list exactly the same instances.

    python3 bench/list_latency.py [--count 200] [--running 20] [--clients 32] [--seconds 10]
                                  [--repeat 3] [--reconcile-interval 60] [--bin PATH] [--json out.json]

Needs: the test bed (scripts/testbed.sh) and a containarium with its IncusLXC plugin: --bin,
else $CONTAINARIUM_BUILD_DIR, .build/release, an installed /usr/local (scripts/install.sh),
then .build/debug.
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

from benchlib import ROOT, cli_and_plugin, free_port


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("incus")
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.path)


def percentile(sorted_values, p):
    """Linear-interpolated percentile of a sorted list; None for an empty one."""
    if not sorted_values:
        return None
    k = (len(sorted_values) - 1) * p
    f = int(k)
    c = min(f + 1, len(sorted_values) - 1)
    return sorted_values[f] + (sorted_values[c] - sorted_values[f]) * (k - f)


def ms_or_none(seconds):
    return None if seconds is None else seconds * 1000


def load(make_conn, path, headers, clients, seconds):
    """The Python client: `clients` threads, each looping on one keep-alive connection."""
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
                    continue
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
        "requests": len(latencies), "errors": errors[0], "rps": len(latencies) / elapsed if elapsed > 0 else 0.0, "bytes": size[0],
        "p50_ms": ms_or_none(percentile(latencies, 0.50)), "p99_ms": ms_or_none(percentile(latencies, 0.99)),
        "window_s": elapsed,
    }


PROJECT = "ctmbench" + uuid.uuid4().hex[:6]


def wrk_duration(token):
    """A wrk duration ("7.37ms", "29.30s", "1.20m", "880.00us") in milliseconds; None if unreadable."""
    token = token.strip()
    for unit, f in (("us", 0.001), ("ms", 1), ("s", 1000), ("m", 60000)):
        if token.endswith(unit):
            try:
                return float(token[: -len(unit)]) * f
            except ValueError:
                return None
    return None


def parse_wrk(out):
    """wrk's --latency output -> requests, errors, req/s, p50/p99 in ms. A run that completed no
    request has no latencies: p50/p99 are None then, whatever wrk printed for them."""
    r = {"errors": 0, "bytes": 0, "requests": 0, "rps": 0.0, "p50_ms": None, "p99_ms": None}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] in ("50%", "99%"):
            r["p50_ms" if parts[0] == "50%" else "p99_ms"] = wrk_duration(parts[1])
        elif line.startswith("Requests/sec:") and len(parts) >= 2:
            try:
                r["rps"] = float(parts[1])
            except ValueError:
                pass
        elif "requests in" in line and parts and parts[0].isdigit():
            r["requests"] = int(parts[0])
        elif line.strip().startswith("Non-2xx") or line.strip().startswith("Socket errors"):
            r["errors"] += sum(int(x.strip(",")) for x in parts if x.strip(",").isdigit())
    if r["requests"] == 0:
        r["p50_ms"] = r["p99_ms"] = None
        r["rps"] = 0.0
    return r


def wrk_run(url, headers, clients, seconds):
    """Run wrk and parse p50, p99 (ms), requests/s and the request count."""
    args = ["wrk", "-t2", f"-c{clients}", f"-d{max(1, int(seconds))}s", "--timeout", "120s", "--latency"]
    for k, v in headers.items():
        args += ["-H", f"{k}: {v}"]
    p = subprocess.run(args + [url], capture_output=True, text=True)
    r = parse_wrk(p.stdout)
    r["raw"] = p.stdout
    if p.returncode != 0:
        r["wrk_error"] = p.stderr.strip()[-500:]
    return r


# --- statistics across repetitions ----------------------------------------------------------

def spread(values):
    """min / median / max of the values that exist; None when none does."""
    xs = [v for v in values if v is not None]
    if not xs:
        return None
    return {"min": min(xs), "median": statistics.median(xs), "max": max(xs), "n": len(xs)}


def ratio(a, b):
    """a / b, or None when either side is missing or b is zero."""
    if a is None or b is None or b == 0:
        return None
    return a / b


def fmt(v, spec="9.2f", none="n/a"):
    if v is None:
        return f"{none:>{spec.split('.')[0]}}"
    return format(v, spec)


def fmt_spread(s, unit=""):
    if s is None:
        return "n/a"
    return f"{s['min']:.2f} / {s['median']:.2f} / {s['max']:.2f}{unit}"


def fmt_ratio(r, digits=3):
    return "n/a" if r is None else f"{r:.{digits}f}x"


DAEMON = "daemon GET /v1/containers"
REC2 = "incus GET /1.0/instances?recursion=2"
REC1 = "incus GET /1.0/instances?recursion=1"
TARGETS = [DAEMON, REC2, REC1]


def summarize(reps):
    """reps: a list of {target: result}. Per target: completed requests per repetition, and the
    spread of p50, p99 and req/s across repetitions (latencies only where some completed)."""
    out = {}
    for t in TARGETS:
        rs = [rep[t] for rep in reps if t in rep]
        out[t] = {
            "completed": [r["requests"] for r in rs],
            "errors": [r["errors"] for r in rs],
            "p50_ms": spread([r["p50_ms"] for r in rs]),
            "p99_ms": spread([r["p99_ms"] for r in rs]),
            "rps": spread([r["rps"] for r in rs]),
        }
    return out


def ratios(summary, other):
    """daemon / other on the medians across repetitions: p50, p99 and throughput."""
    d, o = summary[DAEMON], summary[other]
    med = lambda s: None if s is None else s["median"]
    return {"p50": ratio(med(d["p50_ms"]), med(o["p50_ms"])), "p99": ratio(med(d["p99_ms"]), med(o["p99_ms"])),
            "throughput": ratio(med(d["rps"]), med(o["rps"]))}


def print_report(reps, count, running, clients, client, reconcile):
    print(f"\nGET listing with {count} environments ({running} running), {clients} concurrent clients, client: {client}, "
          f"{len(reps)} repetition(s), daemon reconcile interval: {reconcile}\n")
    print(f"{'rep':>3} {'target':40} {'p50 ms':>9} {'p99 ms':>9} {'req/s':>9} {'completed':>9} {'errors':>7}")
    for i, rep in enumerate(reps):
        for t in TARGETS:
            if t not in rep:
                continue
            r = rep[t]
            note = "" if r["requests"] else "   (no request completed in the window)"
            print(f"{i + 1:>3} {t:40} {fmt(r['p50_ms'])} {fmt(r['p99_ms'])} {r['rps']:9.1f} {r['requests']:9d} {r['errors']:7d}{note}")
    s = summarize(reps)
    print(f"\nspread across {len(reps)} repetition(s): min / median / max (latencies from repetitions that completed requests)\n")
    print(f"{'target':38} {'p50 ms':>28} {'p99 ms':>28} {'req/s':>28}  completed per rep")
    for t in TARGETS:
        x = s[t]
        print(f"{t:38} {fmt_spread(x['p50_ms']):>28} {fmt_spread(x['p99_ms']):>28} {fmt_spread(x['rps']):>28}  "
              f"{', '.join(str(c) for c in x['completed'])}")
    r2, r1 = ratios(s, REC2), ratios(s, REC1)
    print(f"\nratios on the medians (daemon / incus recursion=2): p50 {fmt_ratio(r2['p50'], 4)}, p99 {fmt_ratio(r2['p99'], 4)}, "
          f"throughput {fmt_ratio(r2['throughput'], 1)}")
    print(f"ratios on the medians (daemon / incus recursion=1): p50 {fmt_ratio(r1['p50'])}, p99 {fmt_ratio(r1['p99'])}, "
          f"throughput {fmt_ratio(r1['throughput'], 1)}")
    worst = s[DAEMON]["p99_ms"]
    if worst is None:
        print("target p99 < 50 ms: n/a (the daemon completed no request)")
    else:
        print(f"target p99 < 50 ms (worst repetition): {'met' if worst['max'] < 50 else 'NOT met'} ({worst['max']:.2f} ms)")
    return s, r2, r1


# --- incusd quiescence ------------------------------------------------------------------------

def incusd_pids():
    """The incusd daemon itself (not its forkexec/forkproxy helpers or lxc monitors)."""
    pids = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/cmdline", "rb") as f:
                    argv = f.read().split(b"\0")
            except OSError:
                continue
            if argv and argv[0].endswith(b"incusd") and not (len(argv) > 1 and argv[1].startswith(b"fork")):
                pids.append(int(d))
    return pids


def cpu_ticks(pids):
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        except (OSError, IndexError, ValueError):
            pass
    return total


def settle(timeout, threshold=0.2, window=1.0):
    """Wait until incusd used under `threshold` of one CPU over `window` seconds (requests that an
    earlier window abandoned are still being answered otherwise); at most `timeout` seconds."""
    pids = incusd_pids()
    if not pids or timeout <= 0:
        return 0.0
    hz = os.sysconf("SC_CLK_TCK")
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        a = cpu_ticks(pids)
        time.sleep(window)
        if (cpu_ticks(pids) - a) / hz / window < threshold:
            break
    return time.monotonic() - t0


def incus(*args, check=True, project=True):
    return subprocess.run(["incus", *(["--project", PROJECT] if project else []), *args], check=check, capture_output=True, text=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=200)
    ap.add_argument("--running", type=int, default=20)
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--repeat", type=int, default=1, help="measure the three targets this many times and report the spread")
    ap.add_argument("--reconcile-interval", type=int,
                    help="passed to `containarium daemon --reconcile-interval` (seconds; the daemon's default is 60)")
    ap.add_argument("--settle", type=float, default=30, help="at most this many seconds of waiting for incusd to go idle before each window")
    ap.add_argument("--bin", help="the containarium binary (its IncusLXC plugin beside it or installed under ../lib/containarium)")
    ap.add_argument("--json", help="also write every repetition's results and the spread here")
    ap.add_argument("--image", default=os.environ.get("CONTAINARIUM_IMAGE", "containarium/debian12"))
    ap.add_argument("--socket", default=os.environ.get("INCUS_SOCKET", "/var/lib/incus/unix.socket"))
    ap.add_argument("--reuse-project", help="measure an existing project's managed instances (made by an earlier --keep run)")
    ap.add_argument("--keep", action="store_true", help="keep the project and its instances for later --reuse-project runs")
    a = ap.parse_args()
    if a.repeat < 1:
        ap.error("--repeat must be at least 1")
    if a.reconcile_interval is not None and a.reconcile_interval < 1:
        ap.error("--reconcile-interval must be at least 1 second")
    global PROJECT
    if a.reuse_project:
        PROJECT = a.reuse_project

    cli, plugin_so, where = cli_and_plugin(a.bin)
    print(f"containarium: {cli} (plugin {plugin_so})", file=sys.stderr)
    work = tempfile.mkdtemp(prefix="ctm-bench-")
    plugins = os.path.join(work, "plugins", "incus-lxc")
    os.makedirs(plugins)
    shutil.copy(plugin_so, plugins)
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
    tag = uuid.uuid4().hex[:5]
    names = [f"b{i:03d}{tag}-container" for i in range(a.count)]
    daemon = None
    bridge = None
    made_project = False
    try:
        # 1. the environments, made directly through Incus as managed instances
        if a.reuse_project:
            names = [n for n in incus("list", "--format", "csv", "--columns", "n").stdout.split() if n]
            a.count = len(names)
            a.running = incus("list", "--format", "csv", "--columns", "s").stdout.split().count("RUNNING")
        else:
            incus("project", "create", PROJECT, "-c", "features.images=false", "-c", "features.profiles=false",
                  "-c", "features.storage.volumes=false", "-c", "features.networks=false", project=False)
            made_project = True
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
        daemon_args = [cli, "daemon", "--jwt-secret-file", secret_file, "--state-dir", os.path.join(work, "state"), "--http-host", "127.0.0.1",
                       "--http-port", str(http_port), "--port", "0"]
        if a.reconcile_interval is not None:
            daemon_args += ["--reconcile-interval", str(a.reconcile_interval)]
        daemon = subprocess.Popen(daemon_args, env=env, stdout=open(os.path.join(work, "daemon.log"), "w"), stderr=subprocess.STDOUT)
        token = subprocess.run([cli, "token", "generate", "--username", "admin", "--roles", "admin", "--secret-file", secret_file],
                               check=True, capture_output=True, text=True).stdout.strip()
        auth = {"Authorization": f"Bearer {token}"}
        deadline = time.time() + 120
        total = 0
        while time.time() < deadline:
            if daemon.poll() is not None:
                sys.exit(f"the daemon exited with status {daemon.returncode}; see {os.path.join(work, 'daemon.log')}")
            try:
                c = http.client.HTTPConnection("127.0.0.1", http_port, timeout=5)
                c.request("GET", "/v1/containers", headers=auth)
                total = json.loads(c.getresponse().read()).get("totalCount", 0)
                if total >= a.count:
                    break
            except (OSError, ValueError):
                pass
            time.sleep(0.5)
        if total < a.count:
            sys.exit(f"the daemon lists {total} of {a.count} environments")

        # 3. measurements: each repetition loads the three targets in turn (each warmed once)
        use_wrk = bool(shutil.which("wrk") and shutil.which("socat"))
        client = "wrk" if use_wrk else "python"
        if use_wrk:
            bridge_port = free_port()
            bridge = subprocess.Popen(["socat", f"TCP-LISTEN:{bridge_port},bind=127.0.0.1,reuseaddr,fork", f"UNIX-CONNECT:{a.socket}"],
                                      stderr=subprocess.DEVNULL)
            time.sleep(0.5)
            plan = [
                (DAEMON, f"http://127.0.0.1:{http_port}/v1/containers", auth, a.seconds),
                (REC2, f"http://127.0.0.1:{bridge_port}/1.0/instances?recursion=2&project={PROJECT}", {}, a.seconds * 3),
                (REC1, f"http://127.0.0.1:{bridge_port}/1.0/instances?recursion=1&project={PROJECT}", {}, a.seconds * 2),
            ]
            measure = lambda url, hdr, clients, secs: wrk_run(url, hdr, clients, secs)
        else:
            mk_daemon = lambda: http.client.HTTPConnection("127.0.0.1", http_port, timeout=30)
            mk_incus = lambda: UnixHTTPConnection(a.socket)
            plan = [
                (DAEMON, (mk_daemon, "/v1/containers"), auth, a.seconds),
                (REC2, (mk_incus, f"/1.0/instances?recursion=2&project={PROJECT}"), {}, a.seconds * 3),
                (REC1, (mk_incus, f"/1.0/instances?recursion=1&project={PROJECT}"), {}, a.seconds * 2),
            ]
            measure = lambda target, hdr, clients, secs: load(target[0], target[1], hdr, clients, secs)

        reps = []
        for rep in range(a.repeat):
            results = {}
            for label, target, hdr, secs in plan:
                waited = settle(a.settle)
                if rep == 0:
                    measure(target, hdr, 2, 1)  # warm-up, not counted
                    waited += settle(a.settle)
                results[label] = measure(target, hdr, a.clients, secs)
                results[label]["settled_s"] = waited
                r = results[label]
                print(f"rep {rep + 1}/{a.repeat} {label}: {r['requests']} completed, p50 {fmt(r['p50_ms'], '.2f')} ms, "
                      f"p99 {fmt(r['p99_ms'], '.2f')} ms, {r['rps']:.1f} req/s (waited {waited:.1f}s for incusd to settle)",
                      file=sys.stderr, flush=True)
            reps.append(results)

        reconcile = f"{a.reconcile_interval} s" if a.reconcile_interval is not None else "daemon default (60 s)"
        s, r2, r1 = print_report(reps, a.count, a.running, a.clients, client, reconcile)
        if a.json:
            with open(a.json, "w") as f:
                json.dump({"count": a.count, "running": a.running, "clients": a.clients, "seconds": a.seconds, "client": client,
                           "reconcile_interval": a.reconcile_interval,
                           "repetitions": [{k: {x: y for x, y in v.items() if x != "raw"} for k, v in rep.items()} for rep in reps],
                           "spread": s, "ratios_rec2": r2, "ratios_rec1": r1}, f, indent=2)
    finally:
        if bridge:
            bridge.terminate()
        if daemon:
            daemon.send_signal(signal.SIGTERM)
            try:
                daemon.wait(30)
            except subprocess.TimeoutExpired:
                daemon.kill()
        if not (a.keep or a.reuse_project):
            with concurrent.futures.ThreadPoolExecutor(4) as ex:
                list(ex.map(lambda n: incus("delete", "--force", n, check=False), names))
            if made_project:
                incus("project", "delete", PROJECT, check=False, project=False)
        elif a.keep:
            print(f"kept project {PROJECT}: rerun with --reuse-project {PROJECT}", file=sys.stderr)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
