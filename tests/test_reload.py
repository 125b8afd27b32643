"""Live reload: edits go live within seconds, no query is lost, broken edits change nothing."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import textwrap
import threading
import time

import dns.exception
import dns.message
import dns.query
import dns.rcode
import pytest

from conftest import wait_for

ZONE = """
---
'':
  - type: NS
    values: [ns1.example.com.]
  - type: TXT
    value: version {version}
mx:
  type: A
  ttl: 60
  value: {address}
ns1:
  type: A
  value: 127.0.0.53
"""


def address_of(server) -> str:
    return server.query("mx.example.com", "A").answer[0][0].address


class QueryLoop(threading.Thread):
    """Queries as fast as it can (bounded in count and time) and counts every failure."""

    def __init__(self, server, limit: int = 500_000, seconds: float = 30) -> None:
        super().__init__(daemon=True)
        self.server, self.limit, self.seconds = server, limit, seconds
        self.sent = self.lost = self.failed = 0
        self.answers: set[str] = set()
        self.stop_flag = threading.Event()

    def run(self) -> None:
        deadline = time.monotonic() + self.seconds
        while not self.stop_flag.is_set() and self.sent < self.limit and time.monotonic() < deadline:
            self.sent += 1
            try:
                response = dns.query.udp(dns.message.make_query("mx.example.com", "A"), "127.0.0.1",
                                         port=self.server.port, timeout=2)
            except dns.exception.Timeout:
                self.lost += 1
                continue
            if response.rcode() != dns.rcode.NOERROR or not response.answer:
                self.failed += 1
            else:
                self.answers.add(response.answer[0][0].address)


def test_edit_goes_live_with_zero_lost_queries(smartdns):
    server = smartdns(zones={"example.com": ZONE.format(version=1, address="192.0.2.1")})
    loop = QueryLoop(server)
    loop.start()
    time.sleep(0.5)
    for version, address in ((2, "192.0.2.2"), (3, "192.0.2.3"), (4, "192.0.2.4")):
        server.write_zone("example.com", ZONE.format(version=version, address=address))
        took = wait_for(lambda address=address: address_of(server) == address, 5)
        assert took < 5
    wait_for(lambda: "192.0.2.4" in loop.answers, 5)
    loop.stop_flag.set()
    loop.join(10)
    assert loop.sent > 200, loop.sent
    assert (loop.lost, loop.failed) == (0, 0), vars(loop)
    assert loop.answers >= {"192.0.2.1", "192.0.2.4"}
    # every edit went live (above); with workers only worker 0 logs its reloads, once each, and two
    # edits close together may reach it as one
    reloads = server.log.count("reloaded (files changed)")
    assert 1 <= reloads <= 3, server.log


def watcher_reloads(server) -> list[str]:
    """The watcher's reloads, as the serving process (with workers: worker 0, for all) logs them."""
    return [line for line in server.log_lines if "reloaded (files changed)" in line]


@pytest.mark.parametrize("workers", [1, 2])
def test_edits_are_noticed_without_sighup_and_a_burst_is_few_reloads(smartdns, workers):
    names = [f"z{i:02d}.test" for i in range(50)]
    server = smartdns(zones={name: ZONE.format(version=1, address="10.0.0.1") for name in names},
                      args=("--workers", str(workers)))
    served = lambda name: server.query(f"mx.{name}", "A").answer[0][0].address  # noqa: E731
    server.write_zone(names[7], ZONE.format(version=2, address="10.0.0.2"))  # no signal: the watcher must see it
    wait_for(lambda: served(names[7]) == "10.0.0.2", 10)
    server.wait_for_log(r"reloaded \(files changed\): 50 zones \(1 parsed again\)")  # the one file alone
    assert len(watcher_reloads(server)) == 1, server.log
    for name in names:  # as a `git checkout` that changes every file
        server.write_zone(name, ZONE.format(version=3, address="10.0.0.3"))
    for name in names:
        wait_for(lambda name=name: served(name) == "10.0.0.3", 10)
    time.sleep(1.0)  # a reload still to come would be logged by now
    # a reload when the burst is over; one or two more if a loaded machine spread the writes out
    assert 2 <= len(watcher_reloads(server)) <= 4, server.log


