"""TCP limits (RFC 7766): idle connections cannot starve UDP or new TCP clients."""

from __future__ import annotations

import socket
import time

import dns.message
import dns.query


def connect(port: int, source: str) -> socket.socket:
    sock = socket.socket()
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    return sock


def closed_by_server(sock: socket.socket, timeout: float) -> bool:
    sock.settimeout(timeout)
    try:
        return sock.recv(1) == b""
    except (socket.timeout, TimeoutError, BlockingIOError):
        return False
    except ConnectionError:
        return True


def test_thousand_idle_connections_do_not_stop_service(smartdns):
    server = smartdns(copy_example=True, args=("--workers", "1"),
                      config={"tcp": {"idle_timeout": 30, "max_connections": 1024, "max_per_client": 64}})
    idle = [connect(server.port, f"127.0.{10 + i // 50}.{1 + i % 50}") for i in range(1000)]
    try:
        time.sleep(0.5)
        assert server.query("mx.example.com", "A").answer  # UDP
        started = time.monotonic()
        assert server.query("mx.example.com", "A", tcp=True, source="127.0.99.1").answer  # a new TCP client
        assert time.monotonic() - started < 2
        assert all(not closed_by_server(s, 0.01) for s in idle[:5])  # still open: under the limit
    finally:
        for sock in idle:
            sock.close()


def test_when_full_the_idlest_connection_makes_room(smartdns):
    server = smartdns(copy_example=True, args=("--workers", "1"),
                      config={"tcp": {"idle_timeout": 30, "max_connections": 50, "max_per_client": 64}})
    idle = [connect(server.port, "127.0.20.1") for _ in range(50)]
    try:
        time.sleep(0.3)
        assert server.query("mx.example.com", "A", tcp=True, source="127.0.20.2").answer
        assert closed_by_server(idle[0], 2)  # the oldest idle one went
    finally:
        for sock in idle:
            sock.close()


def test_per_client_limit(smartdns):
    server = smartdns(copy_example=True, args=("--workers", "1"),
                      config={"tcp": {"idle_timeout": 30, "max_per_client": 3}})
    socks = [connect(server.port, "127.0.30.1") for _ in range(4)]
    try:
        assert closed_by_server(socks[3], 2)
        assert not closed_by_server(socks[0], 0.2)
        assert server.query("mx.example.com", "A", tcp=True, source="127.0.30.2").answer
    finally:
        for sock in socks:
            sock.close()


def test_idle_connection_is_closed_and_slow_message_deadline(smartdns):
    server = smartdns(copy_example=True, args=("--workers", "1"),
                      config={"tcp": {"idle_timeout": 1, "read_deadline": 1}})
    idle = connect(server.port, "127.0.40.1")
    assert closed_by_server(idle, 3)
    slow = connect(server.port, "127.0.40.2")
    wire = dns.message.make_query("mx.example.com", "A").to_wire()
    slow.sendall(len(wire).to_bytes(2, "big") + wire[:5])  # the length, then part of the message only
    assert closed_by_server(slow, 3)


def test_max_queries_per_connection(smartdns):
    server = smartdns(copy_example=True, args=("--workers", "1"), config={"tcp": {"max_queries": 3}})
    sock = connect(server.port, "127.0.50.1")
    for _ in range(3):
        dns.query.send_tcp(sock, dns.message.make_query("mx.example.com", "A"), expiration=time.time() + 2)
        assert dns.query.receive_tcp(sock, expiration=time.time() + 2)[0].answer
    assert closed_by_server(sock, 2)
