"""Soak: a real smartdns takes a flood of mutated packets, then must still answer correctly.

    python tests/soak/soak.py [--packets 1000000] [--seconds 600] [--seed 1] [--tcp-share 0.01]

Starts `python -m smartdns serve --listen 127.0.0.1:0 --zones zones --workers 1` (the
repository's example zone; metrics on an ephemeral port so runs can overlap), then sends
packets from a seeded generator over UDP as fast as the server takes them: in windows of
WINDOW packets, each closed by a probe query whose answer proves the server is alive and
tells that every reply to the window has arrived (one UDP thread answers in order). A
share of the packets goes over TCP instead, including frames that lie about their length
and connections closed mid-frame. Every reply is checked: QR set, an ID that was sent,
an allowed rcode, no more than 1232 bytes over UDP; one in SAMPLE_EVERY is read whole by
dnspython.

Afterwards: normal queries over UDP and TCP get their correct answers, the server is
still running, and its stderr shows no "Traceback" / "internal error". It prints the
counts and exits non-zero on any failure. Everything is bounded: the packet count, the
time cap (the flood stops there and the checks still run), every socket wait.
Loopback only.
"""

from __future__ import annotations

import argparse
import random
import socket
import struct
import sys
import tempfile
import time
from pathlib import Path

import dns.edns
import dns.exception
import dns.message
import dns.rcode

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))  # run as a script: conftest's server helper is one directory up
from conftest import SmartDNS  # noqa: E402

WINDOW = 200  # packets in flight before a probe: far below what the 4 MiB socket buffer holds
SAMPLE_EVERY = 97  # one reply in this many is parsed whole by dnspython
PROBE_ID = 0xBEEF
ALLOWED_RCODE_NIBBLES = {0, 1, 3, 4, 5, 6}  # NOERROR (and BADVERS's low bits), FORMERR, NXDOMAIN, NOTIMP, REFUSED, YXDOMAIN
MAX_UDP = 1232

# --------------------------------------------------------------------------- packets


def _name(text: str) -> bytes:
    return b"".join(bytes([len(label)]) + label.encode() for label in text.strip(".").split(".") if label) + b"\x00"


def _header(qid: int, flags: int = 0x0100, qd: int = 1, an: int = 0, ns: int = 0, ar: int = 0) -> bytes:
    return struct.pack("!HHHHHH", qid, flags, qd, an, ns, ar)


def _opt(payload: int = 1232, version: int = 0, flags: int = 0, rdata: bytes = b"", owner: bytes = b"\x00") -> bytes:
    return owner + struct.pack("!HHBBHH", 41, payload, 0, version, flags, len(rdata)) + rdata


def _ecs(address: bytes, source: int, family: int = 1, scope: int = 0) -> bytes:
    body = struct.pack("!HBB", family, source, scope) + address
    return struct.pack("!HH", 8, len(body)) + body


NAMES = ["example.com", "mx.example.com", "ns1.example.com", "ns2.example.com", "www.example.com",
         "nothing.example.com", "example.org", "com", ""]
TYPES = [1, 28, 15, 2, 16, 6, 5, 255, 252, 251, 33, 43, 65, 99, 0, 41, 65535]


