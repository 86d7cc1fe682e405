#!/usr/bin/env python3
"""GET /metrics under load, and what instrumentation costs the listing, with Incus's own listing
as the baseline, all in one run.

With N managed environments on the node (default 200; R of them running), C concurrent clients
(default 32) each loop for D seconds over keep-alive connections. Every repetition measures:

  1. metrics:       GET /metrics (a metrics-role token, as Prometheus scrapes) on a daemon with
                    metrics on (--metrics-interval 15): p50, p99, req/s, and the response's size
                    in bytes, lines, series (sample lines) and families (# TYPE lines), read
                    after the window
  1b. metrics, 1 client: the same for D seconds with one client, for reference (one scrape at a
                    time is what a Prometheus server does; --scrape-clients 0 leaves it out)
  2. list on:       GET /v1/containers (an admin token) on that same daemon
  3. list off:      GET /v1/containers on a daemon started with --no-metrics on the same state
                    directory and Incus project (one daemon is stopped before the other starts)
  2b, 3b. /healthz: GET /healthz (public, answered at once, but counted and timed by the same
                    middleware as every route) on each daemon after its listing: what the
                    instrumentation costs a request in absolute terms, where little else hides it
                    (--no-health leaves the pair out)
  4. Incus:         GET /1.0/instances?recursion=2 on its unix socket, for 3 x D seconds (what
                    bench/list_latency.py measures; the baseline of docs/benchmarks.md's listing
                    section)

The two daemons alternate from one repetition to the next, so each goes first as often as the
other: rep 1 runs on then off, rep 2 off then on, rep 3 on then off, ... (the daemon left running
by one repetition starts the next). Incus's listing is loaded last in every repetition, with
whichever daemon is then running idle beside it. Each daemon started is waited for until it lists
all N environments and, with metrics on, until GET /metrics carries all N environments' series;
each target is warmed once (2 clients, 1 s) after each daemon start. Before every window the
script waits (up to --settle seconds each) for incusd and the daemon to drop under 20% of a CPU.

Each window also records the daemon's CPU time over the requests completed in it ("CPU ms/req",
from /proc/PID/stat; it includes the requests still in flight when the window closed, at most C)
and "other CPU": the cores that processes other than incusd, the daemon, socat and wrk used during
it (someone else's build or tests, the containers, incusd's short-lived helpers), from /proc/stat's
user + nice + system time (interrupt and softirq time, loopback networking, is left out; the
hypervisor's steal is kept apart). CPU per request is the least noisy measure of what the
instrumentation costs when other work shares the cores; latency and req/s follow the other CPU.

It prints every window, the spread across repetitions (min / median / max), the ratios on the
medians (list on / list off; daemon / Incus recursion=2), with overhead = on/off - 1 for latencies
and CPU per request and 1 - on/off for req/s (a positive overhead is a cost), the per-repetition
(paired) on/off ratios, the same overheads over the quiet repetitions only (both listing windows
under --quiet cores, default 0.2, of other CPU), the daemon CPU a /healthz request costs more with
metrics on (microseconds, and as a share of a listing request's CPU), and the targets: /metrics
p99 < 50 ms under C clients in the worst repetition, and the listing's overhead with metrics on
< 5% (on the medians' p50 and req/s; p99 and CPU per request are printed, not judged).

Load client as in bench/list_latency.py: wrk (2 threads, 1 for one client; Incus's socket bridged
to loopback TCP by socat) when both are installed (`apt-get install wrk socat`), else a Python
client (whose own overhead then dominates the daemon's tail latency). Environments are made
directly through Incus as stopped, managed instances in an Incus project of the benchmark's own
(the daemons adopt them through their reconciler), R of them are started, and all are removed at
the end.

    python3 bench/metrics_load.py --count 200 --running 20 --clients 32 --seconds 10 --repeat 3 \\
        --bin /var/cache/containarium/bench-build/release/containarium --json /tmp/metrics_load.json

    options: [--count 200] [--running 20] [--clients 32] [--seconds 10] [--repeat 3]
             [--metrics-interval 15] [--reconcile-interval S] [--settle 30] [--quiet 0.2]
             [--scrape-clients 1|0] [--no-health] [--bin PATH] [--json out.json] [--keep | --reuse-project P]

Needs: the test bed (scripts/testbed.sh) and a containarium with its IncusLXC plugin: --bin (the
plugin beside it, as in a build folder), else $CONTAINARIUM_BUILD_DIR, .build/release, an
installed /usr/local (scripts/install.sh), then .build/debug (bench/benchlib.py).
"""
import argparse
import base64
import concurrent.futures
import http.client
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid

