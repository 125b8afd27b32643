"""`smartdns route`: the Postfix socketmap service, over real TCP on loopback.

MX records come from a real smartdns DNS server on loopback; relays are real SMTP servers that
require STARTTLS and AUTH; GeoIP from a real .mmdb (127.0.0.2 CN, 127.0.0.3 US, 127.0.0.4 DE).
"""

from __future__ import annotations

import concurrent.futures
import json
import shutil
import socket
import subprocess
import sys
import time

import pytest
import yaml
from route_helpers import RELAY_PASSWORD, RELAY_USER, SmtpServer, SocketmapClient, closed_port, make_certificates, netstring

from conftest import REPO, SmartDNS, build_mmdb, wait_for

DEST_ZONE = """
---
'':
  - type: NS
    values: [ns1.dest.test.]
ns1:
  type: A
  value: 127.0.0.1
home:
  type: MX
  value: {exchange: mx.home.dest.test., preference: 10}
mx.home:
  type: A
  value: 127.0.0.2
far:
  type: MX
  values:
    - {exchange: mx1.far.dest.test., preference: 10}
    - {exchange: mx2.far.dest.test., preference: 20}
mx1.far:
  type: A
  value: 127.0.0.3
mx2.far:
  type: A
  value: 127.0.0.2
troubled:
  type: MX
  value: {exchange: mx.troubled.dest.test., preference: 10}
mx.troubled:
  type: A
  value: 127.0.0.3
eu:
  type: MX
  value: {exchange: mx.eu.dest.test., preference: 10}
mx.eu:
  type: A
  value: 127.0.0.4
noaddr:
  type: MX
  value: {exchange: nothing.dest.test., preference: 10}
private:
  type: MX
  value: {exchange: mx.private.dest.test., preference: 10}
mx.private:
  type: A
  value: 10.1.2.3
xn--bcher-kva:
  type: MX
  value: {exchange: mx.eu.dest.test., preference: 10}
"""

OURS_ZONE = """
---
'':
  - type: NS
    values: [ns1.ours.test.]
ns1:
  type: A
  value: 127.0.0.1
"""


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """DNS with the destinations' MX, two relays (TLS + AUTH), and a route service using them."""
    base = tmp_path_factory.mktemp("route")
    certs = make_certificates(base / "tls", ["relay.test"], ["127.0.0.1"])
    relay_us = SmtpServer("127.0.0.1", certificates=certs).start()
    relay_eu = SmtpServer("127.0.0.1", certificates=certs).start()
    dns_dir = base / "dns"
    dns_dir.mkdir()
    dns = SmartDNS(dns_dir, zones={"dest.test": DEST_ZONE}).start()
    (base / "password").write_text(RELAY_PASSWORD + "\n")
    state = base / "route-state.json"
    now = time.time()
    state.write_text(json.dumps({"version": 1, "troubled": {
        "domain:troubled.dest.test": {"since": now, "until": now + 3600, "reason": "test: 3 failures"}}}))
    route_dir = base / "route"
    route_dir.mkdir()
    mmdb = build_mmdb(route_dir)
    config = {
        "geodb": [str(mmdb)],
        "route": {
            "home": ["AS-CN"], "local_domains": ["also-ours.test"], "metrics": "127.0.0.1:0",
            # first lookups wait for DNS here, so answers do not depend on the machine's load;
            # the deadline itself is test_slow_dns_gets_the_default_answer_at_once's subject
            "lookup_deadline": 5,
            "resolvers": [f"127.0.0.1:{dns.port}"], "state_file": str(state),
            "health": {"interval": 0.5, "timeout": 5, "rise": 1, "fall": 3},
            "relays": [
                {"name": "us", "host": "127.0.0.1", "port": relay_us.port, "serves": ["NA", "SA"],
                 "ca_file": str(certs.ca), "username": RELAY_USER, "password_file": str(base / "password")},
                {"name": "eu", "host": "127.0.0.1", "port": relay_eu.port, "serves": ["EU"],
                 "fingerprint": certs.fingerprint(), "username": RELAY_USER, "password_file": str(base / "password")},
            ],
        },
    }
    route = SmartDNS(route_dir, zones={"ours.test": OURS_ZONE}, config=config, command=("route",))
    route.start()
    yield {"route": route, "dns": dns, "relays": (relay_us, relay_eu), "base": base, "config": route.config_path}
    route.stop()
    dns.stop()
    relay_us.stop()
    relay_eu.stop()