def inotify_limited_to_zero(limit: str) -> tuple[str, ...]:
    """A wrapper that starts the server in a user namespace of its own whose inotify `limit` is 0."""
    if not shutil.which("unshare") or subprocess.run(["unshare", "-Ur", "true"], capture_output=True).returncode:
        pytest.skip("needs unshare -U (user namespaces) to set inotify limits for one process")
    return ("unshare", "-Ur", "sh", "-c", f'echo 0 > /proc/sys/user/{limit} && exec "$@"', "sh")


@pytest.mark.parametrize("limit, named", [("max_inotify_watches", "max_user_watches"),
                                          ("max_inotify_instances", "max_user_instances")])
def test_past_the_inotify_limits_it_warns_and_looks_at_the_files_instead(smartdns, limit, named):
    server = smartdns(zones={"example.com": ZONE.format(version=1, address="192.0.2.1")},
                      wrapper=inotify_limited_to_zero(limit))
    server.wait_for_log(rf"WARNING .*inotify .* limit is reached \(raise fs\.inotify\.{named}\): "
                        r"looking at the files every 1 s instead")
    server.write_zone("example.com", ZONE.format(version=2, address="192.0.2.2"))
    wait_for(lambda: address_of(server) == "192.0.2.2", 10)
    server.wait_for_log(r"reloaded \(files changed\)")


def test_serial_follows_content_not_time(smartdns):
    server = smartdns(zones={"example.com": ZONE.format(version=1, address="192.0.2.1")})
    serial = lambda: server.query("example.com", "SOA").answer[0][0].serial  # noqa: E731
    first = serial()
    other = smartdns(zones={"example.com": ZONE.format(version=1, address="192.0.2.1")})
    assert other.query("example.com", "SOA").answer[0][0].serial == first  # same files, same serial
    server.write_zone("example.com", ZONE.format(version=2, address="192.0.2.1"))
    wait_for(lambda: serial() != first, 5)


def test_broken_edit_keeps_last_good_data_and_logs_file_and_line(smartdns):
    server = smartdns(zones={"example.com": ZONE.format(version=1, address="192.0.2.1")})
    path = server.write_zone("example.com", ZONE.format(version=2, address="192.0.2.999"))
    line = server.wait_for_log(r"zone error: .*example\.com\.yaml:\d+: mx A: .*192\.0\.2\.999")
    assert f"{path}:11: mx A" in line, line  # the line of the bad value
    server.wait_for_log(r"serving its last good version")
    assert address_of(server) == "192.0.2.1"
    server.write_zone("example.com", "---\n'':\n  - type: NS\n    values: [ns1.example.com.]\n   bad: [\n")
    server.wait_for_log(r"example\.com\.yaml:\d+: .*(expected|found)")
    assert address_of(server) == "192.0.2.1"
    server.write_zone("example.com", "---\nmx:\n  type: A\n  value: 192.0.2.7\n")  # no NS at the apex
    server.wait_for_log(r"no NS records at its apex")
    assert address_of(server) == "192.0.2.1"
    server.write_zone("example.com", ZONE.format(version=3, address="192.0.2.3"))
    wait_for(lambda: address_of(server) == "192.0.2.3", 5)


def test_sighup_reloads_at_once(smartdns):
    server = smartdns(zones={"example.com": ZONE.format(version=1, address="192.0.2.1")})
    path = server.zones_dir / "example.com.yaml"
    before = path.stat()
    # The same size, inode and mtime: the file watcher cannot see this edit, only SIGHUP can reload it.
    new = textwrap.dedent(ZONE.format(version=2, address="192.0.2.2"))
    assert len(new.encode()) == before.st_size
    path.write_text(new)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert path.stat().st_ino == before.st_ino
    time.sleep(2.5)  # more than the watcher needs to notice a change it could see
    assert address_of(server) == "192.0.2.1", "the watcher saw the edit: this test would not test SIGHUP"
    server.signal(signal.SIGHUP)
    wait_for(lambda: address_of(server) == "192.0.2.2", 1.0)
    server.wait_for_log(r"reloaded \(SIGHUP\)")


