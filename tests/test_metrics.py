"""Metrics, liveness and readiness over the real HTTP listener, with one and with two workers."""

from __future__ import annotations

import re
import time

import dns.edns
import pytest

from conftest import DOMESTIC, DOMESTIC_MX, EXAMPLE_ZONES, OVERSEAS, OVERSEAS_MX, SmartDNS, free_port, health_zone


def samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """{labels: value} of one metric in Prometheus text format."""
    out = {}
    for line in text.splitlines():
        match = re.match(rf"^{name}(?:{{(.*)}})? (\S+)$", line)
        if match:
            labels = tuple(sorted(re.findall(r'(\w+)="([^"]*)"', match.group(1) or "")))
            out[labels] = float(match.group(2))
    return out


def answers_by_pool(server) -> dict[str, float]:
    found = samples(server.http("/metrics")[1], "smartdns_answers_total")
    return {dict(labels)["pool"]: value for labels, value in found.items() if dict(labels)["record"] == "mx"}


@pytest.mark.parametrize("workers", ["1", "2"])
def test_answers_per_pool_match_what_was_sent(smartdns, geo_mmdb, workers):
    server = smartdns(copy_example=True, config={"geodb": [str(geo_mmdb)]}, args=("--workers", workers))
    sent = {"domestic": 0, "overseas": 0}
    for i in range(300):
        source, pool = (DOMESTIC, "domestic") if i % 3 == 0 else (OVERSEAS, "overseas")
        rdtype = "A" if i % 2 else "MX"  # MX: the additional A and AAAA are answers too
        server.query("mx.example.com" if rdtype == "A" else "example.com", rdtype, source=source)
        sent[pool] += 1 if rdtype == "A" else 2
    deadline = time.monotonic() + 5  # workers report every second
    while time.monotonic() < deadline and answers_by_pool(server) != sent:
        time.sleep(0.2)
    assert answers_by_pool(server) == sent
    text = server.http("/metrics")[1]
    queries = samples(text, "smartdns_queries_total")
    udp_noerror = sum(v for labels, v in queries.items()
                      if dict(labels)["rcode"] == "NOERROR" and dict(labels)["transport"] == "udp")
    assert udp_noerror == 300
    assert samples(text, "smartdns_zones_loaded")[()] == 1
    assert samples(text, "smartdns_response_seconds_count")[()] > 0


def test_labels_are_not_attacker_controlled(smartdns):
    server = smartdns(copy_example=True, args=("--workers", "1"))
    for rdtype in (65000, 4242, 999):
        server.query("example.com", rdtype)
    server.query("mx.example.com", "A", use_edns=0, options=[dns.edns.ECSOption("1.0.1.0", 24)])
    text = server.http("/metrics")[1]
    qtypes = {dict(labels)["qtype"] for labels in samples(text, "smartdns_queries_total")}
    assert "OTHER" in qtypes and not any(t.startswith("TYPE") for t in qtypes)
    assert samples(text, "smartdns_ecs_queries_total")[()] == 1


def test_ready_only_once_zones_are_loaded(smartdns):
    server = smartdns(args=("--workers", "1"))  # an empty zones directory
    assert server.http("/health")[0] == 200
    status, body = server.http("/ready")
    assert status == 503, body
    server.write_zone("example.com", (EXAMPLE_ZONES / "example.com.yaml").read_text())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and server.http("/ready")[0] != 200:
        time.sleep(0.1)
    assert server.http("/ready")[0] == 200
    reloads = samples(server.http("/metrics")[1], "smartdns_reloads_total")
    assert reloads[(("result", "success"),)] >= 1


def test_metrics_port_taken_does_not_stop_dns(smartdns):
    import socket

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    port = taken.getsockname()[1]
    try:
        server = smartdns(copy_example=True, config={"metrics": f"127.0.0.1:{port}"})
        server.wait_for_log(r"metrics listener .* not started")
        assert server.query("mx.example.com", "A").answer
    finally:
        taken.close()


def test_health_state_is_exported(smartdns, geo_mmdb):

    port = free_port(DOMESTIC_MX, OVERSEAS_MX)  # nothing listens: both go down
    server = smartdns(zones={"example.com": health_zone(port, "TCP")},
                      config={"geodb": [str(geo_mmdb)], "health": {"interval": 0.5, "timeout": 0.3, "rise": 1, "fall": 1}})
    server.wait_for_log(rf"health: TCP {OVERSEAS_MX}:{port} is DOWN")
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        up = samples(server.http("/metrics")[1], "smartdns_health_up")
        if up.get((("port", str(port)), ("protocol", "TCP"), ("target", OVERSEAS_MX))) == 0:
            break
        time.sleep(0.2)
    assert up[(("port", str(port)), ("protocol", "TCP"), ("target", OVERSEAS_MX))] == 0


@pytest.mark.slow
def test_metrics_answer_while_the_first_load_runs(tmp_path):
    """Scraped while the first load runs (/ready says 503), /metrics answers: nothing counted yet."""
    import http.client
    import threading
    import urllib.error
    import urllib.request

    zone = "'':\n  type: NS\n  values: [ns1.example.com., ns2.example.com.]\n" + "".join(
        f"h{i}:\n  type: TXT\n  value: v=spf1 ip4:10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256} -all\n"
        for i in range(60000))
    server = SmartDNS(tmp_path, zones={"example.com": zone}, args=("--workers", "1"))
    starting = threading.Thread(target=server.start, kwargs={"timeout": 120}, daemon=True)
    starting.start()
    port = server.metrics_port  # the listener is up before the first load ends
    during_load: list[object] = []
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=5)
            break  # ready: the load is over
        except urllib.error.HTTPError as exc:
            assert exc.code == 503
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
                during_load.append(reply.status)
        except (urllib.error.URLError, http.client.HTTPException, ConnectionError) as exc:
            during_load.append(exc)
    starting.join(120)
    assert during_load, "the first load ended before a scrape: nothing was shown\n" + server.log
    assert set(during_load) == {200}, during_load
    server.stop()
    assert "Unhandled exception" not in server.log