@pytest.fixture
def client(world):
    client = SocketmapClient(world["route"].port)
    yield client
    client.close()


def test_our_domains_take_the_default_path(client):
    assert client.lookup("someone@ours.test") == "NOTFOUND "  # a zone in the zones directory
    assert client.lookup("someone@also-ours.test") == "NOTFOUND "  # route.local_domains


def test_domestic_mx_takes_the_default_path(client):
    assert client.lookup("user@home.dest.test") == "NOTFOUND "
    assert client.lookup("home.dest.test") == "NOTFOUND "  # Postfix asks for the bare domain too
    assert client.lookup("user@private.dest.test") == "NOTFOUND "  # a private address is the local network


def test_overseas_mx_goes_direct_with_the_serving_relay_as_fallback(world, client):
    relay_us, relay_eu = world["relays"]
    wait_for(lambda: relay_us.auth_logins and relay_eu.auth_logins, 10)  # both probed through TLS + AUTH
    # primary MX in the US (NA); waiting out a first probe that a loaded machine made fail
    wait_for(lambda: client.lookup("user@far.dest.test") == "OK smartdns-direct-us:", 15)
    assert client.lookup("user@eu.dest.test") == "OK smartdns-direct-eu:"  # DE: the relay serving EU


def test_troubled_destination_goes_straight_to_a_relay(world, client):
    relay_us, _ = world["relays"]
    relayed = f"OK smartdns-relay-us:[127.0.0.1]:{relay_us.port}"
    wait_for(lambda: client.lookup("user@troubled.dest.test") == relayed, 15)


def test_nonexistent_domain_and_mx_without_address_take_the_default_path(client):
    assert client.lookup("user@nowhere.dest.test") == "NOTFOUND "
    assert client.lookup("user@noaddr.dest.test") == "NOTFOUND "


def test_keys_postfix_sends_besides_addresses(client):
    assert client.lookup("*") == "NOTFOUND "
    assert client.lookup(".dest.test") == "NOTFOUND "  # parent-domain probe
    assert client.lookup("postmaster") == "NOTFOUND "  # no domain at all
    assert client.lookup("user@") == "NOTFOUND "
    assert client.lookup("") == "NOTFOUND "
    assert client.lookup("user@[127.0.0.3]") == "NOTFOUND "  # address literal: not ours to route


def test_upper_case_and_idn_domains(client):
    assert client.lookup("User@FAR.Dest.TEST") == "OK smartdns-direct-us:"
    assert client.lookup("user@bücher.dest.test") == "OK smartdns-direct-eu:"  # UTF-8 key, SMTPUTF8 mail
    assert client.lookup("user@BÜCHER.dest.test") == "OK smartdns-direct-eu:"


def test_unknown_map_name_answers_notfound_and_logs(world, client):
    assert client.lookup("user@far.dest.test", name="routes") == "NOTFOUND "
    world["route"].wait_for_log(r"asked for map 'routes'")
    assert client.lookup("user@far.dest.test") == "OK smartdns-direct-us:"  # the connection goes on


def test_malformed_requests_close_only_their_connection(world, client):
    port = world["route"].port
    for junk in (b"abc:route x,", b"99999999:", b"3:abc;", b":", b"-1:x,", b"007:route x,"):
        bad = SocketmapClient(port)
        bad.send_raw(junk)
        assert bad.read_reply() is None, junk  # closed, nothing answered
        bad.close()
    overlong = SocketmapClient(port)
    overlong.send_raw(b"100000:" + b"x" * 1000)
    assert overlong.read_reply() is None
    overlong.close()
    assert client.lookup("user@far.dest.test") == "OK smartdns-direct-us:"


