"""The `smartdns dnssec ...` arguments, kept apart from the commands so that parsing the
command line stays cheap (no cryptography import until a dnssec command runs)."""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable

DEFAULT_PROPAGATION = 3600  # Dprp: until every server of the zone serves a change, plus a margin
DEFAULT_DS_WAIT = 3 * 86400  # until the parent has the new DS (from CDS or by hand) and its TTL ran out
_DURATION = re.compile(r"^(\d+)([smhdw]?)$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def duration(text: str) -> int:
    match = _DURATION.match(text.strip().lower())
    if match is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration (e.g. 3600, 90m, 1h, 2d)")
    return int(match[1]) * _UNITS[match[2]]


def add_parser(sub: argparse._SubParsersAction, common: Callable[..., None]) -> None:  # type: ignore[type-arg]
    dnssec = sub.add_parser("dnssec", help="DNSSEC keys: generate, DS for the registrar, status, rollover")
    commands = dnssec.add_subparsers(dest="dnssec_command", required=True)
    keygen = commands.add_parser("keygen", help="write a new key (CSK) for a zone")
    keygen.add_argument("zone")
    keygen.add_argument("--algorithm", type=int, choices=(13, 15), default=13,
                        help="13 ECDSAP256SHA256 (default), 15 ED25519")
    ds = commands.add_parser("ds", help="print the zone's DS records (SHA-256) for the registrar")
    ds.add_argument("zone")
    commands.add_parser("status", help="every zone's keys, their states and the next event")
    rollover = commands.add_parser("rollover", help="start a CSK rollover (RFC 7583 timings)")
    rollover.add_argument("zone")
    rollover.add_argument("--propagation", type=duration, default=DEFAULT_PROPAGATION, metavar="DURATION",
                          help="until every server serves a change (default 1h)")
    rollover.add_argument("--ds-wait", type=duration, default=DEFAULT_DS_WAIT, metavar="DURATION",
                          help="until the parent has the new DS and the old DS left caches (default 3d)")
    remove = commands.add_parser("remove", help="go unsigned: publish the delete CDS, then retire the keys")
    remove.add_argument("zone")
    remove.add_argument("--ds-wait", type=duration, default=DEFAULT_DS_WAIT, metavar="DURATION",
                        help="until the parent removed the DS and it left caches (default 3d)")
    for parser in (keygen, ds, commands.choices["status"], rollover, remove):
        common(parser, geodb=False)


