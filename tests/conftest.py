"""Shared test helpers: a real smartdns process on loopback, queried with dnspython.

`smartdns` (fixture) starts `python -m smartdns serve` on an ephemeral port of
127.0.0.1 with the zones, config and GeoIP files a test gives it, waits for its
"listening on" line, and stops it at the end of the test.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import struct
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import dns.message
import dns.name
import dns.query
import dns.rdatatype
import pytest
import yaml
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from smartdns.catalog import Catalog
from smartdns.config import SoaSettings
from smartdns.geo import Classifier
from smartdns.hotcache import Responder
from smartdns.responder import State
from smartdns.zonefile import CONTINENT_OF, load_zone

REPO = Path(__file__).resolve().parent.parent
EXAMPLE_ZONES = REPO / "zones"
LISTENING = re.compile(r"listening on (\S+?):(\d+)")
METRICS = re.compile(r"metrics on http://(\S+?):(\d+)/metrics")

# Loopback sources standing in for resolvers: the test GeoIP database maps
# DOMESTIC to CN and OVERSEAS to US (127.0.0.1, the default source, is unknown).
DOMESTIC = "127.0.0.2"
OVERSEAS = "127.0.0.3"
GEO_ROWS = f"{DOMESTIC}/32,CN,AS\n{OVERSEAS}/32,US,NA\n127.0.0.4/32,DE,EU\n"


def build_mmdb(directory: Path, rows: str = GEO_ROWS, name: str = "test.mmdb") -> Path:
    from smartdns.geodb import build_country_db

    csv = directory / (name + ".csv")
    csv.write_text(rows)
    out = directory / name
    build_country_db(csv, out)
    return out


class SmartDNS:
    """One running server process."""

    def __init__(self, workdir: Path, zones: dict[str, str] | None = None, config: dict[str, Any] | None = None,
                 args: tuple[str, ...] = (), copy_example: bool = False, command: tuple[str, ...] = ("serve",),
                 wrapper: tuple[str, ...] = ()) -> None:
        self.workdir = workdir
        self.wrapper = wrapper  # a command that execs the server (unshare ... sh -c '...; exec "$@"')
        self.command = command  # ("route",): the Postfix routing service instead of DNS
        self.zones_dir = workdir / "zones"
        self.zones_dir.mkdir(exist_ok=True)
        if copy_example:
            for path in EXAMPLE_ZONES.glob("*.yaml"):
                (self.zones_dir / path.name).write_text(path.read_text())
        for name, text in (zones or {}).items():
            self.write_zone(name, text)
        self.config_path = workdir / "smartdns.yaml"
        # each server its own metrics port, so tests can run side by side
        self.config_path.write_text(yaml.safe_dump({"zones": "zones", "metrics": "127.0.0.1:0", **(config or {})}))
        self.args = args
        self.proc: subprocess.Popen | None = None
        self.port = 0
        self.host = "127.0.0.1"
        self.log_lines: list[str] = []
        self._reader: threading.Thread | None = None

    def write_zone(self, name: str, text: str) -> Path:
        path = self.zones_dir / f"{name}.yaml"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(textwrap.dedent(text))
        tmp.replace(path)  # atomic, as an admin's deploy should be
        return path

    def start(self, timeout: float = 20.0, listen: str | None = "127.0.0.1:0") -> "SmartDNS":
        """`listen` None: the config file says where (no --listen flag to override it)."""
        cmd = [*self.wrapper, sys.executable, "-m", "smartdns", *self.command, "--config", str(self.config_path),
               *(["--listen", listen] if listen else []), *self.args]
        self.proc = subprocess.Popen(cmd, cwd=self.workdir, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        started = threading.Event()

        def read() -> None:
            assert self.proc and self.proc.stderr
            for line in self.proc.stderr:
                self.log_lines.append(line.rstrip("\n"))
                match = LISTENING.search(line)
                if match and not started.is_set():
                    self.port = int(match.group(2))
                    started.set()
            started.set()

        self._reader = threading.Thread(target=read, daemon=True)
        self._reader.start()
        if not started.wait(timeout) or not self.port:
            self.stop()
            raise RuntimeError("smartdns did not start:\n" + self.log)
        return self

    @property
    def metrics_port(self) -> int:
        return int(METRICS.search(self.wait_for_log(METRICS.pattern)).group(2))

    def http(self, path: str) -> tuple[int, str]:
        """GET a path of the metrics listener: (status, body)."""
        import urllib.error
        import urllib.request

        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}{path}", timeout=5) as reply:
                return reply.status, reply.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    @property
    def log(self) -> str:
        return "\n".join(self.log_lines)

    def wait_for_log(self, pattern: str, timeout: float = 10.0) -> str:
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.log_lines):
                if regex.search(line):
                    return line
            time.sleep(0.05)
        raise AssertionError(f"no log line matching {pattern!r} in:\n{self.log}")

    def query(self, name: str, rdtype: str = "A", *, source: str = "127.0.0.1", tcp: bool = False,
              timeout: float = 3.0, **make_query: Any) -> dns.message.Message:
        message = dns.message.make_query(name, rdtype, **make_query)
        return self.send(message, source=source, tcp=tcp, timeout=timeout)

    def send(self, message: dns.message.Message, *, source: str = "127.0.0.1", tcp: bool = False,
             timeout: float = 3.0) -> dns.message.Message:
        if tcp:
            return dns.query.tcp(message, self.host, port=self.port, source=source, timeout=timeout)
        return dns.query.udp(message, self.host, port=self.port, source=source, timeout=timeout,
                             ignore_unexpected=True)

    def signal(self, sig: int = signal.SIGHUP) -> None:
        assert self.proc
        self.proc.send_signal(sig)

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._reader:
            self._reader.join(2)
        return self.proc.returncode


def wait_for(predicate: Callable[[], object], timeout: float) -> float:
    """Poll until `predicate()` is true; how long it took. Fails the test after `timeout` seconds."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if predicate():
            return time.monotonic() - start
        time.sleep(0.05)
    raise AssertionError(f"condition not met within {timeout}s")