def test_long_keys_and_bad_bytes_get_an_answer(client):
    assert client.lookup("a" * 600 + "@far.dest.test") == "NOTFOUND "
    assert client.lookup("user@" + "x" * 70 + ".dest.test") == "NOTFOUND "  # a label over 63
    client.send_raw(netstring(b"route user@\xff\xfe.test"))
    assert client.read_reply() == b"NOTFOUND "
    client.send_raw(netstring(b"route-without-key"))
    assert client.read_reply().startswith(b"PERM")


def test_pipelined_requests_answer_in_order(client):
    keys = ["u@far.dest.test", "u@home.dest.test", "u@eu.dest.test", "*"] * 5
    client.send_raw(b"".join(netstring(f"route {k}".encode()) for k in keys))
    replies = [client.read_reply() for _ in keys]
    expected = {"u@far.dest.test": b"OK smartdns-direct-us:", "u@home.dest.test": b"NOTFOUND ",
                "u@eu.dest.test": b"OK smartdns-direct-eu:", "*": b"NOTFOUND "}
    assert replies == [expected[k] for k in keys]


def test_hundreds_of_concurrent_connections(world):
    port = world["route"].port
    idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(150)]  # held open, saying nothing
    stalled = socket.create_connection(("127.0.0.1", port))
    stalled.sendall(b"20:route us")  # half a request, never finished

    def one(i: int) -> list[str]:
        c = SocketmapClient(port)
        try:
            return [c.lookup(f"user{i}@{d}.dest.test") for d in ("far", "home", "eu")]
        finally:
            c.close()

    try:
        with concurrent.futures.ThreadPoolExecutor(50) as pool:
            results = list(pool.map(one, range(300)))
        assert all(r == ["OK smartdns-direct-us:", "NOTFOUND ", "OK smartdns-direct-eu:"] for r in results)
    finally:
        for sock in idle + [stalled]:
            sock.close()


def test_slow_dns_gets_the_default_answer_at_once(world, tmp_path):
    """A resolver that never answers: Postfix still gets an answer within the deadline."""
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    config = yaml.safe_load(world["config"].read_text())
    config["route"]["resolvers"] = [f"127.0.0.1:{silent.getsockname()[1]}"]
    config["route"]["lookup_deadline"] = 0.2
    config["route"].pop("state_file")
    route = SmartDNS(tmp_path, config=config, command=("route",)).start()
    try:
        client = SocketmapClient(route.port)
        started = time.monotonic()
        reply = client.lookup("user@far.dest.test")
        # answered while the lookup still runs: it gives up only after 8 s (not a speed test: bench/ has those)
        assert time.monotonic() - started < 5.0
        assert reply.startswith("OK smartdns-direct-")  # not known yet: direct, with a relay behind it
        assert client.lookup("user@home.dest.test").startswith("OK smartdns-direct-")
        client.close()
    finally:
        route.stop()
        silent.close()


def test_no_relay_up_still_direct_with_the_nearest(world, tmp_path):
    config = yaml.safe_load(world["config"].read_text())
    for relay in config["route"]["relays"]:
        relay["port"] = closed_port()
    config["route"].pop("state_file")
    route = SmartDNS(tmp_path, config=config, command=("route",)).start()
    try:
        route.wait_for_log(r"health: SMTP-TLS 127\.0\.0\.1:\d+ is DOWN")
        client = SocketmapClient(route.port)
        wait_for(lambda: route.log.count("is DOWN") >= 2, 10)
        assert client.lookup("user@far.dest.test") == "OK smartdns-direct-us:"
        client.close()
    finally:
        route.stop()


def test_metrics(world, client):
    client.lookup("user@far.dest.test")
    client.lookup("user@home.dest.test")
    status, body = world["route"].http("/metrics")
    assert status == 200
    assert 'smartdns_route_decisions_total{answer="direct",relay="us"}' in body
    assert 'smartdns_route_decisions_total{answer="domestic",relay=""}' in body
    assert 'smartdns_route_troubled{kind="domain"} 1.0' in body
    assert 'smartdns_route_relay_up{relay="us"} 1.0' in body
    assert 'smartdns_route_relay_rtt_seconds{relay="eu"}' in body
    assert "smartdns_route_lookup_seconds_count" in body
    assert "smartdns_queries_total" not in body  # the DNS server's metrics are not this service's


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "smartdns", *args], check=False, cwd=REPO, capture_output=True, text=True,
                          timeout=60)


