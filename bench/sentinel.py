#!/usr/bin/env python3
"""The sentinel's share of a spot machine's outage: detection, and recovery after the machine.

    python3 bench/sentinel.py [--runs 5] [--keep]

Sets up, all of its own and torn down afterwards (as root, on the test bed of
scripts/testbed.sh): an Incus container as the "spot VM" (an account with a key, its own
sshd), the fake GCE of Tests/Support/fake_gce.py guarding it (preempt = `incus stop --force`,
instances.start = `incus start`), and `containarium sentinel` (the built binary; bench/benchlib.py
finds it) with the gce-spot plugin in front of it. Each run preempts the machine through the
fake and measures, from the preemption:

  detection   until the sentinel's HTTP route answers its maintenance page ("being restarted");
  direct      until the machine's own sshd answers again (ssh-keyscan at its address): the
              baseline, what the machine's restart costs by itself;
  sentinel    until a login through the sentinel runs a command.

and prints the medians with `sentinel - direct`, the sentinel's own share of the recovery
(noticing the start is needed, asking for it, probing health, switching traffic back). Targets:
detection <= 10 s, sentinel - direct < 5 s.
"""

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402


def wait(what, check, seconds=120, every=0.1):
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            if check():
                return time.time()
        except Exception:
            pass
        time.sleep(every)
    sys.exit(f"timed out waiting for {what}")


