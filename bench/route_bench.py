#!/usr/bin/env python3
"""Socketmap latency of `smartdns route` at a fixed request rate, as Postfix would load it.

    python3 bench/route_bench.py                       # 1,000 lookups/s for 10 s over 20 connections
    python3 bench/route_bench.py --rate 2000 --seconds 5 --connections 50

Starts, on 127.0.0.1 only, a smartdns DNS server holding MX records for 200 domains (half
domestic, half overseas, as the test GeoIP data classifies them) and the routing service using
it, warms the MX cache with one lookup per domain, then sends lookups open-loop at `--rate` per
second (each connection one request at a time, as a Postfix process does; a request due while
its connection is busy waits, and that wait counts in its latency). Keys mix the recipients'
domains with Postfix's other probes (bare domains, `*`). Prints p50/p95/p99/max of the time from
when each request was due to its answer. Bounded: `--seconds` (at most 60) of load, every
process started is ended.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DOMAINS = 200


def zone_text() -> str:
    lines = ["---", "'':", "  - type: NS", "    values: [ns1.bench.test.]", "ns1:", "  type: A", "  value: 127.0.0.1"]
    for i in range(DOMAINS):
        address = "127.0.0.2" if i % 2 == 0 else "127.0.0.3"  # CN, US in the bench GeoIP data
        lines += [f"d{i}:", "  type: MX", f"  value: {{exchange: mx.d{i}.bench.test., preference: 10}}",
                  f"mx.d{i}:", "  type: A", f"  value: {address}"]
    return "\n".join(lines) + "\n"


METRICS_PORTS: list[int] = []


def start(cmd: list[str], cwd: Path) -> tuple[subprocess.Popen, int]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    assert proc.stderr is not None
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        metrics = re.search(r"metrics on http://\S+?:(\d+)/metrics", line)
        if metrics:
            METRICS_PORTS.append(int(metrics.group(1)))
        match = re.search(r"listening on (\S+?):(\d+)", line)
        if match:
            return proc, int(match.group(2))
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise SystemExit(f"{' '.join(cmd[3:5])} did not start")


def netstring(text: str) -> bytes:
    data = text.encode()
    return b"%d:%s," % (len(data), data)


async def read_reply(reader: asyncio.StreamReader) -> bytes:
    length = int((await reader.readuntil(b":"))[:-1])
    return (await reader.readexactly(length + 1))[:-1]


async def drive(port: int, rate: float, seconds: float, connections: int, keys: list[str]) -> tuple[list[float], int]:
    streams = [await asyncio.open_connection("127.0.0.1", port) for _ in range(connections)]
    locks = [asyncio.Lock() for _ in streams]
    latencies: list[float] = []
    round_trips: list[float] = []
    errors = 0

    async def one(index: int, due: float, key: str) -> None:
        nonlocal errors
        reader, writer = streams[index]
        async with locks[index]:
            sent = time.perf_counter()
            writer.write(netstring(f"route {key}"))
            reply = await read_reply(reader)
        done = time.perf_counter()
        latencies.append(done - due)
        round_trips.append(done - sent)
        if not (reply.startswith(b"OK ") or reply == b"NOTFOUND "):
            errors += 1

    total = int(rate * seconds)
    started = time.perf_counter()
    tasks = []
    for n in range(total):
        due = started + n / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.ensure_future(one(n % connections, due, keys[n % len(keys)])))
    await asyncio.wait_for(asyncio.gather(*tasks), 30)
    for _, writer in streams:
        writer.close()
    ROUND_TRIPS[:] = round_trips
    return latencies, errors


ROUND_TRIPS: list[float] = []  # of the last drive(): from writing a request to its answer


def in_service() -> dict[str, float]:
    """The service's own histogram of time per request (from reading it to writing the answer)."""
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{METRICS_PORTS[-1]}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    return {m.group(1): float(m.group(2))
            for m in re.finditer(r'smartdns_route_lookup_seconds_bucket\{le="([^"]+)"\} (\S+)', text)}


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=1000.0, help="lookups per second (default 1000)")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the load, at most 60 (default 10)")
    parser.add_argument("--connections", type=int, default=20, help="Postfix processes simulated (default 20)")
    parser.add_argument("--out", help="also write the figures as Markdown to this file (e.g. bench/ROUTE_RESULTS.md)")
    args = parser.parse_args()
    seconds = min(args.seconds, 60.0)
    sys.path.insert(0, str(REPO))
    from smartdns.geodb import build_country_db

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "zones").mkdir()
        (work / "zones" / "bench.test.yaml").write_text(zone_text())
        (work / "dns.yaml").write_text("zones: zones\nmetrics: false\n")
        (work / "geo.csv").write_text("127.0.0.2/32,CN,AS\n127.0.0.3/32,US,NA\n")
        build_country_db(work / "geo.csv", work / "geo.mmdb")
        (work / "ours").mkdir()
        dns, dns_port = start([sys.executable, "-m", "smartdns", "serve", "--config", "dns.yaml", "--workers", "1",
                               "--listen", "127.0.0.1:0"], work)
        procs = [dns]
        try:
            (work / "route.yaml").write_text(
                f"zones: ours\ngeodb: [geo.mmdb]\nroute:\n  listen: 127.0.0.1:0\n  metrics: 127.0.0.1:0\n"
                f"  home: [AS-CN]\n  resolvers: ['127.0.0.1:{dns_port}']\n  local_domains: [ours.test]\n"
                "  relays:\n    - {name: us, host: 127.0.0.1, port: 9, serves: [NA], "
                f"fingerprint: '{':'.join(['00'] * 32)}'}}\n")
            route, port = start([sys.executable, "-m", "smartdns", "route", "--config", "route.yaml"], work)
            procs.append(route)
            keys = []
            rng = random.Random(1)
            for i in range(DOMAINS):
                keys += [f"user{rng.randrange(10**6)}@d{i}.bench.test", f"d{i}.bench.test", "*"]
            keys.append("someone@ours.test")
            rng.shuffle(keys)
            warm = [f"x@d{i}.bench.test" for i in range(DOMAINS)]
            asyncio.run(drive(port, 500, len(warm) / 500, 10, warm))  # MX cache filled, as in steady state
            time.sleep(0.5)
            before = in_service()
            latencies, errors = asyncio.run(drive(port, args.rate, seconds, args.connections, keys))
            after = in_service()
        finally:
            for proc in procs:
                proc.send_signal(signal.SIGTERM)
            for proc in procs:
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
    def ms(value: float) -> str:
        return f"{value * 1000:.2f} ms"

    summary = (f"{len(latencies)} lookups at {args.rate:g}/s over {args.connections} connections for {seconds:g} s, "
               f"{errors} unexpected replies")
    figures = (f"p50 {ms(percentile(latencies, 0.50))}  p95 {ms(percentile(latencies, 0.95))}  "
               f"p99 {ms(percentile(latencies, 0.99))}  max {ms(max(latencies))}  mean {ms(statistics.fmean(latencies))}")
    trips = (f"from write to answer: p50 {ms(percentile(ROUND_TRIPS, 0.50))}  p99 {ms(percentile(ROUND_TRIPS, 0.99))}"
             f"  (the rest of the above is this client late to send)")
    figures += "\n  " + trips if not args.out else f"\n    {trips}"
    count = after["+Inf"] - before["+Inf"]
    share = {bound: (after[bound] - before[bound]) / count for bound in ("0.001", "0.005")}
    inside = (f"inside the service: {share['0.001']:.1%} of requests within 1 ms, {share['0.005']:.2%} within 5 ms "
              f"(its own histogram, {count:.0f} requests)")
    print(f"route socketmap: {summary}\n  {figures}\n  {inside}")
    if args.out:
        commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, check=False).stdout.strip()
        load = os.getloadavg()[0]
        Path(args.out).write_text(
            "# smartdns route: socketmap latency\n\nWritten by `python3 bench/route_bench.py --out "
            f"{args.out}` (run it again rather than editing).\n\n- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
            f", git {commit}, nproc {os.cpu_count()}, load average {load:.1f} when it ended\n"
            f"- {summary}; MX cache warm; keys: recipients of 200 domains (half domestic, half overseas), "
            "bare domains and `*`\n- latency from when each request was due to its answer:\n\n"
            f"    {figures}\n\n- {inside}\n")
    return 0 if errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