def test_explain_shows_the_whole_decision(world):
    out = run("route", "explain", "someone@far.dest.test", "--config", str(world["config"]))
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "mx1.far.dest.test" in text and "127.0.0.3  NA-US" in text and "overseas" in text
    assert "127.0.0.2  AS-CN" in text and "domestic" in text
    assert "net:127.0.0.0/24: not troubled" in text
    assert "answer: OK smartdns-direct-us:" in text
    assert " up " in text and "TLS and AUTH ok" in text
    troubled = run("route", "explain", "x@troubled.dest.test", "--config", str(world["config"])).stdout
    assert "domain:troubled.dest.test: troubled since" in troubled
    assert "answer: OK smartdns-relay-us:[127.0.0.1]:" in troubled


def test_postfix_config_text(world):
    out = run("route", "postfix-config", "--config", str(world["config"]), "--tables", "/etc/postfix")
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "transport_maps = socketmap:inet:127.0.0.1:10027:route" in text
    us_port = world["relays"][0].port
    assert "smartdns-direct-us unix  -       -       n       -       -       smtp" in text
    assert f"  -o smtp_fallback_relay=[127.0.0.1]:{us_port}" in text
    assert "  -o smtp_reply_filter=regexp:/etc/postfix/smartdns_reply_filter" in text
    assert "  -o smtp_tls_security_level=secure" in text and "  -o smtp_tls_security_level=fingerprint" in text
    assert f"[127.0.0.1]:{us_port} {RELAY_USER}:{RELAY_PASSWORD}" in text


@pytest.mark.slow
def test_check_validates_the_route_section(tmp_path):
    bad = {
        "route:\n  relays:\n    - name: us\n      host: relay.example\n": "needs ca_file or fingerprint",
        "route:\n  home: [China]\n": "is not a geo code",
        "route:\n  trouble: {failures: 0}\n": "failures must be >= 1",
        "route:\n  listen: nowhere\n": "route listen",
        "route:\n  relays:\n    - {name: US!, host: r}\n": "lower-case letters",
        "route:\n  colour: blue\n": "unknown key",
        "route:\n  resolvers: [not-an-address]\n": "resolver",
    }
    for text, reason in bad.items():
        path = tmp_path / "smartdns.yaml"
        path.write_text("zones: zones\n" + text)
        out = run("check", "--config", str(path))
        assert out.returncode == 2, (text, out.stdout, out.stderr)
        assert f"{path}:" in out.stderr and reason in out.stderr, (text, out.stderr)


def _log_pair(pid: int, qid: str, rcpt: str, relay_port: int, status: str = "sent") -> str:
    """What Postfix logs when the direct service met a refused MX and the fallback relay took the mail."""
    why = "250 2.0.0 queued" if status == "sent" else "host 127.0.0.1[127.0.0.1] said: 451 4.3.0 try again"
    return (f"Nov 30 23:37:45 sender postfix/smartdns-direct-us/smtp[{pid}]: connect to mx1.far.dest.test"
            f"[127.0.0.3]:25: Connection refused\n"
            f"Nov 30 23:37:45 sender postfix/smartdns-direct-us/smtp[{pid}]: {qid}: to=<{rcpt}>, "
            f"relay=127.0.0.1[127.0.0.1]:{relay_port}, delay=0.08, delays=0.02/0/0.05/0.01, dsn=2.0.0, "
            f"status={status} ({why})\n")


