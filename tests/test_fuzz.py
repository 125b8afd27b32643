"""Fuzzing the packet path (issue 6, item 1): no packet raises, every reply is a well-formed error or answer.

In-process, a Responder built as the server builds it (tests/test_authoritative.py's
`fresh_responder`) gets random bytes, mutated valid queries (bit flips, truncation,
extension, overwritten counts), random EDNS options and ECS contents, and packets
built to hit the parsers' edges: compression pointer loops and pointers in the
question, truncated records, QDCOUNT/ANCOUNT 65535, labels over 63 and reserved
label types, names over 255 octets, an OPT not at the root, two OPTs.

The properties, for every packet:
- `Responder.respond(data, client, udp)` never raises; it returns None (dropped) or
  bytes dnspython can read (`question_only=True` at least), with the query's ID,
  QR=1 and an rcode in ALLOWED_RCODES;
- a UDP reply never exceeds min(max(client EDNS size, 512), 1232), or 512 without EDNS;
- `fast_parse` and `full_parse` return a Query or None, or raise `wire.Malformed`: nothing else.

A smaller live part sends the same kinds of packets to a real server over UDP and
TCP, each followed by a probe query, and checks the same properties on what comes
back, that the probe is answered, and that the log shows no traceback.
All deterministic (hypothesis derandomized, no example database).
"""

from __future__ import annotations

import socket
import struct
from typing import Iterator

import dns.exception
import dns.message
import dns.rcode
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import (
    DOMESTIC,
    OVERSEAS,
    PROPERTY,
    SmartDNS,
    bad_ecs_queries,
    build_mmdb,
    ecs_option,
    fresh_responder,
    header,
    queries,
    read_frame,
    start_authoritative,
)
from smartdns import wire
from smartdns.hotcache import Responder
from smartdns.wire import Malformed, Query, fast_parse, full_parse

ALLOWED_RCODES = frozenset({dns.rcode.NOERROR, dns.rcode.NXDOMAIN, dns.rcode.REFUSED, dns.rcode.FORMERR,
                            dns.rcode.NOTIMP, dns.rcode.BADVERS, dns.rcode.YXDOMAIN})
CLIENTS = st.sampled_from([DOMESTIC, OVERSEAS, "127.0.0.1", "::1", "::ffff:127.0.0.2", "198.51.100.7"])

# --------------------------------------------------------------------------- packet strategies

QNAME = b"\x03www\x07example\x03com\x00"


def _opt(payload: int = 1232, rcode_hi: int = 0, version: int = 0, flags: int = 0, rdata: bytes = b"",
         owner: bytes = b"\x00", rdlen: int | None = None) -> bytes:
    return owner + struct.pack("!HHBBHH", 41, payload, rcode_hi, version, flags,
                               len(rdata) if rdlen is None else rdlen) + rdata


