#!/usr/bin/env python3
"""A browser terminal that stops reading (standard library only): connects to the daemon's
terminal endpoint, starts LINE in the shell, then reads nothing for STALL seconds (the daemon
must hold the shell back, not buffer its output), then reads for a few seconds and prints how
many bytes arrived (output flows again once the reader is back).

  ws_stall.py HOST:PORT USERNAME TOKEN 'yes' STALL
"""
import base64, os, socket, struct, sys, time

hostport, user, token, line, stall = sys.argv[1:6]
host, port = hostport.rsplit(":", 1)
s = socket.create_connection((host, int(port)), timeout=5)
# A small receive buffer, so the kernel holds little of what the daemon sends.
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
key = base64.b64encode(os.urandom(16)).decode()
s.sendall((f"GET /v1/containers/{user}/terminal?cols=80&rows=24 HTTP/1.1\r\nHost: {hostport}\r\nUpgrade: websocket\r\n"
           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
           f"Sec-WebSocket-Protocol: containarium.v1, bearer.{token}\r\n\r\n").encode())
head = b""
while b"\r\n\r\n" not in head:
    head += s.recv(1)
if b" 101 " not in head.split(b"\r\n")[0]:
    sys.exit(f"no upgrade: {head.decode(errors='replace')}")

payload = (line + "\n").encode()
mask = os.urandom(4)
s.sendall(bytes([0x82, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))
print("stalling", flush=True)
time.sleep(float(stall))
s.settimeout(0.5)
got, deadline = 0, time.time() + 3
while time.time() < deadline:
    try:
        chunk = s.recv(65536)
    except socket.timeout:
        continue
    if not chunk:
        break
    got += len(chunk)
print(f"read {got}", flush=True)
s.close()