def children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def workers_of(server: SmartDNS) -> list[int]:
    """A server's worker processes: its children but the zone loader (whose pid the log gives)."""
    assert server.proc is not None
    loader = int(server.wait_for_log(r"zone loader started \(pid \d+\)").rsplit("pid ", 1)[1].rstrip(")"))
    return [pid for pid in children(server.proc.pid) if pid != loader]


# Fixtures that start a smartdns process (or run `smartdns` commands) for each test or module: a
# test that uses one takes seconds, so it is marked slow here rather than by hand in every module,
# and `python3 -m pytest -m "not slow"` leaves it out. Slow tests without such a fixture carry
# @pytest.mark.slow themselves.
PROCESS_FIXTURES = frozenset({"smartdns", "server", "live", "checked", "world"})  # world: test_route.py


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if PROCESS_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture
def smartdns(tmp_path: Path) -> Iterator[Callable[..., SmartDNS]]:
    """Factory: smartdns(zones={...}, config={...}, args=(...), copy_example=True) -> a started server."""
    servers: list[SmartDNS] = []

    def start(**kwargs: Any) -> SmartDNS:
        workdir = tmp_path / f"server{len(servers)}"
        workdir.mkdir()
        server = SmartDNS(workdir, **kwargs)
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def geo_mmdb(tmp_path: Path) -> Path:
    return build_mmdb(tmp_path)


# --------------------------------------------------------------------------- health checks
# Mail servers stand-ins on loopback and a zone that checks them (test_health, test_metrics, test_workers).

DOMESTIC_MX = "127.0.0.21"
OVERSEAS_MX = "127.0.0.22"


