#!/usr/bin/env python3
"""A VM's screen in the dashboard, end to end, in real headless Chromium: noVNC (Debian's)
over the daemon's /v1/containers/{user}/vnc WebSocket, which a control plane relays from the
VM's node. Run by VMTests.multiBackend (Swift) against the control plane.

It opens the dashboard with the server already added, clicks the VM's "Screen" button, waits
for noVNC to connect, checks the framebuffer (size, text drawn on it), then types a command
into the guest's screen shell that copies /proc/version into the guest's web root, and reads
it back through the VM's RDP endpoint (the guest serves TCP 3389 over HTTP): keystrokes went
in through VNC and ran in the guest. Prints one JSON line; exits non-zero on any failure.
"""
import argparse, json, os, sys, time, urllib.request
from playwright.sync_api import sync_playwright, expect

ap = argparse.ArgumentParser()
ap.add_argument("--base", required=True)
ap.add_argument("--token", required=True)
ap.add_argument("--user", required=True)
ap.add_argument("--container", required=True, help="a container next to it (it must have no Screen button)")
ap.add_argument("--rdp", required=True, help="HOST:PORT of the VM's RDP endpoint")
ap.add_argument("--screenshots", required=True,
                help="directory for the screenshots: a scratch one in the tests; docs/screenshots only from scripts/refresh-screenshots.sh")
ap.add_argument("--chromium", default="/usr/bin/chromium")
args = ap.parse_args()
os.makedirs(args.screenshots, exist_ok=True)
results = {}

FRAME = """() => {
  const c = document.querySelector('#vnc-screen canvas');
  if (!c || !c.width) return null;
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let lit = 0;
  for (let i = 0; i < d.length; i += 4) if (d[i] + d[i + 1] + d[i + 2] > 96) lit++;
  return { width: c.width, height: c.height, lit };
}"""


def fetch(path):
    try:
        with urllib.request.urlopen(f"http://{args.rdp}{path}", timeout=3) as r:
            return r.read().decode(errors="replace")
    except Exception:
        return None


with sync_playwright() as p:
    browser = p.chromium.launch(executable_path=args.chromium, args=["--no-sandbox"])
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    servers = [{"id": "cp", "name": "control plane", "url": args.base, "token": args.token}]
    context.add_init_script(f"localStorage.setItem('containarium.servers', {json.dumps(json.dumps(servers))});"
                            "localStorage.setItem('containarium.active', 'cp');")
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    sockets = []
    page.on("websocket", lambda ws: sockets.append(ws.url))

    page.goto(args.base + "/webui/")
    screen = page.get_by_role("button", name=f"Screen {args.user}-container").first
    expect(screen).to_be_enabled(timeout=30000)
    # Containers have no Screen button: only VMs do.
    expect(page.get_by_role("button", name=f"Terminal {args.container}-container").first).to_be_visible()
    assert page.get_by_role("button", name=f"Screen {args.container}-container").count() == 0
    t0 = time.time()
    screen.click()
    expect(page.locator("#vnc-status")).to_contain_text("connected", timeout=30000)
    # The first framebuffer update: text is drawn (the page's CSP forbids eval, so poll here).
    frame, deadline = None, time.time() + 30
    while time.time() < deadline and not (frame and frame["lit"] > 0):
        frame = page.evaluate(FRAME)
        time.sleep(0.1)
    assert frame and frame["lit"] > 0, f"nothing drawn on the screen: {frame}"
    results["connect_ms"] = round((time.time() - t0) * 1000)
    results["framebuffer"] = f"{frame['width']}x{frame['height']}"
    assert frame["width"] >= 640 and frame["height"] >= 400, frame
    assert all("bearer" not in u and args.token not in u for u in sockets), sockets

    # Keystrokes through VNC run in the guest: only unshifted characters, so no keymap can
    # change them on the way.
    page.locator("#vnc-screen canvas").click()
    command = f"cp /proc/version /www/vnc-{os.getpid()}.txt"
    got = None
    for attempt in range(4):
        page.keyboard.type(command, delay=20)
        page.keyboard.press("Enter")
        deadline = time.time() + 20
        while time.time() < deadline and not got:
            got = fetch(f"/vnc-{os.getpid()}.txt")
            if not got:
                time.sleep(0.5)
        if got:
            break
    assert got and "Linux version" in got, f"the command typed on the screen did not run in the guest: {got!r}"
    results["typed_command_ran"] = True
    after = page.evaluate(FRAME)
    results["screen_changed"] = after["lit"] != frame["lit"]
    page.screenshot(path=os.path.join(args.screenshots, "11-vm-screen.png"), full_page=False)

    # Closing the dialog hangs up the WebSocket.
    page.get_by_role("button", name="Close screen").click()
    expect(page.locator("#vnc-dialog")).to_be_hidden()
    page.wait_for_function("() => !window.containarium.rfb || window.containarium.rfb._rfbConnectionState === 'disconnected'", timeout=10000)
    results["errors"] = [e for e in errors if "favicon" not in e]
    assert not results["errors"], results["errors"]
    browser.close()

print(json.dumps(results))
