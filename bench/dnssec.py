#!/usr/bin/env python3
"""DNSSEC benchmark (issue 10): what signing costs at query time and at load time.

    python3 bench/dnssec.py                       # about 3 minutes
    python3 bench/dnssec.py --duration 5 --rounds 1 --records 2000

1. Load time: a generated zone of --records records (static A and MX, dynamic A with two
   pools), loaded unsigned and loaded + signed (one ECDSAP256SHA256 CSK), in this process.
2. Query cost: the example zone served twice on loopback, by two `smartdns serve --workers 1`
   processes pinned to CPU 0, one with a key (signed) and one without; dnsperf on CPU 1 sends
   DO=1 queries to each in turn at a fixed rate below capacity, so CPU per query compares
   directly: the usual mix (45% example.com MX, 45% mx.example.com A, 10% random names),
   then random nonexistent names only (new names every run: nothing cached per name).
   CPU is the server's own (/proc/PID/task/*/schedstat).

Only 127.0.0.0/8 is used; every run is bounded by --duration; every process started here
is stopped at the end. Results go to stdout and bench/DNSSEC.md.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import dns.name

from smartdns.config import SoaSettings
from smartdns.dnssec import keys
from smartdns.dnssec.zone import sign_zone
from smartdns.zonefile import load_zone

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent

PORT = 5300
SERVERS = {"unsigned": "127.0.0.20", "signed": "127.0.0.21"}


def big_zone(records: int) -> str:
    lines = ["---", "'':", "  - type: NS", "    values: [ns1.example.com., ns2.example.com.]",
             "  - type: MX", "    value: {exchange: mx.example.com., preference: 10}",
             "ns1: {type: A, value: 192.0.2.53}", "ns2: {type: A, value: 198.51.100.53}"]
    for i in range(records - 4):
        kind = i % 10
        if kind == 0:
            lines += [f"dyn{i}:", "  dynamic:", "    pools:", "      cn: {values: [{value: 192.0.2.10}]}",
                      "      os: {values: [{value: 198.51.100.10, weight: 3}, {value: 198.51.100.11}]}",
                      "    rules: [{geos: [AS-CN], pool: cn}, {pool: os}]",
                      "  ttl: 60", "  type: A", "  values: [192.0.2.10, 198.51.100.10]"]
        elif kind == 1:
            lines += [f"mail{i}:", "  type: MX", f"  value: {{exchange: mx{i}.example.com., preference: 10}}"]
        else:
            lines.append(f"host{i}: {{type: A, value: 192.0.2.{i % 250 + 1}}}")
    return "\n".join(lines) + "\n"


def load_times(records: int, work: Path) -> tuple[float, float, int, float, int]:
    zones = work / "big"
    zones.mkdir()
    path = zones / "example.com.yaml"
    path.write_text(big_zone(records))
    key_dir = work / "bigkeys"
    keys.generate(dns.name.from_text("example.com."), 13, key_dir)
    started = time.perf_counter()
    zone = load_zone(path, SoaSettings())
    unsigned = time.perf_counter() - started
    started = time.perf_counter()
    zone = load_zone(path, SoaSettings())
    zone = sign_zone(zone, key_dir, 3600, time.time())
    signed = time.perf_counter() - started
    assert zone.dnssec is not None
    made = zone.dnssec.signer.signatures
    path.write_text(path.read_text().replace("host2: {type: A, value: 192.0.2.3}", "host2: {type: A, value: 192.0.2.4}"))
    started = time.perf_counter()
    zone = sign_zone(load_zone(path, SoaSettings()), key_dir, 3600, time.time())
    resigned = time.perf_counter() - started
    assert zone.dnssec is not None
    return unsigned, signed, made, resigned, zone.dnssec.signer.signatures


def cpu_seconds(pid: int) -> float:
    """CPU time of the process, its threads and its child processes (workers), in seconds."""
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/schedstat") as stat:
            total += int(stat.read().split()[0])
        with open(f"/proc/{pid}/task/{task}/children") as children:
            total += sum(int(cpu_seconds(int(child)) * 1e9) for child in children.read().split())
    return total / 1e9


def query_file(path: Path, mix: bool, count: int, rng: random.Random) -> None:
    lines = []
    for _ in range(count):
        roll = rng.random()
        if mix and roll < 0.45:
            lines.append("example.com MX")
        elif mix and roll < 0.9:
            lines.append("mx.example.com A")
        else:
            lines.append("".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(14))
                         + ".example.com A")
    path.write_text("\n".join(lines) + "\n")


def start(name: str, addr: str, work: Path, signed: bool) -> subprocess.Popen:
    home = work / name
    (home / "zones").mkdir(parents=True)
    shutil.copy(REPO / "zones" / "example.com.yaml", home / "zones")
    if signed:
        keys.generate(dns.name.from_text("example.com."), 13, home / "keys")
    (home / "smartdns.yaml").write_text("zones: zones\ndnssec: {keys: keys}\nmetrics: false\n")
    log = home / "smartdns.log"
    with open(log, "w") as stderr:  # a file, not a pipe nobody reads: the server never blocks on its log
        proc = subprocess.Popen(["taskset", "-c", "0", sys.executable, "-m", "smartdns", "serve", "--config",
                                 str(home / "smartdns.yaml"), "--listen", f"{addr}:{PORT}", "--workers", "1"],
                                cwd=home, stderr=stderr, env={**os.environ, "PYTHONPATH": str(REPO)})
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if "listening on" in log.read_text():
            return proc
        time.sleep(0.1)
    proc.kill()
    raise SystemExit(f"{name} did not start")


def run(addr: str, pid: int, queries: Path, rate: int, duration: int) -> tuple[float, float]:
    before = cpu_seconds(pid)
    out = subprocess.run(["taskset", "-c", "1", "dnsperf", "-s", addr, "-p", str(PORT), "-d", str(queries),
                          "-l", str(duration), "-Q", str(rate), "-D", "-q", "100"],
                         capture_output=True, text=True, timeout=duration + 30, check=True).stdout
    used = cpu_seconds(pid) - before
    completed = next(int(line.split()[2]) for line in out.splitlines() if "Queries completed:" in line)
    return completed / duration, used / max(completed, 1) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--rate", type=int, default=10_000)
    parser.add_argument("--duration", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--results", default=str(BENCH / "DNSSEC.md"))
    args = parser.parse_args()
    for tool in ("dnsperf", "taskset"):
        if shutil.which(tool) is None:
            raise SystemExit(f"needs {tool} (Debian: dnsperf, util-linux)")
    work = Path(tempfile.mkdtemp(prefix="smartdns-dnssec-bench-"))
    procs: dict[str, subprocess.Popen] = {}
    try:
        unsigned_load, signed_load, signatures, reload_time, resigned = load_times(args.records, work)
        for name, addr in SERVERS.items():
            procs[name] = start(name, addr, work, name == "signed")
        rng = random.Random(10)
        results: dict[tuple[str, str], list[tuple[float, float]]] = {}
        for _ in range(args.rounds):
            for mode in ("mix", "random"):
                for name, addr in SERVERS.items():
                    queries = work / f"q-{mode}-{name}.txt"
                    query_file(queries, mode == "mix", args.rate * args.duration, rng)  # new names every run
                    results.setdefault((mode, name), []).append(run(addr, procs[name].pid, queries, args.rate,
                                                                    args.duration))
    finally:
        for proc in procs.values():
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(work, ignore_errors=True)
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            check=False).stdout.strip()
    lines = ["# DNSSEC benchmark", "", "Written by `python3 bench/dnssec.py` (run it again to refresh).", "",
             f"- {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, nproc {os.cpu_count()}, git {commit}",
             (f"- servers: `smartdns serve --workers 1` on CPU 0; dnsperf -D (DO=1) on CPU 1 at {args.rate} qps, "
              f"{args.rounds} rounds of {args.duration} s, medians"), "",
             "## Load time", "",
             (f"{args.records:,}-record zone: unsigned {unsigned_load:.2f} s, signed {signed_load:.2f} s "
              f"({signatures:,} signatures); after a one-record edit, loaded and signed again in "
              f"{reload_time:.2f} s ({resigned:,} signatures made, the rest reused)"), "",
             "## CPU per query with DO=1", "",
             "| queries | unsigned µs/query | signed µs/query | signed / unsigned | qps (signed) |",
             "|---|---:|---:|---:|---:|"]
    for mode, label in (("mix", "45% MX, 45% dynamic A, 10% random names"), ("random", "random nonexistent names")):
        unsigned = statistics.median(cpu for _, cpu in results[(mode, "unsigned")])
        signed = statistics.median(cpu for _, cpu in results[(mode, "signed")])
        qps = statistics.median(q for q, _ in results[(mode, "signed")])
        lines.append(f"| {label} | {unsigned:.1f} | {signed:.1f} | {signed / unsigned:.2f} | {qps:,.0f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.results:
        Path(args.results).write_text(text)


if __name__ == "__main__":
    main()
