#!/usr/bin/env python3
"""How smartdns's costs grow with long segment lists, big zones and many zones (issue 13).

    python3 bench/scale.py                          # this checkout, full sizes
    python3 bench/scale.py --repo /tmp/old --out before.json --max-subnets 3000
    python3 bench/scale.py --out after.json --compare before.json

Builds every scenario in a temporary directory, runs the real server (`python -m smartdns
serve`, PYTHONPATH=--repo) on 127.0.0.1 and measures it from outside with raw UDP queries:

- a dynamic record whose rule lists 10 / 1,000 / 10,000 subnets: the cost of a decision for a
  client never seen before, in-process (Responder.respond on queries with distinct ECS
  subnets), the rate the server answers such queries, and `smartdns check` of that zone;
- one zone of 100 / 1,000 / 10,000 / 50,000 records: start to first answer, memory (RSS of
  every process, and their PSS sum), one record edited until it is served, and queries lost
  and p99 latency at ~1,000 qps during that reload; the worst latency while serving new ECS
  clients (a full garbage collection shows up here);
- 1,000 zone files of 10 records: start, and one file edited until served.

Every loop is bounded in count and time, every process started is ended, only loopback.
`--compare` prints a previous run's figures beside this one's.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import select
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
QUERY_TIMEOUT = 1.0  # a query unanswered after this long counts as lost


# ---------------------------------------------------------------- packets

def qname_wire(name: str) -> bytes:
    return b"".join(bytes([len(label)]) + label.encode() for label in name.rstrip(".").split(".")) + b"\0"


def make_query(qid: int, name: str, qtype: int = 1, ecs: tuple[int, int, int] | None = None) -> bytes:
    """A query; `ecs` = (a, b, c) adds an EDNS Client Subnet option for a.b.c.0/24."""
    header = struct.pack("!HHHHHH", qid, 0, 1, 0, 0, 1 if ecs else 0)
    packet = header + qname_wire(name) + struct.pack("!HH", qtype, 1)
    if ecs:
        option = struct.pack("!HBB", 1, 24, 0) + bytes(ecs)
        rdata = struct.pack("!HH", 8, len(option)) + option
        packet += b"\0" + struct.pack("!HHIH", 41, 1232, 0, len(rdata)) + rdata
    return packet


def random_ecs(rng: random.Random) -> tuple[int, int, int]:
    """A global /24 (not private, loopback or multicast): a client the server may not have seen."""
    while True:
        a = rng.randint(1, 223)
        if a not in (10, 100, 127, 169, 172, 192, 198, 203):
            return a, rng.randint(0, 255), rng.randint(0, 255)


def first_a(response: bytes) -> str | None:
    """The first A record's address in a response (enough for our own zones), None if there is none."""
    import dns.message

    try:
        message = dns.message.from_wire(response)
    except Exception:
        return None
    for rrset in message.answer:
        if rrset.rdtype == 1:
            return rrset[0].address
    return None


# ---------------------------------------------------------------- zones

NS = {"type": "NS", "values": ["ns1.{z}", "ns2.{z}"]}


def apex(zone: str) -> list[dict]:
    return [{"type": "NS", "values": [f"ns1.{zone}.", f"ns2.{zone}."]},
            {"type": "MX", "values": [{"exchange": f"mx.{zone}.", "preference": 10}]}]


def dynamic_mx(subnets: list[str]) -> dict:
    rules: list[dict] = [{"pool": "domestic", "subnets": subnets}] if subnets else []
    return {"type": "A", "ttl": 60, "values": ["10.9.0.1", "10.9.0.2"],
            "dynamic": {"pools": {"domestic": {"values": [{"value": "10.9.0.1"}]},
                                  "overseas": {"values": [{"value": "10.9.0.2"}]}},
                        "rules": rules + [{"pool": "overseas"}]}}


def rule_subnets(count: int) -> list[str]:
    """`count` distinct /24s in 20.0.0.0/6: some fresh clients fall in them, most do not."""
    return [f"{20 + i // 65536}.{i // 256 % 256}.{i % 256}.0/24" for i in range(count)]


