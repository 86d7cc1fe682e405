#!/usr/bin/env python3
"""The dashboard with 300 environments: time to first render and to apply a live update,
in real headless Chromium, median of several runs.

The page and its libraries come from a real daemon (--base); the daemon's answers for the
environment list, metrics and one environment are replaced by Playwright with 300 synthetic
environments (300 real containers do not fit on a 2-core test machine). What is measured is the
browser side: fetch, parse, build 300 cards and rows, and patch one card on an event.

  bench/webui_300.py --base http://127.0.0.1:8080 --token TOKEN [--runs 5] [--count 300]
"""
import argparse, json, statistics
from playwright.sync_api import sync_playwright

ap = argparse.ArgumentParser()
ap.add_argument("--base", required=True)
ap.add_argument("--token", required=True)
ap.add_argument("--runs", type=int, default=5)
ap.add_argument("--count", type=int, default=300)
ap.add_argument("--chromium", default="/usr/bin/chromium")
args = ap.parse_args()

def env(i, state="CONTAINER_STATE_RUNNING"):
    u = f"user{i:03d}"
    return {"name": f"{u}-container", "username": u, "owner": u, "state": state, "image": "containarium/debian12",
            "resources": {"cpu": "2", "memory": "4GB", "disk": "20GB"},
            "usage": {"cpuNanoseconds": 10**9 * i, "memoryBytes": (200 + i) << 20, "diskBytes": (900 + i) << 20, "processes": 20},
            "network": {"ipAddress": f"10.87.{i // 250}.{i % 250 + 2}", "ipv4": [f"10.87.{i // 250}.{i % 250 + 2}"]},
            "autostart": False, "nestingEnabled": True, "labels": {"owner": u}, "backend": "incus-lxc",
            "node": ["node-a", "node-b", "node-c"][i % 3], "sshHostKeys": []}

listing = json.dumps({"containers": [env(i) for i in range(args.count)], "totalCount": args.count})
target = args.count // 2
changed = json.dumps(env(target, "CONTAINER_STATE_STOPPED"))
servers = json.dumps([{"id": "bench", "name": "bench", "url": args.base, "token": args.token}])

first, update, render, filt = [], [], [], []
with sync_playwright() as p:
    browser = p.chromium.launch(executable_path=args.chromium, args=["--no-sandbox"])
    for run in range(args.runs):
        context = browser.new_context(viewport={"width": 1400, "height": 900})
        context.add_init_script(f"localStorage.setItem('containarium.servers', {json.dumps(servers)}); localStorage.setItem('containarium.active', 'bench');")
        page = context.new_page()
        page.route("**/v1/containers", lambda route: route.fulfill(status=200, content_type="application/json", body=listing))
        page.route("**/v1/metrics", lambda route: route.fulfill(status=200, content_type="application/json", body='{"containers": []}'))
        page.route(f"**/v1/containers/user{target:03d}", lambda route: route.fulfill(status=200, content_type="application/json", body=changed))
        page.goto(args.base + "/webui/")
        page.wait_for_function(f"() => document.querySelectorAll('article.card').length === {args.count}", timeout=60_000)
        first.append(page.evaluate("performance.now()"))  # since navigation started
        render.append(page.evaluate("window.containarium.lastRenderMs"))
        ms = page.evaluate(f"""async () => {{
            const t0 = performance.now();
            window.containarium.applyEvent('container.changed', {{ username: 'user{target:03d}' }});
            await new Promise((resolve) => {{ const check = () => {{
                const b = document.querySelector('article.card[data-username="user{target:03d}"] .badge');
                if (b && b.textContent === 'stopped') resolve(); else requestAnimationFrame(check); }}; check(); }});
            return performance.now() - t0; }}""")
        update.append(ms)
        page.get_by_label("Search").fill("user1")
        filt.append(page.evaluate("window.containarium.lastRenderMs"))
        context.close()
    browser.close()

med = lambda xs: round(statistics.median(xs), 1)
print(json.dumps({"environments": args.count, "runs": args.runs,
                  "firstRenderMs": med(first), "renderEnvironmentsMs": med(render),
                  "liveUpdateMs": med(update), "filterRenderMs": med(filt),
                  "samples": {"firstRenderMs": [round(x, 1) for x in first], "liveUpdateMs": [round(x, 1) for x in update]}}))
