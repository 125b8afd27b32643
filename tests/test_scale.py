"""Many zones and reloads (issue 13): only changed files are parsed again, loading runs outside the
processes that answer, workers get the supervisor's zones instead of loading them again.

What it costs (seconds, memory, latency during a reload) is measured by bench/scale.py, not here.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import dns.dnssec
import dns.name
import dns.rdatatype
import dns.rrset

from conftest import children, wait_for, workers_of
from smartdns.dnssec import keys

NS = "'':\n  - type: NS\n    values: [ns1.{zone}.]\nwww:\n  type: A\n  value: {address}\n"


def zones(count: int, address: str = "10.0.0.1") -> dict[str, str]:
    return {f"z{i:03d}.test": NS.format(zone=f"z{i:03d}.test", address=address) for i in range(count)}


def www(server, zone: str) -> str:
    return server.query(f"www.{zone}", "A").answer[0][0].address


def test_an_edit_among_many_zones_parses_that_file_alone(smartdns):
    server = smartdns(zones=zones(60), args=("--workers", "1"))
    server.write_zone("z030.test", NS.format(zone="z030.test", address="10.0.0.2"))
    wait_for(lambda: www(server, "z030.test") == "10.0.0.2", 10)
    line = server.wait_for_log(r"reloaded \(files changed\): 60 zones")
    assert "(1 parsed again)" in line, line
    assert www(server, "z031.test") == "10.0.0.1"  # the others still served, as they were
    server.signal(signal.SIGHUP)  # an operator's request: every file (edits that keep size and time too)
    assert "(60 parsed again)" in server.wait_for_log(r"reloaded \(SIGHUP\)")


def test_the_loader_takes_over_after_a_first_load_made_in_the_server(smartdns, tmp_path: Path):
    # The first load runs in the server (no handover of every zone); the loader is told what is served,
    # and parses the signed files itself (it signs them again at every load, from their parse).
    example = dns.name.from_text("example.com.")
    key = keys.generate(example, 13, tmp_path / "keys")
    server = smartdns(zones=zones(3), copy_example=True, config={"dnssec": {"keys": str(tmp_path / "keys")}},
                      args=("--workers", "1", "--log-level", "debug"))
    assert "1 files parsed here" in server.wait_for_log(r"zone loader: told of 4 zones served"), server.log
    server.write_zone("z001.test", NS.format(zone="z001.test", address="10.0.0.3"))
    wait_for(lambda: www(server, "z001.test") == "10.0.0.3", 10)
    assert "(1 parsed again)" in server.wait_for_log(r"reloaded \(files changed\): 4 zones")
    reply = server.query("example.com", "MX", want_dnssec=True)  # signed by the loader this time
    mx = next(r for r in reply.answer if r.rdtype == dns.rdatatype.MX)
    sigs = next(r for r in reply.answer if r.rdtype == dns.rdatatype.RRSIG)
    dns.dnssec.validate(mx, sigs, {example: dns.rrset.from_rdata(example, 3600, key.dnskey)})
    assert www(server, "z002.test") == "10.0.0.1"


def test_a_single_server_loads_in_a_child_that_ends_with_it(smartdns):
    server = smartdns(zones=zones(2), args=("--workers", "1"))
    assert server.proc is not None
    loaders = children(server.proc.pid)
    assert len(loaders) == 1, loaders
    server.write_zone("z001.test", NS.format(zone="z001.test", address="10.0.0.9"))
    wait_for(lambda: www(server, "z001.test") == "10.0.0.9", 10)
    os.kill(server.proc.pid, signal.SIGKILL)  # however the server ends, its loader goes too
    wait_for(lambda: not os.path.exists(f"/proc/{loaders[0]}") or _zombie(loaders[0]), 10)


def test_a_server_whose_loader_is_gone_loads_edits_itself(smartdns):
    server = smartdns(zones=zones(2), args=("--workers", "1"))
    loader = int(server.wait_for_log(r"zone loader started \(pid \d+\)").rsplit("pid ", 1)[1].rstrip(")"))
    os.kill(loader, signal.SIGKILL)
    server.write_zone("z001.test", NS.format(zone="z001.test", address="10.0.0.8"))
    wait_for(lambda: www(server, "z001.test") == "10.0.0.8", 10)
    server.wait_for_log(r"zone loader gone \(.*\): loading in this process from now on")
    assert "(2 parsed again)" in server.wait_for_log(r"reloaded \(files changed\)")  # nothing parsed here before
    server.write_zone("z000.test", NS.format(zone="z000.test", address="10.0.0.6"))
    wait_for(lambda: www(server, "z000.test") == "10.0.0.6", 10)
    assert www(server, "z001.test") == "10.0.0.8"
    lines = [line for line in server.log_lines if "reloaded (files changed)" in line]
    assert len(lines) == 2 and "(1 parsed again)" in lines[1], lines  # from then on, the changed file alone


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] == "Z"
    except OSError:
        return True


def test_workers_are_given_the_zones_and_every_edit(smartdns):
    server = smartdns(zones=zones(3), args=("--workers", "2"))
    # the supervisor loaded; the workers did not load again (each says it has the zones, once)
    assert server.log.count("zone error") == 0
    assert len([line for line in server.log_lines if "loaded 3 zones" in line]) == 1  # worker 0 speaks for both
    server.write_zone("z002.test", NS.format(zone="z002.test", address="10.0.0.7"))
    wait_for(lambda: all(www(server, "z002.test") == "10.0.0.7" for _ in range(20)), 10)  # both workers
    lines = [line for line in server.log_lines if "reloaded (files changed)" in line]
    assert len(lines) == 1 and "(1 parsed again)" in lines[0], lines
    # a broken edit is reported once (by the supervisor), and every worker keeps the last good data
    server.write_zone("z002.test", NS.format(zone="z002.test", address="10.0.0.999"))
    server.wait_for_log(r"zone error: .*z002\.test\.yaml")
    time.sleep(1.5)
    assert server.log.count("10.0.0.999") == 1, server.log
    assert all(www(server, "z002.test") == "10.0.0.7" for _ in range(20))
    # a worker started again gets the supervisor's current zones
    worker = workers_of(server)[0]
    os.kill(worker, signal.SIGKILL)
    server.wait_for_log(r"worker \d exited with -9: starting it again")
    wait_for(lambda: len(workers_of(server)) == 2, 10)
    time.sleep(1)
    assert all(www(server, "z002.test") == "10.0.0.7" for _ in range(20))