class Generator:
    """Seeded packets: valid queries, random names, random ECS, and every kind of damage."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.base = [self._valid() for _ in range(2000)]  # ID 0; a random ID is put in per packet
        self.kinds = [  # (weight, maker)
            (8, self.valid), (10, self.random_subdomain), (6, self.random_ecs), (14, self.bitflip),
            (8, self.truncate), (6, self.extend), (5, self.overwrite), (5, self.counts), (10, self.random_bytes),
            (14, self.edge), (6, self.random_options), (4, self.opcode_or_qr), (4, self.insert),
        ]
        self.makers = [maker for weight, maker in self.kinds for _ in range(weight)]

    def packet(self) -> bytes:
        return self.rng.choice(self.makers)()

    def _id(self) -> bytes:
        return self.rng.getrandbits(16).to_bytes(2, "big")

    def _valid(self) -> bytes:
        rng = self.rng
        name = rng.choice(NAMES)
        if rng.random() < 0.5:  # 0x20 case
            name = "".join(c.upper() if rng.random() < 0.5 else c for c in name)
        data = _header(0, rng.choice([0, 0x0100, 0x0110]), ar=0) + _name(name) + struct.pack(
            "!HH", rng.choice(TYPES), rng.choice([1, 1, 1, 3, 255]))
        if rng.random() < 0.6:
            options = _ecs(bytes([rng.randrange(1, 224), rng.randrange(256), rng.randrange(256)]), 24) \
                if rng.random() < 0.3 else b""
            data = data[:10] + b"\x00\x01" + data[12:] + _opt(rng.choice([0, 512, 1232, 4096]),
                                                             flags=rng.choice([0, 0x8000]), rdata=options)
        return data

    def valid(self) -> bytes:
        return self._id() + self.rng.choice(self.base)[2:]

    def random_subdomain(self) -> bytes:
        label = "%012x" % self.rng.getrandbits(48)
        return self._id() + _header(0)[2:] + _name(f"{label}.example.com") + struct.pack("!HH", 1, 1)

    def random_ecs(self) -> bytes:
        rng = self.rng
        family = rng.choice([1, 1, 2])
        source = rng.randrange(1, 33 if family == 1 else 129)
        address = bytearray(rng.randbytes((source + 7) // 8))
        if source % 8:
            address[-1] &= (0xFF << (8 - source % 8)) & 0xFF
        qname = rng.choice(["mx.example.com", "example.com"])
        return (self._id() + _header(0, ar=1)[2:] + _name(qname) + struct.pack("!HH", rng.choice([1, 28, 15]), 1)
                + _opt(rdata=_ecs(bytes(address), source, family)))

    def random_options(self) -> bytes:
        rng = self.rng
        rdata = b""
        for _ in range(rng.randrange(1, 4)):
            kind = rng.randrange(4)
            if kind == 0:  # ECS with anything in it
                rdata += _ecs(rng.randbytes(rng.randrange(0, 18)), rng.randrange(256), rng.choice([0, 1, 2, 3]),
                              rng.randrange(256))
            elif kind == 1:
                body = rng.randbytes(rng.randrange(0, 12))
                rdata += struct.pack("!HH", rng.randrange(65536), len(body)) + body
            elif kind == 2:  # a length that lies
                rdata += struct.pack("!HH", rng.randrange(65536), rng.randrange(65536)) + rng.randbytes(4)
            else:
                rdata += struct.pack("!HH", 3, 0)  # NSID
        return (self._id() + _header(0, ar=1)[2:] + _name("mx.example.com") + b"\x00\x01\x00\x01"
                + _opt(rng.randrange(65536), rng.choice([0, 0, 1]), rng.randrange(65536), rdata))

    def bitflip(self) -> bytes:
        data = bytearray(self.valid())
        for _ in range(self.rng.randrange(1, 6)):
            data[self.rng.randrange(len(data))] ^= 1 << self.rng.randrange(8)
        return bytes(data)

    def truncate(self) -> bytes:
        data = self.valid()
        return data[:self.rng.randrange(len(data))]

    def extend(self) -> bytes:
        return self.valid() + self.rng.randbytes(self.rng.randrange(1, 64))

    def overwrite(self) -> bytes:
        data = bytearray(self.valid())
        data[self.rng.randrange(len(data))] = self.rng.randrange(256)
        return bytes(data)

    def insert(self) -> bytes:
        data = bytearray(self.valid())
        at = self.rng.randrange(len(data) + 1)
        data[at:at] = self.rng.randbytes(self.rng.randrange(1, 8))
        return bytes(data)

    def counts(self) -> bytes:
        data = bytearray(self.valid())
        data[4:12] = struct.pack("!HHHH", *(self.rng.choice([0, 1, 2, 255, 65535]) for _ in range(4)))
        return bytes(data)

    def random_bytes(self) -> bytes:
        return self.rng.randbytes(self.rng.randrange(0, 600))

    def opcode_or_qr(self) -> bytes:
        data = bytearray(self.valid())
        data[2] = (data[2] & 0x87) | (self.rng.randrange(16) << 3) | (0x80 if self.rng.random() < 0.3 else 0)
        return bytes(data)

    def edge(self) -> bytes:
        rng = self.rng
        qid = rng.getrandbits(16)
        q = _name("www.example.com") + b"\x00\x01\x00\x01"
        kind = rng.randrange(14)
        if kind == 0:  # a compression pointer to itself
            return _header(qid) + b"\xc0\x0c\x00\x01\x00\x01"
        if kind == 1:  # two pointers pointing at each other
            return _header(qid) + b"\x01a\xc0\x0e\x00\x01\x00\x01"
        if kind == 2:  # a pointer anywhere
            return _header(qid) + struct.pack("!H", 0xC000 | rng.randrange(0x4000)) + b"\x00\x01\x00\x01"
        if kind == 3:  # a second question compressed against the first
            return _header(qid, qd=2) + q + b"\x02mx\xc0\x10\x00\x01\x00\x01"
        if kind == 4:  # a label over 63 (or a reserved label type)
            size = rng.randrange(64, 256)
            return _header(qid) + bytes([size]) + b"a" * min(size, 191) + b"\x00\x00\x01\x00\x01"
        if kind == 5:  # a name over 255 octets
            labels = b"".join(b"\x3f" + b"x" * 63 for _ in range(rng.randrange(4, 8)))
            return _header(qid) + labels + b"\x00\x00\x01\x00\x01"
        if kind == 6:  # QDCOUNT/ANCOUNT/... 65535
            counts = [rng.choice([0, 1, 65535]) for _ in range(4)]
            counts[rng.randrange(4)] = 65535
            return struct.pack("!HHHHHH", qid, 0x0100, *counts) + q
        if kind == 7:  # an answer record cut short
            rr = b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x0e\x10\x00\x04\xc0\x00\x02\x01"
            return _header(qid, an=1) + q + rr[:rng.randrange(len(rr))]
        if kind == 8:  # an OPT not at the root
            return _header(qid, ar=1) + q + _opt(owner=b"\x01a\x00")
        if kind == 9:  # two OPTs
            return _header(qid, ar=2) + q + _opt() + _opt(4096)
        if kind == 10:  # a malformed ECS
            return _header(qid, ar=1) + q + _opt(rdata=_ecs(b"\xcb\x00\x71", rng.choice([17, 23, 33, 200]),
                                                             rng.choice([1, 3])))
        if kind == 11:  # EDNS version 1: BADVERS
            return _header(qid, ar=1) + q + _opt(version=rng.randrange(1, 256))
        if kind == 12:  # an UPDATE whose zone section is not a SOA
            return _header(qid, flags=5 << 11) + q
        return _header(qid, ar=1) + q + _opt(rdata=b"\x00\x08\x00\x08\x00\x01\x18", payload=rng.randrange(65536))


# --------------------------------------------------------------------------- the server


class Server(SmartDNS):
    """conftest's real server, on the zones given, with one worker."""

    def __init__(self, zones: Path, workdir: Path) -> None:
        texts = {path.name[: -len(".yaml")]: path.read_text() for path in sorted(zones.glob("*.yaml"))}
        super().__init__(workdir, zones=texts, args=("--workers", "1"))

    @property
    def lines(self) -> list[str]:
        return self.log_lines

    def start(self, timeout: float = 30) -> "Server":  # type: ignore[override]
        super().start(timeout)
        return self

    def rss_kib(self) -> int:
        assert self.proc
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0


