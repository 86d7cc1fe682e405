#!/usr/bin/env python3
"""A minimal WebSocket client for the daemon's terminal endpoint (standard library only):
connects with the containarium.v1 and bearer.<token> subprotocols, sends a line as a binary
frame, and prints what comes back until EXPECT appears (exit 0) or the time runs out (exit 1).

  ws_terminal.py HOST:PORT USERNAME TOKEN 'echo hi' 'hi' [SECONDS]
"""
import base64, os, socket, struct, sys, time

hostport, user, token, line, expect = sys.argv[1:6]
limit = float(sys.argv[6]) if len(sys.argv) > 6 else 30
host, port = hostport.rsplit(":", 1)
s = socket.create_connection((host, int(port)), timeout=5)
key = base64.b64encode(os.urandom(16)).decode()
s.sendall((f"GET /v1/containers/{user}/terminal?cols=80&rows=24 HTTP/1.1\r\nHost: {hostport}\r\nUpgrade: websocket\r\n"
           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
           f"Sec-WebSocket-Protocol: containarium.v1, bearer.{token}\r\n\r\n").encode())
head = b""
while b"\r\n\r\n" not in head:
    head += s.recv(1)
if b" 101 " not in head.split(b"\r\n")[0]:
    sys.exit(f"no upgrade: {head.decode(errors='replace')}")

def send(payload, opcode=2):
    mask = os.urandom(4)
    n = len(payload)
    hdr = bytes([0x80 | opcode]) + (bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + struct.pack(">H", n))
    s.sendall(hdr + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))

def recv_exact(n):
    out = b""
    while len(out) < n:
        chunk = s.recv(n - len(out))
        if not chunk:
            raise EOFError
        out += chunk
    return out

seen, deadline, sent_at = b"", time.time() + limit, 0.0
s.settimeout(0.5)
while time.time() < deadline:
    if time.time() - sent_at > 3:  # (re)send: the console shell may still be starting
        send((line + "\n").encode())
        sent_at = time.time()
    try:
        b0, b1 = recv_exact(2)
    except socket.timeout:
        continue
    except EOFError:
        break
    n = b1 & 0x7F
    if n == 126:
        n = struct.unpack(">H", recv_exact(2))[0]
    elif n == 127:
        n = struct.unpack(">Q", recv_exact(8))[0]
    s.settimeout(5)
    data = recv_exact(n)
    s.settimeout(0.5)
    if b0 & 0x0F == 8:
        break
    seen += data
    if expect.encode() in seen:
        sys.stdout.write(seen.decode(errors="replace"))
        sys.exit(0)
sys.stdout.write(seen.decode(errors="replace"))
sys.exit(1)
