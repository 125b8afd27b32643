"""Memory under floods: the server's resident set stays bounded (issue 6, item 4).

    python tests/soak/memory.py [--names 200000] [--ecs 200000] [--rounds 1] [--max-growth-mb 100] [--seconds 300]

Starts the same server as soak.py (example zone, one worker), warms it up, and reads
VmRSS from /proc/PID/status:
  1. before;
  2. after `--names` queries for random subdomains (`<12 hex>.example.com A`, NXDOMAIN):
     every one a query never seen before, a new key for the caches keyed by query;
  3. after `--ecs` queries for `mx.example.com A` with random ECS prefixes (usable IPv4 /24s
     and IPv6 /56s): every one a new hot entry, a new client decision, a new classification;
  4. after a second round of random names, to show the level reached stays flat.
Whole responses are kept for at most 30,000 query shapes (hotcache.HOT_LIMIT; the
client decisions go with them when that cache is cleared), other caches at most 50,000
entries (responder.CACHE_LIMIT; the classifier's LRU 65,536), so growth is bounded by one
full generation of caches whatever the flood's size. A random-name query costs next to
nothing (NXDOMAIN answers share one template per zone); a random-ECS query about 1.9 KB (the
Query and its bytes, the hot entry, the client's decision with its response, the
classification), so the hot cache's bound is ~60 MB. Measured: +68 MiB peak. The default
bound, 100 MiB, leaves room for allocator slack; a leak (no cap) would grow ~1.9 KB per query:
~380 MB for the default 200,000 ECS queries alone. Exits 1 when growth over the baseline exceeds --max-growth-mb, a query goes
unanswered in more than 1% of cases, or the log shows a traceback.
"""

from __future__ import annotations

import argparse
import random
import socket
import sys
import tempfile
import time
from pathlib import Path

from soak import REPO, Server, _ecs, _header, _name, _opt  # this directory is on sys.path when run as a script

WINDOW = 200


def flood(port: int, packets, count: int, deadline: float) -> tuple[int, int]:
    """Send `count` packets from the iterator in windows, reading the replies of each; (sent, answered)."""
    sent = answered = 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.connect(("127.0.0.1", port))
        sock.settimeout(2)
        while sent < count and time.monotonic() < deadline:
            window = min(WINDOW, count - sent)
            for _ in range(window):
                sock.send(next(packets))
            sent += window
            for _ in range(window):
                try:
                    sock.recv(65535)
                except socket.timeout:
                    break
                answered += 1
    return sent, answered


def random_names(rng: random.Random):
    while True:
        label = "%012x" % rng.getrandbits(48)
        yield rng.getrandbits(16).to_bytes(2, "big") + _header(0)[2:] + _name(f"{label}.example.com") + b"\x00\x01\x00\x01"


def random_ecs(rng: random.Random):
    question = _name("mx.example.com") + b"\x00\x01\x00\x01"
    while True:
        if rng.random() < 0.7:  # a /24 of a global IPv4 range
            option = _ecs(bytes([rng.choice([1, 8, 14, 27, 36, 58, 101, 114, 180, 203, 211, 223]),
                                 rng.randrange(256), rng.randrange(256)]), 24)
        else:  # a /56 of 2000::/3
            option = _ecs(bytes([0x20 | rng.randrange(2), rng.randrange(256)]) + rng.randbytes(5), 56, family=2)
        yield rng.getrandbits(16).to_bytes(2, "big") + _header(0, ar=1)[2:] + question + _opt(rdata=option)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="RSS of a real smartdns before and after floods (loopback only).")
    parser.add_argument("--names", type=int, default=200_000, help="random-subdomain queries per round")
    parser.add_argument("--ecs", type=int, default=200_000, help="random-ECS queries")
    parser.add_argument("--max-growth-mb", type=float, default=100.0, help="bound on RSS growth (MiB)")
    parser.add_argument("--seconds", type=float, default=300, help="time cap for all floods together")
    parser.add_argument("--rounds", type=int, default=1, help="rounds of names + ECS before the last names")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    if not (0 <= args.names <= 10_000_000 and 0 <= args.ecs <= 10_000_000 and 0 < args.seconds <= 3600
            and 1 <= args.rounds <= 20):
        parser.error("--names/--ecs up to 10,000,000, --seconds up to 3600")

    rng = random.Random(args.seed)
    deadline = time.monotonic() + args.seconds
    failures = []
    with tempfile.TemporaryDirectory(prefix="smartdns-memory-") as workdir:
        server = Server(REPO / "zones", Path(workdir))
        server.start()
        try:
            # warm-up: every code path once (imports, first renders), so the baseline is the steady state
            flood(server.port, random_names(rng), 2000, deadline)
            flood(server.port, random_ecs(rng), 2000, deadline)
            before = server.rss_kib()
            rows = [("before (after 4,000 warm-up queries)", 0, 0, before)]
            started = time.monotonic()
            phases = [("random names", random_names(rng), args.names),
                      ("random ECS prefixes", random_ecs(rng), args.ecs)] * args.rounds
            phases.append(("random names again", random_names(rng), args.names))
            for label, packets, count in phases:
                t0 = time.monotonic()
                sent, answered = flood(server.port, packets, count, deadline)
                rows.append((f"after {label} ({time.monotonic() - t0:.1f} s)", sent, answered, server.rss_kib()))
                if sent < count:
                    failures.append(f"time cap reached during {label}: {sent} of {count} sent")
                if answered < sent * 0.99:
                    failures.append(f"{label}: only {answered} of {sent} answered")
            took = time.monotonic() - started
        finally:
            exit_code = server.stop()
        log = "\n".join(server.lines)

    print(f"{'phase':<44} {'sent':>8} {'answered':>9} {'VmRSS':>10} {'growth':>9}")
    for label, sent, answered, rss in rows:
        print(f"{label:<44} {sent:>8} {answered:>9} {rss / 1024:>7.1f} MiB {(rss - before) / 1024:>+6.1f} MiB")
    peak_growth = (max(r[3] for r in rows) - before) / 1024
    print(f"peak growth {peak_growth:.1f} MiB (bound {args.max_growth_mb:g} MiB) in {took:.1f} s; "
          f"server exit code {exit_code}")
    if peak_growth > args.max_growth_mb:
        failures.append(f"RSS grew {peak_growth:.1f} MiB, more than {args.max_growth_mb:g} MiB")
    if "Traceback" in log or "internal error" in log:
        failures.append("the log shows an exception:\n" + log[-3000:])
    if exit_code != 0:
        failures.append(f"server exit code {exit_code}")
    for failure in failures:
        print(f"FAILED: {failure}")
    print("FAILED" if failures else "PASSED")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