def test_new_and_removed_zone_files(smartdns):
    server = smartdns(zones={"example.com": ZONE.format(version=1, address="192.0.2.1")})
    assert server.query("other.test", "A").rcode() == dns.rcode.REFUSED
    server.write_zone("other.test", ZONE.format(version=1, address="192.0.2.9").replace("example.com", "other.test"))
    wait_for(lambda: server.query("mx.other.test", "A").rcode() == dns.rcode.NOERROR, 5)
    (server.zones_dir / "other.test.yaml").unlink()
    wait_for(lambda: server.query("mx.other.test", "A").rcode() == dns.rcode.REFUSED, 5)


def test_geodb_and_config_changes_are_picked_up(smartdns, tmp_path):
    from conftest import build_mmdb

    mmdb = build_mmdb(tmp_path, "127.0.0.2/32,US,NA\n", "live.mmdb")
    server = smartdns(copy_example=True, config={"geodb": [str(mmdb)]})
    overseas = {"198.51.100.10", "198.51.100.11"}
    assert server.query("mx.example.com", "A", source="127.0.0.2").answer[0][0].address in overseas
    build_mmdb(tmp_path, "127.0.0.2/32,CN,AS\n", "live.mmdb")  # written aside and renamed over
    wait_for(lambda: server.query("mx.example.com", "A", source="127.0.0.2").answer[0][0].address == "192.0.2.10", 5)
    # the config file itself: turning ECS off takes effect without a restart
    import dns.edns
    ecs = [dns.edns.ECSOption("1.0.1.0", 24)]
    assert any(o.otype == dns.edns.ECS for o in server.query("mx.example.com", "A", use_edns=0, options=ecs).options)
    server.config_path.write_text(server.config_path.read_text() + "ecs: false\n")
    wait_for(lambda: not server.query("mx.example.com", "A", use_edns=0, options=ecs).options, 5)
    server.config_path.write_text(server.config_path.read_text() + "bogus: 1\n")
    server.wait_for_log(r"config error, keeping the running config: .*smartdns\.yaml:\d+: bogus")


def test_pinned_serial_and_soa_settings_per_zone(smartdns):
    server = smartdns(zones={"example.com": ZONE.format(version=1, address="192.0.2.1")},
                      config={"soa": {"ttl": 900, "zones": {"example.com": {"serial": 2026112801,
                                                                            "rname": "dns-admin.example.com."}}}})
    soa = server.query("example.com", "SOA").answer[0]
    assert soa[0].serial == 2026112801 and soa.ttl == 900
    assert soa[0].rname.to_text() == "dns-admin.example.com." and soa[0].mname.to_text() == "ns1.example.com."
    server.write_zone("example.com", ZONE.format(version=2, address="192.0.2.1"))
    server.wait_for_log(r"reloaded \(files changed\)")
    assert server.query("example.com", "SOA").answer[0][0].serial == 2026112801  # pinned: content changes keep it


@pytest.mark.slow
def test_listen_change_needs_a_restart_and_says_so(tmp_path):
    from conftest import SmartDNS

    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    server = SmartDNS(tmp_path, zones={"example.com": ZONE.format(version=1, address="192.0.2.1")},
                      config={"listen": [f"127.0.0.1:{port}"]})
    server.start(listen=None)  # where to listen comes from the config file alone
    try:
        server.config_path.write_text(server.config_path.read_text().replace(str(port), str(port + 1)))
        server.wait_for_log(r"listen addresses or workers changed in the config: restart smartdns to apply them")
        assert server.port == port and address_of(server) == "192.0.2.1"  # still answering where it was
    finally:
        server.stop()
