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


def cli_and_plugin(cli=None):
    """(containarium binary, libIncusLXC.so, where they came from).

    `cli` given (a --bin option): that binary, with the plugin beside it (a build folder) or in
    the installed layout next to it (PREFIX/bin/containarium and
    PREFIX/lib/containarium/plugins/incus-lxc/libIncusLXC.so, as scripts/install.sh lays out).
    Otherwise, in order: $CONTAINARIUM_BUILD_DIR, release builds (the clone's, CI's), the
    installed /usr/local (scripts/install.sh builds release by default), then debug builds."""
    def plugin_for(binary):
        d = os.path.dirname(os.path.abspath(binary))
        for p in (os.path.join(d, "libIncusLXC.so"),
                  os.path.join(os.path.dirname(d), "lib/containarium/plugins/incus-lxc/libIncusLXC.so")):
            if os.path.exists(p):
                return p
        return None

    if cli:
        plugin = plugin_for(cli)
        if not (os.path.exists(cli) and plugin):
            sys.exit(f"{cli}: no such binary, or no libIncusLXC.so beside it or under ../lib/containarium/plugins/incus-lxc/")
        return cli, plugin, cli
    candidates = [os.environ.get("CONTAINARIUM_BUILD_DIR"), os.path.join(ROOT, ".build/release"), "/var/cache/containarium/ci-build/release",
                  "/usr/local/bin", os.path.join(ROOT, ".build/debug"), "/var/cache/containarium/ci-build/debug"]
    for d in candidates:
        if not d:
            continue
        binary = os.path.join(d, "containarium")
        plugin = plugin_for(binary) if os.path.exists(binary) else None
        if plugin:
            return binary, plugin, d
    sys.exit("no containarium + libIncusLXC.so found: run scripts/install.sh or swift build -c release, "
             "or pass --bin / set CONTAINARIUM_BUILD_DIR")