def test_trouble_learned_from_the_postfix_log_across_rotation_and_restart(world, tmp_path):
    relay_us, _ = world["relays"]
    mail_log = tmp_path / "mail.log"
    mail_log.write_text("Nov 30 23:00:00 sender postfix/smtp[1]: connect to x[127.0.0.3]:25: Connection refused\n" * 5)
    config = yaml.safe_load(world["config"].read_text())
    config["route"].update(postfix_log=str(mail_log), state_file=str(tmp_path / "state.json"), retry_delay=0.1,
                           postfix_config_directory=str(tmp_path / "no-postfix-here"),
                           trouble={"failures": 2, "window": 600, "cooldown": 3600})
    route = SmartDNS(tmp_path, config=config, command=("route",)).start()
    try:
        route.wait_for_log("following .*mail.log from its end")
        client = SocketmapClient(route.port)
        # the old lines taught nothing (and relay us passed this service's first probe)
        wait_for(lambda: client.lookup("a@far.dest.test") == "OK smartdns-direct-us:", 15)
        with mail_log.open("a") as log:
            log.write(_log_pair(6038, "7B06B210535", "a@far.dest.test", relay_us.port))
        mail_log.rename(tmp_path / "mail.log.1")  # rotated: the next lines go to a new file
        mail_log.write_text(_log_pair(6040, "8C17C321646", "b@far.dest.test", relay_us.port, status="deferred"))
        route.wait_for_log(r"net:127\.0\.0\.0/24 is troubled for 3600s after 2 failures")
        route.wait_for_log(r"domain:far\.dest\.test is troubled")
        relayed = f"OK smartdns-relay-us:[127.0.0.1]:{relay_us.port}"
        wait_for(lambda: client.lookup("d@far.dest.test") == relayed, 15)
        # another domain in the troubled block (once its MX lookup, finished in the background, is known)
        wait_for(lambda: client.lookup("x@troubled.dest.test") == relayed, 15)
        # the deferred message is retried through `postqueue -i` (which fails here: no such Postfix)
        route.wait_for_log(r"retrying deferred 8C17C321646 \(to far\.dest\.test\)")
        route.wait_for_log(r"postqueue -i 8C17C321646 failed")
        _, body = route.http("/metrics")
        assert 'smartdns_route_troubled{kind="net"} 1.0' in body
        assert 'smartdns_route_retries_total{result="failed"} 1.0' in body
        client.close()
        state = json.loads((tmp_path / "state.json").read_text())
        assert set(state["troubled"]) >= {"net:127.0.0.0/24", "domain:far.dest.test"}
    finally:
        route.stop()
    again = SmartDNS(tmp_path, config=config, command=("route",)).start()  # the state file survives a restart
    try:
        again.wait_for_log(r"troubled destination\(s\) restored")
        client = SocketmapClient(again.port)
        wait_for(lambda: client.lookup("e@far.dest.test").startswith("OK smartdns-relay-us:"), 15)
        client.close()
    finally:
        again.stop()


def test_destination_keys_and_domain_names():
    from smartdns.route.mx import ascii_domain
    from smartdns.route.trouble import block_key

    assert block_key("192.0.2.77") == "net:192.0.2.0/24"
    assert block_key("2001:db8:1:2::25") == "net:2001:db8:1::/48"
    assert block_key("not-an-address") is None
    assert ascii_domain("Example.ORG.") == "example.org"
    assert ascii_domain("bücher.example") == "xn--bcher-kva.example"
    for bad in ("", ".", "localhost", "[192.0.2.1]", "a..b", "x" * 64 + ".example"):
        assert ascii_domain(bad) is None, bad


def test_trouble_window_and_cooldown(tmp_path):
    from smartdns.route.settings import TroubleSettings
    from smartdns.route.trouble import TroubleBook

    now = [1000.0]
    book = TroubleBook(TroubleSettings(failures=3, window=60, cooldown=100), tmp_path / "state.json", lambda: now[0])
    for step in (0, 30, 61):  # the first failure has left the window when the third comes
        now[0] = 1000 + step
        book.failure("net:192.0.2.0/24", "refused")
    assert book.is_troubled("net:192.0.2.0/24") is None
    now[0] = 1065
    book.failure("net:192.0.2.0/24", "refused")  # three within 60 s: 1030, 1061, 1065
    entry = book.is_troubled("net:192.0.2.0/24")
    assert entry is not None and entry.until == 1165
    assert TroubleBook(TroubleSettings(), tmp_path / "state.json", lambda: 1100.0).is_troubled("net:192.0.2.0/24")
    now[0] = 1166
    assert book.is_troubled("net:192.0.2.0/24") is None  # cool-down over: direct again
    assert json.loads((tmp_path / "state.json").read_text())["troubled"] == {}


