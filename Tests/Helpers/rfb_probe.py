#!/usr/bin/env python3
"""A VNC viewer's first steps (standard library only): the RFB 3.8 handshake with the "None"
security type and ClientInit, then prints the ServerInit's framebuffer size and desktop name,
e.g. "720x400 QEMU (user-container)". Exits non-zero on anything else.

  rfb_probe.py HOST:PORT [SECONDS]
"""
import socket, struct, sys

host, port = sys.argv[1].rsplit(":", 1)
s = socket.create_connection((host, int(port)), timeout=float(sys.argv[2]) if len(sys.argv) > 2 else 20)


def exact(n):
    out = b""
    while len(out) < n:
        chunk = s.recv(n - len(out))
        if not chunk:
            sys.exit(f"connection closed after {len(out)} of {n} bytes")
        out += chunk
    return out


version = exact(12)
if not version.startswith(b"RFB 003."):
    sys.exit(f"not an RFB server: {version!r}")
s.sendall(b"RFB 003.008\n")
count = exact(1)[0]
if count == 0:
    sys.exit("server refused: " + exact(struct.unpack(">I", exact(4))[0]).decode(errors="replace"))
types = exact(count)
if 1 not in types:
    sys.exit(f"no 'None' security type offered: {list(types)}")
s.sendall(b"\x01")
if struct.unpack(">I", exact(4))[0] != 0:
    sys.exit("security handshake failed")
s.sendall(b"\x01")  # ClientInit: shared
width, height = struct.unpack(">HH", exact(4))
exact(16)  # pixel format
name = exact(struct.unpack(">I", exact(4))[0]).decode(errors="replace")
print(f"{width}x{height} {name}")
