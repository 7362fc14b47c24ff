#!/usr/bin/env python3
"""Run a shell command in a Bulkhead test guest over the virtio-serial control port.

  guestctl.py SOCK 'nft list ruleset'        # prints the output, exits with its status
  guestctl.py SOCK - < script.sh             # script from stdin
  guestctl.py --wait 60 SOCK true            # retry until the guest answers

The guest side is /usr/libexec/bulkhead/ctl-agent (started by /init with rctl=1).
Protocol: one line "TOKEN BASE64(script)", resent until the agent answers "@@ACK TOKEN";
the reply is the script's output followed by "@@RC TOKEN STATUS". Exit 124 on timeout, 125 if the socket cannot be reached.
"""
import argparse
import base64
import os
import socket
import sys
import time


def run(path, script, timeout):
    token = os.urandom(8).hex()
    deadline = time.monotonic() + timeout
    while True:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(path)
            break
        except OSError:
            s.close()
            if time.monotonic() > deadline:
                return 125, b""
            time.sleep(0.1)
    with s:
        line = token.encode() + b" " + base64.b64encode(script.encode()) + b"\n"
        s.sendall(line)
        marker = f"@@RC {token} ".encode()
        ack = f"@@ACK {token}".encode()
        acked = False
        sent_at = time.monotonic()
        buf = b""
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return 124, buf
            # A request written while the guest reopens its port is lost: resend it until
            # the agent acknowledges it (the agent runs a token once).
            if not acked and time.monotonic() - sent_at > 2:
                s.sendall(line)
                sent_at = time.monotonic()
            s.settimeout(min(left, 0.5) if not acked else left)
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                continue
            if not chunk:
                return 125, buf
            buf += chunk
            if not acked and ack in buf:
                acked = True
                i = buf.find(ack)
                j = buf.find(b"\n", i)
                buf = buf[:i] + (buf[j + 1:] if j >= 0 else b"")
            i = buf.find(marker)
            if i >= 0:
                j = buf.find(b"\n", i)
                if j < 0:
                    continue
                rc = int(buf[i + len(marker):j].strip() or b"255")
                return rc, buf[:i]


def clean(out):
    return b"".join(
        l for l in out.splitlines(keepends=True) if not l.startswith((b"@@READY", b"@@ACK"))
    )


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--timeout", type=float, default=60, help="seconds for the command (default 60)")
    ap.add_argument("--wait", type=float, default=0, help="first wait up to this long for the guest to answer")
    ap.add_argument("sock")
    ap.add_argument("command", nargs="+", help="command words, or - to read a script from stdin")
    a = ap.parse_args()
    script = sys.stdin.read() if a.command == ["-"] else " ".join(a.command)
    if a.wait:
        deadline = time.monotonic() + a.wait
        while True:
            rc, _ = run(a.sock, "true", min(5, max(0.5, deadline - time.monotonic())))
            if rc == 0:
                break
            if time.monotonic() > deadline:
                print(f"guestctl: guest did not answer on {a.sock} within {a.wait}s", file=sys.stderr)
                sys.exit(124)
    rc, out = run(a.sock, script, a.timeout)
    sys.stdout.buffer.write(clean(out))
    sys.stdout.flush()
    if rc in (124, 125):
        print(f"guestctl: {'timeout' if rc == 124 else 'no connection'} on {a.sock}", file=sys.stderr)
    sys.exit(rc)


if __name__ == "__main__":
    main()