def test_internal_errors_answer_notfound_over_tcp(caplog):
    """A lookup that fails inside answers NOTFOUND (Postfix's default route) and logs; the connection goes on."""
    import asyncio

    from smartdns.route.socketmap import SocketmapServer

    async def lookup(name: str, key: str) -> str:
        if key.startswith("boom"):
            raise RuntimeError("a bug")
        return "OK fine:"

    async def scenario() -> list[bytes]:
        server = SocketmapServer(lookup)
        port = await server.start("127.0.0.1", 0)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        replies = []
        for key in ("boom@example.org", "ok@example.org"):
            writer.write(netstring(f"route {key}".encode()))
            length = int((await reader.readuntil(b":"))[:-1])
            replies.append((await reader.readexactly(length + 1))[:-1])
        writer.close()
        server.close()
        return replies

    assert asyncio.run(scenario()) == [b"NOTFOUND ", b"OK fine:"]
    assert "lookup of 'boom@example.org' failed; answering NOTFOUND" in caplog.text


def test_relay_choice_prefers_serving_then_fastest():
    from smartdns.config import HealthSettings
    from smartdns.geo import Location
    from smartdns.health import TargetState
    from smartdns.route.relays import RelayPool, target_of
    from smartdns.route.settings import Relay

    fp = ":".join(["AB"] * 32)
    relays = (Relay("us1", "198.51.100.1", serves=("NA",), fingerprint=fp),
              Relay("us2", "198.51.100.2", serves=("NA",), fingerprint=fp),
              Relay("eu", "198.51.100.3", serves=("EU",), fingerprint=fp))
    pool = RelayPool(relays, HealthSettings())
    pool.rtt.update({"us1": 0.120, "us2": 0.040, "eu": 0.010})
    us = Location("NA", "US", None, None, "embedded")
    assert pool.choose(us)[:2] == (relays[1], True)  # serves NA, and faster than us1
    assert pool.choose(Location("AS", "JP", None, None, "embedded"))[0] == relays[2]  # nobody serves AS: fastest
    pool.monitor.states[target_of(relays[1])] = TargetState(up=False, checked=True, reason="down")
    assert pool.choose(us)[:2] == (relays[0], True)  # the serving relay that is up
    for relay in relays:
        pool.monitor.states[target_of(relay)] = TargetState(up=False, checked=True, reason="down")
    relay, up, why = pool.choose(us)
    assert (relay, up) == (relays[1], False) and "no relay is up" in why  # nearest configured anyway


@pytest.mark.skipif(shutil.which("postmap") is None, reason="postmap (Postfix) is not installed")
def test_reply_filter_table_with_postfix_itself(tmp_path):
    """The generated smtp_reply_filter, as Postfix's own postmap reads it: "blocked" 5xx -> 4xx, the rest kept."""
    from smartdns.route.postfix import reply_filter_table

    table = tmp_path / "smartdns_reply_filter"
    table.write_text(reply_filter_table())
    cases = {
        "554 5.7.1 Service unavailable; client [192.0.2.1] blocked using zen.spamhaus.org":
            "454 4.7.1 Service unavailable; client [192.0.2.1] blocked using zen.spamhaus.org",
        "550-5.7.1 Your IP has a poor reputation": "450-4.7.1 Your IP has a poor reputation",
        "554 Blocked by policy": "454 Blocked by policy",
        "550 5.1.1 User unknown": "",
        "552 5.2.2 Mailbox full": "",
    }
    for reply, expected in cases.items():
        out = subprocess.run(["postmap", "-q", reply, f"regexp:{table}"], capture_output=True, text=True,
                             check=False)
        assert out.stdout.strip() == expected, (reply, out.stdout, out.stderr)
        assert "warning" not in out.stderr, out.stderr
