"""Real validators against a signed smartdns, inside a network namespace with only loopback.

delv (BIND's validating lookup) with our DS as its trust anchor, a validating Unbound
with a stub zone pointing at smartdns, and ldns-verify-zone on `smartdns dump --dnssec`.
Each run is one `unshare -n` script: the server, the validators and the clients share a
fresh loopback and nothing else, so fixed ports are safe and nothing can leave the machine.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import dns.dnssec
import dns.name
import pytest

from conftest import DOMESTIC, EXAMPLE_ZONES, OVERSEAS, REPO, build_mmdb
from smartdns.dnssec import keys
from test_dnssec_answers import EXTRA

ZONE = dns.name.from_text("example.com.")
TOOLS = ("delv", "unbound", "ldns-verify-zone", "unshare", "ip")
PORT, RESOLVER_PORT, METRICS_PORT = 5300, 5301, 9300


def _netns_works() -> str | None:
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        return f"needs {', '.join(missing)} (Debian: bind9-dnsutils, unbound, ldnsutils, util-linux, iproute2)"
    probe = subprocess.run(["unshare", "-n", "ip", "link", "set", "lo", "up"], capture_output=True, text=True,
                           check=False)
    return None if probe.returncode == 0 else f"cannot make a network namespace: {probe.stderr.strip()}"


SKIP = _netns_works()
pytestmark = [pytest.mark.slow, pytest.mark.skipif(SKIP is not None, reason=SKIP or "")]


def signed_workdir(tmp_path: Path) -> tuple[Path, keys.ZoneKey]:
    (tmp_path / "zones").mkdir()
    (tmp_path / "zones" / "example.com.yaml").write_text((EXAMPLE_ZONES / "example.com.yaml").read_text())
    key = keys.generate(ZONE, 13, tmp_path / "keys")
    mmdb = build_mmdb(tmp_path)
    (tmp_path / "smartdns.yaml").write_text(textwrap.dedent(f"""\
        zones: zones
        geodb: [{mmdb}]
        dnssec: {{keys: keys}}
        metrics: 127.0.0.1:{METRICS_PORT}
        """))
    ds = dns.dnssec.make_ds(ZONE, key.dnskey, "SHA256")
    (tmp_path / "anchors.conf").write_text(
        f'trust-anchors {{ "example.com." static-ds {ds.key_tag} {ds.algorithm} {ds.digest_type} "{ds.digest.hex()}"; }};\n')
    (tmp_path / "anchor.ds").write_text(f"example.com. 3600 IN DS {ds.to_text()}\n")
    (tmp_path / "unbound.conf").write_text(textwrap.dedent(f"""\
        server:
          interface: 127.0.0.1@{RESOLVER_PORT}
          do-daemonize: no
          username: ""
          chroot: ""
          directory: "{tmp_path}"
          pidfile: ""
          use-syslog: no
          logfile: ""
          verbosity: 1
          do-not-query-localhost: no
          module-config: "validator iterator"
          trust-anchor-file: "{tmp_path}/anchor.ds"
          aggressive-nsec: yes
          qname-minimisation: no
          access-control: 127.0.0.0/8 allow
          val-log-level: 2
        stub-zone:
          name: "example.com"
          stub-addr: 127.0.0.1@{PORT}
        """))
    return tmp_path, key


CLIENT = textwrap.dedent(f"""\
    import random, sys, urllib.request
    import dns.flags, dns.message, dns.query, dns.rcode

    def ask(name, rdtype, port={RESOLVER_PORT}):
        query = dns.message.make_query(name, rdtype, want_dnssec=True)
        return dns.query.udp(query, "127.0.0.1", port=port, timeout=5)

    def served():
        text = urllib.request.urlopen("http://127.0.0.1:{METRICS_PORT}/metrics", timeout=5).read().decode()
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith("smartdns_queries_total{{"))

    if sys.argv[1] == "ad":
        for name, rdtype in (("mx.example.com", "A"), ("example.com", "MX"), ("nosuchname.example.com", "A")):
            reply = ask(name, rdtype)
            print(name, rdtype, dns.rcode.to_text(reply.rcode()), "AD" if reply.flags & dns.flags.AD else "no-AD")
    else:
        ask("warmup.example.com", "A")
        before = served()
        count = int(sys.argv[2])
        rng = random.Random(7)
        nx = 0
        for _ in range(count):
            label = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(12))
            nx += ask(label + ".example.com", "A").rcode() == dns.rcode.NXDOMAIN
        print("flood", count, "nxdomain", nx, "reached", int(served() - before))
    """)


def run_in_netns(work: Path, body: str, timeout: float = 120) -> str:
    (work / "client.py").write_text(CLIENT)
    script = textwrap.dedent(f"""\
        set -u
        ip link set lo up
        cd {work}
        export PYTHONPATH={REPO}
        {sys.executable} -m smartdns serve --config smartdns.yaml --listen 127.0.0.1:{PORT} 2> smartdns.log &
        SERVER=$!
        for i in $(seq 200); do grep -q "listening on" smartdns.log && break; sleep 0.05; done
        """) + textwrap.dedent(body) + "\nkill $SERVER; wait $SERVER 2>/dev/null\n"
    (work / "run.sh").write_text(script)
    done = subprocess.run(["unshare", "-n", "bash", str(work / "run.sh")], capture_output=True, text=True,
                          timeout=timeout, check=False, env={**os.environ, "PYTHONPATH": str(REPO)})
    return done.stdout + done.stderr


def sections(output: str) -> dict[str, str]:
    out: dict[str, str] = {}
    name = ""
    for line in output.splitlines():
        if line.startswith("=== "):
            name = line[4:]
            out[name] = ""
        elif name:
            out[name] += line + "\n"
    return out


# `smartdns dump --dnssec` through ldns-verify-zone (with the count of NSEC3 records), then Unbound started
DUMP_THEN_UNBOUND = textwrap.indent(textwrap.dedent(f"""\
    echo "=== dump"
    {sys.executable} -m smartdns dump example.com --dnssec --client {DOMESTIC} --config smartdns.yaml > dump.zone
    echo "nsec3 records: $(grep -c 'IN NSEC3 ' dump.zone)"
    ldns-verify-zone dump.zone 2>&1
    unbound -c unbound.conf > unbound.log 2>&1 &
    RESOLVER=$!
    for i in $(seq 100); do
        {sys.executable} -c "import socket; socket.create_connection(('127.0.0.1', {RESOLVER_PORT}))" 2>/dev/null && break
        sleep 0.1
    done
    """), " " * 8).strip()


def test_delv_unbound_and_ldns_validate_the_example_zone(tmp_path: Path) -> None:
    work, _ = signed_workdir(tmp_path)
    delv = f"delv -a anchors.conf +root=example.com -p {PORT} @127.0.0.1"
    output = run_in_netns(work, f"""\
        echo "=== delv domestic"; {delv} -b {DOMESTIC} mx.example.com A 2>&1
        echo "=== delv overseas"; {delv} -b {OVERSEAS} mx.example.com A 2>&1
        echo "=== delv mx"; {delv} -b {OVERSEAS} example.com MX 2>&1
        echo "=== delv nxdomain"; {delv} nosuchname.example.com A 2>&1
        echo "=== delv nodata"; {delv} ns1.example.com TXT 2>&1
        {DUMP_THEN_UNBOUND}
        echo "=== unbound"; {sys.executable} client.py ad 2>&1
        echo "=== flood"; {sys.executable} client.py flood 300 2>&1
        kill $RESOLVER; wait $RESOLVER 2>/dev/null
        """)
    print(output)  # the evidence, with -s
    found = sections(output)
    assert set(found) >= {"delv domestic", "delv overseas", "delv mx", "delv nxdomain", "unbound", "flood"}, output
    assert "; fully validated" in found["delv domestic"] and "192.0.2.10" in found["delv domestic"], output
    assert "; fully validated" in found["delv overseas"] and "198.51.100.1" in found["delv overseas"], output
    assert "; fully validated" in found["delv mx"], output
    assert "; negative response, fully validated" in found["delv nxdomain"], output
    assert "; negative response, fully validated" in found["delv nodata"], output
    assert "Zone is verified and complete" in found["dump"] and "nsec3 records: 0" in found["dump"], output
    assert found["unbound"].split("\n")[:3] == ["mx.example.com A NOERROR AD", "example.com MX NOERROR AD",
                                                 "nosuchname.example.com A NXDOMAIN AD"], output
    words = found["flood"].split()
    count, nxdomain, reached = int(words[1]), int(words[3]), int(words[5])
    assert count == nxdomain == 300, output
    # aggressive use of the NSEC chain (RFC 8198): the resolver answers random names itself. A few
    # reach us per NSEC interval until its proof is cached (about 10 on a quiet machine), and a
    # busy machine adds Unbound's retries (16 seen); without aggressive use all 300 would.
    assert reached <= 30, output


def test_delv_unbound_and_ldns_validate_an_nsec3_zone(tmp_path: Path) -> None:
    """The same zone with `dnssec: {nsec3: [example.com]}`: every negative shape validated by delv,
    Unbound's AD on NXDOMAIN, and ldns-verify-zone checking the whole NSEC3 chain of the dump."""
    work, _ = signed_workdir(tmp_path)
    zone_file = work / "zones" / "example.com.yaml"
    zone_file.write_text(zone_file.read_text().rstrip("\n") + "\n" + EXTRA)  # wildcard, ENT, cuts
    config = work / "smartdns.yaml"
    config.write_text(config.read_text().replace("dnssec: {keys: keys}", "dnssec: {keys: keys, nsec3: [example.com]}"))
    delv = f"delv -a anchors.conf +root=example.com -p {PORT} @127.0.0.1"
    output = run_in_netns(work, f"""\
        echo "=== delv nxdomain"; {delv} nosuchname.example.com A 2>&1
        echo "=== delv deep nxdomain"; {delv} x.y.b.ent.example.com A 2>&1
        echo "=== delv nodata"; {delv} ns1.example.com TXT 2>&1
        echo "=== delv ent"; {delv} b.ent.example.com A 2>&1
        echo "=== delv wildcard"; {delv} anything.wild.example.com A 2>&1
        echo "=== delv wildcard nodata"; {delv} anything.wild.example.com AAAA 2>&1
        echo "=== delv no ds"; {delv} sub.example.com DS 2>&1
        echo "=== delv nsec3param"; {delv} example.com NSEC3PARAM 2>&1
        {DUMP_THEN_UNBOUND}
        echo "=== unbound"; {sys.executable} client.py ad 2>&1
        kill $RESOLVER; wait $RESOLVER 2>/dev/null
        """)
    print(output)  # the evidence, with -s
    found = sections(output)
    for name in ("nxdomain", "deep nxdomain", "nodata", "ent", "wildcard nodata", "no ds"):
        assert "; negative response, fully validated" in found[f"delv {name}"], output
    assert "; fully validated" in found["delv wildcard"] and "192.0.2.80" in found["delv wildcard"], output
    assert "; fully validated" in found["delv nsec3param"] and "1 0 0 -" in found["delv nsec3param"], output
    assert "Zone is verified and complete" in found["dump"], output
    assert int(found["dump"].split()[2]) >= 10, output  # one per name, empty non-terminal and cut
    assert found["unbound"].split("\n")[:3] == ["mx.example.com A NOERROR AD", "example.com MX NOERROR AD",
                                                 "nosuchname.example.com A NXDOMAIN AD"], output
