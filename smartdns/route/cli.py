"""`smartdns route [serve | explain ADDRESS | postfix-config]`."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import sys
from pathlib import Path

from ..config import load_config, parse_listen
from .settings import RouteSettings

log = logging.getLogger("smartdns.route")


def cmd_route(args: argparse.Namespace) -> int:
    from ..logs import setup_logging

    config = load_config(args.config)
    settings = config.route or RouteSettings()
    if args.listen:
        try:
            settings = dataclasses.replace(settings, listen=parse_listen(args.listen))
        except ValueError as exc:
            print(f"smartdns: {exc}", file=sys.stderr)
            return 2
    config = dataclasses.replace(config, route=settings)
    if args.action == "postfix-config":
        from .postfix import render

        if not settings.relays:
            print("smartdns: route: no relays configured: Postfix needs nothing but the default route", file=sys.stderr)
            return 1
        sys.stdout.write(render(settings, Path(args.tables)))
        return 0
    if args.action == "explain":
        from .explain import explain

        if not args.address:
            print("smartdns: route explain needs a recipient address, e.g. user@example.org", file=sys.stderr)
            return 2
        logging.basicConfig(level=logging.ERROR)
        return asyncio.run(explain(config, args.address, sys.stdout))
    if args.address:
        print("smartdns: route serve takes no address", file=sys.stderr)
        return 2
    from ..server import event_loop_runner
    from .service import RouteService

    setup_logging(args.log_format, args.log_level)
    service = RouteService(config)
    try:
        event_loop_runner()(service.serve())
    except OSError as exc:
        log.error("route: cannot listen on %s: %s", settings.listen, exc)
        return 1
    return 0
