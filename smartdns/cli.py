"""Command line: `smartdns serve | check | explain | dump | geodb build | dnssec ...`."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

import dns.exception
import dns.name
import dns.rdatatype

from . import __version__
from .config import ConfigError, load_config, parse_listen
from .dnssec import arguments as dnssec_arguments
from .logs import LEVELS, setup_logging

log = logging.getLogger("smartdns")


EXIT_CODES = """exit codes:
  0  ok
  1  problems found (check: zone errors; serve: cannot listen; geodb build: bad rows)
  2  usage or config error (a bad argument, an unreadable or invalid config)"""


class Parser(argparse.ArgumentParser):
    """argparse, with a usage error as one line (`smartdns serve: argument --listen: ...`) and exit 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _listen_argument(text: str) -> str:
    try:
        parse_listen(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _count_argument(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 0")
    return int(text)


def _network_argument(text: str) -> str:
    try:
        ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a subnet like 1.0.1.0/24 or 2001:db8::/56") from None
    return text


def _common(parser: argparse.ArgumentParser, geodb: bool = True) -> None:
    parser.add_argument("--config", metavar="FILE", help="smartdns.yaml (default: built-in defaults)")
    parser.add_argument("--zones", metavar="DIR", help="zones directory (default ./zones)")
    if geodb:
        parser.add_argument("--geodb", action="append", default=None, metavar="FILE",
                            help=".mmdb file, first hit wins; repeat for several (default: embedded country data)")


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {"zones": args.zones, "geodb": getattr(args, "geodb", None), "listen": getattr(args, "listen", None)}


def make_parser() -> argparse.ArgumentParser:
    epilog = argparse.RawDescriptionHelpFormatter
    parser = Parser(prog="smartdns", description="GeoIP-aware authoritative DNS for mail domains",
                    epilog=EXIT_CODES, formatter_class=epilog)
    parser.add_argument("--version", action="version", version=f"smartdns {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", help="what to do:")

    serve = sub.add_parser("serve", help="answer DNS queries", epilog=EXIT_CODES, formatter_class=epilog)
    _common(serve)
    serve.add_argument("--listen", action="append", default=None, metavar="HOST:PORT", type=_listen_argument,
                       help="UDP and TCP address, repeatable; IPv6 as [::1]:5353 (default 127.0.0.1:5353)")
    serve.add_argument("--workers", type=_count_argument, default=None, metavar="N",
                       help="processes serving one port (SO_REUSEPORT); 0: one per core (the default)")
    serve.add_argument("--user", default=None, help="drop to this user right after binding (when started as root)")
    serve.add_argument("--log-format", choices=("plain", "json"), default="plain",
                       help="plain lines, or one JSON object per line (default plain)")
    serve.add_argument("--log-level", choices=LEVELS, default="info", type=str.lower,
                       help=f"one of {', '.join(LEVELS)} (default info; debug adds reload timings, "
                            "health probe results, cache sizes)")

    check = sub.add_parser("check", help="validate the config and every zone", epilog=EXIT_CODES,
                           formatter_class=epilog)
    _common(check, geodb=False)

    explain = sub.add_parser("explain", help="show what an address is answered", epilog=EXIT_CODES,
                             formatter_class=epilog,
                             usage="smartdns explain [-h] [--ecs PREFIX] [--config FILE] [--zones DIR] "
                                   "[--geodb FILE] [--probe] ADDRESS [NAME [TYPE]]")
    # one positional list: argparse mis-parses optional positionals mixed with options
    explain.add_argument("what", nargs="+", metavar="ADDRESS [NAME [TYPE]]",
                         help="ADDRESS: the resolver's IP address; NAME: a domain name (default: every dynamic "
                              "record); TYPE: a record type (default A, AAAA and MX)")
    explain.add_argument("--ecs", metavar="PREFIX", type=_network_argument,
                         help="as if a resolver sent this client subnet, e.g. 1.0.1.0/24")
    explain.add_argument("--probe", action="store_true",
                         help="run the configured health checks once before deciding (without it, explain does "
                              "not know live health: every value counts as up)")
    _common(explain)

    route = sub.add_parser("route", help="the Postfix routing service: serve | explain ADDRESS | postfix-config",
                           epilog=EXIT_CODES, formatter_class=epilog)
    route.add_argument("action", nargs="?", default="serve", choices=("serve", "explain", "postfix-config"))
    route.add_argument("address", nargs="?", help="explain: a recipient address (user@domain)")
    route.add_argument("--config", help="smartdns.yaml with a route: section")
    route.add_argument("--listen", default=None, metavar="HOST:PORT", help="socketmap address (default route.listen)")
    route.add_argument("--tables", default="/etc/postfix", help="postfix-config: where the tables go (default /etc/postfix)")
    route.add_argument("--log-format", choices=("plain", "json"), default="plain",
                       help="plain lines, or one JSON object per line (default plain)")
    route.add_argument("--log-level", choices=LEVELS, default="info", type=str.lower,
                       help=f"one of {', '.join(LEVELS)} (default info)")

    geodb = sub.add_parser("geodb", help="GeoIP database tools", epilog=EXIT_CODES, formatter_class=epilog)
    geodb_sub = geodb.add_subparsers(dest="geodb_command", required=True, metavar="TOOL", help="one of:")
    build = geodb_sub.add_parser("build", help="CSV rows network,country[,continent] -> GeoIP2-Country .mmdb",
                                 epilog=EXIT_CODES, formatter_class=epilog)
    build.add_argument("input", metavar="INPUT.csv",
                       help="rows network,country[,continent], e.g. 1.0.1.0/24,CN or 1.0.1.0/24,CN,AS")
    build.add_argument("-o", "--output", required=True, metavar="OUT.mmdb", help="the database to write")

    dump = sub.add_parser("dump", help="write a zone as one client is served it, in zone-file format",
                          epilog=EXIT_CODES, formatter_class=epilog)
    dump.add_argument("zone")
    dump.add_argument("--client", default="127.0.0.1", metavar="ADDRESS",
                      help="whose answers the dynamic records give (default 127.0.0.1: the catch-all rules)")
    dump.add_argument("--dnssec", action="store_true", help="with DNSKEY, CDS, CDNSKEY, the NSEC chain and RRSIGs")
    _common(dump)

    dnssec_arguments.add_parser(sub, _common)
    return parser


def _subparser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            subparser: argparse.ArgumentParser = action.choices[name]
            return subparser
    raise KeyError(name)


def _explain_arguments(explain: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """ADDRESS [NAME [TYPE]], each checked: a bad one is a usage error naming it."""
    if len(args.what) > 3:
        explain.error(f"too many arguments {' '.join(args.what[3:])!r}: explain takes ADDRESS [NAME [TYPE]]")
    args.address, args.name, args.type = (args.what + [None, None])[:3]
    try:
        ipaddress.ip_address(args.address)
    except ValueError:
        explain.error(f"argument ADDRESS: {args.address!r} is not an IPv4 or IPv6 address")
    if args.name is not None:
        try:
            dns.name.from_text(args.name)
        except dns.exception.DNSException as exc:
            explain.error(f"argument NAME: {args.name!r} is not a domain name ({str(exc).rstrip('.')})")
    if args.type is not None:
        try:
            dns.rdatatype.from_text(args.type)
        except dns.exception.DNSException:
            explain.error(f"argument TYPE: {args.type!r} is not a record type (A, AAAA, MX, TXT, ...)")


def main(argv: Sequence[str] | None = None) -> int:
    parser = make_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command != "explain":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command == "explain":
        explain = _subparser(parser, "explain")
        # positionals after options arrive here: `explain ADDR --ecs P NAME TYPE`
        if any(e.startswith("-") for e in extra):
            explain.error(f"unrecognized arguments: {' '.join(extra)}")
        args.what += extra
        _explain_arguments(explain, args)
    try:
        if args.command == "serve":
            return cmd_serve(args)
        if args.command == "check":
            return cmd_check(args)
        if args.command == "explain":
            return cmd_explain(args)
        if args.command == "dump":
            return cmd_dump(args)
        if args.command == "dnssec":
            return cmd_dnssec(args)
        if args.command == "route":
            from .route.cli import cmd_route

            return cmd_route(args)
        return cmd_geodb_build(args)
    except ConfigError as exc:
        print(f"smartdns: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        from .dnssec.commands import CommandError
        from .dnssec.keys import KeyFileError
        from .geo import GeoDatabaseError  # imported here: argument errors stay fast

        if not isinstance(exc, GeoDatabaseError | CommandError | KeyFileError):
            raise
        print(f"smartdns: {exc}", file=sys.stderr)
        return 2


def cmd_serve(args: argparse.Namespace) -> int:
    from .bindcheck import BindError
    from .preflight import preflight
    from .privileges import PrivilegeError
    from .workers import run  # the listeners are not needed by the other commands

    setup_logging(args.log_format, args.log_level)
    overrides = _overrides(args)
    overrides["workers"] = args.workers
    overrides["user"] = args.user
    config = load_config(args.config, **overrides)
    findings = preflight(config)
    for warning in findings.warnings:
        log.warning("%s", warning)
    if findings.errors:
        for error in findings.errors:
            log.error("%s", error)
        return 2
    log.info("smartdns %s starting: zones %s, %s", __version__, config.zones,
             "geodb " + ", ".join(map(str, config.geodb)) if config.geodb else "embedded country data")
    try:
        run(config, overrides, config.user)
    except BindError as exc:
        log.error("%s", exc)
        return 1
    except PrivilegeError as exc:
        log.error("%s", exc)
        return 1
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from .dnssec.keys import check as check_keys
    from .preflight import preflight
    from .reload import LoadResult, load_all

    logging.basicConfig(level=logging.ERROR)
    config = load_config(args.config, **_overrides(args))
    findings = preflight(config)
    for error in findings.errors:
        print(f"smartdns: {error}", file=sys.stderr)
    result = load_all(config) if config.zones.is_dir() else LoadResult({})
    key_problems, key_warnings = check_keys(config.dnssec_keys, [z.origin for z in result.zones.values()], time.time())
    problems = [*map(str, result.problems), *key_problems]
    for problem in problems:
        print(problem)
    warnings = [*findings.warnings, *map(str, result.warnings), *key_warnings]
    for warning in warnings:
        print(f"warning: {warning}")
    records = sum(z.record_count for z in result.zones.values())
    if findings.errors:
        return 2
    if problems:
        print(f"{len(problems)} problem(s) in {config.zones}", file=sys.stderr)
        return 1
    print(f"ok: {len(result.zones)} zone(s), {records} record(s), {len(warnings)} warning(s) in {config.zones}")
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    from .explain import explain  # the whole answering machinery: not needed to parse arguments

    logging.basicConfig(level=logging.ERROR)
    return explain(load_config(args.config, **_overrides(args)), args.address, args.name, args.type, args.ecs,
                   probe_health=args.probe)


def cmd_dump(args: argparse.Namespace) -> int:
    from .dump import zone_text
    from .geo import Classifier
    from .reload import load_all
    from .zonefile import CONTINENT_OF

    logging.basicConfig(level=logging.ERROR)
    config = load_config(args.config, **_overrides(args))
    try:
        address = ipaddress.ip_address(args.client)
        origin = dns.name.from_text(args.zone.rstrip(".") + ".")
    except (ValueError, dns.exception.DNSException) as exc:
        print(f"smartdns dump: {exc}", file=sys.stderr)
        return 2
    result = load_all(config)
    for problem in result.problems:
        print(f"zone error: {problem}", file=sys.stderr)
    zone = next((z for z in result.zones.values() if z.origin == origin), None)
    if zone is None:
        print(f"smartdns: {origin} is not served from {config.zones}", file=sys.stderr)
        return 1
    if args.dnssec and zone.dnssec is None:
        print(f"smartdns: {origin} is not signed (no key published in {config.dnssec_keys})", file=sys.stderr)
        return 1
    location = Classifier(config.geodb, CONTINENT_OF).locate(str(address))
    sys.stdout.write(zone_text(zone, address, lambda: location, args.dnssec))
    return 0


def cmd_dnssec(args: argparse.Namespace) -> int:
    from .dnssec.commands import run

    return run(args, load_config(args.config, **_overrides(args)))


def cmd_geodb_build(args: argparse.Namespace) -> int:
    from .geodb import GeoDbBuildError, build_country_db
    from .zonefile import CONTINENT_OF, COUNTRY_NAMES

    if not os.path.isfile(args.input):
        print(f"smartdns geodb build: argument INPUT.csv: {args.input}: no such file", file=sys.stderr)
        return 2
    try:
        count = build_country_db(args.input, args.output, CONTINENT_OF, country_names=COUNTRY_NAMES,
                                 known_countries=CONTINENT_OF.keys())
    except GeoDbBuildError as exc:
        print(f"smartdns: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {count} networks to {args.output}")
    return 0
