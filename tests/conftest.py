"""Shared test helpers: a real smartdns process on loopback, queried with dnspython.

`smartdns` (fixture) starts `python -m smartdns serve` on an ephemeral port of
127.0.0.1 with the zones, config and GeoIP files a test gives it, waits for its
"listening on" line, and stops it at the end of the test.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import dns.message
import dns.query
import pytest
import yaml

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
                 args: tuple[str, ...] = (), copy_example: bool = False) -> None:
        self.workdir = workdir
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
        cmd = [sys.executable, "-m", "smartdns", "serve", "--config", str(self.config_path),
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
