"""End-to-end: a real Postfix asking `smartdns route`, delivering to SMTP servers on loopback.

Run by tests/test_route_postfix.py as `unshare -nm python3 tests/route_e2e.py WORKDIR`: inside a
network namespace that has only loopback and a mount namespace whose /etc/resolv.conf points at
127.0.0.1, where smartdns serves the destinations' MX records on port 53. Nothing can leave the
machine. Every scenario is checked here and written to WORKDIR/report.json with its evidence
(the Postfix log lines, `smartdns route explain` output), for the outer test to assert on.

Addresses (all on lo): 127.20.x domestic (CN) MX, 127.10.x overseas (US) MXes, 127.30.1.1 relay
"us" and 127.30.2.1 relay "eu" (both STARTTLS + AUTH), 127.0.0.1 Postfix, DNS and the service.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from postfix_instance import PostfixInstance  # noqa: E402 - after the sys.path line
from route_helpers import RELAY_PASSWORD, RELAY_USER, SmtpServer, make_certificates  # noqa: E402 - after the sys.path line

from conftest import SmartDNS, build_mmdb  # noqa: E402 - after the sys.path line

GEO = "127.20.0.0/16,CN,AS\n127.10.0.0/16,US,NA\n127.30.1.0/24,US,NA\n127.30.2.0/24,DE,EU\n"
COOLDOWN = 45  # seconds (longer than the 30 s retry delay) a troubled destination is sent straight to a relay in this run


def mx(name: str, address: str) -> str:
    return f"""{name}:
  type: MX
  value: {{exchange: mx.{name}.dest.test., preference: 10}}
mx.{name}:
  type: A
  value: {address}
