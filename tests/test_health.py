"""Health-checked failover against real TCP and SMTP listeners on loopback."""

from __future__ import annotations

import asyncio

import pytest

from conftest import DOMESTIC, DOMESTIC_MX, OVERSEAS, OVERSEAS_MX, Listener, free_port, health_zone, wait_for
from smartdns.health import Target, probe
from smartdns.model import HealthCheck


def answer(server, source: str) -> str:
    response = server.query("mx.example.com", "A", source=source)
    return response.answer[0][0].address


HEALTH = {"interval": 1, "timeout": 0.5, "rise": 2, "fall": 2}


def test_closing_overseas_site_moves_overseas_clients_and_back(smartdns, geo_mmdb):
    port = free_port(DOMESTIC_MX, OVERSEAS_MX)
    domestic = Listener(DOMESTIC_MX, port)
    overseas = Listener(OVERSEAS_MX, port)
    try:
        server = smartdns(zones={"example.com": health_zone(port)}, config={"geodb": [str(geo_mmdb)], "health": HEALTH})
        wait_for(lambda: overseas.quits >= 2, 5)  # SMTP checks ran to QUIT
        assert answer(server, OVERSEAS) == OVERSEAS_MX
        assert answer(server, DOMESTIC) == DOMESTIC_MX

        overseas.close()
        took = wait_for(lambda: answer(server, OVERSEAS) == DOMESTIC_MX, HEALTH["fall"] * HEALTH["interval"] + 1 + 1)
        assert took <= HEALTH["fall"] * HEALTH["interval"] + 1
        assert answer(server, DOMESTIC) == DOMESTIC_MX
        server.wait_for_log(rf"health: SMTP {OVERSEAS_MX}:{port} is DOWN")

        overseas = Listener(OVERSEAS_MX, port)
        wait_for(lambda: answer(server, OVERSEAS) == OVERSEAS_MX, HEALTH["rise"] * HEALTH["interval"] + 2)
        server.wait_for_log(rf"health: SMTP {OVERSEAS_MX}:{port} is up")
    finally:
        domestic.close()
        overseas.close()


def test_nothing_up_fails_open_to_plain_values(smartdns, geo_mmdb):
    port = free_port(DOMESTIC_MX, OVERSEAS_MX)  # nobody listens there
    server = smartdns(zones={"example.com": health_zone(port, "TCP")}, config={"geodb": [str(geo_mmdb)], "health": HEALTH})
    server.wait_for_log(rf"health: TCP {OVERSEAS_MX}:{port} is DOWN")
    server.wait_for_log(rf"health: TCP {DOMESTIC_MX}:{port} is DOWN")
    seen = {answer(server, OVERSEAS) for _ in range(30)}
    assert seen == {DOMESTIC_MX, OVERSEAS_MX}  # fail open: the plain values, both


def run_probe(protocol: str, port: int, host: str = "127.0.0.1") -> tuple[bool, str]:
    target = Target(host, HealthCheck(protocol, port, "/_dns", "mx.example.com"))
    return asyncio.run(probe(target, 1.0))


@pytest.mark.parametrize("greeting,up", [
    (b"220 mx ESMTP\r\n", True),
    (b"220-first\r\n220-second\r\n220 last\r\n", True),
    (b"421 too busy\r\n", False),
    (b"554 no\r\n", False),
    (b"220-partial\r\n", False),  # closes before the final line
])
def test_smtp_probe_reads_the_whole_greeting(greeting, up):
    listener = Listener("127.0.0.1", greeting=greeting)
    try:
        assert run_probe("SMTP", listener.port)[0] is up
    finally:
        listener.close()


def test_tcp_probe_refused_is_down():
    port = free_port("127.0.0.1")
    ok, reason = run_probe("TCP", port)
    assert not ok and "Connection" in reason or "refused" in reason.lower()


@pytest.mark.parametrize("status,up", [(b"HTTP/1.1 200 OK", True), (b"HTTP/1.1 302 Found", True),
                                       (b"HTTP/1.1 503 Unavailable", False)])
def test_http_probe_by_status(status, up):
    listener = Listener("127.0.0.1", greeting=status + b"\r\nContent-Length: 0\r\n\r\n")
    try:
        assert run_probe("HTTP", listener.port)[0] is up
    finally:
        listener.close()


def test_follow_drops_removed_targets_even_when_the_timing_changes():
    from smartdns.config import HealthSettings
    from smartdns.health import HealthMonitor
    from smartdns.model import DynamicRRset, PoolValue

    def record(*addresses: str) -> DynamicRRset:
        return DynamicRRset("mx", 1, 60, {}, (), tuple(PoolValue(a, None) for a in addresses), 1,
                            HealthCheck("TCP", 9, "/", None))

    async def scenario() -> set[str]:
        monitor = HealthMonitor(HealthSettings(interval=60, timeout=0.1))
        monitor.follow([record("127.0.0.31", "127.0.0.32")])
        monitor.follow([record("127.0.0.32")], HealthSettings(interval=30, timeout=0.1))
        kept = {t.address for t in monitor.states} | {t.address for t in monitor.tasks}
        monitor.stop()
        return kept

    assert asyncio.run(scenario()) == {"127.0.0.32"}