import list_latency as ll
from benchlib import ROOT, cli_and_plugin, free_port

ll.PROJECT = "ctmmetr" + uuid.uuid4().hex[:6]

METRICS = "daemon(on) GET /metrics"
SCRAPE1 = "daemon(on) GET /metrics, 1 client"
LIST_ON = "daemon(on) GET /v1/containers"
LIST_OFF = "daemon(off) GET /v1/containers"
REC2 = ll.REC2
HEALTH_ON = "daemon(on) GET /healthz"
HEALTH_OFF = "daemon(off) GET /healthz"
TARGETS = [METRICS, SCRAPE1, LIST_ON, LIST_OFF, HEALTH_ON, HEALTH_OFF, REC2]
DAEMON_TARGETS = [METRICS, SCRAPE1, LIST_ON, LIST_OFF, HEALTH_ON, HEALTH_OFF]


def wrk_run(url, headers, clients, seconds):
    """bench/list_latency.py's wrk run, with as many threads as connections when there are
    fewer than 2 (wrk refuses more threads than connections)."""
    if clients >= 2:
        return ll.wrk_run(url, headers, clients, seconds)
    args = ["wrk", "-t1", f"-c{clients}", f"-d{max(1, int(seconds))}s", "--timeout", "120s", "--latency"]
    for k, v in headers.items():
        args += ["-H", f"{k}: {v}"]
    p = subprocess.run(args + [url], capture_output=True, text=True)
    r = ll.parse_wrk(p.stdout)
    r["raw"] = p.stdout
    if p.returncode != 0:
        r["wrk_error"] = p.stderr.strip()[-500:]
    return r


# --- CPU accounting ---------------------------------------------------------------------------

