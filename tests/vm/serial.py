#!/usr/bin/env python3
"""Drive a guest's serial console (image/run --serial unix:SOCK) like expect(1).

  serial.py SOCK DIALOGUE        # DIALOGUE: a file of steps, - for stdin

Steps, one per line (blank lines and lines starting with # are skipped):
  expect REGEX     wait until REGEX matches the console output (ANSI escapes removed)
                   that came after the previous match; fails after --timeout seconds
  send TEXT        type TEXT; Python escapes work: \\r is Enter, \\x1b[B is the down arrow,
                   \\x7f is backspace
  sleep SECONDS

Everything the console printed goes to stdout. Exit 0 when every step passed, 1 on a
timeout (with the step and the tail of the output), 125 if the socket cannot be reached.
"""
import argparse
import re
import socket
import sys
import time

ANSI = re.compile(rb"\x1b(\[[0-?]*[ -/]*[@-~]|\][^\x07]*\x07|[@-Z\\-_])")


class Console:
    def __init__(self, path, wait=30):
        deadline = time.monotonic() + wait
        while True:
            self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                self.s.connect(path)
                break
            except OSError:
                self.s.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        self.raw = b""
        self.clean = b""
        self.pos = 0

    def _read(self, timeout):
        self.s.settimeout(max(0.05, timeout))
        try:
            chunk = self.s.recv(65536)
        except socket.timeout:
            return
        if not chunk:
            raise EOFError("the console closed")
        sys.stdout.buffer.write(chunk)
        sys.stdout.flush()
        self.raw += chunk
        self.clean = ANSI.sub(b"", self.raw).replace(b"\r", b"")

    def expect(self, regex, timeout):
        rx = re.compile(regex.encode())
        deadline = time.monotonic() + timeout
        while True:
            m = rx.search(self.clean, self.pos)
            if m:
                self.pos = m.end()
                return m
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self._read(min(left, 0.5))

    def send(self, text):
        for ch in text.encode():
            # one byte at a time, as a person types: a UART's FIFO is small
            self.s.sendall(bytes([ch]))
            time.sleep(0.002)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--timeout", type=float, default=60, help="seconds for each expect (default 60)")
    ap.add_argument("sock")
    ap.add_argument("dialogue")
    a = ap.parse_args()
    steps = (sys.stdin if a.dialogue == "-" else open(a.dialogue)).read().splitlines()
    try:
        c = Console(a.sock)
    except OSError as e:
        print(f"serial: cannot reach {a.sock}: {e}", file=sys.stderr)
        sys.exit(125)
    for n, line in enumerate(steps, 1):
        line = line.lstrip()
        if not line or line.startswith("#"):
            continue
        verb, _, arg = line.partition(" ")
        if verb == "expect":
            if c.expect(arg, a.timeout) is None:
                tail = c.clean[-600:].decode(errors="replace")
                print(f"\nserial: step {n}: no match for {arg!r} within {a.timeout}s; the console shows:\n{tail}", file=sys.stderr)
                sys.exit(1)
        elif verb == "send":
            c.send(arg.encode().decode("unicode_escape"))
        elif verb == "sleep":
            time.sleep(float(arg))
        else:
            print(f"serial: step {n}: unknown step {verb!r}", file=sys.stderr)
            sys.exit(2)
    # let the last answer's output reach the log
    c._read(0.5)


if __name__ == "__main__":
    main()
