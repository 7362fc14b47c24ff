#!/usr/bin/env python3
"""Userspace 802.1Q tagging switch for VM tests (Python 3, stdlib only).

One AF_UNIX datagram socket faces qemu's trunk NIC (-netdev dgram, one
Ethernet frame per datagram). Each access VLAN gets a tap device created
with TUNSETIFF and optionally moved into a network namespace:

  trunk -> tap: frames tagged 0x8100 with that VID lose the tag
  tap -> trunk: frames get the tag inserted after the MAC addresses

No MAC learning, deterministic. Several clients on one VLAN: put a plain
bridge behind the tap inside the namespace.

  vlanswitch.py --sock SW.sock --peer QEMU.sock --port 10:tapv10:c10 --port 20:tapv20:c20

SIGTERM/SIGINT stop it and print the counters to stderr.
"""
import argparse
import fcntl
import os
import select
import signal
import socket
import struct
import subprocess
import sys

TUNSETIFF = 0x400454CA
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
TPID = b"\x81\x00"


def open_tap(name):
    fd = os.open("/dev/net/tun", os.O_RDWR)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TAP | IFF_NO_PI))
    os.set_blocking(fd, False)
    return fd


def ip(*args):
    subprocess.run(["ip", *args], check=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sock", required=True, help="our AF_UNIX datagram socket path")
    ap.add_argument("--peer", required=True, help="qemu's local socket path (frames go there)")
    ap.add_argument("--port", action="append", default=[], metavar="VID:TAP[:NETNS]")
    ap.add_argument("--ready", help="file to create once the taps are up")
    args = ap.parse_args()

    by_vid, by_fd = {}, {}
    for spec in args.port:
        parts = spec.split(":")
        vid, tap = int(parts[0]), parts[1]
        ns = parts[2] if len(parts) > 2 and parts[2] else None
        if not 1 <= vid <= 4094:
            sys.exit(f"vlanswitch: bad VID {vid}")
        fd = open_tap(tap)
        if ns:
            ip("link", "set", tap, "netns", ns)
            ip("-n", ns, "link", "set", tap, "up")
        else:
            ip("link", "set", tap, "up")
        by_vid[vid] = fd
        by_fd[fd] = (vid, struct.pack("!2sH", TPID, vid))

    try:
        os.unlink(args.sock)
    except FileNotFoundError:
        pass
    trunk = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    trunk.bind(args.sock)
    trunk.setblocking(False)

    stats = {"to_tap": 0, "to_trunk": 0, "drop_untagged": 0, "drop_vid": 0, "drop_peer": 0}
    running = True

    def stop(*_):
        nonlocal running
        running = False

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if args.ready:
        open(args.ready, "w").close()
    print(f"vlanswitch: trunk {args.sock} <-> {args.peer}, VLANs {sorted(by_vid)}", file=sys.stderr, flush=True)

    poller = select.poll()
    poller.register(trunk.fileno(), select.POLLIN)
    for fd in by_fd:
        poller.register(fd, select.POLLIN)
    while running:
        try:
            events = poller.poll(500)
        except InterruptedError:
            continue
        for fd, _ in events:
            if fd == trunk.fileno():
                while True:
                    try:
                        frame = trunk.recv(65536)
                    except BlockingIOError:
                        break
                    if len(frame) < 18 or frame[12:14] != TPID:
                        stats["drop_untagged"] += 1
                        continue
                    vid = struct.unpack("!H", frame[14:16])[0] & 0x0FFF
                    tap = by_vid.get(vid)
                    if tap is None:
                        stats["drop_vid"] += 1
                        continue
                    try:
                        os.write(tap, frame[:12] + frame[16:])
                        stats["to_tap"] += 1
                    except OSError:
                        stats["drop_vid"] += 1
            else:
                _, tag = by_fd[fd]
                while True:
                    try:
                        frame = os.read(fd, 65536)
                    except BlockingIOError:
                        break
                    if len(frame) < 14:
                        continue
                    try:
                        trunk.sendto(frame[:12] + tag + frame[12:], args.peer)
                        stats["to_trunk"] += 1
                    except OSError:  # qemu not started yet or gone
                        stats["drop_peer"] += 1
    print("vlanswitch: " + " ".join(f"{k}={v}" for k, v in stats.items()), file=sys.stderr, flush=True)
    trunk.close()
    os.unlink(args.sock)


if __name__ == "__main__":
    main()