def busy_ticks():
    """(process time, steal) jiffies of the whole machine, all CPUs, from /proc/stat: user + nice +
    system (what processes use; interrupt and softirq time, mostly loopback networking here,
    belongs to no process and is left out), and steal (time the hypervisor gave elsewhere)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal [guest guest_nice: already in user/nice]
    return v[0] + v[1] + v[2], v[7]


def children_ticks():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (r.ru_utime + r.ru_stime) * os.sysconf("SC_CLK_TCK")


class CPUWindow:
    """The cores that processes other than the benchmark's own (incusd, the daemon, socat, and the
    waited-for children: wrk) used during a window, and the cores stolen by the hypervisor."""

    def __init__(self, own_pids, daemon_pid):
        self.own = own_pids
        self.daemon = daemon_pid

    def __enter__(self):
        self.pids = ll.incusd_pids() + [p for p in self.own() if p]
        self.t0 = time.monotonic()
        self.busy0, self.own0, self.kids0 = busy_ticks(), ll.cpu_ticks(self.pids), children_ticks()
        self.daemon0 = ll.cpu_ticks([self.daemon]) if self.daemon else 0
        return self

    def __exit__(self, *exc):
        hz = os.sysconf("SC_CLK_TCK")
        elapsed = max(time.monotonic() - self.t0, 1e-9)
        (proc1, steal1), (proc0, steal0) = busy_ticks(), self.busy0
        own = ll.cpu_ticks(self.pids) - self.own0 + children_ticks() - self.kids0
        self.daemon_cpu_s = (ll.cpu_ticks([self.daemon]) - self.daemon0) / hz if self.daemon else None
        self.other_cores = max(0.0, (proc1 - proc0 - own) / hz / elapsed)
        self.steal_cores = (steal1 - steal0) / hz / elapsed
        return False


def settle_pid(pid, timeout, threshold=0.2, window=1.0):
    """Wait until process `pid` used under `threshold` of one CPU over `window` seconds."""
    if not pid or timeout <= 0:
        return 0.0
    hz = os.sysconf("SC_CLK_TCK")
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        a = ll.cpu_ticks([pid])
        time.sleep(window)
        if (ll.cpu_ticks([pid]) - a) / hz / window < threshold:
            break
    return time.monotonic() - t0


# --- the /metrics body ------------------------------------------------------------------------

def metrics_shape(body):
    text = body.decode("utf-8", "replace")
    lines = text.splitlines()
    return {"bytes": len(body), "lines": len(lines),
            "series": sum(1 for l in lines if l and not l.startswith("#")),
            "families": sum(1 for l in lines if l.startswith("# TYPE ")),
            "environment_states": sum(1 for l in lines if l.startswith("containarium_environment_state{"))}


def get(port, path, headers, timeout=30):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request("GET", path, headers=headers)
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


# --- statistics and report --------------------------------------------------------------------

def med(s):
    return None if s is None else s["median"]


KEYS = ("p50_ms", "p99_ms", "rps", "cpu_ms_per_req")


def summarize(reps):
    out = {}
    for t in TARGETS:
        rs = [rep[t] for rep in reps if t in rep]
        out[t] = {
            "completed": [r["requests"] for r in rs],
            "errors": [r["errors"] for r in rs],
            "p50_ms": ll.spread([r["p50_ms"] for r in rs]),
            "p99_ms": ll.spread([r["p99_ms"] for r in rs]),
            "rps": ll.spread([r["rps"] for r in rs]),
            "cpu_ms_per_req": ll.spread([r.get("cpu_ms_per_req") for r in rs]),
            "other_cpu_cores": ll.spread([r.get("other_cpu_cores") for r in rs]),
        }
    return out


def overhead_of(r):
    """on/off ratios -> overheads: latency and CPU on/off - 1, throughput 1 - on/off (positive = a cost)."""
    f = lambda x, inv=False: None if x is None else ((1 - x) if inv else (x - 1))
    return {"p50": f(r["p50_ms"]), "p99": f(r["p99_ms"]), "throughput": f(r["rps"], True), "cpu_per_request": f(r["cpu_ms_per_req"])}


def on_off(summary, reps, quiet):
    """list on / list off: on the medians across repetitions, per repetition (paired), and on the
    medians of the quiet repetitions only (both listing windows under `quiet` cores of other CPU)."""
    on, off = summary[LIST_ON], summary[LIST_OFF]
    r = {k: ll.ratio(med(on[k]), med(off[k])) for k in KEYS}
    paired = [{k: ll.ratio(rep[LIST_ON].get(k), rep[LIST_OFF].get(k)) for k in KEYS} for rep in reps]
    calm = [i for i, rep in enumerate(reps) if rep[LIST_ON]["other_cpu_cores"] < quiet and rep[LIST_OFF]["other_cpu_cores"] < quiet]
    rq = None
    if calm:
        sq = summarize([reps[i] for i in calm])
        rq = {k: ll.ratio(med(sq[LIST_ON][k]), med(sq[LIST_OFF][k])) for k in KEYS}
    return {"ratio_on_off": r, "overhead": overhead_of(r), "per_repetition": paired,
            "per_repetition_spread": {k: ll.spread([p[k] for p in paired]) for k in KEYS},
            "quiet_threshold_cores": quiet, "quiet_repetitions": [i + 1 for i in calm],
            "quiet_ratio_on_off": rq, "quiet_overhead": None if rq is None else overhead_of(rq)}


def fmt_spread3(x):
    return "n/a" if x is None else f"{x['min']:.3f} / {x['median']:.3f} / {x['max']:.3f}"


def pct(x):
    return "n/a" if x is None else f"{x * 100:+.1f}%"


def print_report(reps, shapes, orders, a, client):
    print(f"\n/metrics and the listing with {a.count} environments ({a.running} running), {a.clients} concurrent clients, "
          f"client: {client}, {len(reps)} repetition(s), metrics interval {a.metrics_interval} s, reconcile interval: "
          f"{str(a.reconcile_interval) + ' s' if a.reconcile_interval is not None else 'daemon default (60 s)'}\n")
    print("CPU ms/req: the daemon's CPU time in the window over the requests completed in it; other CPU: cores used by\n"
          "processes other than incusd, the daemon, socat and wrk during the window; steal: the hypervisor's\n")
    print(f"{'rep':>3} {'target':40} {'p50 ms':>9} {'p99 ms':>9} {'req/s':>9} {'completed':>9} {'errors':>6} "
          f"{'CPU ms/req':>10} {'other CPU':>9} {'steal':>5}")
    for i, rep in enumerate(reps):
        for t in TARGETS:
            if t not in rep:
                continue
            r = rep[t]
            note = "" if r["requests"] else "   (no request completed in the window)"
            print(f"{i + 1:>3} {t:40} {ll.fmt(r['p50_ms'])} {ll.fmt(r['p99_ms'])} {r['rps']:9.1f} {r['requests']:9d} "
                  f"{r['errors']:6d} {ll.fmt(r.get('cpu_ms_per_req'), '10.3f')} {r['other_cpu_cores']:9.2f} "
                  f"{r.get('steal_cores', 0):5.2f}{note}")
        print(f"    daemon order: {' then '.join(orders[i])}; /metrics body after the window: {shapes[i]['bytes']} bytes, "
              f"{shapes[i]['lines']} lines, {shapes[i]['series']} series, {shapes[i]['families']} families, "
              f"{shapes[i]['environment_states']} environments")
    s = summarize(reps)
    print(f"\nspread across {len(reps)} repetition(s): min / median / max (latencies from repetitions that completed requests)\n")
    print(f"{'target':38} {'p50 ms':>28} {'p99 ms':>28} {'req/s':>28} {'CPU ms/req':>24}  completed per rep")
    for t in TARGETS:
        x = s[t]
        print(f"{t:38} {ll.fmt_spread(x['p50_ms']):>28} {ll.fmt_spread(x['p99_ms']):>28} {ll.fmt_spread(x['rps']):>28} "
              f"{fmt_spread3(x['cpu_ms_per_req']):>24}  {', '.join(str(c) for c in x['completed'])}")
    sizes = ll.spread([sh["bytes"] for sh in shapes])
    series = ll.spread([sh["series"] for sh in shapes])
    print(f"\n/metrics body: {sizes['min']:.0f} / {sizes['median']:.0f} / {sizes['max']:.0f} bytes, "
          f"{series['min']:.0f} / {series['median']:.0f} / {series['max']:.0f} series (min / median / max)")
    oo = on_off(s, reps, a.quiet)
    r, o = oo["ratio_on_off"], oo["overhead"]
    print(f"\nlisting, metrics on / off (medians): p50 {ll.fmt_ratio(r['p50_ms'])}, p99 {ll.fmt_ratio(r['p99_ms'])}, "
          f"req/s {ll.fmt_ratio(r['rps'])}, CPU/request {ll.fmt_ratio(r['cpu_ms_per_req'])}")
    print(f"  overhead (latency and CPU on/off - 1; req/s 1 - on/off): p50 {pct(o['p50'])}, p99 {pct(o['p99'])}, "
          f"throughput {pct(o['throughput'])}, CPU/request {pct(o['cpu_per_request'])}")
    ps = oo["per_repetition_spread"]
    f3 = lambda x: "n/a" if x is None else f"{x['min']:.3f} / {x['median']:.3f} / {x['max']:.3f}x"
    print(f"  per repetition (paired) on/off, min / median / max: p50 {f3(ps['p50_ms'])}, p99 {f3(ps['p99_ms'])}, "
          f"req/s {f3(ps['rps'])}, CPU/request {f3(ps['cpu_ms_per_req'])}")
    if oo["quiet_ratio_on_off"] is None:
        print(f"  quiet repetitions (both listing windows under {a.quiet} cores of other CPU): none")
    else:
        q, qo = oo["quiet_ratio_on_off"], oo["quiet_overhead"]
        print(f"  quiet repetitions {oo['quiet_repetitions']} (both listing windows under {a.quiet} cores of other CPU), medians: "
              f"p50 {pct(qo['p50'])}, p99 {pct(qo['p99'])}, throughput {pct(qo['throughput'])}, CPU/request {pct(qo['cpu_per_request'])}")
    if s[HEALTH_ON]["completed"] and s[HEALTH_OFF]["completed"]:
        hr = {k: ll.ratio(med(s[HEALTH_ON][k]), med(s[HEALTH_OFF][k])) for k in KEYS}
        hpaired = [rep[HEALTH_ON]["cpu_ms_per_req"] - rep[HEALTH_OFF]["cpu_ms_per_req"] for rep in reps
                   if rep.get(HEALTH_ON, {}).get("cpu_ms_per_req") is not None and rep.get(HEALTH_OFF, {}).get("cpu_ms_per_req") is not None]
        extra = ll.spread(hpaired)
        oo["health"] = {"ratio_on_off": hr, "overhead": overhead_of(hr), "cpu_us_added_per_request": None if extra is None else
                        {k: (v * 1000 if k != "n" else v) for k, v in extra.items()}}
        print(f"\n/healthz, metrics on / off (medians): p50 {ll.fmt_ratio(hr['p50_ms'])}, p99 {ll.fmt_ratio(hr['p99_ms'])}, "
              f"req/s {ll.fmt_ratio(hr['rps'])}, CPU/request {ll.fmt_ratio(hr['cpu_ms_per_req'])}")
        if extra is not None:
            lc = med(s[LIST_OFF]["cpu_ms_per_req"])
            share = "" if not lc else f"; {extra['median'] / lc * 100:.2f}% of a listing request's CPU with metrics off ({lc:.3f} ms)"
            print(f"  daemon CPU a request costs more with metrics on (on - off, per repetition), min / median / max: "
                  f"{extra['min'] * 1000:.1f} / {extra['median'] * 1000:.1f} / {extra['max'] * 1000:.1f} us{share}")
    base = {}
    for label, t in (("on", LIST_ON), ("off", LIST_OFF), ("/metrics", METRICS)):
        base[label] = {k: ll.ratio(med(s[t][k]), med(s[REC2][k])) for k in ("p50_ms", "p99_ms", "rps")}
        print(f"{label:>8} / incus recursion=2 (medians): p50 {ll.fmt_ratio(base[label]['p50_ms'], 4)}, "
              f"p99 {ll.fmt_ratio(base[label]['p99_ms'], 4)}, throughput {ll.fmt_ratio(base[label]['rps'], 1)}")
    targets = {}
    worst = s[METRICS]["p99_ms"]
    targets["metrics_p99_lt_50ms"] = None if worst is None else worst["max"] < 50
    if worst is None:
        print(f"\ntarget /metrics p99 < 50 ms under {a.clients} clients: n/a (no request completed)")
    else:
        print(f"\ntarget /metrics p99 < 50 ms under {a.clients} clients (worst repetition): "
              f"{'met' if worst['max'] < 50 else 'NOT met'} ({worst['max']:.2f} ms)")
    w1 = s[SCRAPE1]["p99_ms"]
    if w1 is not None:
        print(f"  (one scraper at a time, for reference: worst p99 {w1['max']:.2f} ms)")
    if o["p50"] is None or o["throughput"] is None:
        targets["overhead_lt_5pct"] = None
        print("target listing overhead < 5%: n/a")
    else:
        met = o["p50"] < 0.05 and o["throughput"] < 0.05
        targets["overhead_lt_5pct"] = met
        print(f"target listing overhead < 5% (medians' p50 and req/s): {'met' if met else 'NOT met'} "
              f"(p50 {pct(o['p50'])}, throughput {pct(o['throughput'])}; p99 {pct(o['p99'])} and CPU/request "
              f"{pct(o['cpu_per_request'])} not judged)")
    return s, oo, base, targets


# --- main -------------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--count", type=int, default=200)
    ap.add_argument("--running", type=int, default=20)
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--repeat", type=int, default=3, help="repetitions of all the windows; the spread is reported")
    ap.add_argument("--metrics-interval", type=int, default=15, help="the metrics-on daemon's --metrics-interval (seconds)")
    ap.add_argument("--reconcile-interval", type=int, help="passed to both daemons' --reconcile-interval (their default is 60 s)")
    ap.add_argument("--settle", type=float, default=30, help="at most this many seconds of waiting for incusd (and the daemon) to go idle before each window")
    ap.add_argument("--scrape-clients", type=int, default=1, choices=(0, 1),
                    help="1 (default): also load GET /metrics with one client, for reference (one scrape at a time, as Prometheus does); 0: not")
    ap.add_argument("--no-health", dest="health", action="store_false",
                    help="leave out the GET /healthz pair (what instrumentation costs a request that does almost nothing else)")
    ap.add_argument("--quiet", type=float, default=0.2,
                    help="a repetition is quiet when both listing windows saw under this many cores of other processes' CPU")
    ap.add_argument("--bin", help="the containarium binary (its IncusLXC plugin beside it or installed under ../lib/containarium)")
    ap.add_argument("--json", help="also write every repetition's results, the spread and the ratios here")
    ap.add_argument("--image", default=os.environ.get("CONTAINARIUM_IMAGE", "containarium/debian12"))
    ap.add_argument("--socket", default=os.environ.get("INCUS_SOCKET", "/var/lib/incus/unix.socket"))
    ap.add_argument("--reuse-project", help="measure an existing project's managed instances (made by an earlier --keep run)")
    ap.add_argument("--keep", action="store_true", help="keep the project and its instances for later --reuse-project runs")
    a = ap.parse_args()
    if a.repeat < 1:
        ap.error("--repeat must be at least 1")
    if not 1 <= a.metrics_interval <= 3600:
        ap.error("--metrics-interval must be 1-3600 seconds")
    if a.reconcile_interval is not None and a.reconcile_interval < 1:
        ap.error("--reconcile-interval must be at least 1 second")
    if a.reuse_project:
        ll.PROJECT = a.reuse_project
    incus = ll.incus
    # SIGTERM (timeout, kill) cleans up as an interrupt does: daemons, socat, the project.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    cli, plugin_so, _ = cli_and_plugin(a.bin)
    print(f"containarium: {cli} (plugin {plugin_so}); project {ll.PROJECT}", file=sys.stderr)
    work = tempfile.mkdtemp(prefix="ctm-bench-metrics-")
    plugins = os.path.join(work, "plugins", "incus-lxc")
    os.makedirs(plugins)
    shutil.copy(plugin_so, plugins)
    shutil.copy(os.path.join(ROOT, "Plugins/IncusLXC/plugin.json"), plugins)
    config = os.path.join(work, "config.json")
    with open(config, "w") as f:
        json.dump({"plugins": {"incus-lxc": {"enabled": True, "config": {"project": ll.PROJECT}}}, "defaultImage": a.image}, f)
    secret_file = os.path.join(work, "jwt.secret")
    with open(secret_file, "w") as f:
        f.write(base64.b64encode(os.urandom(32)).decode())
    os.chmod(secret_file, 0o600)
    env = dict(os.environ, CONTAINARIUM_PLUGIN_PATH=os.path.dirname(plugins), CONTAINARIUM_CONFIG=config)
    state_dir = os.path.join(work, "state")
    tag = uuid.uuid4().hex[:5]
    names = [f"m{i:03d}{tag}-container" for i in range(a.count)]
    cur = {"proc": None, "mode": None, "port": None, "log": None}
    bridge = None
    made_project = False

    def token(user, roles):
        return subprocess.run([cli, "token", "generate", "--username", user, "--roles", roles, "--secret-file", secret_file],
                              check=True, capture_output=True, text=True).stdout.strip()

    def stop_daemon():
        p = cur["proc"]
        if p is None:
            return
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        cur.update(proc=None, mode=None, port=None)

    def start_daemon(mode, admin, scrape):
        """Start the `mode` ("on" or "off") daemon on the shared state and project; wait until it
        lists every environment (and, metrics on, until /metrics carries them all)."""
        stop_daemon()
        port = free_port()
        args = [cli, "daemon", "--jwt-secret-file", secret_file, "--state-dir", state_dir, "--http-host", "127.0.0.1",
                "--http-port", str(port), "--port", "0"]
        args += ["--metrics-interval", str(a.metrics_interval)] if mode == "on" else ["--no-metrics"]
        if a.reconcile_interval is not None:
            args += ["--reconcile-interval", str(a.reconcile_interval)]
        log = os.path.join(work, f"daemon-{mode}.log")
        t0 = time.time()
        p = subprocess.Popen(args, env=env, stdout=open(log, "a"), stderr=subprocess.STDOUT)
        cur.update(proc=p, mode=mode, port=port, log=log)
        deadline = time.time() + 180 + 2 * a.metrics_interval
        total = 0
        while time.time() < deadline:
            if p.poll() is not None:
                sys.exit(f"the metrics-{mode} daemon exited with status {p.returncode}; see {log}")
            try:
                status, body = get(port, "/v1/containers", admin, timeout=10)
                total = json.loads(body).get("totalCount", 0) if status == 200 else 0
                if total >= a.count:
                    break
            except (OSError, ValueError):
                pass
            time.sleep(0.5)
        if total < a.count:
            sys.exit(f"the metrics-{mode} daemon lists {total} of {a.count} environments; see {log}")
        shape = None
        if mode == "on":
            while time.time() < deadline:
                status, body = get(port, "/metrics", scrape)
                if status == 200:
                    shape = metrics_shape(body)
                    if shape["environment_states"] >= a.count:
                        break
                time.sleep(1)
            if not shape or shape["environment_states"] < a.count:
                sys.exit(f"GET /metrics carries {shape and shape['environment_states']} of {a.count} environments; see {log}")
        else:
            status, _ = get(port, "/metrics", scrape)
            if status != 404:
                sys.exit(f"GET /metrics on the --no-metrics daemon answered {status}, not 404")
        print(f"metrics-{mode} daemon ready in {time.time() - t0:.1f}s (port {port})", file=sys.stderr, flush=True)

    try:
        # 1. the environments, made directly through Incus as managed instances
        if a.reuse_project:
            names = [n for n in incus("list", "--format", "csv", "--columns", "n").stdout.split() if n]
            a.count = len(names)
            a.running = incus("list", "--format", "csv", "--columns", "s").stdout.split().count("RUNNING")
        else:
            incus("project", "create", ll.PROJECT, "-c", "features.images=false", "-c", "features.profiles=false",
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
            print(f"made {a.count} environments ({a.running} running) in {time.time() - t0:.0f}s", file=sys.stderr, flush=True)

        admin = {"Authorization": f"Bearer {token('admin', 'admin')}"}
        scrape = {"Authorization": f"Bearer {token('prometheus', 'metrics')}"}

        def route(label):
            if label in (METRICS, SCRAPE1):
                return "/metrics", scrape
            if label in (HEALTH_ON, HEALTH_OFF):
                return "/healthz", {}
            return "/v1/containers", admin

        # 2. the load client
        use_wrk = bool(shutil.which("wrk") and shutil.which("socat"))
        client = "wrk" if use_wrk else "python"
        if use_wrk:
            bridge_port = free_port()
            bridge = subprocess.Popen(["socat", f"TCP-LISTEN:{bridge_port},bind=127.0.0.1,reuseaddr,fork", f"UNIX-CONNECT:{a.socket}"],
                                      stderr=subprocess.DEVNULL)
            time.sleep(0.5)

            def measure(label, clients, secs):
                if label == REC2:
                    return wrk_run(f"http://127.0.0.1:{bridge_port}/1.0/instances?recursion=2&project={ll.PROJECT}", {}, clients, secs)
                path, hdr = route(label)
                return wrk_run(f"http://127.0.0.1:{cur['port']}{path}", hdr, clients, secs)
        else:
            def measure(label, clients, secs):
                if label == REC2:
                    return ll.load(lambda: ll.UnixHTTPConnection(a.socket), f"/1.0/instances?recursion=2&project={ll.PROJECT}", {}, clients, secs)
                path, hdr = route(label)
                port = cur["port"]
                return ll.load(lambda: http.client.HTTPConnection("127.0.0.1", port, timeout=30), path, hdr, clients, secs)

        def window(label, rep, warm):
            secs = a.seconds * 3 if label == REC2 else a.seconds
            clients = a.scrape_clients if label == SCRAPE1 else a.clients
            waited = ll.settle(a.settle) + settle_pid(cur["proc"] and cur["proc"].pid, a.settle)
            if warm:
                measure(label, 2, 1)  # warm-up, not counted
                waited += ll.settle(a.settle) + settle_pid(cur["proc"] and cur["proc"].pid, a.settle)
            load1 = os.getloadavg()[0]
            daemon_pid = cur["proc"].pid if cur["proc"] and label in DAEMON_TARGETS else None
            with CPUWindow(lambda: [cur["proc"] and cur["proc"].pid, bridge and bridge.pid], daemon_pid) as cpu:
                r = measure(label, clients, secs)
            per_req = cpu.daemon_cpu_s * 1000 / r["requests"] if daemon_pid and r["requests"] else None
            r.update(settled_s=waited, other_cpu_cores=cpu.other_cores, steal_cores=cpu.steal_cores, loadavg1_before=load1,
                     daemon=cur["mode"] if label != REC2 else None, clients=clients, daemon_cpu_s=cpu.daemon_cpu_s, cpu_ms_per_req=per_req)
            print(f"rep {rep + 1}/{a.repeat} {label}: {r['requests']} completed, p50 {ll.fmt(r['p50_ms'], '.2f')} ms, "
                  f"p99 {ll.fmt(r['p99_ms'], '.2f')} ms, {r['rps']:.1f} req/s, CPU/req {ll.fmt(per_req, '.3f')} ms, other CPU {cpu.other_cores:.2f} cores, steal {cpu.steal_cores:.2f} "
                  f"(waited {waited:.1f}s to settle)", file=sys.stderr, flush=True)
            return r

        # 3. the repetitions: on then off, off then on, ... ; Incus's listing last
        reps, shapes, orders = [], [], []
        for rep in range(a.repeat):
            order = ["on", "off"] if rep % 2 == 0 else ["off", "on"]
            results = {}
            for mode in order:
                fresh = cur["mode"] != mode
                if fresh:
                    start_daemon(mode, admin, scrape)
                if mode == "on":
                    results[METRICS] = window(METRICS, rep, fresh)
                    if a.scrape_clients > 0:
                        results[SCRAPE1] = window(SCRAPE1, rep, False)
                    status, body = get(cur["port"], "/metrics", scrape)
                    shapes.append(metrics_shape(body) if status == 200 else {"bytes": 0, "lines": 0, "series": 0, "families": 0,
                                                                              "environment_states": 0})
                    results[LIST_ON] = window(LIST_ON, rep, fresh)
                    if a.health:
                        results[HEALTH_ON] = window(HEALTH_ON, rep, fresh)
                else:
                    results[LIST_OFF] = window(LIST_OFF, rep, fresh)
                    if a.health:
                        results[HEALTH_OFF] = window(HEALTH_OFF, rep, fresh)
            results[REC2] = window(REC2, rep, rep == 0)
            reps.append(results)
            orders.append(order)

        s, oo, base, targets = print_report(reps, shapes, orders, a, client)
        if a.json:
            with open(a.json, "w") as f:
                json.dump({"count": a.count, "running": a.running, "clients": a.clients, "seconds": a.seconds, "client": client,
                           "metrics_interval": a.metrics_interval, "reconcile_interval": a.reconcile_interval, "binary": cli,
                           "scrape_clients": a.scrape_clients, "orders": orders, "metrics_body": shapes,
                           "repetitions": [{k: {x: y for x, y in v.items() if x != "raw"} for k, v in rep.items()} for rep in reps],
                           "spread": s, "on_off": oo, "vs_incus_rec2": base, "targets": targets}, f, indent=2)
    except BaseException:
        for mode in ("on", "off"):  # the work folder goes below: show what the daemons said
            log = os.path.join(work, f"daemon-{mode}.log")
            if os.path.exists(log):
                with open(log, errors="replace") as f:
                    print(f"--- last lines of the metrics-{mode} daemon's log ---\n" + "".join(f.readlines()[-20:]), file=sys.stderr)
        raise
    finally:
        if bridge:
            bridge.terminate()
        stop_daemon()
        if not (a.keep or a.reuse_project):
            with concurrent.futures.ThreadPoolExecutor(4) as ex:
                list(ex.map(lambda n: incus("delete", "--force", n, check=False), names))
            if made_project:
                incus("project", "delete", ll.PROJECT, check=False, project=False)
        elif a.keep:
            print(f"kept project {ll.PROJECT}: rerun with --reuse-project {ll.PROJECT}", file=sys.stderr)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
