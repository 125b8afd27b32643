"""Negative answers (NXDOMAIN, NODATA) for any name of a zone from one template.

A random-name flood must not cost a render per name: the response for a name
that does not exist differs from the apex's only in the question and in the
compression pointers at the zone's name. The template is made from two
renderings by dnspython, so its bytes are the reference path's.
"""

from __future__ import annotations

from typing import Callable

import dns.name
import dns.rdtypes.ANY.SOA

from .wire import Query, Rendered, name_key


class NegativeTemplate:
    """A negative response for any name of a zone, from two renderings by dnspython.

    Rendered for the apex and for one label under it, the two differ only in the
    compression pointers that point at the zone's name inside the question; for
    another name those bytes point where the zone's name starts in its question.
    A name that shares more than the zone's name with the SOA's MNAME or RNAME
    (it is one of them, under one, or an ancestor of one below the apex, such as
    `sub.example.com` for `ns1.sub.example.com`) would have them compressed
    against itself instead: such names are not templated.
    """

    __slots__ = ("head", "pieces", "pointers", "origin_length", "avoid", "opt_from_end")

    def __init__(self, head: bytes, pieces: list[bytes], pointers: int, origin_length: int,
                 avoid: tuple[bytes, ...], opt_from_end: int) -> None:
        self.head, self.pieces, self.pointers = head, pieces, pointers
        self.origin_length, self.avoid, self.opt_from_end = origin_length, avoid, opt_from_end

    @classmethod
    def build(cls, render_for: Callable[[dns.name.Name], Rendered], origin: dns.name.Name,
              soa: dns.rdtypes.ANY.SOA.SOA) -> NegativeTemplate | None:
        apex = render_for(origin)
        below = render_for(dns.name.Name((b"a",) + origin.labels))
        origin_wire = name_key(origin)
        qend_apex = 12 + len(origin_wire) + 4
        tail_apex, tail_below = apex.wire[qend_apex:], below.wire[qend_apex + 2:]
        if len(tail_apex) != len(tail_below) or apex.truncated:
            return None
        cuts = [i for i in range(len(tail_apex)) if tail_apex[i] != tail_below[i]]
        if any(tail_apex[i] != 12 or tail_below[i] != 14 or tail_apex[i - 1] != 0xC0 for i in cuts):
            return None  # not just pointers at the zone's name: render every name instead
        pieces, last = [], 0
        for i in cuts:
            pieces.append(tail_apex[last:i - 1])
            last = i + 1
        pieces.append(tail_apex[last:])
        avoid = tuple(below for below in (_first_below(soa.mname, origin), _first_below(soa.rname, origin))
                      if below is not None)
        opt_from_end = len(apex.wire) - apex.opt_rdlen_at if apex.opt_rdlen_at >= 0 else -1
        return cls(apex.wire[:12], pieces, len(cuts), len(origin_wire), avoid, opt_from_end)

    def render(self, query: Query) -> Rendered | None:
        qname = query.qname
        for suffix in self.avoid:
            if qname.endswith(suffix):
                return None
        pointer = (0xC000 | (12 + len(qname) - self.origin_length)).to_bytes(2, "big")
        wire = self.head + query.question + pointer.join(self.pieces)
        return Rendered(wire, len(wire) - self.opt_from_end if self.opt_from_end >= 0 else -1, False)


def _first_below(name: dns.name.Name, origin: dns.name.Name) -> bytes | None:
    """The ancestor of `name` one label below `origin` (lower-case wire form), or None when `name`
    is not below it: every name ending in that ancestor shares more than `origin` with `name`."""
    if len(name) <= len(origin) or not name.is_subdomain(origin):
        return None
    return name_key(name.split(len(origin) + 1)[1])


def with_name(query: Query, name: dns.name.Name) -> Query:
    """The same query for another name (to render a template)."""
    wire = name_key(name)
    return Query(query.id, query.flags, wire, query.qtype, query.qclass,
                 wire + query.question[-4:], query.edns)
