"""Command line: `smartdns serve | check | explain | geodb build`."""

from __future__ import annotations

import argparse
import ipaddress
import json
import logging
import sys
from typing import Any, Sequence

import dns.name
import dns.rdatatype

from . import __version__
from .catalog import Catalog
from .config import ConfigError, load_config
from .geo import Classifier, GeoDatabaseError, Location
from .model import DynamicRRset, StaticRRset
from .policy import client_for, decide, scope_prefix
from .reload import load_all
from .wire import ClientSubnet
from .zonefile import CONTINENT_OF, COUNTRY_NAMES

log = logging.getLogger("smartdns")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {"time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"), "level": record.levelname.lower(),
                 "logger": record.name, "message": record.getMessage()}
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def setup_logging(fmt: str, level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%dT%H:%M:%S%z"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("Record", "Zone", "_DynamicPool", "asyncio"):  # octoDNS logs its own warnings too
        logging.getLogger(noisy).setLevel(logging.ERROR)


def _common(parser: argparse.ArgumentParser, geodb: bool = True) -> None:
    parser.add_argument("--config", help="smartdns.yaml (default: built-in defaults)")
    parser.add_argument("--zones", help="zones directory (default ./zones)")
    if geodb:
        parser.add_argument("--geodb", action="append", default=None, metavar="FILE",
                            help=".mmdb file, first hit wins; repeat for several (default: embedded country data)")


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {"zones": args.zones, "geodb": getattr(args, "geodb", None), "listen": getattr(args, "listen", None)}


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="smartdns", description="GeoIP-aware authoritative DNS for mail domains")
    parser.add_argument("--version", action="version", version=f"smartdns {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="answer DNS queries")
    _common(serve)
    serve.add_argument("--listen", action="append", default=None, metavar="HOST:PORT",
                       help="UDP and TCP address, repeatable; IPv6 as [::1]:5353 (default 127.0.0.1:5353)")
    serve.add_argument("--workers", type=int, default=None, metavar="N",
                       help="processes serving one port (SO_REUSEPORT); 0: one per core (the default)")
    serve.add_argument("--user", default=None, help="drop to this user right after binding (when started as root)")
    serve.add_argument("--log-format", choices=("plain", "json"), default="plain")
    serve.add_argument("--log-level", default="INFO")

    check = sub.add_parser("check", help="validate the config and every zone")
    _common(check, geodb=False)

    explain = sub.add_parser("explain", help="show what an address is answered")
    # one positional list: argparse mis-parses optional positionals mixed with options
    explain.add_argument("what", nargs="+", metavar="ADDRESS [NAME [TYPE]]")
    explain.add_argument("--ecs", metavar="PREFIX", help="as if a resolver sent this client subnet, e.g. 1.0.1.0/24")
    _common(explain)

    geodb = sub.add_parser("geodb", help="GeoIP database tools")
    geodb_sub = geodb.add_subparsers(dest="geodb_command", required=True)
    build = geodb_sub.add_parser("build", help="CSV rows network,country[,continent] -> GeoIP2-Country .mmdb")
    build.add_argument("input")
    build.add_argument("-o", "--output", required=True)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = make_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command != "explain":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command == "explain":
        # positionals after options arrive here: `explain ADDR --ecs P NAME TYPE`
        if any(e.startswith("-") for e in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.what += extra
        if len(args.what) > 3:
            parser.error("explain takes ADDRESS [NAME [TYPE]]")
        args.address, args.name, args.type = (args.what + [None, None])[:3]
    try:
        if args.command == "serve":
            return cmd_serve(args)
        if args.command == "check":
            return cmd_check(args)
        if args.command == "explain":
            return cmd_explain(args)
        return cmd_geodb_build(args)
    except (ConfigError, GeoDatabaseError) as exc:
        print(f"smartdns: {exc}", file=sys.stderr)
        return 2


def cmd_serve(args: argparse.Namespace) -> int:
    from .privileges import PrivilegeError
    from .workers import run  # the listeners are not needed by the other commands

    setup_logging(args.log_format, args.log_level.upper())
    overrides = _overrides(args)
    overrides["workers"] = args.workers
    overrides["user"] = args.user
    config = load_config(args.config, **overrides)
    log.info("smartdns %s starting: zones %s, %s", __version__, config.zones,
             "geodb " + ", ".join(map(str, config.geodb)) if config.geodb else "embedded country data")
    try:
        run(config, overrides, config.user)
    except OSError as exc:
        log.error("cannot listen: %s", exc)
        return 1
    except PrivilegeError as exc:
        log.error("%s", exc)
        return 1
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.ERROR)
    config = load_config(args.config, **_overrides(args))
    result = load_all(config)
    for problem in result.problems:
        print(problem)
    for warning in result.warnings:
        print(f"warning: {warning}")
    records = sum(z.record_count for z in result.zones.values())
    if result.problems:
        print(f"{len(result.problems)} problem(s) in {config.zones}", file=sys.stderr)
        return 1
    print(f"ok: {len(result.zones)} zone(s), {records} record(s), {len(result.warnings)} warning(s) in {config.zones}")
    return 0


def _describe(location: Location) -> str:
    if location.source == "unknown":
        return "unknown (only catch-all rules match)"
    source = "embedded RIR country data" if location.source == "embedded" else location.source.replace("mmdb:", "")
    parts = [f"country {location.country}", f"continent {location.continent or '?'}"]
    if location.subdivision:
        parts.append(f"subdivision {location.subdivision}")
    if location.prefixlen is not None:
        parts.append(f"block /{location.prefixlen}")
    return ", ".join(parts) + f" (from {source})"


def cmd_explain(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.ERROR)
    config = load_config(args.config, **_overrides(args))
    try:
        ipaddress.ip_address(args.address)
        subnet = None
        if args.ecs:
            network = ipaddress.ip_network(args.ecs, strict=False)
            raw = network.network_address.packed[: (network.prefixlen + 7) // 8]
            subnet = ClientSubnet(1 if network.version == 4 else 2, network.prefixlen, 0, raw)
    except ValueError as exc:
        print(f"smartdns: {exc}", file=sys.stderr)
        return 2
    # the server's own rule for who the client is: a usable ECS subnet, else the resolver
    address, source_prefix, want_scope = client_for(subnet, args.address)
    result = load_all(config)
    for problem in result.problems:
        print(f"zone error: {problem}", file=sys.stderr)
    catalog = Catalog(result.zones)
    classifier = Classifier(config.geodb, CONTINENT_OF)
    location = classifier.locate(str(address))
    if subnet is not None and not want_scope:
        print(f"ECS {args.ecs} says nothing about the client (prefix 0 or not a global address): "
              f"the resolver decides, and the answer carries SCOPE 0")
    print(f"client {address}" + (f" (ECS {args.ecs} via resolver {args.address})" if want_scope else ""))
    print(f"location: {_describe(location)}")
    targets = _explain_targets(catalog, args.name, args.type)
    if not targets:
        print("no dynamic records" if not args.name else f"{args.name}: not in any zone served")
        return 0 if not args.name else 1
    for owner, rdtype, entries in targets:
        print(f"{owner} {dns.rdatatype.to_text(rdtype)}:")
        for entry_owner, source in entries:
            kind = dns.rdatatype.to_text(source.rdtype if isinstance(source, DynamicRRset) else source.rdataset.rdtype)
            if isinstance(source, StaticRRset):
                print(f"  {entry_owner} {kind} (static)")
                print("    answer: " + " ".join(r.to_text() for r in source.rdataset))
                continue
            decision = decide(source, address, lambda: location)
            if decision.rule is not None:
                rule = source.rules[decision.rule - 1]
                matched = [str(n) for n in rule.subnets if n.version == address.version and address in n]
                why = f"subnet {matched[0]}" if matched else (f"geos {', '.join(rule.geos)}" if rule.geos else "catch-all")
                print(f"  {entry_owner} {kind}: rule {decision.rule} ({why}) -> pool {decision.pool}")
            else:
                print(f"  {entry_owner} {kind}: no rule matched -> {decision.pool} values")
            print("    answer: " + " ".join(v.text for v in decision.candidates))
            if subnet is not None:
                scope = scope_prefix(source.subnets(), address, location.prefixlen, source_prefix) if want_scope else 0
                print(f"    ecs scope: /{scope}")
    return 0


def _explain_targets(catalog: Catalog, name: str | None, rtype: str | None) -> list[tuple[str, int, list]]:
    """(owner, type, [(owner, source)...]) for NAME [TYPE], or every dynamic record."""
    if name:
        qname = dns.name.from_text(name)
        types = [dns.rdatatype.from_text(rtype)] if rtype else [dns.rdatatype.A, dns.rdatatype.AAAA, dns.rdatatype.MX]
        out = []
        for rdtype in types:
            resolution = catalog.resolve(qname, rdtype)
            entries = [(e.owner, e.source) for e in resolution.answer + resolution.additional]
            if entries or rtype:
                out.append((qname.to_text(), rdtype, entries))
        return out if any(entries for _, _, entries in out) else []
    out = []
    for zone in catalog.zones.values():
        for key, node in sorted(zone.nodes.items()):
            for rdtype, source in sorted(node.items()):
                if isinstance(source, DynamicRRset):
                    owner = dns.name.from_wire(key, 0)[0]
                    out.append((owner.to_text(), rdtype, [(owner, source)]))
    return out


def cmd_geodb_build(args: argparse.Namespace) -> int:
    from .geodb import GeoDbBuildError, build_country_db

    try:
        count = build_country_db(args.input, args.output, CONTINENT_OF, country_names=COUNTRY_NAMES)
    except GeoDbBuildError as exc:
        print(f"smartdns: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {count} networks to {args.output}")
    return 0