# --------------------------------------------------------------------------- the flood


class Counts:
    def __init__(self) -> None:
        self.udp_sent = self.tcp_sent = self.udp_replies = self.tcp_replies = 0
        self.probes = self.probes_lost = 0
        self.bad_replies: list[str] = []
        self.sampled = 0

    def bad(self, why: str, data: bytes, reply: bytes) -> None:
        if len(self.bad_replies) < 20:
            self.bad_replies.append(f"{why}: query {data.hex()} reply {reply.hex()}")
        else:
            self.bad_replies.append(why)


PROBE_NAME = b"\x03ns1\x07example\x03com\x00"
PROBE_CASE_AT = (13, 14, 17, 18, 19, 20, 21, 22, 23, 25, 26, 27)  # the letters of the name, offsets in the packet


def probe_wire(seq: int) -> bytes:
    """`ns1.example.com A` with ID PROBE_ID; `seq` (12 bits) in the 0x20 case of its letters, which the
    answer keeps, so that every window's probe answer is its own."""
    message = dns.message.make_query("ns1.example.com", "A", use_edns=False)
    message.id = PROBE_ID
    wire = bytearray(message.to_wire())
    for bit, at in enumerate(PROBE_CASE_AT):
        if seq >> bit & 1:
            wire[at] ^= 0x20
    return bytes(wire)


def is_probe_answer(reply: bytes) -> bool:
    return reply[:2] == PROBE_ID.to_bytes(2, "big") and reply[12:12 + len(PROBE_NAME)].lower() == PROBE_NAME