def run(argv, **kw):
    return subprocess.run(argv, capture_output=True, text=True, **kw)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--keep", action="store_true", help="leave the temp dir (logs) behind")
    args = ap.parse_args()
    build = benchlib.build_dir()
    cli = os.path.join(build, "containarium")
    if not os.path.exists(os.path.join(build, "libGCESpot.so")):
        sys.exit(f"libGCESpot.so is not built in {build}")
    tmp = tempfile.mkdtemp(prefix="bench-sentinel-")
    name = "bsnt" + os.urandom(3).hex()
    procs = []
    try:
        if run(["incus", "launch", "containarium/debian12", name]).returncode != 0:
            sys.exit("incus launch failed")
        address = ""

        def addressed():
            nonlocal address
            address = run(["incus", "list", name, "-c", "4", "--format", "csv"]).stdout.split(" ")[0].strip()
            return "." in address
        wait("the machine's address", addressed, 60)
        key = os.path.join(tmp, "id")
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key], check=True)
        shutil.copy(key + ".pub", os.path.join(tmp, "authorized_keys"))
        for argv in (["exec", name, "--", "useradd", "-m", "-s", "/bin/bash", "dev"],
                     ["exec", name, "--", "install", "-d", "-m", "700", "-o", "dev", "-g", "dev", "/home/dev/.ssh"],
                     ["file", "push", os.path.join(tmp, "authorized_keys"), f"{name}/home/dev/.ssh/authorized_keys", "--uid", "1000", "--gid", "1000", "--mode", "0600"]):
            r = run(["incus"] + argv)
            if r.returncode != 0:
                sys.exit(f"incus {' '.join(argv)}: {r.stderr}")
        # The fake GCE.
        ready = os.path.join(tmp, "fake.json")
        procs.append(subprocess.Popen([sys.executable, os.path.join(benchlib.ROOT, "Tests/Support/fake_gce.py"), "--ready-file", ready,
                                       "--project", "bench-project", "--zone", "us-central1-a", "--instance", name, "--self", "sentinel-vm"],
                                      stdout=open(os.path.join(tmp, "fake.log"), "w"), stderr=subprocess.STDOUT))
        wait("the fake GCE", lambda: os.path.exists(ready) and json.load(open(ready)).get("control"), 30)
        ports = json.load(open(ready))
        control = f"http://127.0.0.1:{ports['control']}"
        # The sentinel, with the gce-spot plugin pointed at the fake.
        plugins = os.path.join(tmp, "plugins", "gce-spot")
        os.makedirs(plugins)
        shutil.copy(os.path.join(benchlib.ROOT, "Plugins/GCESpot/plugin.json"), plugins)
        os.symlink(os.path.join(build, "libGCESpot.so"), os.path.join(plugins, "libGCESpot.so"))
        ssh_port, http_port = benchlib.free_port(), benchlib.free_port()
        config = os.path.join(tmp, "config.json")
        with open(config, "w") as f:
            json.dump({
                "plugins": {"gce-spot": {"enabled": True, "config": {
                    "project": "bench-project", "zone": "us-central1-a", "instances": [name], "watch": False,
                    "metadataHost": f"127.0.0.1:{ports['api']}", "computeBaseURL": f"http://127.0.0.1:{ports['api']}/compute/v1"}}},
                "sentinel": {"instance": name, "upstream": address, "health": "tcp:22", "probeSeconds": 0.5, "failAfter": 2,
                             "routes": [{"listen": f"127.0.0.1:{ssh_port}", "port": 22, "kind": "ssh"},
                                        {"listen": f"127.0.0.1:{http_port}", "port": 8080, "kind": "http"}],
                             "sshKeyDir": os.path.join(tmp, "gateway-keys"), "timeline": os.path.join(tmp, "timeline.jsonl")},
            }, f)
        log = os.path.join(tmp, "sentinel.log")
        procs.append(subprocess.Popen([cli, "sentinel", "run", "--config", config, "--plugin-path", os.path.dirname(plugins)],
                                      stdout=open(log, "w"), stderr=subprocess.STDOUT))
        wait("the sentinel", lambda: "sentinel listening on" in open(log).read(), 30)
        ssh = ["ssh", "-p", str(ssh_port), "-i", key, "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes",
               "-o", "IdentitiesOnly=yes", "-o", "ConnectTimeout=3", "-o", "LogLevel=ERROR", "dev@127.0.0.1", "true"]

        def through():
            return run(ssh, timeout=15).returncode == 0

        def page():
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{http_port}/", timeout=2)
            except urllib.error.HTTPError as e:
                return e.code == 503 and b"being restarted" in e.read()
            return False

        def direct():
            return "ssh-ed25519" in run(["ssh-keyscan", "-T", "1", "-t", "ed25519", address], timeout=5).stdout
        wait("a login through the sentinel", through, 60)
        rows = {"detection": [], "direct": [], "sentinel": []}
        for i in range(args.runs):
            t0 = time.time()
            req = urllib.request.Request(control + "/_fake/preempt", data=json.dumps({"instance": name}).encode(), method="POST",
                                         headers={"Content-Type": "application/json"})
            urllib.request.urlopen(req, timeout=60).read()
            rows["detection"].append(wait("the maintenance page", page, 30) - t0)
            seen_direct = None
            deadline = time.time() + 300
            while time.time() < deadline:
                if seen_direct is None and direct():
                    seen_direct = time.time()
                if through():
                    break
                time.sleep(0.1)
            else:
                sys.exit("the machine did not come back through the sentinel")
            back = time.time()
            rows["sentinel"].append(back - t0)
            rows["direct"].append((seen_direct or back) - t0)
            print(f"run {i + 1}: detection {rows['detection'][-1]:.2f} s, direct {rows['direct'][-1]:.2f} s, through the sentinel {rows['sentinel'][-1]:.2f} s",
                  flush=True)
        med = {k: statistics.median(v) for k, v in rows.items()}
        print(f"median of {args.runs}: detection {med['detection']:.2f} s (target <= 10); machine back {med['direct']:.2f} s; "
              f"through the sentinel {med['sentinel']:.2f} s; sentinel - direct = {med['sentinel'] - med['direct']:.2f} s (target < 5)")
        print(json.dumps({"runs": args.runs, "median_s": med, "overhead_s": med["sentinel"] - med["direct"], "samples": rows}))
    finally:
        for p in reversed(procs):
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
        run(["incus", "delete", "--force", name])
        if args.keep:
            print("kept", tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