class Listener:
    """A real TCP listener that speaks like a mail server (or says `greeting`), in a thread."""

    def __init__(self, host: str, port: int = 0, greeting: bytes = b"220-mx.test ESMTP\r\n220 ready\r\n") -> None:
        self.host, self.greeting = host, greeting
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.port = self.sock.getsockname()[1]
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.running = True
        self.accepted = 0
        self.quits = 0
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        while self.running:
            try:
                conn, _ = self.sock.accept()
            except (socket.timeout, OSError):
                continue
            self.accepted += 1
            with conn:
                conn.settimeout(1)
                try:
                    conn.sendall(self.greeting)
                    if conn.recv(64).startswith(b"QUIT"):
                        self.quits += 1
                except OSError:
                    pass

    def close(self) -> None:
        self.running = False
        self.thread.join(2)
        self.sock.close()


def free_port(*hosts: str) -> int:
    """A port free on every host given (they are all loopback addresses)."""
    for _ in range(50):
        probe_sock = socket.socket()
        probe_sock.bind((hosts[0], 0))
        port = probe_sock.getsockname()[1]
        probe_sock.close()
        try:
            for host in hosts:
                s = socket.socket()
                s.bind((host, port))
                s.close()
            return port
        except OSError:
            continue
    raise RuntimeError("no common free port")


def health_zone(port: int, protocol: str = "SMTP") -> str:
    """example.com with a health-checked dynamic mx: DOMESTIC_MX for CN, OVERSEAS_MX for the rest."""
    return f"""
    ---
    '':
      - type: NS
        values: [ns1.example.com.]
      - type: MX
        value: {{exchange: mx.example.com., preference: 10}}
    mx:
      dynamic:
        pools:
          domestic:
            values:
              - value: {DOMESTIC_MX}
          overseas:
            values:
              - value: {OVERSEAS_MX}
        rules:
          - geos: [AS-CN]
            pool: domestic
          - pool: overseas
      octodns:
        healthcheck:
          port: {port}
          protocol: TCP
        smartdns:
          healthcheck:
            protocol: {protocol}
      ttl: 5
      type: A
      values: [{DOMESTIC_MX}, {OVERSEAS_MX}]
    ns1:
      type: A
      value: 127.0.0.53
    """


# --------------------------------------------------------------------------- the authoritative test zones
# Served by tests/test_authoritative.py's server, and loaded in-process by the fast-path and fuzz
# tests, so that all of them check the same data.

LONG = "x" * 200  # one TXT string of 200 bytes
SOA_TTL, SOA_MINIMUM = 600, 120  # the module server's SOA: negative TTL = min = 120
NET_SOA_TTL, NET_SOA_MINIMUM = 60, 300  # per-zone override for example.net: negative TTL = 60
DS_DIGEST = "2BB183AF5F22588179A53B0A98631FAD1A292118"


def _bigmx() -> str:
    exchanges = "\n".join(f"      - exchange: mx{i}.example.com.\n        preference: {i}" for i in range(12))
    hosts = "\n".join(
        f"mx{i}:\n  - type: A\n    value: 192.0.2.{120 + i}\n  - type: AAAA\n    value: 2001:db8::{120 + i:x}"
        for i in range(12)
    )
    return f"bigmx:\n  type: MX\n  values:\n{exchanges}\n{hosts}\n"


def _txt(name: str, count: int) -> str:
    values = "\n".join(f"    - {LONG}{i}" for i in range(count))
    return f"{name}:\n  type: TXT\n  values:\n{values}\n"


