"""The floor: the least a Python process can do per UDP query.

A plain blocking socket loop that receives a datagram and sends back one fixed, valid DNS
response (`mx.example.com. 60 IN A 198.51.100.10`, AA set) with the query's ID spliced in.
No parsing, no checks: whatever smartdns does per query costs on top of this, so
"smartdns CPU per query / floor CPU per query" is how close smartdns is to Python's limit.

    python3 bench/floor.py --listen 127.0.0.12:5300 [--lifetime SECONDS]

It exits by itself after --lifetime seconds (default 3600), so a forgotten one never lingers.
"""

from __future__ import annotations

import argparse
import signal
import socket
import struct


def fixed_response() -> bytes:
    """Wire bytes of the response; the first two bytes (the ID) are replaced per query."""
    header = struct.pack("!6H", 0, 0x8400, 1, 1, 0, 0)  # QR AA, NOERROR; 1 question, 1 answer
    qname = b"\x02mx\x07example\x03com\x00"
    question = qname + struct.pack("!2H", 1, 1)  # A IN
    answer = b"\xc0\x0c" + struct.pack("!2HIH", 1, 1, 60, 4) + socket.inet_aton("198.51.100.10")
    return header + question + answer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default="127.0.0.12:5300", help="HOST:PORT (IPv4)")
    parser.add_argument("--lifetime", type=int, default=3600, help="exit after this many seconds")
    args = parser.parse_args()
    host, _, port = args.listen.rpartition(":")

    signal.alarm(args.lifetime)  # SIGALRM's default action ends the process: bounded life
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((host, int(port)))
    tail = fixed_response()[2:]
    recvfrom, sendto = sock.recvfrom, sock.sendto
    while True:  # ends with SIGTERM from run.sh, or SIGALRM after --lifetime
        data, addr = recvfrom(4096)
        sendto(data[:2] + tail, addr)


if __name__ == "__main__":
    main()
