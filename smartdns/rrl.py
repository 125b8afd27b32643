"""Response rate limiting for UDP, as BIND's and Knot's RRL.

A spoofed-source flood turns an authoritative server into an amplifier aimed at
the spoofed address; RRL caps how many identical responses one client network
(/24, /56) gets per second. Answers are counted per name and type, NXDOMAIN per
zone (so a random-subdomain flood cannot spread itself over names), errors per
network. What goes over the limit is dropped, except every `slip`-th one, which
is sent as an empty truncated reply: a real resolver behind a spoofed victim's
network retries over TCP, which is never limited. Loopback is exempt.
"""

from __future__ import annotations

import ipaddress
import struct
import time
from dataclasses import dataclass, field
from typing import Callable

from .config import RrlSettings
from .wire import TC

CATEGORY_ANSWER, CATEGORY_NXDOMAIN, CATEGORY_ERROR = 0, 1, 2


Bucket = tuple[str, int, bytes]  # client network, category, name (zone for NXDOMAIN, b"" for errors)


@dataclass
class RateLimiter:
    settings: RrlSettings
    dropped: int = 0  # over the limit so far: every `slip`-th one slips
    buckets: dict[Bucket, list[float]] = field(default_factory=dict)  # key -> [tokens, last refill]
    networks: dict[str, str | None] = field(default_factory=dict)  # client -> its network (None: exempt)
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)  # seconds; tests give their own

    def __post_init__(self) -> None:
        s = self.settings
        self.rates = (s.responses_per_second,
                      s.nxdomains_per_second if s.nxdomains_per_second is not None else s.responses_per_second,
                      s.errors_per_second if s.errors_per_second is not None else s.responses_per_second)
        self.exempt = tuple(ipaddress.ip_network(n, strict=False) for n in s.exempt)

    def network(self, client: str) -> str | None:
        network = self.networks.get(client, "")
        if network == "":
            try:
                address = ipaddress.ip_address(client.split("%", 1)[0])
            except ValueError:
                return None
            if any(address in n for n in self.exempt if n.version == address.version):
                network = None
            else:
                prefix = self.settings.ipv4_prefix if address.version == 4 else self.settings.ipv6_prefix
                network = str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))
            if len(self.networks) >= self.settings.table_size:
                self.networks.clear()
            self.networks[client] = network
        return network

    def filter(self, response: bytes, client: str, category: int, name: bytes) -> bytes | None:
        """`response` if within the limit; else None (dropped) or a truncated reply (slipped)."""
        network = self.network(client)
        if network is None:
            return response
        key = (network, category, name if category != CATEGORY_ERROR else b"")
        rate = self.rates[category]
        now = self.clock()
        bucket = self.buckets.get(key)
        if bucket is None:
            if len(self.buckets) >= self.settings.table_size:
                self.buckets.clear()
            self.buckets[key] = [rate - 1.0, now]
            return response
        tokens = min(rate, bucket[0] + (now - bucket[1]) * rate)
        bucket[1] = now
        if tokens >= 1.0:
            bucket[0] = tokens - 1.0
            return response
        bucket[0] = tokens
        self.dropped += 1
        slip = self.settings.slip
        if slip and self.dropped % slip == 0:
            return truncated(response)
        return None


def truncated(response: bytes) -> bytes:
    """Header and question only, TC=1: "ask again over TCP"."""
    questions = response[4] << 8 | response[5]
    end = 12
    if questions:
        while end < len(response) and response[end] != 0:
            end += response[end] + 1
        end = min(end + 5, len(response))
    flags = (response[2] << 8 | response[3]) | TC
    return response[:2] + struct.pack("!HHHHH", flags, min(questions, 1), 0, 0, 0) + response[12:end]