EXAMPLE_COM = textwrap.dedent(f"""\
    '':
      - type: MX
        values:
          - exchange: mx.example.com.
            preference: 10
      - type: NS
        values: [ns1.example.com., ns2.example.com.]
      - type: TXT
        value: v=spf1 mx -all
    '*.cw':
      type: CNAME
      value: www.example.com.
    '*.w':
      - type: A
        value: 192.0.2.1
      - type: TXT
        value: wild
    _sip._tcp:
      type: SRV
      values:
        - port: 5060
          priority: 10
          target: sip.example.com.
          weight: 5
    a.b.w:
      type: A
      value: 192.0.2.2
    biga:
      type: A
      values: [{", ".join(f"192.0.2.{i}" for i in range(1, 41))}]
    c1:
      type: CNAME
      value: c2.example.com.
    c2:
      type: CNAME
      value: c3.example.net.
    chain-nx:
      type: CNAME
      value: gone.example.com.
    chain-out:
      type: CNAME
      value: www.elsewhere.org.
    d:
      - type: DNAME
        value: example.net.
      - type: TXT
        value: dname owner
    d2:
      type: DNAME
      value: dt.example.com.
    dout:
      type: DNAME
      value: elsewhere.org.
    q.dt:
      type: A
      value: 192.0.2.78
    final:
      type: A
      value: 192.0.2.99
    mx:
      - type: A
        value: 192.0.2.25
      - type: AAAA
        value: 2001:db8::25
    nods:
      type: NS
      value: ns.nods.example.com.
    ns.nods:
      type: A
      value: 192.0.2.110
    ns1:
      - type: A
        value: 192.0.2.53
      - type: AAAA
        value: 2001:db8::53
    ns2:
      type: A
      value: 192.0.2.54
    ns1.sub:
      - type: A
        value: 192.0.2.100
      - type: AAAA
        value: 2001:db8::100
    sip:
      type: A
      value: 192.0.2.60
    sub:
      - type: DS
        value:
          algorithm: 8
          digest: {DS_DIGEST}
          digest_type: 1
          key_tag: 60485
      - type: NS
        values: [ns1.sub.example.com., ns.example.net.]
    www:
      type: A
      value: 192.0.2.80
    x.w:
      type: TXT
      value: exists
    """) + _bigmx() + _txt("medtxt", 2) + _txt("bigtxt", 4) + _txt("hugetxt", 8)

EXAMPLE_NET = textwrap.dedent("""\
    '':
      type: NS
      values: [ns1.example.com.]
    c3:
      type: CNAME
      value: final.example.com.
    q:
      type: A
      value: 192.0.2.77
    """)


def _geo_a(domestic: str, overseas: str) -> str:
    return textwrap.dedent(f"""\
          dynamic:
            pools:
              domestic:
                values:
                  - value: {domestic}
              overseas:
                values:
                  - value: {overseas}
            rules:
              - geos: [AS-CN]
                pool: domestic
              - pool: overseas
          ttl: 60
          type: A
          values: [{domestic}, {overseas}]
    """)


# Dynamic NS and SRV targets (item 8): the additional A is the same geo choice as a direct query.
GEO_EXAMPLE = textwrap.dedent("""\
    '':
      type: NS
      values: [ns.geo.example.]
    _smtp._tcp:
      type: SRV
      values:
        - port: 25
          priority: 10
          target: srv.geo.example.
          weight: 5
    ns:
    """) + textwrap.indent(_geo_a("192.0.2.10", "198.51.100.10"), "  ") + "srv:\n" + textwrap.indent(
    _geo_a("192.0.2.11", "198.51.100.11"), "  ")

# The SOA's MNAME one label below the apex and deeper (ns1.sub.mname.example.): a negative answer for
# sub.mname.example. or any name under it compresses the MNAME against the question, unlike the
# zone's other names; the fast path must give the reference path's bytes for both (item 15).
MNAME_EXAMPLE = textwrap.dedent("""\
    '':
      type: NS
      values: [ns1.sub.mname.example.]
    ns1.sub:
      type: A
      value: 192.0.2.53
    """)

ZONES = {"example.com.": EXAMPLE_COM, "example.net.": EXAMPLE_NET, "geo.example.": GEO_EXAMPLE,
         "mname.example.": MNAME_EXAMPLE}