"""


ZONE = "---\n'':\n  - type: NS\n    values: [ns1.dest.test.]\nns1:\n  type: A\n  value: 127.0.0.1\n" + "".join([
    mx("home", "127.20.1.1"),      # domestic: accepts
    mx("refuse", "127.10.1.1"),    # overseas: connection refused
    mx("blocked", "127.10.2.1"),   # overseas: 450 "blocked" to our address
    mx("stall", "127.10.3.1"),     # overseas: accepts the connection, never greets
    mx("healthy", "127.10.4.1"),   # overseas: accepts
    mx("later", "127.10.5.1"),     # overseas: refused (deferred-then-retried scenario)
    mx("blocked5", "127.10.6.1"),  # overseas: 554 "blocked" (made 4xx by the reply filter)
]) + "relay-us:\n  type: A\n  value: 127.30.1.1\nrelay-eu:\n  type: A\n  value: 127.30.2.1\n"


class Run:
    def __init__(self, work: Path) -> None:
        self.work = work
        self.report: dict[str, Any] = {}
        self.stoppers: list[Callable[[], Any]] = []

    def check(self, name: str, body: Callable[[dict[str, Any]], None]) -> None:
        evidence: dict[str, Any] = {}
        started = time.monotonic()
        try:
            body(evidence)
            ok, error = True, ""
        except Exception:  # recorded; the next scenario still runs
            ok, error = False, traceback.format_exc()
        self.report[name] = {"ok": ok, "error": error, "seconds": round(time.monotonic() - started, 1), **evidence}
        print(f"{'ok  ' if ok else 'FAIL'} {name} ({time.monotonic() - started:.1f}s)", flush=True)
        (self.work / "report.json").write_text(json.dumps(self.report, indent=1))


def isolate(work: Path) -> None:
    """Loopback up, and a resolv.conf pointing at our DNS, visible to this namespace only."""
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    resolv = work / "resolv.conf"
    resolv.write_text("nameserver 127.0.0.1\noptions attempts:1 timeout:1\n")
    subprocess.run(["mount", "--make-rprivate", "/"], check=True)
    subprocess.run(["mount", "--bind", str(resolv), "/etc/resolv.conf"], check=True)


def explain(config: Path, address: str) -> str:
    out = subprocess.run([sys.executable, "-m", "smartdns", "route", "explain", address, "--config", str(config)],
                         capture_output=True, text=True, timeout=60, check=False)
    return out.stdout + out.stderr


def main(work: Path) -> int:
    isolate(work)
    run = Run(work)
    try:
        scenario(run, work)
    finally:
        for stop in reversed(run.stoppers):
            try:
                stop()
            except Exception:
                traceback.print_exc()
    return 0 if all(v["ok"] for v in run.report.values()) else 1


def scenario(run: Run, work: Path) -> None:
    certs = make_certificates(work / "tls", ["relay-us.dest.test", "relay-eu.dest.test"], [])
    # Destination MXes
    home = SmtpServer("127.20.1.1", 25).start()
    blocked = SmtpServer("127.10.2.1", 25, rcpt_reply="450 4.7.1 Client host [127.0.0.1] blocked by policy").start()
    blocked5 = SmtpServer("127.10.6.1", 25, rcpt_reply="554 5.7.1 Service unavailable; client [127.0.0.1] blocked "
                                                     "using zen.spamhaus.org").start()
    stall = SmtpServer("127.10.3.1", 25, stall=True).start()
    healthy = SmtpServer("127.10.4.1", 25).start()
    relay_us = SmtpServer("127.30.1.1", 587, certificates=certs, temp_fail_once=("later1@",)).start()
    relay_eu = SmtpServer("127.30.2.1", 587, certificates=certs).start()
    for server in (home, blocked, blocked5, stall, healthy, relay_eu):
        run.stoppers.append(server.stop)
    run.stoppers.append(lambda: relay_us.stop() if relay_us.running else None)

    # DNS for the MX records, on port 53 where the system resolver (and Postfix) asks
    dns_dir = work / "dns"
    dns_dir.mkdir()
    dns = SmartDNS(dns_dir, zones={"dest.test": ZONE}).start(listen="127.0.0.1:53")
    run.stoppers.append(dns.stop)

    # The routing service
    route_dir = work / "route"
    route_dir.mkdir()
    mmdb = build_mmdb(route_dir, GEO)
    (work / "relay-password").write_text(RELAY_PASSWORD + "\n")
    postfix_dir = work / "postfix"
    relays = [
        {"name": "us", "host": "relay-us.dest.test", "port": 587, "serves": ["NA", "SA"], "ca_file": str(certs.ca),
         "username": RELAY_USER, "password_file": str(work / "relay-password")},
        {"name": "eu", "host": "relay-eu.dest.test", "port": 587, "serves": ["EU"], "ca_file": str(certs.ca),
         "username": RELAY_USER, "password_file": str(work / "relay-password")},
    ]
    route_config = {
        "geodb": [str(mmdb)],
        "route": {
            "listen": "127.0.0.1:10027", "home": ["AS-CN"], "resolvers": "system",
            "postfix_log": str(postfix_dir / "mail.log"), "postfix_config_directory": str(postfix_dir / "etc"),
            "state_file": str(work / "route-state.json"), "metrics": "127.0.0.1:0",
            "trouble": {"failures": 2, "window": 600, "cooldown": COOLDOWN},
            "lookup_deadline": 5,  # each scenario's first lookup waits for DNS: results not up to machine load
            "health": {"interval": 1, "timeout": 3, "rise": 1, "fall": 1},
            "relays": relays,
        },
    }
    route = SmartDNS(route_dir, config=route_config, command=("route",))
    route.start(listen=None)
    run.stoppers.append(route.stop)
    config_path = route.config_path

    # Postfix, configured with exactly what `smartdns route postfix-config` prints
    tables = postfix_dir / "etc"
    tables.mkdir(parents=True, exist_ok=True)
    text = subprocess.run([sys.executable, "-m", "smartdns", "route", "postfix-config", "--config", str(config_path),
                           "--tables", str(tables)], capture_output=True, text=True, check=True).stdout
    sections = _sections(text)
    (work / "postfix-config.txt").write_text(text)
    for name, body in sections.items():
        if name.startswith("/"):
            Path(name).write_text(body)
    postfix = PostfixInstance(postfix_dir, main_extra=sections["main.cf (append)"],
                              master_extra=sections["master.cf (append)"])
    postfix.start()
    run.stoppers.append(postfix.stop)

    def delivered(recipient: str, evidence: dict[str, Any], status: str = "sent", timeout: float = 60) -> str:
        line = postfix.wait_status(recipient, status, timeout)
        evidence["log"] = postfix.lines_for(recipient)
        evidence["explain"] = explain(config_path, recipient)
        return line

    def domestic(ev: dict[str, Any]) -> None:
        postfix.send("alice@home.dest.test")
        line = delivered("alice@home.dest.test", ev)
        assert "relay=mx.home.dest.test[127.20.1.1]:25" in line and " postfix/smtp[" in line, line
        assert [r.recipients for r in home.received] == [["alice@home.dest.test"]]
        assert not relay_us.received and not relay_eu.received
        assert "answer: NOTFOUND" in ev["explain"]

    run.check("domestic_direct_never_touches_a_relay", domestic)

    def fallback(recipient: str, ev: dict[str, Any]) -> None:
        before = len(relay_us.received)
        postfix.send(recipient)
        line = delivered(recipient, ev)
        assert "relay=relay-us.dest.test[127.30.1.1]:587" in line and "postfix/smartdns-direct-us/smtp[" in line, line
        assert relay_us.received[before:] and relay_us.received[-1].recipients == [recipient]

    run.check("refused_falls_back_to_relay_in_same_attempt", lambda ev: fallback("bob@refuse.dest.test", ev))
    run.check("blocked_450_falls_back_to_relay_in_same_attempt", lambda ev: fallback("carol@blocked.dest.test", ev))
    def filtered(ev: dict[str, Any]) -> None:
        fallback("dave@blocked5.dest.test", ev)
        assert any('with "454 4.7.1 Service unavailable' in line for line in ev["log"]), "reply not rewritten"

    run.check("blocked_554_filtered_falls_back_in_same_attempt", filtered)
    run.check("stalling_mx_falls_back_to_relay_in_same_attempt", lambda ev: fallback("erin@stall.dest.test", ev))

    def overseas_healthy(ev: dict[str, Any]) -> None:
        postfix.send("frank@healthy.dest.test")
        line = delivered("frank@healthy.dest.test", ev)
        assert "relay=mx.healthy.dest.test[127.10.4.1]:25" in line and "smartdns-direct-us" in line, line
        assert healthy.received[-1].recipients == ["frank@healthy.dest.test"]

    run.check("overseas_healthy_goes_direct", overseas_healthy)

    def threshold(ev: dict[str, Any]) -> None:
        # bob@refuse (above) was failure 1 of the block 127.10.1.0/24; this is failure 2: troubled
        postfix.send("gina@refuse.dest.test")
        delivered("gina@refuse.dest.test", ev)
        route.wait_for_log(r"net:127\.10\.1\.0/24 is troubled", timeout=10)
        ev["troubled_log"] = [line for line in route.log_lines if "troubled" in line]
        marker = len(postfix.lines_text().splitlines())
        for name in ("hank", "ivan"):
            postfix.send(f"{name}@refuse.dest.test")
            line = postfix.wait_status(f"{name}@refuse.dest.test", "sent", 60)
            assert "postfix/smartdns-relay-us/smtp[" in line and "relay=relay-us.dest.test[127.30.1.1]:587" in line, line
        ev["relay_log"] = postfix.lines_for("hank@refuse.dest.test")
        ev["explain_troubled"] = explain(config_path, "hank@refuse.dest.test")
        after = postfix.lines_text().splitlines()[marker:]
        assert not [line for line in after if "127.10.1.1" in line], "direct attempt while troubled"
        assert "answer: OK smartdns-relay-us:[relay-us.dest.test]:587" in ev["explain_troubled"]
        # after the cool-down: direct (with fallback) again
        route.wait_for_log(r"net:127\.10\.1\.0/24 cool-down over", timeout=COOLDOWN + 15)
        postfix.send("jack@refuse.dest.test")
        line = postfix.wait_status("jack@refuse.dest.test", "sent", 60)
        assert "postfix/smartdns-direct-us/smtp[" in line, line
        ev["after_cooldown_log"] = postfix.lines_for("jack@refuse.dest.test")
        assert any("127.10.1.1" in line and "refused" in line.lower() for line in ev["after_cooldown_log"]), "no direct try"

    run.check("troubled_goes_straight_to_relay_until_cooldown", threshold)

    def retried(ev: dict[str, Any]) -> None:
        # later1: direct refused, the relay answers 451 once: deferred. later2: direct refused again
        # (the 2nd failure: troubled), so the deferred later1 is retried now, through the relay.
        postfix.send("later1@later.dest.test")
        deferred_line = postfix.wait_status("later1@later.dest.test", "deferred", 60)
        deferred_at = time.monotonic()
        postfix.send("later2@later.dest.test")
        postfix.wait_status("later2@later.dest.test", "sent", 60)
        line = postfix.wait_status("later1@later.dest.test", "sent", 90)
        took = time.monotonic() - deferred_at
        ev["log"] = postfix.lines_for("later1@later.dest.test")
        ev["explain"] = explain(config_path, "later1@later.dest.test")
        ev["route_log"] = [line for line in route.log_lines if "postqueue" in line or "retrying" in line]
        ev["seconds_deferred_to_sent"] = round(took, 1)
        assert "status=deferred" in deferred_line
        assert "postfix/smartdns-relay-us/smtp[" in line, line
        assert took < 60, took
        assert any("postqueue -i" in line for line in ev["route_log"])

    run.check("deferred_is_retried_through_relay_within_a_minute", retried)

    def relay_down(ev: dict[str, Any]) -> None:
        relay_us.stop()
        route.wait_for_log(r"SMTP-TLS relay-us\.dest\.test:587 is DOWN", timeout=15)
        before = len(relay_eu.received)
        postfix.send("kate@refuse.dest.test")
        line = delivered("kate@refuse.dest.test", ev)
        assert "relay=relay-eu.dest.test[127.30.2.1]:587" in line, line
        assert len(relay_eu.received) == before + 1
        assert "relay-us" in ev["explain"] and "DOWN" in ev["explain"]

    run.check("relay_down_uses_the_other_relay", relay_down)

    def service_killed(ev: dict[str, Any]) -> None:
        assert route.proc is not None
        route.proc.send_signal(signal.SIGKILL)
        route.proc.wait(10)
        postfix.send("lena@home.dest.test")
        during = postfix.wait_status("lena@home.dest.test", "deferred", 60)
        ev["while_down"] = during
        assert not any("lena@home.dest.test" in r.recipients for r in home.received)
        route.start(listen=None)  # the same config, port and state file
        postfix.send("mike@home.dest.test")
        delivered("mike@home.dest.test", ev)
        postfix.flush()  # the one deferred meanwhile: delivered at the next queue run
        postfix.wait_status("lena@home.dest.test", "sent", 60)
        ev["log"] = postfix.lines_for("lena@home.dest.test") + postfix.lines_for("mike@home.dest.test")
        assert ["mike@home.dest.test"] in [r.recipients for r in home.received]
        assert ["lena@home.dest.test"] in [r.recipients for r in home.received]

    run.check("service_killed_domestic_flows_once_back", service_killed)
    def no_config_warnings(ev: dict[str, Any]) -> None:
        killed = ("socketmap", "transport_maps", "127.0.0.1:10027")  # the service killed above, on purpose
        ev["warnings"] = [line for line in postfix.lines_text().splitlines()
                          if "warning:" in line and not any(k in line for k in killed)]
        assert not ev["warnings"], ev["warnings"]

    run.check("postfix_logged_no_configuration_warnings", no_config_warnings)
    (work / "mail.log").write_text(postfix.lines_text())
    (work / "route.log").write_text(route.log)


def _sections(text: str) -> dict[str, str]:
    """`### NAME` headed sections of postfix-config's output."""
    out: dict[str, str] = {}
    name = None
    for line in text.splitlines(keepends=True):
        if line.startswith("### "):
            name = line[4:].split("  (")[0].strip()
            out[name] = ""
        elif name is not None:
            out[name] += line
    return out


if __name__ == "__main__":
    if os.geteuid() != 0:
        sys.exit("run as root inside `unshare -nm`")
    sys.exit(main(Path(sys.argv[1])))
