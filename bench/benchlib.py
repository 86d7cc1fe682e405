"""Helpers the benchmark scripts share: finding the built binary and plugin, free ports."""
import os
import socket
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def build_dir():
    """The newest-looking build with both the CLI and the IncusLXC plugin: $CONTAINARIUM_BUILD_DIR,
    then release builds (in the clone, then CI's shared directory), then debug builds."""
    for d in [os.environ.get("CONTAINARIUM_BUILD_DIR"), os.path.join(ROOT, ".build/release"), "/var/cache/containarium/ci-build/release",
              os.path.join(ROOT, ".build/debug"), "/var/cache/containarium/ci-build/debug"]:
        if d and os.path.exists(os.path.join(d, "containarium")) and os.path.exists(os.path.join(d, "libIncusLXC.so")):
            return d
    sys.exit("no built containarium + libIncusLXC.so found; run swift build -c release first or set CONTAINARIUM_BUILD_DIR")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p
