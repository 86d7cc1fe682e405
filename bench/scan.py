#!/usr/bin/env python3
"""Malware scan of one directory: ours against ClamAV's own clients, same clamd, same tree.

    python3 bench/scan.py DIR --ours 'containarium scan --scanner clamav DIR' \
        --clamd-config /etc/clamav/clamd.conf --database /var/lib/clamav [--runs 5]

Times, as the median of N runs taken in interleaved order (ours, clamdscan, clamscan, ours, ...
so a warming page cache or a busy neighbour favours none of them):

  ours       the command given with --ours, split like a shell would (shlex) but run without
             one; the clamav plugin's scan of DIR through whatever front end wires it up (e.g.
             `containarium scan`); its exit status must be 0 (or 1 when --ours-found-ok, for
             front ends that exit 1 on findings);
  clamdscan  `clamdscan --fdpass --config-file=CONF --no-summary DIR`: the same clamd, files
             opened by the client and passed as descriptors (what the plugin does too);
  clamscan   `clamscan -d DB -r --no-summary DIR`: no daemon, loads the database each run
             (the plugin's fallback when no clamd answers).

and prints each median with the ratio ours/baseline (below 1.0: ours is faster). A baseline
whose program is missing is left out (said so). clamdscan/clamscan exit 1 when they find
something, which counts as success here. Run it as root on a tree you may read; it changes
nothing. One line of JSON follows the table (--json-only for just that).
"""

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import time


def timed(argv, ok_codes):
    """Seconds the command took; raises when its exit status is not in ok_codes."""
    start = time.monotonic()
    proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    elapsed = time.monotonic() - start
    if proc.returncode not in ok_codes:
        tail = (proc.stderr or proc.stdout).decode(errors="replace")[-800:]
        raise SystemExit(f"{argv[0]} exited {proc.returncode}: {tail}")
    return elapsed


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dir", help="the directory tree to scan")
    ap.add_argument("--ours", required=True, help="command line of our scan of DIR (run without a shell)")
    ap.add_argument("--ours-found-ok", action="store_true", help="exit status 1 of ours counts as success too")
    ap.add_argument("--clamd-config", default="/etc/clamav/clamd.conf", help="clamd.conf of the running clamd (for clamdscan)")
    ap.add_argument("--database", default="/var/lib/clamav", help="signature directory for clamscan -d")
    ap.add_argument("--clamdscan", default=shutil.which("clamdscan") or "/usr/bin/clamdscan")
    ap.add_argument("--clamscan", default=shutil.which("clamscan") or "/usr/bin/clamscan")
    ap.add_argument("--runs", type=int, default=5, help="runs of each (median reported)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed runs of each first")
    ap.add_argument("--json-only", action="store_true")
    args = ap.parse_args()

    if not os.path.isdir(args.dir):
        raise SystemExit(f"{args.dir} is not a directory")
    contenders = {"ours": (shlex.split(args.ours), {0, 1} if args.ours_found_ok else {0})}
    skipped = {}
    if os.access(args.clamdscan, os.X_OK):
        contenders["clamdscan"] = ([args.clamdscan, "--fdpass", f"--config-file={args.clamd_config}", "--no-summary", args.dir], {0, 1})
    else:
        skipped["clamdscan"] = f"{args.clamdscan} not found"
    if os.access(args.clamscan, os.X_OK):
        contenders["clamscan"] = ([args.clamscan, "-d", args.database, "-r", "--no-summary", args.dir], {0, 1})
    else:
        skipped["clamscan"] = f"{args.clamscan} not found"

    for _ in range(args.warmup):
        for argv, ok in contenders.values():
            timed(argv, ok)
    samples = {name: [] for name in contenders}
    for _ in range(args.runs):
        for name, (argv, ok) in contenders.items():
            samples[name].append(timed(argv, ok))

    medians = {name: statistics.median(s) for name, s in samples.items()}
    ratios = {name: medians["ours"] / m for name, m in medians.items() if name != "ours" and m > 0}
    if not args.json_only:
        files = sum(len(f) for _, _, f in os.walk(args.dir))
        print(f"{args.dir}: {files} files, median of {args.runs} interleaved runs")
        for name, m in medians.items():
            extra = "" if name == "ours" else f"   ours/{name} = {ratios.get(name, float('nan')):.2f}"
            print(f"  {name:10s} {m:8.3f} s{extra}")
        for name, why in skipped.items():
            print(f"  {name:10s} skipped: {why}")
    print(json.dumps({"dir": args.dir, "runs": args.runs, "median_s": medians, "ratio_ours_over": ratios, "skipped": skipped}))


if __name__ == "__main__":
    main()
