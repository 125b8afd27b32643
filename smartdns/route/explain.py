"""`smartdns route explain ADDRESS@DOMAIN`: the whole routing decision, as the service would take it.

MX hosts are looked up now (no deadline), trouble comes from the state file, and every relay is
probed once, so the answer shown is the one a freshly started service would give.
"""

from __future__ import annotations

import datetime
from typing import TextIO

from ..config import Config
from .decide import is_home
from .service import RouteService
from .trouble import block_key, domain_key


def _when(unix: float) -> str:
    return datetime.datetime.fromtimestamp(unix, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


async def explain(config: Config, address: str, out: TextIO) -> int:
    service = RouteService(config)
    settings = service.settings
    domain = service.domain_of(address)
    if domain is None:
        print(f"{address!r}: no recipient domain in it: Postfix gets NOTFOUND (its default route)", file=out)
        return 1
    print(f"recipient {address}: domain {domain}", file=out)
    await service.relays.probe_once()
    decision = await service.decide(domain, None)
    mx = service.mx.cached(domain)
    if domain in service.local:
        print("  one of our domains (route.local_domains or the zones directory)", file=out)
    elif mx is not None:
        print(f"MX ({mx.status}{': ' + mx.detail if mx.detail else ''}):", file=out)
        for host in mx.hosts:
            print(f"  {host.preference:>5} {host.name}{'  (primary)' if host in mx.primary else ''}", file=out)
            for addr in host.addresses or ("(no address)",):
                if addr == "(no address)":
                    print(f"        {addr}", file=out)
                    continue
                location = service.classifier.locate(addr)
                place = "-".join(p for p in (location.continent, location.country) if p) or "unknown"
                home = "domestic" if is_home(addr, location, settings.home) else "overseas"
                print(f"        {addr}  {place} ({location.source}) {home}", file=out)
    print("trouble:", file=out)
    keys = [domain_key(domain)]
    if mx is not None:
        keys += sorted({k for h in mx.primary for a in h.addresses if (k := block_key(a))})
    for key in keys:
        entry = service.trouble.is_troubled(key)
        state = f"troubled since {_when(entry.since)} until {_when(entry.until)} ({entry.reason})" if entry \
            else "not troubled"
        print(f"  {key}: {state}", file=out)
    print("relays:", file=out)
    if not settings.relays:
        print("  none configured", file=out)
    for status in service.relays.status():
        relay = status.relay
        rtt = f"{status.rtt * 1000:.1f} ms" if status.rtt is not None else "-"
        print(f"  {relay.name:<8} {relay.nexthop:<28} {'up' if status.up else 'DOWN':<4} rtt {rtt:<9} "
              f"serves {','.join(relay.serves) or '-'}  ({status.reason})", file=out)
    print(f"answer: {decision.reply}", file=out)
    print(f"why: {decision.reason}", file=out)
    return 0
