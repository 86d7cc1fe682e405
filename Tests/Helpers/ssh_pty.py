#!/usr/bin/env python3
"""Drive an interactive `ssh -tt` session through a real pseudo-terminal.

Usage: ssh_pty.py USER -- SSH-ARGS...

Checks, failing with a message on the first that does not hold: the shell runs as USER on a
terminal; the remote PTY has the local window size, and follows a resize; Ctrl-C interrupts
a running command (the signal travels as a byte through the PTY); `exit 7` ends ssh with
status 7. Prints one "ok ..." line per check.
"""
import fcntl
import os
import pty
import select
import signal
import struct
import sys
import termios
import time

user = sys.argv[1]
args = sys.argv[sys.argv.index("--") + 1:]
pid, fd = pty.fork()
if pid == 0:
    # Whatever started us may have blocked or ignored signals; ssh needs SIGWINCH and SIGINT.
    signal.pthread_sigmask(signal.SIG_SETMASK, [])
    for sig in (signal.SIGWINCH, signal.SIGINT, signal.SIGTERM, signal.SIGPIPE):
        signal.signal(sig, signal.SIG_DFL)
    os.execvp(args[0], args)

buf = b""


def set_size(rows, cols):
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def expect(pattern, timeout=20.0):
    global buf
    end = time.time() + timeout
    while time.time() < end:
        if pattern in buf:
            i = buf.index(pattern) + len(pattern)
            out, buf = buf[:i], buf[i:]
            return out
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                data = os.read(fd, 4096)
            except OSError:
                break
            if not data:
                break
            buf += data
    sys.exit(f"FAIL: timed out waiting for {pattern!r}; last output: {buf[-400:]!r}")


def send(text):
    os.write(fd, text.encode())


set_size(24, 80)
# The prompt is assembled by the shell, so the echo of this line never matches it.
send("PS1='PR''OMPT> '\n")
expect(b"PROMPT> ")
send("echo WHO=$(whoami) TTY=$(tty)\n")
out = expect(b"PROMPT> ")
if f"WHO={user}".encode() not in out or b"TTY=/dev/pts/" not in out:
    sys.exit(f"FAIL: not {user} on a terminal: {out!r}")
print("ok shell as", user, "on a pty")

send("echo SIZE=$(stty size)=E''ND\n")
out = expect(b"=END")
if b"SIZE=24 80" not in out:
    sys.exit(f"FAIL: initial size not 24x80: {out!r}")
print("ok initial size 24 80")

set_size(40, 132)  # the kernel sends SIGWINCH to ssh, which sends window-change
time.sleep(0.3)
send("echo SIZE=$(stty size)=E''ND\n")
out = expect(b"=END")
if b"SIZE=40 132" not in out:
    sys.exit(f"FAIL: resize not applied: {out!r}")
print("ok resized to 40 132")

expect(b"PROMPT> ")
send("sleep 30; echo NOT-''INTERRUPTED\n")
time.sleep(1.0)
start = time.time()
send("\x03")
out = expect(b"PROMPT> ", timeout=10)
if b"NOT-INTERRUPTED" in out or time.time() - start > 5:
    sys.exit(f"FAIL: Ctrl-C did not interrupt: {out!r}")
print("ok ctrl-c interrupted the command")

send("exit 7\n")
_, status = os.waitpid(pid, 0)
code = os.waitstatus_to_exitcode(status)
if code != 7:
    sys.exit(f"FAIL: ssh exited with {code}, expected 7")
print("ok exit status 7")
