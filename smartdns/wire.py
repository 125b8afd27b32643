"""DNS wire format: parsing queries (a fast path and a full one) and rendering responses.

The fast path reads the header, question and an optional OPT with `struct` and
slicing; anything it does not recognise goes to the full path (dnspython), which
is the reference: both must yield the same `Query` for the same bytes.
Responses are rendered once per shape with dnspython's renderer and reused by
splicing in each query's ID, RD/CD bits and question bytes (so the 0x20 case
of the question survives), plus a per-query ECS option.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from typing import Iterable, Sequence

import dns.edns
import dns.exception
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdataset
import dns.rdatatype
import dns.renderer

HEADER = struct.Struct("!HHHHHH")
QTYPE_QCLASS = struct.Struct("!HH")
OPT_FIXED = struct.Struct("!HHBBHH")  # type, payload, ext-rcode, version, flags, rdlen (after the root name)
OPTION_HEAD = struct.Struct("!HH")

QR, AA, TC, RD, RA, AD, CD = 0x8000, 0x0400, 0x0200, 0x0100, 0x0080, 0x0020, 0x0010
OPCODE_MASK = 0x7800
ECHOED_FLAGS = RD | CD  # copied from query to response (RFC 1035 4.1.1, RFC 6840 5.9)
EDNS_DO = 0x8000
OPTION_NSID, OPTION_ECS = dns.edns.OptionType.NSID, dns.edns.OptionType.ECS
TYPE_OPT = dns.rdatatype.OPT
TYPE_SOA = dns.rdatatype.SOA

OUR_PAYLOAD = 1232  # the DNS flag day 2020 size: no IP fragmentation on common paths
MIN_PAYLOAD = 512
NO_EDNS_LIMIT = 512
MAX_NAME = 255

NOERROR, FORMERR, SERVFAIL, NXDOMAIN = dns.rcode.NOERROR, dns.rcode.FORMERR, dns.rcode.SERVFAIL, dns.rcode.NXDOMAIN
NOTIMP, REFUSED, BADVERS = dns.rcode.NOTIMP, dns.rcode.REFUSED, dns.rcode.BADVERS
# A query's type and class as dnspython's enums, looked up once per value (a call to the enum costs ~1 us)
_RDATATYPES: dict[int, dns.rdatatype.RdataType] = {}
_RDATACLASSES: dict[int, dns.rdataclass.RdataClass] = {}


def rdatatype(value: int) -> dns.rdatatype.RdataType:
    found = _RDATATYPES.get(value)
    if found is None:
        found = _RDATATYPES[value] = dns.rdatatype.RdataType.make(value)  # at most 65536 entries
    return found


def rdataclass(value: int) -> dns.rdataclass.RdataClass:
    found = _RDATACLASSES.get(value)
    if found is None:
        found = _RDATACLASSES[value] = dns.rdataclass.RdataClass.make(value)
    return found


class Malformed(Exception):
    """A query we can read the header of but must answer with an error (or drop).

    `rcode` None means drop silently; otherwise answer with that rcode, echoing
    `question` when it could be read.
    """

    def __init__(self, reason: str, rcode: int | None, query_id: int = 0, flags: int = 0,
                 question: bytes = b"", edns: Edns | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.rcode = rcode
        self.query_id = query_id
        self.flags = flags
        self.question = question
        self.edns = edns


@dataclass(frozen=True, slots=True)
class ClientSubnet:
    """An EDNS Client Subnet option as sent (RFC 7871)."""

    family: int
    source: int
    scope: int
    address: bytes  # as sent: exactly ceil(source/8) bytes

    @property
    def ip(self) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
        size = 4 if self.family == 1 else 16
        raw = self.address.ljust(size, b"\x00")
        return ipaddress.IPv4Address(raw) if size == 4 else ipaddress.IPv6Address(raw)

    def usable(self) -> bool:
        """A source prefix of 0, or an address that is not global, says nothing about the client."""
        return self.source > 0 and self.ip.is_global

    def reply(self, scope: int) -> bytes:
        """The option bytes to echo back with our SCOPE PREFIX-LENGTH."""
        body = struct.pack("!HBB", self.family, self.source, scope) + self.address
        return OPTION_HEAD.pack(OPTION_ECS, len(body)) + body


def parse_ecs(data: bytes) -> ClientSubnet:
    """Parse an ECS option body; anything RFC 7871 6 calls malformed raises Malformed(FORMERR)."""
    if len(data) < 4:
        raise Malformed("ECS option shorter than 4 bytes", FORMERR)
    family, source, scope = struct.unpack_from("!HBB", data)
    address = data[4:]
    bits = {1: 32, 2: 128}.get(family)
    if bits is None:
        raise Malformed(f"ECS family {family} unknown", FORMERR)
    if source > bits or scope > bits:
        raise Malformed(f"ECS prefix longer than the family allows ({source}/{scope} > {bits})", FORMERR)
    if len(address) != (source + 7) // 8:
        raise Malformed("ECS address length does not match its source prefix", FORMERR)
    if source % 8 and address[-1] & (0xFF >> (source % 8)):
        raise Malformed("ECS address has bits set beyond its source prefix", FORMERR)
    return ClientSubnet(family, source, scope, bytes(address))


@dataclass(frozen=True, slots=True)
class Edns:
    payload: int  # as the client sent it
    version: int
    do: bool
    ecs: ClientSubnet | None = None
    nsid: bool = False

    @property
    def limit(self) -> int:
        """RFC 6891 6.2.5: below 512 counts as 512; we never send more than our own 1232."""
        return min(max(self.payload, MIN_PAYLOAD), OUR_PAYLOAD)


@dataclass(frozen=True, slots=True)
class Query:
    id: int
    flags: int
    qname: bytes  # the question name in lower-case wire form: the lookup key
    qtype: dns.rdatatype.RdataType
    qclass: dns.rdataclass.RdataClass
    question: bytes  # the question section exactly as sent (case preserved)
    edns: Edns | None

    @property
    def udp_limit(self) -> int:
        return self.edns.limit if self.edns else NO_EDNS_LIMIT

    @property
    def name(self) -> dns.name.Name:
        return dns.name.from_wire(self.qname, 0)[0]


def name_key(name: dns.name.Name) -> bytes:
    """A name in lower-case wire form: how names are compared and looked up."""
    wire = name.canonicalize().to_wire()
    assert wire is not None  # to_wire() without a file returns the bytes
    return wire


def _read_name(data: bytes, pos: int) -> int:
    """End offset of an uncompressed name starting at `pos`; -1 when it is not one."""
    end = len(data)
    start = pos
    while pos < end:
        length = data[pos]
        if length == 0:
            return pos + 1 if pos + 1 - start <= MAX_NAME else -1
        if length > 63:  # a compression pointer or reserved label type: not in a query question
            return -1
        pos += length + 1
    return -1


def question_name_end(data: bytes) -> int:
    """Where the question's (uncompressed) name ends in a one-question message; -1 when there is none."""
    if len(data) < 17 or data[4] != 0 or data[5] != 1:
        return -1
    return _read_name(data, 12)


