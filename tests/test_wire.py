"""wire.py in-process: parsing, ECS, error replies and splicing, byte by byte (no server)."""

from __future__ import annotations

import struct

import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdataset
import dns.rdatatype
import pytest

from conftest import ecs_option, header, opt_record, question
from smartdns import wire
from smartdns.wire import Malformed, fast_parse, full_parse, parse_ecs, question_name_end


def test_fast_parse_reads_a_plain_query():
    data = header(qid=0xBEEF) + question("WWW.Example.COM.", dns.rdatatype.MX)
    query = fast_parse(data)
    assert query is not None
    assert query.id == 0xBEEF
    assert query.qname == dns.name.from_text("www.example.com.").to_wire()  # lower case: the lookup key
    assert query.question == data[12:]  # the case as sent, for the reply
    assert query.qtype is dns.rdatatype.MX and query.qclass is dns.rdataclass.IN  # dnspython's enums
    assert query.edns is None and query.udp_limit == 512


def test_fast_and_full_parse_agree_on_edns_and_ecs():
    data = header(ar=1) + question() + opt_record(4096, do=True, options=ecs_option(b"\x01\x02\x03", 24))
    fast, full = fast_parse(data), full_parse(data)
    assert fast == full
    assert fast is not None and fast.edns is not None
    assert fast.edns.do and fast.udp_limit == wire.OUR_PAYLOAD  # never more than our own 1232
    assert fast.edns.ecs is not None and str(fast.edns.ecs.ip) == "1.2.3.0" and fast.edns.ecs.source == 24


def test_fast_parse_leaves_unusual_shapes_to_full_parse():
    assert fast_parse(header(an=1) + question()) is None
    assert fast_parse(header(qd=2) + question() + question()) is None
    assert fast_parse(b"\x00" * 11) is None


@pytest.mark.parametrize(("body", "reason"), [
    (b"\x00\x01\x18", "shorter than 4 bytes"),
    (struct.pack("!HBB", 3, 8, 0) + b"\x01", "family 3 unknown"),
    (struct.pack("!HBB", 1, 33, 0) + b"\x01" * 5, "longer than the family allows"),
    (struct.pack("!HBB", 1, 24, 0) + b"\x01\x02", "does not match its source prefix"),
    (struct.pack("!HBB", 1, 23, 0) + b"\x01\x02\x03", "bits set beyond its source prefix"),
])
def test_malformed_ecs_is_formerr(body, reason):
    with pytest.raises(Malformed, match=reason) as caught:
        parse_ecs(body)
    assert caught.value.rcode == dns.rcode.FORMERR


def test_ecs_reply_echoes_the_option_with_our_scope():
    ecs = parse_ecs(struct.pack("!HBB", 1, 24, 0) + b"\x01\x02\x03")
    assert ecs.usable()
    assert ecs.reply(16) == struct.pack("!HHHBB", 8, 7, 1, 24, 16) + b"\x01\x02\x03"
    assert not parse_ecs(struct.pack("!HBB", 1, 24, 0) + b"\xcb\x00\x71").usable()  # documentation range
    assert not parse_ecs(struct.pack("!HBB", 1, 0, 0)).usable()  # prefix 0 says nothing about the client
    assert not parse_ecs(struct.pack("!HBB", 1, 8, 0) + b"\x0a").usable()  # a private address neither


def test_error_response_keeps_id_rd_and_question_and_adds_our_opt():
    data = header(qid=7) + question()
    reply = dns.message.from_wire(wire.error_response(7, 0x0100, dns.rcode.REFUSED, data[12:], wire.Edns(1232, 0, False)))
    assert reply.id == 7 and reply.rcode() == dns.rcode.REFUSED
    assert reply.flags & dns.flags.QR and reply.flags & dns.flags.RD and not reply.flags & dns.flags.AA
    assert reply.question[0].name == dns.name.from_text("www.example.com.")
    assert reply.edns == 0 and reply.payload == wire.OUR_PAYLOAD


def test_badvers_needs_the_extended_rcode_in_the_opt():
    reply = dns.message.from_wire(wire.error_response(1, 0, dns.rcode.BADVERS, b"", wire.Edns(1232, 1, False)))
    assert reply.rcode() == dns.rcode.BADVERS


def test_splice_puts_the_query_id_flags_and_case_into_a_rendered_response():
    name = dns.name.from_text("www.example.com.")
    rendered = wire.render(name, dns.rdatatype.A, dns.rdataclass.IN, rcode=dns.rcode.NXDOMAIN, aa=True)
    query = fast_parse(header(qid=0x4242, flags=0x0110) + question("WwW.eXample.com."))
    assert query is not None
    reply = wire.splice(rendered, query)
    assert reply[:2] == b"\x42\x42"
    assert reply[12:12 + len(query.question)] == query.question
    parsed = dns.message.from_wire(reply)
    assert parsed.flags & dns.flags.RD and parsed.flags & dns.flags.CD and parsed.flags & dns.flags.AA
    assert parsed.rcode() == dns.rcode.NXDOMAIN


def test_render_truncates_when_the_answer_does_not_fit():
    name = dns.name.from_text("big.example.com.")
    rdataset = dns.rdataset.from_text("IN", "TXT", 60, *[f'"{"x" * 200}{i}"' for i in range(5)])
    rendered = wire.render(name, dns.rdatatype.TXT, dns.rdataclass.IN, rcode=0, aa=True, answer=[(name, rdataset)],
                           limit=512)
    assert rendered.truncated and len(rendered.wire) <= 512
    assert dns.message.from_wire(rendered.wire).flags & dns.flags.TC


def test_question_name_end_refuses_pointers_and_missing_questions():
    data = header() + question()
    assert question_name_end(data) == 12 + len(dns.name.from_text("www.example.com.").to_wire())
    assert question_name_end(header(qd=0)) == -1
    assert question_name_end(header() + b"\xc0\x0c\x00\x01\x00\x01") == -1


def test_enums_are_dnspythons():
    assert wire.REFUSED is dns.rcode.REFUSED and wire.TYPE_OPT is dns.rdatatype.OPT
    assert wire.OPTION_ECS is dns.edns.OptionType.ECS