CONFIG = {
    "soa": {"ttl": SOA_TTL, "minimum": SOA_MINIMUM,
            "zones": {"example.net": {"ttl": NET_SOA_TTL, "minimum": NET_SOA_MINIMUM}}},
    "tcp": {"idle_timeout": 1},
}

A, AAAA, NS, MX, TXT, SOA, CNAME, DNAME, DS, SRV, ANY = (
    dns.rdatatype.A, dns.rdatatype.AAAA, dns.rdatatype.NS, dns.rdatatype.MX, dns.rdatatype.TXT,
    dns.rdatatype.SOA, dns.rdatatype.CNAME, dns.rdatatype.DNAME, dns.rdatatype.DS, dns.rdatatype.SRV,
    dns.rdatatype.ANY,
)
TRANSPORTS = pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])


def start_authoritative(workdir: Path, config: dict | None = None) -> SmartDNS:
    """A server of the authoritative test zones (ZONES, CONFIG), with the test GeoIP database."""
    workdir.mkdir(parents=True, exist_ok=True)
    mmdb = build_mmdb(workdir)
    return SmartDNS(workdir, zones=ZONES, config={**CONFIG, "geodb": [str(mmdb)], **(config or {})}).start()


def read_frame(sock: socket.socket) -> bytes | None:
    """One RFC 1035 4.2.2 message off a TCP stream; None when the server closed it."""
    head = _read_exactly(sock, 2)
    if head is None:
        return None
    return _read_exactly(sock, struct.unpack("!H", head)[0])


def _read_exactly(sock: socket.socket, size: int) -> bytes | None:
    out = b""
    while len(out) < size:
        chunk = sock.recv(size - len(out))
        if not chunk:
            return None
        out += chunk
    return out


def header(qid: int = 0x1234, flags: int = 0x0100, qd: int = 1, an: int = 0, ns: int = 0, ar: int = 0) -> bytes:
    return struct.pack("!HHHHHH", qid, flags, qd, an, ns, ar)


def question(name: str = "www.example.com.", rdtype: int = A) -> bytes:
    return dns.name.from_text(name).to_wire() + struct.pack("!HH", rdtype, 1)


def opt_record(payload: int = 1232, version: int = 0, do: bool = False, options: bytes = b"") -> bytes:
    return b"\x00" + struct.pack("!HHBBHH", 41, payload, 0, version, 0x8000 if do else 0, len(options)) + options


def ecs_option(address: bytes = b"\xcb\x00\x71", source: int = 24, family: int = 1) -> bytes:
    body = struct.pack("!HBB", family, source, 0) + address
    return struct.pack("!HH", 8, len(body)) + body