@st.composite
def random_ecs(draw) -> bytes:
    """An ECS option with arbitrary contents: any family, prefixes, address length, stray bits."""
    family = draw(st.sampled_from([0, 1, 2, 3, 65535]))
    source = draw(st.sampled_from([0, 1, 7, 8, 24, 25, 32, 33, 48, 56, 64, 128, 129, 255]) | st.integers(0, 255))
    scope = draw(st.sampled_from([0, 24, 255]) | st.integers(0, 255))
    if draw(st.booleans()):  # the right length for the prefix, possibly with bits beyond it
        size = min((source + 7) // 8, 17)
        address = draw(st.binary(min_size=size, max_size=size))
    else:
        address = draw(st.binary(max_size=20))
    return ecs_option(address, source, family) if draw(st.booleans()) else \
        struct.pack("!HH", 8, len(address) + 4) + struct.pack("!HBB", family, source, scope) + address


@st.composite
def random_option(draw) -> bytes:
    kind = draw(st.sampled_from(["ecs", "ecs-short", "nsid", "cookie", "any", "lying-length", "padding"]))
    if kind == "ecs":
        return draw(random_ecs())
    if kind == "ecs-short":  # shorter than the 4 fixed bytes
        body = draw(st.binary(max_size=3))
        return struct.pack("!HH", 8, len(body)) + body
    if kind == "nsid":
        body = draw(st.binary(max_size=4))
        return struct.pack("!HH", 3, len(body)) + body
    if kind == "cookie":
        body = draw(st.binary(min_size=0, max_size=48))
        return struct.pack("!HH", 10, len(body)) + body
    if kind == "padding":
        return struct.pack("!HH", 12, 200) + b"\x00" * 200
    if kind == "lying-length":  # says it is longer (or shorter) than it is
        body = draw(st.binary(max_size=8))
        return struct.pack("!HH", draw(st.integers(0, 65535)), draw(st.integers(0, 65535))) + body
    body = draw(st.binary(max_size=16))
    return struct.pack("!HH", draw(st.integers(0, 65535)), len(body)) + body


@st.composite
def edns_queries(draw) -> bytes:
    """One question and an OPT with random payload, version, flags, extended rcode and options."""
    rdata = b"".join(draw(st.lists(random_option(), max_size=4)))
    opt = _opt(payload=draw(st.sampled_from([0, 1, 511, 512, 513, 1232, 1233, 4096, 65535]) | st.integers(0, 65535)),
               rcode_hi=draw(st.sampled_from([0, 0, 1, 255])),
               version=draw(st.sampled_from([0, 0, 0, 1, 255])),
               flags=draw(st.sampled_from([0, 0x8000, 0xFFFF]) | st.integers(0, 0xFFFF)),
               rdata=rdata)
    qname = draw(st.sampled_from([QNAME, b"\x02mx\x07example\x03com\x00", b"\x07example\x03com\x00",
                                  b"\x07hugetxt\x07example\x03com\x00", b"\x02ns\x03geo\x07example\x00",
                                  b"\x05bigmx\x07example\x03com\x00", b"\x00"]))
    qtype = draw(st.sampled_from([1, 2, 6, 15, 16, 28, 33, 41, 43, 251, 252, 255]) | st.integers(0, 65535))
    flags = draw(st.sampled_from([0, 0x0100, 0x0110, 0x8000, 0x2800, 0x7800]) | st.integers(0, 0xFFFF))
    return header(draw(st.integers(0, 65535)), flags, ar=1) + qname + struct.pack("!HH", qtype, 1) + opt


@st.composite
def structural(draw) -> bytes:
    """Packets built to hit the parsers' edges, each a kind of its own."""
    qid = draw(st.integers(0, 65535))
    kind = draw(st.sampled_from([
        "pointer-loop", "pointer-forward", "pointer-question", "pointer-chain", "label-64", "reserved-label",
        "name-256", "name-255", "huge-counts", "truncated-rr", "rr-rdlen-past-end", "opt-not-root",
        "two-opts", "opt-in-answer", "opt-lying-rdlen", "tsig", "question-rr-garbage", "empty-labels",
    ]))
    q = QNAME + b"\x00\x01\x00\x01"
    if kind == "pointer-loop":  # a pointer to itself, or two pointing at each other
        target = draw(st.sampled_from([12, 14]))
        name = b"\xc0\x0c" if target == 12 else b"\x01a\xc0\x0e"
        return header(qid) + name + b"\x00\x01\x00\x01"
    if kind == "pointer-forward":  # points past itself, into the type or beyond the end
        return header(qid) + struct.pack("!H", 0xC000 | draw(st.integers(12, 0x3FFF))) + b"\x00\x01\x00\x01"
    if kind == "pointer-question":  # a second question compressed against the first
        return header(qid, qd=2) + q + b"\x02mx\xc0\x10\x00\x01\x00\x01"
    if kind == "pointer-chain":  # pointers to pointers, many deep
        depth = draw(st.integers(2, 60))
        body = b"\x00"
        for _ in range(depth):  # each pointer points at the previous one
            body += struct.pack("!H", 0xC000 | (12 + max(0, len(body) - 2)))
        return header(qid) + body + b"\x00\x01\x00\x01"
    if kind == "label-64":
        size = draw(st.integers(64, 191))
        return header(qid) + bytes([size]) + b"a" * size + b"\x00\x00\x01\x00\x01"
    if kind == "reserved-label":  # 0x40 / 0x80: extended and reserved label types
        return header(qid) + bytes([draw(st.sampled_from([0x40, 0x41, 0x80, 0xBF]))]) + b"abc\x00\x00\x01\x00\x01"
    if kind in ("name-256", "name-255"):  # 255 octets is the most a name may have (RFC 1035 3.1)
        total = 256 if kind == "name-256" else 255
        labels = b""
        while len(labels) + 1 < total:
            size = min(63, total - len(labels) - 2)
            labels += bytes([size]) + b"x" * size
        name = labels + b"\x00"
        return header(qid) + name + b"\x00\x01\x00\x01"
    if kind == "huge-counts":
        counts = [draw(st.sampled_from([0, 1, 2, 65535])) for _ in range(4)]
        counts[draw(st.integers(0, 3))] = 65535
        tail = q if draw(st.booleans()) else b""
        return struct.pack("!HHHHHH", qid, 0x0100, *counts) + tail + draw(st.binary(max_size=24))
    if kind == "truncated-rr":  # an answer record cut anywhere
        rr = b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x0e\x10\x00\x04\xc0\x00\x02\x01"
        return header(qid, an=1) + q + rr[:draw(st.integers(0, len(rr) - 1))]
    if kind == "rr-rdlen-past-end":
        rr = b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x0e\x10" + struct.pack("!H", draw(st.integers(5, 65535)))
        return header(qid, ar=1) + q + rr + b"\xc0\x00\x02\x01"
    if kind == "opt-not-root":
        return header(qid, ar=1) + q + _opt(owner=draw(st.sampled_from([b"\x01a\x00", b"\xc0\x0c", b"\x03www\x00"])))
    if kind == "two-opts":
        return header(qid, ar=2) + q + _opt() + _opt(payload=draw(st.integers(0, 65535)))
    if kind == "opt-in-answer":
        section = draw(st.sampled_from([(1, 0, 0), (0, 1, 0), (1, 0, 1)]))
        return header(qid, an=section[0], ns=section[1], ar=section[2]) + q + _opt() + (_opt() if section[2] else b"")
    if kind == "opt-lying-rdlen":
        return header(qid, ar=1) + q + _opt(rdata=draw(st.binary(max_size=12)), rdlen=draw(st.integers(0, 65535)))
    if kind == "tsig":  # a TSIG we hold no key for, maybe not last
        tsig = (b"\x03key\x00\x00\xfa\x00\xff\x00\x00\x00\x00" + struct.pack("!H", 26)
                + b"\x08hmac-md5\x00" + b"\x00" * 16)
        return header(qid, ar=2) + q + tsig + _opt() if draw(st.booleans()) else header(qid, ar=1) + q + tsig
    if kind == "question-rr-garbage":  # the question followed by the random rest of a record
        return header(qid, qd=1, an=draw(st.integers(0, 3))) + q + draw(st.binary(max_size=40))
    # empty labels inside a name: a zero length ends it early, the rest is junk after the question
    return header(qid) + b"\x03www\x00\x00\x03com\x00\x00\x01\x00\x01"


@st.composite
def mutated(draw) -> bytes:
    """A valid query (or one with a bad ECS), then damaged: bit flips, cut, extended, overwritten."""
    data = bytearray(draw(queries() | bad_ecs_queries() | edns_queries()))
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["flip", "cut", "extend", "byte", "counts", "insert"]))
        if kind == "flip" and data:
            for at, bit in draw(st.lists(st.tuples(st.integers(0, 4096), st.integers(0, 7)), min_size=1, max_size=6)):
                data[at % len(data)] ^= 1 << bit
        elif kind == "cut":
            data = data[:draw(st.integers(0, len(data)))]
        elif kind == "extend":
            data += draw(st.binary(min_size=1, max_size=64))
        elif kind == "byte" and data:
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
        elif kind == "counts" and len(data) >= 12:
            data[4:12] = struct.pack("!HHHH", *(draw(st.sampled_from([0, 1, 2, 255, 65535])) for _ in range(4)))
        elif kind == "insert":
            at = draw(st.integers(0, len(data)))
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
    return bytes(data)


