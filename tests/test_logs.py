"""Logs an operator can use: load and reload lines once however many workers, worker lines
numbered, and `--log-level debug` showing reload timings, health probe results and cache sizes."""

from __future__ import annotations

import json
import re
import signal
import time

from conftest import DOMESTIC_MX, OVERSEAS, OVERSEAS_MX, Listener, free_port
from conftest import health_zone as zone

BROKEN = "---\n'':\n  - type: NS\n    values: [ns1.example.org.]\nwww:\n  type: A\n  value: not-an-address\n"


def count(server, pattern: str) -> int:
    return sum(1 for line in server.log_lines if re.search(pattern, line))


def test_load_and_reload_lines_are_logged_once_with_workers(smartdns):
    server = smartdns(copy_example=True, zones={"example.org": BROKEN}, args=("--workers", "2"))
    time.sleep(1)  # a second copy of the line would come right after the first
    assert count(server, r"INFO (worker 0: )?loaded 1 zones") == 1, server.log
    assert count(server, r"zone error: .*example\.org\.yaml:\d+: www A") == 1, server.log
    server.signal(signal.SIGHUP)
    server.wait_for_log(r"reloaded \(SIGHUP\)")
    time.sleep(1.5)
    assert count(server, r"INFO (worker 0: )?reloaded \(SIGHUP\)") == 1, server.log
    assert count(server, r"zone error: .*example\.org\.yaml:\d+: www A") == 2, server.log  # once per load
    assert server.query("mx.example.com", "A").answer


def test_worker_lines_carry_the_worker_number(smartdns):
    server = smartdns(copy_example=True, args=("--workers", "2", "--log-level", "debug"))
    server.wait_for_log(r"INFO worker 0: loaded 1 zones")  # worker 0 speaks for all
    server.wait_for_log(r"DEBUG worker 1: loaded 1 zones")  # the others at debug level
    server.wait_for_log(r"DEBUG worker 1: load took")
    assert count(server, r"loaded 1 zones") == 2, server.log
    json_server = smartdns(copy_example=True, args=("--workers", "2", "--log-level", "debug", "--log-format", "json"))
    json_server.wait_for_log(r'"worker": 1')
    entries = [json.loads(line) for line in json_server.log_lines]
    assert sorted((e["worker"], e["level"]) for e in entries if e["message"].startswith("loaded")) == [
        (0, "info"), (1, "debug")]


def test_debug_level_shows_reload_timings_probe_results_and_cache_sizes(smartdns, geo_mmdb):
    port = free_port(DOMESTIC_MX, OVERSEAS_MX)
    sites = [Listener(DOMESTIC_MX, port), Listener(OVERSEAS_MX, port)]
    try:
        health = {"interval": 0.5, "timeout": 0.5, "rise": 1, "fall": 1}
        config = {"geodb": [str(geo_mmdb)], "health": health}
        server = smartdns(zones={"example.com": zone(port)}, config=config,
                          args=("--log-level", "debug", "--workers", "1"))
        server.wait_for_log(rf"DEBUG health: SMTP {OVERSEAS_MX}:{port} probed: up \(220 greeting\)")
        assert server.query("mx.example.com", "A", source=OVERSEAS).answer
        server.signal(signal.SIGHUP)
        line = server.wait_for_log(r"DEBUG reload \(SIGHUP\) took")
        assert re.search(r"took \d+\.\d+s: loading \d+\.\d+s, swap \d+\.\d+s \(1 zones, 0 problems\)", line), line
        caches = server.wait_for_log(r"DEBUG caches of the replaced data: ")
        assert re.search(r"hot udp [1-9]\d*, hot tcp \d+, decisions [1-9]\d*, negative \d+, rendered [1-9]\d*, "
                         r"geo [1-9]\d*", caches), caches
        quiet = smartdns(zones={"example.com": zone(port)}, config=config, args=("--workers", "1"))
        time.sleep(1.5)
        quiet.signal(signal.SIGHUP)
        quiet.wait_for_log(r"reloaded \(SIGHUP\)")
        assert "DEBUG" not in quiet.log and "probed:" not in quiet.log, quiet.log
    finally:
        for site in sites:
            site.close()