# deterministic (seeded from the test), no example database written into the repository
PROPERTY = settings(deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def zone_data(tmp_path_factory: pytest.TempPathFactory) -> dict:
    directory = tmp_path_factory.mktemp("zones")
    zones = {}
    for name, text in ZONES.items():
        path = directory / f"{name}yaml"
        path.write_text(text)
        # the SOA settings of CONFIG, so that the SOA (and its serial) is the server's
        soa = (SoaSettings(ttl=NET_SOA_TTL, minimum=NET_SOA_MINIMUM) if name == "example.net."
               else SoaSettings(ttl=SOA_TTL, minimum=SOA_MINIMUM))
        zones[str(path)] = load_zone(path, soa)
    return zones


def fresh_responder(zones: dict, mmdb: Path) -> Responder:
    """As server.py's build_state does it; a fresh State has empty caches."""
    return Responder(State(Catalog(zones), Classifier((mmdb,), CONTINENT_OF)))


LABELS = st.sampled_from(["www", "foo", "w", "x", "b", "a", "d", "q", "sub", "host", "ns1", "c1", "mx",
                          "bigmx", "biga", "hugetxt", "medtxt", "dout", "*", "_sip", "_tcp", "ns", "srv", "zz"])
ZONE_SUFFIXES = st.sampled_from(["example.com.", "example.net.", "geo.example.", "example.org.", "com.", "",
                                 "mname.example.", "sub.mname.example."])
TYPES = st.sampled_from([A, AAAA, MX, NS, TXT, SOA, CNAME, DNAME, DS, SRV, ANY, dns.rdatatype.AXFR,
                         dns.rdatatype.IXFR, dns.rdatatype.OPT, 0, 65000])
CLASSES = st.sampled_from([1, 1, 1, 3, 255])


@st.composite
def qnames(draw) -> str:
    labels = draw(st.lists(LABELS, max_size=3))
    text = ".".join(labels + [draw(ZONE_SUFFIXES)]).strip(".") + "."
    if text == ".":
        return text
    # random 0x20 case
    return "".join(c.upper() if draw(st.booleans()) else c for c in text)


@st.composite
def ecs_options(draw) -> bytes:
    """One well-formed ECS option (RFC 7871 6: address bits beyond the prefix are zero)."""
    family = draw(st.sampled_from([1, 2]))
    source = draw(st.integers(0, 32 if family == 1 else 128))
    size = (source + 7) // 8
    address = bytearray(draw(st.binary(min_size=size, max_size=size)))
    if source % 8:
        address[-1] &= (0xFF << (8 - source % 8)) & 0xFF
    return ecs_option(bytes(address), source, family)


@st.composite
def edns_options(draw) -> bytes:
    parts = [draw(ecs_options())] if draw(st.booleans()) else []  # at most one ECS: two is FORMERR
    for _ in range(draw(st.integers(0, 2))):
        kind = draw(st.sampled_from(["nsid", "unknown", "cookie"]))
        if kind == "nsid":
            parts.append(struct.pack("!HH", 3, 0))
        elif kind == "unknown":
            body = draw(st.binary(max_size=8))
            parts.append(struct.pack("!HH", draw(st.integers(20, 65535)), len(body)) + body)
        else:
            parts.append(struct.pack("!HH", 10, 8) + b"\x01" * 8)
    return b"".join(draw(st.permutations(parts)))


@st.composite
def queries(draw) -> bytes:
    flags = draw(st.sampled_from([0, 0x0100, 0x0110, 0x0120, 0x0500]))  # RD, CD, AD, AA in a query
    edns = draw(st.booleans())
    data = header(draw(st.integers(0, 65535)), flags, ar=1 if edns else 0)
    data += dns.name.from_text(draw(qnames())).to_wire() + struct.pack("!HH", draw(TYPES), draw(CLASSES))
    if edns:
        data += opt_record(draw(st.sampled_from([0, 1, 511, 512, 1232, 1400, 4096, 65535])), 0,
                           draw(st.booleans()), draw(edns_options()))
    return data


@st.composite
def bad_ecs_options(draw) -> bytes:
    """ECS options RFC 7871 6 calls malformed: FORMERR on both paths."""
    kind = draw(st.sampled_from(["short", "long", "bits", "family", "prefix", "two"]))
    if kind == "short":
        return ecs_option(b"\xcb\x00", 24)
    if kind == "long":
        return ecs_option(b"\xcb\x00\x71\x00", 24)
    if kind == "bits":
        return ecs_option(b"\xcb\x00\x71", draw(st.integers(17, 23)))
    if kind == "family":
        return ecs_option(b"\xcb", 8, family=3)
    if kind == "prefix":
        return ecs_option(b"\xcb" * 5, 33)
    return draw(ecs_options()) + draw(ecs_options())


@st.composite
def bad_ecs_queries(draw) -> bytes:
    data = header(draw(st.integers(0, 65535)), 0x0100, ar=1) + question(draw(qnames()))
    return data + opt_record(1232, 0, draw(st.booleans()), draw(bad_ecs_options()))