def _options(data: bytes, pos: int, end: int) -> tuple[ClientSubnet | None, bool] | None:
    """ECS and NSID from an OPT RDATA; None if the option list is malformed."""
    ecs: ClientSubnet | None = None
    nsid = False
    while pos < end:
        if pos + 4 > end:
            return None
        code, length = OPTION_HEAD.unpack_from(data, pos)
        pos += 4
        if pos + length > end:
            return None
        if code == OPTION_ECS:
            if ecs is not None:
                raise Malformed("more than one ECS option", FORMERR)
            ecs = parse_ecs(data[pos:pos + length])
        elif code == OPTION_NSID:
            nsid = True
        pos += length
    return ecs, nsid


def fast_parse(data: bytes) -> Query | None:
    """The common shapes only: one question, no answer/authority, at most an OPT. None: use full_parse.

    Raises Malformed (FORMERR) for a bad ECS option, as full_parse does.
    """
    if len(data) < 17:
        return None
    qid, flags, qdcount, ancount, nscount, arcount = HEADER.unpack_from(data)
    if flags & (QR | OPCODE_MASK) or qdcount != 1 or ancount or nscount or arcount > 1:
        return None
    name_end = _read_name(data, 12)
    if name_end < 0 or name_end + 4 > len(data):
        return None
    qtype, qclass = QTYPE_QCLASS.unpack_from(data, name_end)
    qend = name_end + 4
    edns = None
    if arcount:
        if qend + 11 > len(data) or data[qend] != 0:
            return None
        rtype, payload, _ext, version, eflags, rdlen = OPT_FIXED.unpack_from(data, qend + 1)
        end = qend + 11 + rdlen
        if rtype != TYPE_OPT or version != 0 or end != len(data):
            return None
        try:
            found = _options(data, qend + 11, end)
        except Malformed as exc:
            # A bad ECS is FORMERR (RFC 7871 6). Answer it here, where the OPT is known: dnspython
            # fails on some bad ECS options, and the full path could then not echo an OPT.
            raise Malformed(exc.reason, FORMERR, qid, flags, data[12:qend],
                            edns=Edns(payload, 0, bool(eflags & EDNS_DO))) from None
        if found is None:
            return None
        edns = Edns(payload, version, bool(eflags & EDNS_DO), found[0], found[1])
    elif qend != len(data):
        return None
    return Query(qid, flags, data[12:name_end].lower(), rdatatype(qtype), rdataclass(qclass), data[12:qend], edns)