def check_reply(counts: Counts, sent: dict[int, bytes], reply: bytes, udp: bool) -> None:
    if len(reply) < 12:
        counts.bad("shorter than a header", b"", reply)
        return
    qid, flags = struct.unpack_from("!HH", reply)
    query = sent.get(qid, b"")
    if qid not in sent:
        counts.bad("an ID that was not sent", b"", reply)
    if not flags & 0x8000:
        counts.bad("QR not set", query, reply)
    if flags & 0xF not in ALLOWED_RCODE_NIBBLES:
        counts.bad(f"rcode {flags & 0xF}", query, reply)
    if udp and len(reply) > MAX_UDP:
        counts.bad(f"{len(reply)} bytes over UDP", query, reply)
    counts.sampled += 1
    if counts.sampled % SAMPLE_EVERY == 0:
        try:
            dns.message.from_wire(reply, question_only=True)
        except Exception as exc:
            counts.bad(f"unreadable ({type(exc).__name__})", query, reply)


def udp_window(sock: socket.socket, packets: list[bytes], seq: int, counts: Counts) -> None:
    """Send a window of packets and a probe; read replies until the probe's answer."""
    sent = {struct.unpack_from("!H", p)[0]: p for p in packets if len(p) >= 2}
    for packet in packets:
        try:
            sock.send(packet)
        except OSError:
            pass  # ENOBUFS and the like: the packet is lost, like on any network
        counts.udp_sent += 1
    probe = probe_wire(seq)
    for _attempt in range(3):
        try:
            sock.send(probe)
        except OSError as exc:  # ECONNREFUSED: nothing listens any more
            raise SystemExit(f"the server went away ({exc})") from None
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                reply = sock.recv(65535)
            except socket.timeout:
                break
            except ConnectionRefusedError:
                raise SystemExit("the server went away") from None
            if is_probe_answer(reply):
                if reply[12:12 + len(PROBE_NAME)] == probe[12:12 + len(PROBE_NAME)]:
                    counts.probes += 1
                    return
                continue  # an earlier probe's late answer
            counts.udp_replies += 1
            check_reply(counts, sent, reply, udp=True)
        counts.probes_lost += 1
    raise SystemExit(f"no answer to 3 probes in a row after {counts.udp_sent} packets")


def tcp_session(port: int, gen: Generator, count: int, counts: Counts) -> None:
    """One connection: framed packets (some frames lying about their length), then a probe, or a cut."""
    rng = gen.rng
    packets = [gen.packet() for _ in range(count)]
    sent = {struct.unpack_from("!H", p)[0]: p for p in packets if len(p) >= 2}
    style = rng.randrange(10)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        stream = b"".join(struct.pack("!H", len(p)) + p for p in packets)
        counts.tcp_sent += len(packets)
        if style == 0:  # a frame that says more than comes, then the connection is closed
            sock.sendall(stream + struct.pack("!H", rng.randrange(100, 65536)) + rng.randbytes(rng.randrange(50)))
            sock.shutdown(socket.SHUT_WR)
        elif style == 1:  # cut in the middle of a frame, at once
            sock.sendall(stream[:rng.randrange(len(stream) + 1)])
            return
        else:
            probe = probe_wire(0)
            sock.sendall(stream + struct.pack("!H", len(probe)) + probe)
        buffer = b""
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65535)
            except (socket.timeout, ConnectionResetError):
                break
            if not chunk:
                break
            buffer += chunk
            while len(buffer) >= 2 and len(buffer) >= 2 + struct.unpack_from("!H", buffer)[0]:
                size = struct.unpack_from("!H", buffer)[0]
                reply, buffer = buffer[2:2 + size], buffer[2 + size:]
                if is_probe_answer(reply):
                    counts.probes += 1
                    return
                counts.tcp_replies += 1
                check_reply(counts, sent, reply, udp=False)
        if style >= 2:
            counts.probes_lost += 1
            counts.bad_replies.append("TCP probe not answered")


# --------------------------------------------------------------------------- after: correct answers