PACKETS = st.binary(max_size=600) | mutated() | edns_queries() | structural()

# --------------------------------------------------------------------------- the oracle


def udp_limit_of(data: bytes) -> int:
    """The most a UDP reply to `data` may carry, judged by dnspython (not by our own parser).

    Packets dnspython cannot read get 512: a reply to one is a short error at most.
    """
    try:
        message = dns.message.from_wire(data)
    except Exception:  # any failure to read means no usable EDNS
        return wire.NO_EDNS_LIMIT
    if message.edns < 0:
        return wire.NO_EDNS_LIMIT
    return min(max(int(message.payload), 512), 1232)


def check_reply(data: bytes, reply: bytes | None, udp: bool) -> dns.message.Message | None:
    """The properties every reply must have; returns the parsed reply (None if dropped)."""
    if reply is None:
        return None
    assert isinstance(reply, bytes), type(reply)
    try:
        message = dns.message.from_wire(reply, question_only=True)
    except Exception as exc:
        raise AssertionError(f"reply unreadable ({exc!r}): query {data.hex()} reply {reply.hex()}") from None
    assert len(data) >= 2 and message.id == struct.unpack_from("!H", data)[0], (data.hex(), reply.hex())
    assert message.flags & 0x8000, f"QR not set: {data.hex()}"
    rcode = reply[3] & 0xF
    try:  # the whole reply too, where the extended rcode (BADVERS) lives
        rcode = dns.message.from_wire(reply).rcode()
    except Exception as exc:
        raise AssertionError(f"reply only readable as far as its question ({exc!r}): {reply.hex()}") from None
    assert rcode in ALLOWED_RCODES, (dns.rcode.to_text(rcode), data.hex())
    if udp:
        assert len(reply) <= udp_limit_of(data), (len(reply), udp_limit_of(data), data.hex())
    return message


