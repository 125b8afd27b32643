"""Signatures from fixed windows, so every server with the same files and clock agrees.

Time is cut into weekly windows counted from the epoch. Every RRSIG made in a
window has the same inception (an hour before the window starts: clocks drift)
and expiration (three weeks after it starts), and ECDSA signs deterministically
(RFC 6979), so two servers, or one after a restart, make byte-identical RRSIGs.
A signature made in one window stays valid two weeks after the next has begun:
re-signing when a window rolls over is never urgent.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import dns.dnssec
import dns.name
import dns.rdataclass
import dns.rdataset
import dns.rdatatype

from .keys import ZoneKey

WINDOW = 7 * 86400
INCEPTION_SKEW = 3600  # inception this long before the window starts
VALIDITY = 3 * WINDOW  # expiration this long after the window starts
KEY_TYPES = frozenset({dns.rdatatype.DNSKEY, dns.rdatatype.CDS, dns.rdatatype.CDNSKEY})


ReuseKey = tuple[bytes | None, int, int, tuple[bytes, ...], tuple[bytes, ...], int]
_reusable: dict[dns.name.Name, dict[ReuseKey, dns.rdataset.Rdataset]] = {}  # zone -> last load's signatures


@dataclass(frozen=True, slots=True)
class Window:
    start: int
    inception: int
    expiration: int

    @property
    def end(self) -> int:
        return self.start + WINDOW


def window_at(now: float) -> Window:
    start = int(now) // WINDOW * WINDOW
    return Window(start, start - INCEPTION_SKEW, start + VALIDITY)


class Signer:
    """Signs RRsets of one zone for one window with the keys in force at `now`."""

    def __init__(self, zone: dns.name.Name, keys: Sequence[ZoneKey], now: float) -> None:
        self.zone = zone
        self.window = window_at(now)
        # sorted by tag: the RRSIG order in a response is the same on every server
        self.zone_keys = sorted((k for k in keys if k.active(now)), key=lambda k: k.tag)
        self.key_keys = sorted((k for k in keys if k.signs_keys(now) and k.published(now)), key=lambda k: k.tag)
        if not self.zone_keys and self.key_keys:
            self.zone_keys = self.key_keys[-1:]  # a retired key still beats unsigned data in a signed zone
        self.signatures = 0  # made, not reused
        self.previous = _reusable.get(zone, {})
        self.made: dict[ReuseKey, dns.rdataset.Rdataset] = {}

    @property
    def signing(self) -> bool:
        return bool(self.zone_keys)

    def sign(self, owner: dns.name.Name, rdataset: dns.rdataset.Rdataset) -> dns.rdataset.Rdataset:
        """The RRSIG RRset covering (owner, rdataset): one RRSIG per signing key.

        Signatures are deterministic, so one the previous load made for the same RRset, keys and
        window is the very one signing again would make: it is reused, and a reload after an
        edit signs only what the edit changed."""
        keys = self.key_keys if rdataset.rdtype in KEY_TYPES else self.zone_keys
        reuse_key = (owner.canonicalize().to_wire(), rdataset.rdtype, rdataset.ttl,
                     tuple(sorted(r.to_digestable() for r in rdataset)),
                     tuple(k.dnskey.key for k in keys), self.window.start)
        sigs = self.previous.get(reuse_key)
        if sigs is None:
            sigs = dns.rdataset.Rdataset(dns.rdataclass.IN, dns.rdatatype.RRSIG, covers=rdataset.rdtype,
                                         ttl=rdataset.ttl)
            for key in keys:
                sigs.add(dns.dnssec.sign((owner, rdataset), key.private, self.zone, key.dnskey,
                                         inception=self.window.inception, expiration=self.window.expiration,
                                         deterministic=True))
                self.signatures += 1
        self.made[reuse_key] = sigs
        return sigs

    def finish(self) -> None:
        """This load's signatures become the ones the next load of the zone may reuse (and only
        they: the memory held is one generation's)."""
        _reusable[self.zone] = self.made