def correct_answers(port: int) -> list[str]:
    """The example zone's answers, over UDP and TCP; the list of what was wrong."""
    import dns.query

    wrong = []
    cn_ecs = [dns.edns.ECSOption("1.0.1.0", 24)]  # CN in the embedded country data: the domestic exchange
    cases = [
        ("example.com", "MX", {}, lambda r: r.rcode() == 0 and "10 mx.example.com." in r.answer[0].to_text()),
        ("ns1.example.com", "A", {}, lambda r: r.rcode() == 0 and r.answer[0][0].address == "192.0.2.53"),
        ("mx.example.com", "A", {"use_edns": 0, "options": cn_ecs},
         lambda r: r.rcode() == 0 and r.answer[0][0].address == "192.0.2.10"),
        ("mx.example.com", "A", {}, lambda r: r.rcode() == 0 and r.answer[0][0].address in
         {"198.51.100.10", "198.51.100.11", "192.0.2.10"}),
        ("nothing-here.example.com", "A", {}, lambda r: r.rcode() == dns.rcode.NXDOMAIN and r.authority),
        ("example.org", "A", {}, lambda r: r.rcode() == dns.rcode.REFUSED),
    ]
    for tcp in (False, True):
        for name, rdtype, kwargs, ok in cases:
            query = dns.message.make_query(name, rdtype, **kwargs)
            try:
                if tcp:
                    response = dns.query.tcp(query, "127.0.0.1", port=port, timeout=5)
                else:
                    response = dns.query.udp(query, "127.0.0.1", port=port, timeout=5, ignore_unexpected=True)
                good = ok(response)
            except (dns.exception.DNSException, OSError, IndexError, AttributeError) as exc:
                good, response = False, exc
            if not good:
                wrong.append(f"{'tcp' if tcp else 'udp'} {name} {rdtype}: {response}")
    return wrong


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Soak a real smartdns with mutated packets (loopback only).")
    parser.add_argument("--packets", type=int, default=1_000_000, help="packets to send in all (default 1,000,000)")
    parser.add_argument("--seconds", type=float, default=600, help="time cap for the flood (default 600)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--tcp-share", type=float, default=0.01, help="share of packets sent over TCP")
    parser.add_argument("--zones", default=str(REPO / "zones"))
    args = parser.parse_args(argv)
    if not 1 <= args.packets <= 100_000_000 or not 0 < args.seconds <= 3600 or not 0 <= args.tcp_share <= 1:
        parser.error("--packets 1..100,000,000, --seconds up to 3600, --tcp-share 0..1")

    gen = Generator(args.seed)
    counts = Counts()
    with tempfile.TemporaryDirectory(prefix="smartdns-soak-") as workdir:
        server = Server(Path(args.zones).resolve(), Path(workdir))
        server.start()
        rss_before = server.rss_kib()
        started = time.monotonic()
        capped = False
        seq = 0
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.connect(("127.0.0.1", server.port))
                sock.settimeout(5)
                while counts.udp_sent + counts.tcp_sent < args.packets:
                    if time.monotonic() - started > args.seconds:
                        capped = True
                        break
                    left = args.packets - counts.udp_sent - counts.tcp_sent
                    if gen.rng.random() < args.tcp_share * WINDOW / 10:  # ~tcp_share of packets, 10 per session
                        try:
                            tcp_session(server.port, gen, min(10, left), counts)
                        except OSError as exc:  # refused or reset where no answer was due: the server's health is
                            counts.bad_replies.append(f"TCP: {exc!r}")  # what the probes and checks judge
                        continue
                    seq = (seq + 1) % 4096
                    udp_window(sock, [gen.packet() for _ in range(min(WINDOW, left))], seq, counts)
        except SystemExit as exc:
            counts.bad_replies.append(str(exc))
        flood_seconds = time.monotonic() - started
        rss_after = server.rss_kib() if server.proc and server.proc.poll() is None else 0
        alive = server.proc is not None and server.proc.poll() is None
        wrong = correct_answers(server.port) if alive else ["the server is not running"]
        exit_code = server.stop()
        log = "\n".join(server.lines)

    exceptions = log.count("Traceback") + log.count("internal error")
    sent = counts.udp_sent + counts.tcp_sent
    print(f"packets sent:          {sent} ({counts.udp_sent} UDP, {counts.tcp_sent} TCP)"
          + (f"  [time cap of {args.seconds:g} s reached]" if capped else ""))
    print(f"responses received:    {counts.udp_replies + counts.tcp_replies} "
          f"({counts.udp_replies} UDP, {counts.tcp_replies} TCP); probes answered {counts.probes}, "
          f"lost {counts.probes_lost}")
    print(f"flood time:            {flood_seconds:.1f} s ({sent / max(flood_seconds, 1e-9):,.0f} packets/s)")
    print(f"server RSS:            {rss_before / 1024:.1f} MiB before, {rss_after / 1024:.1f} MiB after")
    print(f"bad replies:           {len(counts.bad_replies)}")
    for line in counts.bad_replies[:20]:
        print(f"  {line}")
    print(f"exceptions in log:     {exceptions}")
    print(f"answers after:         {'ok' if not wrong else 'FAILED'}")
    for line in wrong:
        print(f"  {line}")
    print(f"server exit code:      {exit_code}")
    failed = bool(counts.bad_replies or exceptions or wrong or not alive or exit_code != 0)
    if exceptions:
        print(log[-5000:])
    print("FAILED" if failed else "PASSED")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