def check_parsers(data: bytes) -> None:
    for parse in (fast_parse, full_parse):
        try:
            result = parse(data)
        except Malformed:
            continue
        assert result is None or isinstance(result, Query), (parse.__name__, type(result))


# --------------------------------------------------------------------------- in-process


@pytest.fixture(scope="module")
def responder(zone_data: dict, tmp_path_factory: pytest.TempPathFactory) -> Responder:
    """One responder for the whole module: its hot caches fill up as a server's do."""
    return fresh_responder(zone_data, build_mmdb(tmp_path_factory.mktemp("fuzzgeo")))


def respond_twice(responder: Responder, data: bytes, client: str, udp: bool) -> None:
    """The first call takes the miss path, the second the hot cache: both must hold."""
    for _ in range(2):
        check_reply(data, responder.respond(data, client, udp), udp)


@pytest.mark.slow
@settings(PROPERTY, max_examples=1500)
@given(data=st.binary(max_size=600), client=CLIENTS, udp=st.booleans())
def test_random_bytes(responder, data, client, udp):
    check_parsers(data)
    respond_twice(responder, data, client, udp)


@pytest.mark.slow
@settings(PROPERTY, max_examples=2000)
@given(data=mutated(), client=CLIENTS, udp=st.booleans())
def test_mutated_valid_queries(responder, data, client, udp):
    check_parsers(data)
    respond_twice(responder, data, client, udp)


@pytest.mark.slow
@settings(PROPERTY, max_examples=1500)
@given(data=edns_queries(), client=CLIENTS, udp=st.booleans())
def test_random_edns_options_and_ecs(responder, data, client, udp):
    check_parsers(data)
    respond_twice(responder, data, client, udp)


@pytest.mark.slow
@settings(PROPERTY, max_examples=1500)
@given(data=structural(), client=CLIENTS, udp=st.booleans())
def test_structural_edges(responder, data, client, udp):
    check_parsers(data)
    respond_twice(responder, data, client, udp)