def full_parse(data: bytes) -> Query | None:
    """Any packet. None: drop it (too short, or a response). Raises Malformed for error replies."""
    if len(data) < 12:
        return None
    qid, flags, qdcount, _an, _ns, _ar = HEADER.unpack_from(data)
    if flags & QR:
        return None  # never answer a response: it could be reflected back and forth
    name_end = _read_name(data, 12) if qdcount == 1 else -1
    question = data[12:name_end + 4] if 0 < name_end and name_end + 4 <= len(data) else b""
    opcode = (flags & OPCODE_MASK) >> 11
    try:
        message = dns.message.from_wire(data)
    except dns.message.ShortHeader:
        return None
    except Exception as exc:  # dnspython raises many types for malformed input
        if opcode != dns.opcode.QUERY:
            # NOTIMP needs no parse (dnspython rejects e.g. an UPDATE whose zone section is not SOA)
            raise Malformed(f"opcode {opcode} not implemented", NOTIMP, qid, flags,
                            _echoable(question, opcode)) from None
        raise Malformed(f"malformed message: {type(exc).__name__}", FORMERR, qid, flags, question) from None
    edns = _edns(message, qid, flags, question)
    # From here on the OPT could be read, so every error reply carries ours (RFC 6891 7).
    if opcode != dns.opcode.QUERY:
        raise Malformed(f"opcode {opcode} not implemented", NOTIMP, qid, flags, question, edns=edns)
    if len(message.question) != 1 or not question:
        raise Malformed(f"{len(message.question)} questions", FORMERR, qid, flags,
                        question if len(message.question) == 1 else b"", edns=edns)
    rrset = message.question[0]
    return Query(qid, flags, name_key(rrset.name), rrset.rdtype, rrset.rdclass, question, edns)


def _echoable(question: bytes, opcode: int) -> bytes:
    """The question to echo in a NOTIMP for a packet dnspython could not read.

    An UPDATE's first section is its zone, which must be a SOA of a real class (RFC 2136 2.3);
    echoing any other there makes our reply as unreadable to the client as its query was to us.
    """
    if opcode == dns.opcode.UPDATE and question:
        qtype, qclass = QTYPE_QCLASS.unpack_from(question, len(question) - 4)
        if qtype != TYPE_SOA or dns.rdataclass.is_metaclass(qclass):
            return b""
    return question


def _edns(message: dns.message.Message, qid: int, flags: int, question: bytes) -> Edns | None:
    """The query's EDNS as dnspython read it; BADVERS and a bad ECS raise Malformed carrying our OPT."""
    if message.edns < 0:
        return None
    payload, do = int(message.payload), bool(message.ednsflags & EDNS_DO)
    if message.edns != 0:
        raise Malformed(f"EDNS version {message.edns}", BADVERS, qid, flags, question,
                        edns=Edns(payload, message.edns, do))
    plain = Edns(payload, 0, do)
    ecs: ClientSubnet | None = None
    nsid = False
    for option in message.options:
        if option.otype == OPTION_ECS:
            if ecs is not None:
                raise Malformed("more than one ECS option", FORMERR, qid, flags, question, edns=plain)
            try:
                ecs = parse_ecs(option.to_wire())  # dnspython writes the option body only
            except Malformed as exc:
                raise Malformed(exc.reason, FORMERR, qid, flags, question, edns=plain) from None
        elif option.otype == OPTION_NSID:
            nsid = True
    return Edns(payload, 0, do, ecs, nsid)


