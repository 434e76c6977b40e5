#!/usr/bin/env python3
"""A learning Ethernet bridge in user space that delays and drops frames, as netem would.

cohort's network-namespace test joins its namespaces through this bridge rather than a
kernel bridge with `tc qdisc ... netem` on each port, because netem is a kernel option
(CONFIG_NET_SCH_NETEM) that many kernels, CI machines' among them, are built without. The
bridge needs nothing but veth and packet sockets.

    port (veth end in the bridge's namespace) --recv--> learn the source MAC
      --> each port the destination is on (every other port for broadcast, multicast or
          an unknown MAC), dropping each copy with probability LOSS
      --> held DELAY_MS, in arrival order --> sent out of that port

A frame forwarded to a port that is down is dropped, as a cable pulled out would. UDP
checksums over IPv4 are cleared (0 means "none" in IPv4): a frame sent from a namespace
with checksum offload carries a partial checksum, which only the sending device would
have completed. The bridge prints one line of counters when it ends: on SIGTERM, or after
--max-seconds.
"""

import argparse
import heapq
import random
import select
import signal
import socket
import sys
import time

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ports", nargs="+", help="interfaces to bridge")
    parser.add_argument("--delay-ms", type=float, default=50.0)
    parser.add_argument("--loss", type=float, default=0.05, help="0.05 is 5%%")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--max-seconds", type=float, default=600.0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    delay = args.delay_ms / 1000.0

    sockets = {}
    for port in args.ports:
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        s.bind((port, 0))
        s.setblocking(False)
        sockets[port] = s
    by_fd = {s.fileno(): port for port, s in sockets.items()}

    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    signal.signal(signal.SIGINT, lambda *_: stopping.append(True))

    where = {}  # MAC -> port it was last seen on
    held = []  # (due, sequence, port, frame)
    sequence = 0
    forwarded = dropped = failed = 0
    deadline = time.monotonic() + args.max_seconds
    print("bridging", " ".join(args.ports), flush=True)
    while not stopping and time.monotonic() < deadline:
        now = time.monotonic()
        wait = min(0.2, max(0.0, held[0][0] - now)) if held else 0.2
        try:
            ready, _, _ = select.select(list(sockets.values()), [], [], wait)
        except InterruptedError:
            continue
        now = time.monotonic()
        for s in ready:
            port = by_fd[s.fileno()]
            for _ in range(256):
                try:
                    frame, address = s.recvfrom(65536)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:
                    # The port went down (the test cut it off): nothing more to read.
                    break
                if address[2] == PACKET_OUTGOING or len(frame) < 14:
                    continue
                destination, source = frame[0:6], frame[6:12]
                where[source] = port
                if destination[0] & 1 or destination not in where:
                    outs = [p for p in sockets if p != port]
                else:
                    outs = [where[destination]] if where[destination] != port else []
                frame = clear_udp_checksum(frame)
                for out in outs:
                    if rng.random() < args.loss:
                        dropped += 1
                        continue
                    sequence += 1
                    heapq.heappush(held, (now + delay, sequence, out, frame))
        now = time.monotonic()
        while held and held[0][0] <= now:
            _, _, out, frame = heapq.heappop(held)
            try:
                sockets[out].send(frame)
                forwarded += 1
            except OSError:
                failed += 1
    print(f"forwarded {forwarded}, dropped {dropped}, undeliverable {failed}", flush=True)
    return 0


def clear_udp_checksum(frame):
    """The frame with its UDP checksum set to 0 if it carries UDP over IPv4."""
    if len(frame) < 34 or frame[12:14] != b"\x08\x00" or frame[23] != 17:
        return frame
    udp = 14 + (frame[14] & 0x0F) * 4
    if len(frame) < udp + 8:
        return frame
    return frame[: udp + 6] + b"\x00\x00" + frame[udp + 8 :]


if __name__ == "__main__":
    sys.exit(main())
