"""Signed NXDOMAIN/NODATA for any name from parts made once: nothing signed, nothing rendered per name.

A signed negative answer for a name is the zone's SOA and the one or two NSECs
the name falls between, each with its RRSIGs. Those records are written once
per proof (uncompressed, so they can follow any question) and a response is
the header, the query's question, that tail and the OPT record: a
random-subdomain flood costs a binary search and a concatenation per name.
"""

from __future__ import annotations

from io import BytesIO

import dns.name
import dns.rdataset

from ..wire import AA, EDNS_DO, HEADER, OPT_FIXED, OUR_PAYLOAD, QR, TYPE_OPT, Query, Rendered

Pair = tuple[dns.name.Name, dns.rdataset.Rdataset]
OPT_DO = b"\x00" + OPT_FIXED.pack(TYPE_OPT, OUR_PAYLOAD, 0, 0, EDNS_DO, 0)


def authority_tail(pairs: list[Pair]) -> tuple[bytes, int]:
    """The records uncompressed (position-independent) and how many there are."""
    out = BytesIO()
    count = 0
    for owner, rdataset in pairs:
        count += rdataset.to_wire(owner, out, None)
    return out.getvalue(), count


def signed_negative(query: Query, rcode: int, tail: tuple[bytes, int]) -> Rendered:
    """NXDOMAIN/NODATA with DO=1 (the caller checked: EDNS present, no NSID asked)."""
    records, count = tail
    wire = HEADER.pack(0, QR | AA | rcode, 1, 0, count, 1) + query.question + records + OPT_DO
    return Rendered(wire, len(wire) - 2, False)
