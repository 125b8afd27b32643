"""Memory under floods: the server's resident set stays bounded (issue 6, item 4).

    python tests/soak/memory.py [--names 200000] [--ecs 200000] [--rounds 1] [--max-growth-mb 100] [--seconds 300]
                                [--rule-subnets 10000]

Starts the same server as soak.py (example zone, one worker), warms it up, and reads
VmRSS from /proc/PID/status:
  1. before;
  2. after `--names` queries for random subdomains (`<12 hex>.example.com A`, NXDOMAIN):
     every one a query never seen before, a new key for the caches keyed by query;
  3. after `--ecs` queries for `mx.example.com A` with random ECS prefixes (usable IPv4 /24s
     and IPv6 /56s): every one a new hot entry, a new client decision, a new classification;
  4. after a second round of random names, to show the level reached stays flat.
With `--rule-subnets N` the example's `mx A` rule lists N more /24s (in 14.0.0.0/8 and
27.0.0.0/8, where part of the ECS flood falls), a province's or an ISP's worth of segments:
afterwards a client inside one of them must still get the domestic answer, one outside the
overseas one, and known names must still be answered, every one.
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


def long_rule(zones: Path, count: int, workdir: Path) -> Path:
    """The example zones with `count` more /24s on the first rule of `mx A`."""
    import yaml

    out = workdir / "long-rule-zones"
    out.mkdir()
    for path in zones.glob("*.yaml"):
        data = yaml.safe_load(path.read_text())
        if path.name == "example.com.yaml":
            record = next(r for r in data["mx"] if r["type"] == "A")
            record["dynamic"]["rules"][0]["subnets"] += rule_subnets(count)
        (out / path.name).write_text(yaml.safe_dump(data, sort_keys=False))
    return out


def rule_subnets(count: int) -> list[str]:
    return [f"{(14, 27)[i % 2]}.{i // 512 % 256}.{i // 2 % 256}.0/24" for i in range(count)]


def answers_of(port: int, packet: bytes) -> list[str]:
    """The A addresses answered to one query ([] when none, or no reply within 2 s)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(2)
        sock.sendto(packet, ("127.0.0.1", port))
        try:
            reply = sock.recv(65535)
        except socket.timeout:
            return []
    import dns.message

    return [rdata.address for rrset in dns.message.from_wire(reply).answer if rrset.rdtype == 1 for rdata in rrset]


def mx_query(ecs: bytes) -> bytes:
    return _header(1, ar=1) + _name("mx.example.com") + b"\x00\x01\x00\x01" + _opt(rdata=_ecs(ecs, 24))


def known_names():
    while True:
        yield _header(2) + _name("ns1.example.com") + b"\x00\x01\x00\x01"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="RSS of a real smartdns before and after floods (loopback only).")
    parser.add_argument("--names", type=int, default=200_000, help="random-subdomain queries per round")
    parser.add_argument("--ecs", type=int, default=200_000, help="random-ECS queries")
    parser.add_argument("--max-growth-mb", type=float, default=100.0, help="bound on RSS growth (MiB)")
    parser.add_argument("--seconds", type=float, default=300, help="time cap for all floods together")
    parser.add_argument("--rounds", type=int, default=1, help="rounds of names + ECS before the last names")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--rule-subnets", type=int, default=0, help="/24s added to the example's mx A rule")
    args = parser.parse_args(argv)
    if not (0 <= args.names <= 10_000_000 and 0 <= args.ecs <= 10_000_000 and 0 < args.seconds <= 3600
            and 1 <= args.rounds <= 20 and 0 <= args.rule_subnets <= 100_000):
        parser.error("--names/--ecs up to 10,000,000, --seconds up to 3600")

    rng = random.Random(args.seed)
    deadline = time.monotonic() + args.seconds
    failures = []
    with tempfile.TemporaryDirectory(prefix="smartdns-memory-") as workdir:
        zones = long_rule(REPO / "zones", args.rule_subnets, Path(workdir)) if args.rule_subnets else REPO / "zones"
        server = Server(zones, Path(workdir))
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
            if args.rule_subnets:
                sent, answered = flood(server.port, known_names(), 2000, deadline)
                rows.append(("known names after the floods", sent, answered, server.rss_kib()))
                if answered < sent:
                    failures.append(f"known names: only {answered} of {sent} answered")
                last = rule_subnets(args.rule_subnets)[-1].split(".")
                inside = answers_of(server.port, mx_query(bytes(int(b) for b in last[:3])))
                outside = answers_of(server.port, mx_query(bytes([8, 8, 8])))
                print(f"mx A for a client in the rule's last subnet: {inside}; for 8.8.8.0/24: {outside}")
                if inside != ["192.0.2.10"] or not outside or outside[0] not in ("198.51.100.10", "198.51.100.11"):
                    failures.append("the long rule decides wrongly after the flood")
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