def big_zone(zone: str, records: int, edit: int = 0) -> dict:
    """A zone of `records` records: mostly A, some AAAA, TXT and MX, one dynamic record."""
    data: dict[str, Any] = {"": apex(zone), "mx": dynamic_mx(rule_subnets(10)),
                            "ns1": {"type": "A", "value": "10.8.0.1"}, "ns2": {"type": "A", "value": "10.8.0.2"}}
    for i in range(records - 5):
        name = f"host{i}"
        kind = i % 10
        if kind == 7:
            data[name] = {"type": "TXT", "value": f"v=spf1 ip4:10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256} -all"}
        elif kind == 8:
            data[name] = {"type": "AAAA", "value": f"fd00::{i:x}"}
        elif kind == 9:
            data[name] = {"type": "MX", "values": [{"exchange": f"mx.{zone}.", "preference": 10}]}
        else:
            data[name] = {"type": "A", "ttl": 300, "value": f"10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}"}
    data["host0"] = {"type": "A", "value": f"10.250.0.{edit % 250 + 1}"}
    return data


def zone_text(data: dict) -> str:
    import yaml

    return yaml.safe_dump(data, sort_keys=False, width=1000)


def write_zone(directory: Path, zone: str, data: dict | str) -> Path:
    """`data` as YAML (or already YAML text: an edit timed under load must not wait for a dumper)."""
    path = directory / f"{zone}.yaml"
    tmp = directory / f".{zone}.tmp"
    tmp.write_text(data if isinstance(data, str) else zone_text(data))
    os.replace(tmp, path)  # as a deploy should: the watcher never sees half a file
    return path


# ---------------------------------------------------------------- server

def free_port() -> int:
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind((HOST, 0))
            port = udp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind((HOST, port))
                except OSError:
                    continue
            return port
    raise RuntimeError("no free port")


def server_environment(repo: Path) -> dict[str, str]:
    """The server's environment: this checkout's code, and its bytecode cached as an installed package's
    is (PYTHONDONTWRITEBYTECODE, set on this machine, made every start compile all of smartdns again)."""
    env = {**os.environ, "PYTHONPATH": str(repo)}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