Section = Sequence[tuple[dns.name.Name, dns.rdataset.Rdataset]]


@dataclass(frozen=True, slots=True)
class Rendered:
    """A response with ID 0, ready to splice; `opt_rdlen_at` is where the OPT RDLENGTH sits (-1: no OPT)."""

    wire: bytes
    opt_rdlen_at: int
    truncated: bool


def render(qname: dns.name.Name, qtype: dns.rdatatype.RdataType, qclass: dns.rdataclass.RdataClass, *,
           rcode: int, aa: bool,
           answer: Section = (), authority: Section = (), additional: Section = (),
           required_additional: Iterable[dns.name.Name] = (), edns: Edns | None = None,
           nsid: bytes | None = None, limit: int = 65535) -> Rendered:
    """Render a response. When it does not fit `limit`: additional RRsets are dropped
    without TC (RFC 2181 9) unless required (glue); otherwise TC=1 with the question only."""
    flags = QR | (AA if aa else 0) | (rcode & 0xF)
    options: list[tuple[dns.edns.OptionType, bytes]] = []
    if edns is not None and nsid is not None and edns.nsid:
        options.append((OPTION_NSID, nsid))
    opt_size = 11 + sum(4 + len(body) for _, body in options) if edns is not None else 0
    renderer = dns.renderer.Renderer(0, flags, limit)
    renderer.add_question(qname, qtype, qclass)
    renderer.reserve(opt_size)
    required = set(required_additional)
    truncated = False
    try:
        for owner, rdataset in answer:
            renderer.add_rdataset(dns.renderer.ANSWER, owner, rdataset)
        for owner, rdataset in authority:
            renderer.add_rdataset(dns.renderer.AUTHORITY, owner, rdataset)
        for owner, rdataset in additional:
            try:
                renderer.add_rdataset(dns.renderer.ADDITIONAL, owner, rdataset)
            except dns.exception.TooBig:
                if owner in required:
                    raise
    except dns.exception.TooBig:
        truncated = True
        renderer = dns.renderer.Renderer(0, flags | TC, limit)
        renderer.add_question(qname, qtype, qclass)
    renderer.release_reserved()
    opt_rdlen_at = -1
    if edns is not None:
        ext_rcode = rcode >> 4
        ednsflags = (ext_rcode << 24) | (EDNS_DO if edns.do else 0)
        renderer.add_edns(0, ednsflags, OUR_PAYLOAD, [dns.edns.GenericOption(code, body) for code, body in options])
    renderer.write_header()
    wire = renderer.get_wire()
    if edns is not None:
        opt_rdlen_at = len(wire) - sum(4 + len(body) for _, body in options) - 2
    return Rendered(wire, opt_rdlen_at, truncated)


def splice(rendered: Rendered, query: Query, extra_option: bytes = b"") -> bytes:
    """Make a rendered response the reply to `query`: its ID, RD/CD bits and question bytes."""
    wire = rendered.wire
    qlen = len(query.question)
    flags = (wire[2] << 8 | wire[3]) | (query.flags & ECHOED_FLAGS)
    head = struct.pack("!HH", query.id, flags) + wire[4:12] + query.question
    if not extra_option:
        return head + wire[12 + qlen:]
    at = rendered.opt_rdlen_at
    rdlen = (wire[at] << 8 | wire[at + 1]) + len(extra_option)
    return head + wire[12 + qlen:at] + struct.pack("!H", rdlen) + wire[at + 2:] + extra_option


def error_response(query_id: int, flags: int, rcode: int, question: bytes, edns: Edns | None) -> bytes:
    """FORMERR/NOTIMP/REFUSED/BADVERS replies: header, the question if we could read it, our OPT."""
    out_flags = QR | (flags & (OPCODE_MASK | ECHOED_FLAGS)) | (rcode & 0xF)
    opt = b""
    if edns is not None:
        ednsflags = ((rcode >> 4) << 24) | (EDNS_DO if edns.do else 0)
        opt = b"\x00" + OPT_FIXED.pack(TYPE_OPT, OUR_PAYLOAD, ednsflags >> 24, 0, ednsflags & 0xFFFF, 0)
    return HEADER.pack(query_id, out_flags, 1 if question else 0, 0, 0, 1 if opt else 0) + question + opt
