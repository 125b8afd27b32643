"""Response rate limiting: a bounded loopback flood is capped per client network, slip visible, TCP free."""

from __future__ import annotations

import socket
import time

import dns.flags
import dns.message
import dns.rcode

FLOODER = "127.0.0.5"  # loopback is exempt by default; these tests exempt nothing
RRL = {"responses_per_second": 20, "slip": 2, "exempt": []}


def flood(server, name: str, rdtype: str, count: int, seconds: float, source: str = FLOODER) -> dict[str, float]:
    """Send `count` queries spread evenly over `seconds`; count what comes back."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((source, 0))
    sock.setblocking(False)
    full = truncated = 0
    start = time.monotonic()
    for i in range(count):
        wire = dns.message.make_query(f"{name.format(i=i)}", rdtype).to_wire()
        sock.sendto(wire, ("127.0.0.1", server.port))
        target = start + seconds * (i + 1) / count
        while True:
            try:
                reply = dns.message.from_wire(sock.recv(4096))
                if reply.flags & dns.flags.TC:
                    truncated += 1
                else:
                    full += 1
            except BlockingIOError:
                if time.monotonic() >= target:
                    break
                time.sleep(0.0005)
    deadline = time.monotonic() + 0.5
    while time.monotonic() < deadline:
        try:
            reply = dns.message.from_wire(sock.recv(4096))
            truncated, full = (truncated + 1, full) if reply.flags & dns.flags.TC else (truncated, full + 1)
        except BlockingIOError:
            time.sleep(0.01)
    sock.close()
    return {"sent": count, "full": full, "truncated": truncated, "elapsed": time.monotonic() - start}


def test_identical_answers_are_capped_and_slip_sends_tc(smartdns):
    server = smartdns(copy_example=True, config={"rrl": RRL}, args=("--workers", "1"))
    result = flood(server, "ns1.example.com", "A", count=600, seconds=2.0)
    # 20/s for ~2.5 s, plus the initial burst of 20: about 70 full answers, not 600
    assert 30 <= result["full"] <= 110, result
    dropped = result["sent"] - result["full"]
    assert abs(result["truncated"] - dropped / 2) <= dropped * 0.1 + 2, result  # slip 2: every other one TC
    # a real client gets the whole answer over TCP at the same time
    assert server.query("ns1.example.com", "A", source=FLOODER, tcp=True).answer
    text = server.http("/metrics")[1]
    assert 'smartdns_dropped_packets_total{reason="rrl"}' in text and 'reason="rrl-slip"' in text


def test_random_subdomain_flood_is_limited_per_zone(smartdns):
    server = smartdns(copy_example=True, config={"rrl": RRL}, args=("--workers", "1"))
    result = flood(server, "r{i}.example.com", "A", count=600, seconds=2.0)  # every name different: NXDOMAIN
    assert 30 <= result["full"] <= 110, result


def test_other_networks_and_loopback_default_are_not_affected(smartdns):
    server = smartdns(copy_example=True, config={"rrl": RRL}, args=("--workers", "1"))
    flood(server, "ns1.example.com", "A", count=300, seconds=1.0)
    assert server.query("ns1.example.com", "A", source="127.0.1.9").answer  # another /24
    exempt = smartdns(copy_example=True, config={"rrl": {"responses_per_second": 5}}, args=("--workers", "1"))
    result = flood(exempt, "ns1.example.com", "A", count=200, seconds=1.0)
    assert result["full"] == 200, result  # loopback is exempt by default


def test_rrl_is_off_by_default(smartdns):
    server = smartdns(copy_example=True, config={"rrl": {"exempt": []}}, args=("--workers", "1"))
    result = flood(server, "ns1.example.com", "A", count=300, seconds=1.0)
    assert result["full"] == 300, result