class Server:
    def __init__(self, repo: Path, workdir: Path, workers: int = 1) -> None:
        self.repo, self.workdir, self.workers = repo, workdir, workers
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.started = 0.0

    def start(self) -> "Server":
        config = self.workdir / "smartdns.yaml"
        config.write_text("zones: zones\nmetrics: false\n")
        self.log = open(self.workdir / "server.log", "w")
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "smartdns", "serve", "--config", str(config), "--listen", f"{HOST}:{self.port}",
             "--workers", str(self.workers)],
            cwd=self.workdir, stdout=subprocess.DEVNULL, stderr=self.log,
            env=server_environment(self.repo))
        return self

    def first_answer(self, name: str, timeout: float) -> float:
        """Seconds from start until `name` is answered (NOERROR with an answer)."""
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(0.05)
            deadline = self.started + timeout
            while time.monotonic() < deadline:
                assert self.proc is not None
                if self.proc.poll() is not None:
                    raise RuntimeError(f"server exited: {(self.workdir / 'server.log').read_text()[-2000:]}")
                sock.sendto(make_query(1, name), (HOST, self.port))
                try:
                    data = sock.recv(4096)
                    if data[3] & 0x0F == 0 and struct.unpack("!H", data[6:8])[0] > 0:
                        return time.monotonic() - self.started
                except (socket.timeout, ConnectionRefusedError):
                    time.sleep(0.02)
        raise RuntimeError(f"no answer for {name} within {timeout} s")

    def pids(self) -> list[int]:
        assert self.proc is not None
        out = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True).stdout
        return [self.proc.pid] + [int(p) for p in out.split()]

    def cpu_seconds(self) -> float:
        """CPU time used so far by the server's processes (the ones that ended included): on a busy
        machine a steadier measure of work than the wall clock."""
        ticks = 0
        for pid in self.pids():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                ticks += sum(int(f) for f in fields[11:15])  # utime, stime, cutime, cstime
            except (OSError, IndexError, ValueError):
                pass
        return round(ticks / os.sysconf("SC_CLK_TCK"), 2)

    def memory(self) -> dict[str, Any]:
        rss, pss = [], 0
        for pid in self.pids():
            try:
                status = Path(f"/proc/{pid}/status").read_text()
                rss.append(int(next(s for s in status.splitlines() if s.startswith("VmRSS:")).split()[1]) // 1024)
                rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
                pss += int(next(s for s in rollup.splitlines() if s.startswith("Pss:")).split()[1]) // 1024
            except (OSError, StopIteration):
                pass
        return {"rss_mib": rss, "pss_mib": pss}

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if getattr(self, "log", None):
            self.log.close()


# ---------------------------------------------------------------- load

def flood(port: int, packets: Callable[[int], bytes], seconds: float, window: int = 32, limit: int = 200_000) -> float:
    """Answers per second with `window` queries in flight, for `seconds` (or `limit` queries)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    sent = answered = outstanding = 0
    start = time.monotonic()
    end = start + seconds
    last_answer = start
    try:
        while time.monotonic() < end and sent < limit:
            while outstanding < window and sent < limit:
                sock.sendto(packets(sent), (HOST, port))
                sent += 1
                outstanding += 1
            ready, _, _ = select.select([sock], [], [], 0.2)
            if not ready:
                if time.monotonic() - last_answer > QUERY_TIMEOUT:
                    outstanding = 0  # lost ones: refill the window
                continue
            while True:
                try:
                    sock.recv(4096)
                except BlockingIOError:
                    break
                answered += 1
                outstanding -= 1
                last_answer = time.monotonic()
    finally:
        sock.close()
    return answered / (time.monotonic() - start)


LATE = 0.005  # seconds behind its schedule at which the paced client skips rather than bursts
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # Linux's value; Python 3.11 does not name it


def kernel_time(ancillary: list[tuple[int, int, bytes]]) -> float:
    """The SO_TIMESTAMPNS stamp of a received datagram (the wall clock now if there is none)."""
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
            seconds, nanoseconds = struct.unpack("qq", data[:16])
            return seconds + nanoseconds / 1e9
    return time.time()


class Paced:
    """Queries at a fixed rate from one socket; latency of each answer, and which were lost."""

    def __init__(self, port: int, rate: float, packets: Callable[[int, int], bytes]) -> None:
        self.port, self.rate, self.packets = port, rate, packets
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setblocking(False)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        # Each answer's arrival as the kernel stamped it: the time this process takes to get to it (on a
        # 2-core machine where the server, its loader and this client share the cores) is not the server's
        self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self.pending: dict[int, float] = {}  # query id -> sent at (wall clock, as the kernel stamps)
        self.samples: list[tuple[float, float | None]] = []  # (sent at, latency or None if lost)
        self.sent = 0
        self.skipped = 0  # queries not sent because this client was late for them
        self.next_send = time.monotonic()

    def step(self, until: float) -> None:
        """Send what is due and take in answers until `until` (monotonic)."""
        while True:
            now = time.monotonic()
            if now >= until:
                return
            if now - self.next_send > LATE:
                # This client was held up (2 cores for it, the server and the loader): the queries it is late
                # for are skipped, not sent in one burst whose queueing would be counted as the server's
                self.skipped += int((now - self.next_send) * self.rate)
                self.next_send = now
            while self.next_send <= now:
                qid = self.sent % 65536
                if qid in self.pending:  # a 65-second-old query: lost
                    self.samples.append((self.pending.pop(qid), None))
                packet = self.packets(qid, self.sent)
                self.pending[qid] = time.time()
                self.sock.sendto(packet, (HOST, self.port))
                self.sent += 1
                self.next_send += 1 / self.rate
            ready, _, _ = select.select([self.sock], [], [], max(0.0, min(self.next_send, until) - now))
            if ready:
                while True:
                    try:
                        data, ancillary, _, _ = self.sock.recvmsg(4096, 64)
                    except BlockingIOError:
                        break
                    got = kernel_time(ancillary)
                    sent_at = self.pending.pop(struct.unpack("!H", data[:2])[0], None)
                    if sent_at is not None:
                        self.samples.append((sent_at, got - sent_at))
            wall = time.time()
            expired = [q for q, at in self.pending.items() if wall - at > QUERY_TIMEOUT]
            for qid in expired:
                self.samples.append((self.pending.pop(qid), None))

    def finish(self) -> None:
        """Wait out what is in flight (no new queries)."""
        self.rate = 1e-9
        self.next_send = float("inf")
        self.step(time.monotonic() + QUERY_TIMEOUT + 0.1)
        for at in list(self.pending.values()):
            self.samples.append((at, None))
        self.pending.clear()
        self.sock.close()

    def between(self, start: float, end: float) -> dict[str, Any]:
        """The queries sent from `start` to `end` (wall clock)."""
        window = [latency for at, latency in self.samples if start <= at <= end]
        answered = sorted(latency for latency in window if latency is not None)
        return {"queries": len(window), "lost": len(window) - len(answered), "client_skipped": self.skipped,
                "p99_ms": round(percentile(answered, 0.99) * 1000, 2) if answered else None,
                "max_ms": round(answered[-1] * 1000, 1) if answered else None}


def percentile(values: list[float], p: float) -> float:
    return values[min(len(values) - 1, int(p * len(values)))]


def edit_until_served(server: Server, path: Path, write: Callable[[], None], name: str, expect: str,
                      rate: float, timeout: float, known: Callable[[int, int], bytes]) -> dict[str, Any]:
    """Load at `rate` qps on known names; write the edit; seconds until `name` answers `expect`."""
    load = Paced(server.port, rate, known)
    check = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    check.settimeout(0.2)
    try:
        load.step(time.monotonic() + 1.0)  # a second of steady state first
        edited, edited_wall = time.monotonic(), time.time()
        write()
        served = None
        while time.monotonic() - edited < timeout:
            load.step(time.monotonic() + 0.02)
            check.sendto(make_query(7777, name), (HOST, server.port))
            try:
                if first_a(check.recv(4096)) == expect:
                    served = time.monotonic() - edited
                    break
            except socket.timeout:
                pass
        load.step(time.monotonic() + 1.0)
        load.finish()
    finally:
        check.close()
    end = edited_wall + (served if served is not None else timeout) + 1.0
    return {"edit_served_s": round(served, 2) if served is not None else None, **load.between(edited_wall, end)}


# ---------------------------------------------------------------- scenarios

IN_PROCESS = r"""
import json, random, sys, time
sys.path.insert(0, sys.argv[1])
sys.path.insert(0, sys.argv[2])
from scale import make_query, random_ecs
from smartdns.config import load_config
import smartdns.server as server
try:
    from smartdns.hotcache import Responder  # where it is since the responder was split
except ImportError:
    from smartdns.responder import Responder
config = load_config(sys.argv[3])
state = server.build_state(config)[0]
responder = Responder(state, counting=False)
rng = random.Random(1)
packets = [make_query(i % 65536, "mx.sub.test", 1, random_ecs(rng)) for i in range(int(sys.argv[4]))]
for p in packets[:50]:
    responder.respond(p, "127.0.0.1", True)
start = time.process_time()  # CPU time: steadier than the wall clock on a shared machine
for p in packets[50:]:
    responder.respond(p, "127.0.0.1", True)
print(json.dumps((time.process_time() - start) / (len(packets) - 50)))
"""


def subnets_scenario(repo: Path, count: int, base: Path, check_timeout: float) -> dict[str, Any]:
    work = base / f"subnets{count}"
    (work / "zones").mkdir(parents=True)
    write_zone(work / "zones", "sub.test", {"": apex("sub.test"), "mx": dynamic_mx(rule_subnets(count))})
    (work / "smartdns.yaml").write_text("zones: zones\nmetrics: false\n")
    env = server_environment(repo)
    out: dict[str, Any] = {}
    start = time.monotonic()
    try:
        subprocess.run([sys.executable, "-m", "smartdns", "check", "--config", str(work / "smartdns.yaml")],
                       env=env, capture_output=True, timeout=check_timeout, check=True)
        out["check_s"] = round(time.monotonic() - start, 2)
    except subprocess.TimeoutExpired:
        out["check_s"] = f">{check_timeout:.0f}"
        return out  # the server would take as long to start
    decisions = 300 if count >= 5000 else 2000
    per = subprocess.run([sys.executable, "-c", IN_PROCESS, str(repo), str(Path(__file__).parent),
                          str(work / "smartdns.yaml"), str(decisions + 50)],
                         env=env, capture_output=True, text=True, timeout=600)
    if per.returncode == 0:
        out["decision_us"] = round(json.loads(per.stdout.strip().splitlines()[-1]) * 1e6, 1)
    else:
        out["decision_us"] = "error: " + per.stderr.strip().splitlines()[-1][:100]
    server = Server(repo, work).start()
    try:
        out["start_s"] = round(server.first_answer("mx.sub.test", 600), 2)
        rng = random.Random(2)
        out["served_qps"] = round(flood(server.port, lambda i: make_query(i % 65536, "mx.sub.test", 1, random_ecs(rng)),
                                        4.0, window=16))
        out["rss_mib"] = server.memory()["rss_mib"]
        out.update(known_during_flood(server.port, "sub.test", 8.0))
    finally:
        server.stop()
    return out


FLOOD_PROCESS = r"""
import random, sys
sys.path.insert(0, sys.argv[1])
from scale import flood, make_query, random_ecs
rng = random.Random(5)
print(flood(int(sys.argv[2]), lambda i: make_query(i % 65536, sys.argv[3], 1, random_ecs(rng)), float(sys.argv[4]),
            window=16))
"""


def known_during_flood(port: int, zone: str, seconds: float) -> dict[str, Any]:
    """Latency of a known name (the apex MX, 200 qps) while another process floods the dynamic record with
    new ECS clients as fast as they are answered: each one a new cache entry, decision and located client."""
    flooder = subprocess.Popen([sys.executable, "-c", FLOOD_PROCESS, str(Path(__file__).parent), str(port),
                                f"mx.{zone}", str(seconds)], stdout=subprocess.PIPE, text=True)
    try:
        known = Paced(port, 200, lambda qid, n: make_query(qid, zone, 15))
        begin = time.time()
        known.step(time.monotonic() + seconds)
        known.finish()
        flood_qps = float(flooder.communicate(timeout=60)[0].strip() or 0)
    finally:
        if flooder.poll() is None:
            flooder.kill()
            flooder.wait()
    during = known.between(begin + 0.5, begin + seconds)
    return {"flood_qps": round(flood_qps), "flood_known_p99_ms": during["p99_ms"],
            "flood_known_max_ms": during["max_ms"], "flood_known_lost": during["lost"]}


def big_zone_scenario(repo: Path, records: int, base: Path, rate: float, workers: int = 1) -> dict[str, Any]:
    work = base / f"big{records}w{workers}"
    zones = work / "zones"
    zones.mkdir(parents=True)
    write_zone(zones, "big.test", big_zone("big.test", records))
    out: dict[str, Any] = {}
    server = Server(repo, work, workers).start()
    try:
        out["start_s"] = round(server.first_answer("host0.big.test", 600), 2)
        out["start_cpu_s"] = server.cpu_seconds()
        time.sleep(1.0)  # every worker up, the loader's garbage gone
        memory = server.memory()
        out.update(memory)
        rng = random.Random(3)
        names = [f"host{i}.big.test" for i in range(1, min(records - 5, 2000)) if i % 10 < 7]

        def known(qid: int, n: int) -> bytes:
            return make_query(qid, rng.choice(names))

        def fresh(qid: int, n: int) -> bytes:
            return make_query(qid, "mx.big.test", 1, random_ecs(rng))

        serving = Paced(server.port, rate, fresh)  # new ECS clients: allocations, so collections
        begin, begin_wall = time.monotonic(), time.time()
        serving.step(begin + 5.0)
        serving.finish()
        steady = serving.between(begin_wall, begin_wall + 5.0)
        out["serve_p99_ms"], out["serve_max_ms"], out["serve_lost"] = steady["p99_ms"], steady["max_ms"], steady["lost"]
        edited = zone_text(big_zone("big.test", records, edit=1))
        edit = edit_until_served(server, zones / "big.test.yaml", lambda: write_zone(zones, "big.test", edited),
                                 "host0.big.test", "10.250.0.2", rate, 120.0, known)
        out.update({f"reload_{k}": v for k, v in edit.items()})
    finally:
        server.stop()
    return out


def many_zones_scenario(repo: Path, count: int, base: Path, rate: float) -> dict[str, Any]:
    work = base / f"many{count}"
    zones = work / "zones"
    zones.mkdir(parents=True)
    names = [f"z{i:04d}.test" for i in range(count)]
    for name in names:
        write_zone(zones, name, big_zone(name, 10))
    out: dict[str, Any] = {}
    server = Server(repo, work).start()
    try:
        out["start_s"] = round(server.first_answer(f"host0.{names[-1]}", 600), 2)
        out["start_cpu_s"] = server.cpu_seconds()
        time.sleep(1.0)
        out.update(server.memory())
        rng = random.Random(4)
        target = names[count // 2]
        edited = zone_text(big_zone(target, 10, edit=1))
        edit = edit_until_served(server, zones / f"{target}.yaml", lambda: write_zone(zones, target, edited),
                                 f"host0.{target}", "10.250.0.2", rate, 120.0,
                                 lambda qid, n: make_query(qid, f"host1.{rng.choice(names)}"))
        out.update({f"reload_{k}": v for k, v in edit.items()})
    finally:
        server.stop()
    return out


def run_all(args: argparse.Namespace) -> dict[str, Any]:
    repo = Path(args.repo).resolve()
    results: dict[str, Any] = {"repo": str(repo), "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                               "subnets": {}, "zone": {}, "many": {}}
    with tempfile.TemporaryDirectory(prefix="smartdns-scale-") as tmp:
        base = Path(tmp)
        for count in [c for c in (10, 1000, 3000, 10000) if c <= args.max_subnets and (c != 3000 or args.max_subnets < 10000)]:
            results["subnets"][str(count)] = subnets_scenario(repo, count, base, args.check_timeout)
            print(f"subnets {count}: {results['subnets'][str(count)]}", flush=True)
        for records in [r for r in (100, 1000, 10000, 50000) if r <= args.max_records]:
            results["zone"][str(records)] = big_zone_scenario(repo, records, base, args.rate)
            print(f"zone {records}: {results['zone'][str(records)]}", flush=True)
        base_zone = results["zone"].get("100")
        for records, figures in results["zone"].items():  # memory a record adds, over the 100-record server
            if base_zone and records != "100" and "pss_mib" in figures:
                figures["bytes_per_record"] = round((figures["pss_mib"] - base_zone["pss_mib"]) * 1048576
                                                    / (int(records) - 100))
        if args.workers_records:
            key = f"{args.workers_records}w2"
            results["zone"][key] = big_zone_scenario(repo, args.workers_records, base, args.rate, workers=2)
            print(f"zone {key}: {results['zone'][key]}", flush=True)
        if args.zones:
            results["many"][str(args.zones)] = many_zones_scenario(repo, args.zones, base, args.rate)
            print(f"many {args.zones}: {results['many'][str(args.zones)]}", flush=True)
    return results


# ---------------------------------------------------------------- table

ROWS = [
    ("subnets", "decision_us", "fresh-client decision, in-process (CPU us)"),
    ("subnets", "served_qps", "fresh-client queries answered per second"),
    ("subnets", "check_s", "`smartdns check` (s)"),
    ("subnets", "start_s", "start to first answer (s)"),
    ("subnets", "flood_qps", "a flood of new ECS clients: answered per second"),
    ("subnets", "flood_known_p99_ms", "meanwhile a known name: p99 (ms)"),
    ("subnets", "flood_known_max_ms", "meanwhile a known name: worst (ms)"),
    ("zone", "start_s", "start to first answer (s)"),
    ("zone", "start_cpu_s", "CPU used until the first answer, all processes (s)"),
    ("zone", "rss_mib", "RSS per process (MiB)"),
    ("zone", "pss_mib", "PSS, all processes (MiB)"),
    ("zone", "bytes_per_record", "PSS per record, over the 100-record zone (bytes)"),
    ("zone", "serve_max_ms", "worst latency serving new ECS clients, 1,000 qps (ms)"),
    ("zone", "reload_edit_served_s", "one record edited until served (s)"),
    ("zone", "reload_lost", "queries lost during that reload"),
    ("zone", "reload_p99_ms", "p99 during that reload (ms)"),
    ("zone", "reload_max_ms", "worst latency during that reload (ms)"),
    ("many", "start_s", "start to first answer (s)"),
    ("many", "start_cpu_s", "CPU used until the first answer, all processes (s)"),
    ("many", "rss_mib", "RSS per process (MiB)"),
    ("many", "reload_edit_served_s", "one file edited until served (s)"),
    ("many", "reload_lost", "queries lost during that reload"),
    ("many", "reload_p99_ms", "p99 during that reload (ms)"),
]
SCENARIO_TITLE = {"subnets": "rule with N subnets", "zone": "one zone of N records", "many": "N zones of 10 records"}


def show(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, list):
        return "+".join(str(v) for v in value)
    if isinstance(value, float) and value >= 100:
        return f"{value:,.0f}"
    if isinstance(value, int) and value >= 10000:
        return f"{value:,}"
    return str(value)


def table(after: dict[str, Any], before: dict[str, Any] | None) -> str:
    lines = ["| scenario | N | measure | " + ("before | after |" if before else "value |"),
             "|---|---|---|" + ("---|---|" if before else "---|")]
    for scenario, key, label in ROWS:
        sizes = list(dict.fromkeys(list((before or {}).get(scenario, {})) + list(after.get(scenario, {}))))
        for size in sorted(sizes, key=lambda s: (len(s), s)):
            now = after.get(scenario, {}).get(size, {}).get(key)
            then = (before or {}).get(scenario, {}).get(size, {}).get(key)
            if now is None and then is None:
                continue
            row = f"| {SCENARIO_TITLE[scenario]} | {size} | {label} | "
            row += f"{show(then)} | {show(now)} |" if before else f"{show(now)} |"
            lines.append(row)
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repo", default=str(REPO), help="the smartdns checkout to measure (default: this one)")
    parser.add_argument("--out", help="write the figures as JSON here")
    parser.add_argument("--compare", help="a previous --out file: print its figures beside these")
    parser.add_argument("--table-only", action="store_true", help="print the table of --out (and --compare), run nothing")
    parser.add_argument("--max-subnets", type=int, default=10000)
    parser.add_argument("--max-records", type=int, default=50000)
    parser.add_argument("--workers-records", type=int, default=50000,
                        help="records of the zone also served with 2 workers (0: skip)")
    parser.add_argument("--zones", type=int, default=1000, help="zones of the many-zones scenario (0: skip)")
    parser.add_argument("--rate", type=float, default=1000.0, help="qps during reloads")
    parser.add_argument("--check-timeout", type=float, default=300.0)
    args = parser.parse_args()
    if args.table_only:
        results = json.loads(Path(args.out).read_text())
    else:
        results = run_all(args)
        if args.out:
            Path(args.out).write_text(json.dumps(results, indent=1))
    before = json.loads(Path(args.compare).read_text()) if args.compare else None
    print(table(results, before))


if __name__ == "__main__":
    main()