@pytest.mark.parametrize("data", [
    header() + b"\xc0\x0c\x00\x01\x00\x01",                       # a pointer to itself
    header() + b"\x01a\xc0\x0e\x00\x01\x00\x01",                  # a pointer to a pointer to itself
    header(qd=65535, an=65535, ns=65535, ar=65535) + QNAME + b"\x00\x01\x00\x01",
    header() + bytes([64]) + b"a" * 64 + b"\x00\x00\x01\x00\x01",  # a label of 64
    header() + (b"\x3f" + b"x" * 63) * 4 + b"\x00\x00\x01\x00\x01",  # 257 octets
    header(ar=1) + QNAME + b"\x00\x01\x00\x01" + _opt(owner=b"\x01a\x00"),
    header(ar=2) + QNAME + b"\x00\x01\x00\x01" + _opt() + _opt(),
    header(an=1) + QNAME + b"\x00\x01\x00\x01" + b"\xc0\x0c\x00\x01\x00\x01\x00\x00",
    header(flags=5 << 11) + QNAME + b"\x00\x21\x00\x01",             # an UPDATE whose zone is not a SOA
], ids=["self-pointer", "pointer-loop", "counts-65535", "label-64", "name-257", "opt-not-root", "two-opts",
        "truncated-rr", "update-zone-not-soa"])
def test_named_edges_get_formerr_or_notimp(responder, data):
    """The classic cases, spelled out: an error reply with the query's ID, never a crash."""
    check_parsers(data)
    for udp in (True, False):
        reply = check_reply(data, responder.respond(data, "127.0.0.1", udp), udp)
        assert reply is not None and reply.rcode() in (dns.rcode.FORMERR, dns.rcode.NOTIMP), data.hex()


# --------------------------------------------------------------------------- live


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SmartDNS]:
    server = start_authoritative(tmp_path_factory.mktemp("fuzzlive"))
    yield server
    server.stop()


PROBE_ID = 0xBEEF


def probe() -> dns.message.Message:
    message = dns.message.make_query("ns2.example.com", "A")
    message.id = PROBE_ID
    return message


def is_probe_answer(raw: bytes) -> bool:
    try:
        reply = dns.message.from_wire(raw)
    except dns.exception.DNSException:
        return False
    return reply.id == PROBE_ID and probe().is_response(reply) and bool(reply.answer)


def exchange_udp(server: SmartDNS, data: bytes) -> list[bytes]:
    """Send the packet and then a probe; return every datagram that came back before the probe's answer."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.connect((server.host, server.port))
        sock.settimeout(3)
        sock.send(data)
        sock.send(probe().to_wire())
        replies = []
        for _ in range(4):  # the server answers in order: fuzz reply (or none), then the probe
            raw = sock.recv(65535)
            if is_probe_answer(raw):
                return replies
            replies.append(raw)
    raise AssertionError(f"no probe answer after {data.hex()}:\n{server.log}")


def exchange_tcp(server: SmartDNS, data: bytes) -> list[bytes]:
    """The same over one TCP connection (2-byte framing): the packet, then the probe."""
    with socket.create_connection((server.host, server.port), timeout=3) as sock:
        query = probe().to_wire()
        sock.sendall(struct.pack("!H", len(data)) + data + struct.pack("!H", len(query)) + query)
        replies = []
        for _ in range(4):
            raw = read_frame(sock)
            assert raw is not None, f"connection closed after {data.hex()}:\n{server.log}"
            if is_probe_answer(raw):
                return replies
            replies.append(raw)
    raise AssertionError(f"no probe answer after {data.hex()}")


LIVE = settings(PROPERTY, max_examples=300)


@LIVE
@given(data=PACKETS)
def test_live_udp(live, data):
    replies = exchange_udp(live, data)
    assert len(replies) <= 1, [r.hex() for r in replies]
    for reply in replies:
        check_reply(data, reply, udp=True)


@settings(PROPERTY, max_examples=120)
@given(data=PACKETS)
def test_live_tcp(live, data):
    replies = exchange_tcp(live, data)
    assert len(replies) <= 1, [r.hex() for r in replies]
    for reply in replies:
        check_reply(data, reply, udp=False)


def test_live_server_logged_no_traceback(live):
    """Runs after the live fuzzing above (file order): nothing the packets did reached the log as a bug."""
    for tcp in (False, True):
        response = live.query("www.example.com", "A", tcp=tcp)
        assert response.rcode() == dns.rcode.NOERROR and response.answer
    assert live.proc is not None and live.proc.poll() is None
    assert "Traceback" not in live.log, live.log
    assert "internal error" not in live.log, live.log
