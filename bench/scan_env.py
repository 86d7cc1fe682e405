#!/usr/bin/env python3
"""A real environment scanned through the product, against ClamAV's own clients on the same tree.

    python3 bench/scan_env.py [--runs 5] [--keep]

Sets up, all of its own and torn down afterwards (as root, on the test bed of scripts/testbed.sh
with scripts/scanners.sh):
  - a clamd with its own config, socket and a signature database of the EICAR test file (no
    signatures are downloadable here; with Debian's full database clamd does more work per
    file, for every contender alike);
  - a daemon (the built `containarium`, bench/benchlib.py finds it) with incus-lxc and the clamav
    plugin pointed at that clamd, and one environment made through it;
then runs bench/scan.py on that environment's root filesystem (the Incus storage path the
plugin is given), with "ours" = `containarium scan USER --server … --token …` (CLI → gRPC →
daemon → node layer → clamav plugin → clamd, report stored), interleaved with
`clamdscan --fdpass` and `clamscan` on the same directory, and prints their medians and ratios.
"""

import argparse
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402

EICAR = "X5O!P%@AP[4\\PZX54(P^)7CC)7}$" + "EICAR-STANDARD-" + "ANTIVIRUS-TEST-FILE!$H+H*"


def wait(what, check, seconds=120):
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            if check():
                return
        except Exception:
            pass
        time.sleep(0.2)
    sys.exit(f"timed out waiting for {what}")


def http(method, url, token, body=None):
    req = urllib.request.Request(url, method=method, data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=600) as r:
        return json.loads(r.read() or b"{}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--keep", action="store_true", help="leave the temp dir (logs) behind")
    args = ap.parse_args()
    build = benchlib.build_dir()
    cli = os.path.join(build, "containarium")
    for lib in ("libIncusLXC.so", "libClamAVScanner.so"):
        if not os.path.exists(os.path.join(build, lib)):
            sys.exit(f"{lib} is not built in {build}")
    tmp = tempfile.mkdtemp(prefix="bench-scan-")
    procs = []
    user = "bscan" + os.urandom(3).hex()
    token, base = "", ""
    try:
        # clamd of our own.
        db = os.path.join(tmp, "db")
        os.makedirs(db)
        with open(os.path.join(db, "bench.hdb"), "w") as f:
            f.write(f"{hashlib.md5(EICAR.encode()).hexdigest()}:{len(EICAR)}:Eicar-Test-Signature\n")
        sock = os.path.join(tmp, "clamd.sock")
        conf = os.path.join(tmp, "clamd.conf")
        os.makedirs(os.path.join(tmp, "clamtmp"))
        with open(conf, "w") as f:
            f.write(f"LocalSocket {sock}\nDatabaseDirectory {db}\nTemporaryDirectory {tmp}/clamtmp\nForeground yes\n"
                    f"LogFile {tmp}/clamd.log\nMaxThreads 4\nSelfCheck 0\n")
        procs.append(subprocess.Popen(["/usr/sbin/clamd", f"--config-file={conf}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait("clamd", lambda: os.path.exists(sock))
        # The daemon, with incus-lxc and clamav.
        plugins = os.path.join(tmp, "plugins")
        for pid, src, lib in (("incus-lxc", "IncusLXC", "libIncusLXC.so"), ("clamav", "ClamAV", "libClamAVScanner.so")):
            d = os.path.join(plugins, pid)
            os.makedirs(d)
            shutil.copy(os.path.join(benchlib.ROOT, "Plugins", src, "plugin.json"), d)
            os.symlink(os.path.join(build, lib), os.path.join(d, lib))
        config = os.path.join(tmp, "config.json")
        with open(config, "w") as f:
            json.dump({"plugins": {"incus-lxc": {"enabled": True}, "clamav": {"enabled": True, "config": {"clamdSocket": sock, "databaseDirectory": db}}},
                       "defaultImage": "containarium/debian12", "security": {"schedule": "off"}}, f)
        secret = os.path.join(tmp, "jwt.secret")
        with open(secret, "w") as f:
            f.write(os.urandom(32).hex())
        http_port, grpc_port = benchlib.free_port(), benchlib.free_port()
        env = dict(os.environ, CONTAINARIUM_PLUGIN_PATH=plugins, CONTAINARIUM_CONFIG=config)
        procs.append(subprocess.Popen([cli, "daemon", "--jwt-secret-file", secret, "--state-dir", os.path.join(tmp, "state"), "--http-host", "127.0.0.1",
                                       "--http-port", str(http_port), "--grpc-host", "127.0.0.1", "--port", str(grpc_port), "--reconcile-interval", "3600"],
                                      env=env, stdout=open(os.path.join(tmp, "daemon.log"), "w"), stderr=subprocess.STDOUT))
        base = f"http://127.0.0.1:{http_port}"
        wait("the daemon", lambda: urllib.request.urlopen(base + "/healthz", timeout=2).status == 200)
        token = subprocess.run([cli, "token", "generate", "--username", "admin", "--roles", "admin", "--secret-file", secret, "--expiry", "2h"],
                               check=True, capture_output=True, text=True).stdout.strip()
        key = subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", os.path.join(tmp, "k")], check=True)
        with open(os.path.join(tmp, "k.pub")) as f:
            http("POST", base + "/v1/containers", token, {"username": user, "sshKeys": [f.read().strip()]})
        rootfs = f"/var/lib/incus/storage-pools/default/containers/{user}-container/rootfs"
        ours = f"{cli} scan {user} --server 127.0.0.1:{grpc_port} --token {token}"
        cmd = [sys.executable, os.path.join(benchlib.ROOT, "bench", "scan.py"), rootfs, "--ours", ours,
               "--clamd-config", conf, "--database", db, "--runs", str(args.runs)]
        print("$", " ".join(cmd).replace(token, "$TOKEN"), flush=True)
        subprocess.run(cmd, check=True)
        del key
    finally:
        if token:  # through the product first, so the host account and record go too
            try:
                req = urllib.request.Request(f"{base}/v1/containers/{user}?force=true", method="DELETE",
                                             headers={"Authorization": f"Bearer {token}"})
                urllib.request.urlopen(req, timeout=300).read()
            except Exception as e:
                print("delete through the daemon failed:", e, file=sys.stderr)
        subprocess.run(["incus", "delete", "--force", f"{user}-container"], capture_output=True)
        for p in reversed(procs):
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
        if args.keep:
            print("kept", tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
