"""Bad zone data (issue 6, item 6): every mistake gives one clear line naming file, line, record and reason.

Each case below is a zone file `zones/example.com.yaml` checked with
`python -m smartdns check --zones zones` (run in its own directory; the runs go
side by side, a few at a time). Each must exit 1 and print the line
`zones/example.com.yaml:LINE: RECORD: REASON`, where REASON contains the case's
distinctive text. The size limit is tested in-process with a small limit
monkeypatched in (rather than writing 64 MiB). At the end a running server is
handed several kinds of bad edits and keeps serving its last good data.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import dns.rcode
import pytest

from conftest import REPO

NS = "'':\n  - type: NS\n    values: [ns1.example.com.]\n"  # lines 1-3: every case starts with a valid apex
FILE = "zones/example.com.yaml"
LONG_NAME = ".".join(["a" * 63] * 4)  # 255 characters; 268 with the zone


def dynamic(pool_value: str = "", rules: str = "      - pool: one\n", extra: str = "") -> str:
    """A dynamic A at `mx` (line 4); the pool value's first key is on line 9."""
    return NS + textwrap.dedent("""\
        mx:
          dynamic:
            pools:
              one:
                values:
                  - value: 192.0.2.1
        """) + pool_value + "    rules:\n" + rules + extra + "  type: A\n  values: [192.0.2.1]\n"


def a_record(extra: str = "", value: str = "192.0.2.1", rtype: str = "A") -> str:
    """`www` (line 4) with its type on line 5 and value on line 6, then `extra`."""
    return NS + f"www:\n  type: {rtype}\n  value: {value}\n" + extra


@dataclass(frozen=True)
class Case:
    id: str
    text: str | bytes
    line: int
    record: str  # "NAME TYPE", "NAME", or "" for the file itself
    reason: str  # a distinctive part of the reason (parts separated by " … " must all be in it)

    @property
    def expected(self) -> str:
        return f"{FILE}:{self.line}: {self.record}: " if self.record else f"{FILE}:{self.line}: "


CASES = [
    # names
    Case("name-over-255-octets", NS + f"{LONG_NAME}:\n  type: A\n  value: 192.0.2.1\n", 5, f"{LONG_NAME} A",
         "is too long at 268 chars, max is 253"),
    Case("label-over-63", NS + f"{'a' * 64}:\n  type: A\n  value: 192.0.2.1\n", 5, f"{'a' * 64} A",
         "is too long at 64 chars, max is 63"),
    Case("out-of-zone-name", NS + "foo.other.org.:\n  type: A\n  value: 192.0.2.1\n", 4, "foo.other.org.",
         "foo.other.org. is outside the zone example.com."),
    Case("absolute-name-in-zone", NS + "www.example.com.:\n  type: A\n  value: 192.0.2.1\n", 4, "www.example.com.",
         "write 'www' for www.example.com."),
    Case("name-not-a-string", NS + "123:\n  type: A\n  value: 192.0.2.1\n", 4, "123", "record name must be a string"),
    Case("name-with-space", NS + "'w w':\n  type: A\n  value: 192.0.2.1\n", 5, "w w A", "whitespace is not allowed"),
    # CNAME
    Case("cname-loop", NS + "a:\n  type: CNAME\n  value: b.example.com.\nb:\n  type: CNAME\n  value: a.example.com.\n",
         5, "a CNAME", "Loop detected: … (also line 8), via: no-cname-loop"),
    Case("cname-to-itself", NS + "a:\n  type: CNAME\n  value: a.example.com.\n", 5, "a CNAME",
         "Loop detected: a.example.com. -> a.example.com."),
    Case("cname-at-apex", NS + "  - type: CNAME\n    value: www.example.org.\n", 4, "@ CNAME", "root CNAME not allowed"),
    Case("cname-beside-a", NS + "www:\n  - type: CNAME\n    value: x.example.org.\n  - type: A\n    value: 192.0.2.1\n",
         5, "www CNAME", "CNAME at www.example.com. cannot coexist with other records (also line 7)"),
    Case("mx-target-is-cname", NS + "mail:\n  type: MX\n  value: {exchange: c.example.com., preference: 10}\n"
         "c:\n  type: CNAME\n  value: x.example.org.\n", 5, "mail MX", 'points to exchange "c.example.com." which is a CNAME'),
    # the file itself
    Case("empty-file", "", 1, "", "the zone is empty"),
    Case("comments-only", "# nothing yet\n", 1, "", "the zone is empty"),
    Case("non-utf8", (NS + "www:\n  type: TXT\n  value: caf\xe9\n").encode("latin-1"), 6, "www", "not UTF-8 (byte 0xe9)"),
    Case("yaml-syntax-error", NS + "www:\n  type: A\n   value: [192.0.2.1\n", 6, "www",
         "mapping values are not allowed in this context"),
    Case("yaml-tab-indent", NS + "www:\n\ttype: A\n", 5, "www", "found character that cannot start any token"),
    Case("yaml-python-tag", NS + "www: !!python/object:os.system {}\n", 4, "www", "could not determine a constructor"),
    Case("top-level-list", "- a\n- b\n", 1, "", "a zone file is a mapping of names to records"),
    Case("duplicate-name", NS + "www:\n  type: A\n  value: 192.0.2.1\nwww:\n  type: A\n  value: 192.0.2.2\n", 7, "www",
         "duplicate key 'www' (first at line 4)"),
    Case("duplicate-key-in-record", a_record("  value: 192.0.2.2\n"), 7, "www", "duplicate key 'value' (first at line 6)"),
    Case("duplicate-record", NS + "www:\n  - type: A\n    value: 192.0.2.1\n  - type: A\n    value: 192.0.2.2\n", 7, "www A",
         "duplicate record: www A is already defined at line 5"),
    Case("no-ns-at-apex", "www:\n  type: A\n  value: 192.0.2.1\n", 1, "@ NS", "the zone has no NS records at its apex"),
    # record shape and type
    Case("record-not-a-mapping", NS + "www: 192.0.2.1\n", 4, "www", "expected a record (a mapping) or a list of records"),
    Case("missing-type", NS + "www:\n  value: 192.0.2.1\n", 5, "www", "missing type"),
    Case("type-not-a-string", NS + "www:\n  type: [A]\n  value: 192.0.2.1\n", 5, "www",
         "type must be a string such as A or MX, got ['A']"),
    Case("unknown-type", a_record(rtype="FOO"), 5, "www FOO", 'Unknown record type: "FOO"'),
    Case("alias-type", NS + "www:\n  type: ALIAS\n  value: other.example.com.\n", 5, "www ALIAS",
         "ALIAS is an octoDNS provider-specific type that a DNS server cannot serve"),
    Case("unknown-record-key", a_record("  vaule: 192.0.2.2\n"), 7, "www A", "unknown key 'vaule'"),
    # TTL
    Case("ttl-string", a_record("  ttl: '60'\n"), 7, "www A", "ttl must be an integer from 0 to 2147483647, got '60'"),
    Case("ttl-float", a_record("  ttl: 60.5\n"), 7, "www A", "got 60.5"),
    Case("ttl-bool", a_record("  ttl: true\n"), 7, "www A", "got True"),
    Case("ttl-negative", a_record("  ttl: -1\n"), 7, "www A", "got -1"),
    Case("ttl-over-2^31", a_record("  ttl: 4294967296\n"), 7, "www A", "got 4294967296"),
    # values
    Case("bad-ipv4", a_record(value="192.0.2.256"), 6, "www A", 'invalid IPv4 address "192.0.2.256"'),
    Case("bad-ipv6", a_record(value="2001:db8::g", rtype="AAAA"), 6, "www AAAA", 'invalid IPv6 address "2001:db8::g"'),
    Case("ipv6-in-a", a_record(value="2001:db8::1"), 6, "www A", 'invalid IPv4 address "2001:db8::1"'),
    Case("txt-unescaped-semicolon", a_record(value="a;b", rtype="TXT"), 6, "www TXT", 'unescaped ; in "a;b"'),
    Case("value-dnspython-cannot-encode", NS + "www:\n  type: TLSA\n  value: {certificate_usage: 1, selector: 1, "
         "matching_type: 1, certificate_association_data: zz}\n", 6, "www TLSA",
         "value '1 1 1 zz' cannot be encoded: Non-hexadecimal digit found"),
    Case("value-over-65535-bytes", a_record(value="a" * 70000, rtype="TXT"), 6, "www TXT",
         "value is 70275 bytes in wire format, more than the 65535 one record can hold"),
    Case("rrset-over-a-message", NS + "www:\n  type: TXT\n  values:\n" + "".join(f"    - {'a' * 250}{i}\n" for i in range(270)),
         6, "www TXT", "more than a DNS message can carry"),
    # dynamic
    Case("dynamic-on-mx", NS + "mail:\n  type: MX\n  dynamic:\n    pools: {}\n    rules: []\n"
         "  value: {exchange: mx.example.com., preference: 10}\n", 6, "mail MX",
         "dynamic is not supported on MX (only on A, AAAA, CNAME, DNAME)"),
    Case("dynamic-not-a-mapping", a_record("  dynamic: 5\n"), 7, "www A", "dynamic must be a mapping with pools and rules"),
    Case("rule-to-undefined-pool", dynamic(rules="      - pool: nowhere\n"), 11, "mx A", 'rule 1 undefined pool "nowhere"'),
    Case("fallback-loop", NS + textwrap.dedent("""\
        mx:
          dynamic:
            pools:
              one:
                fallback: two
                values:
                  - value: 192.0.2.1
              two:
                fallback: one
                values:
                  - value: 192.0.2.2
            rules:
              - pool: one
          type: A
          values: [192.0.2.1]
        """), 8, "mx A", "loop in pool fallbacks: one -> two"),
    Case("bad-geo-code", dynamic(rules="      - geos: [AS-XX]\n        pool: one\n      - pool: one\n"), 11, "mx A",
         'rule 1 unknown country code "AS-XX"'),
    Case("bad-subnet", dynamic(rules="      - subnets: [192.0.2.0/33]\n        pool: one\n      - pool: one\n"), 11, "mx A",
         'rule 1 invalid subnet "192.0.2.0/33"'),
    Case("pool-value-bad-ip", dynamic().replace("value: 192.0.2.1\n    rules", "value: 192.0.2.300\n    rules"), 9, "mx A",
         'invalid IPv4 address "192.0.2.300"'),
    Case("weight-0", dynamic("            weight: 0\n"), 10, "mx A", 'invalid weight "0" in pool "one" value 1'),
    Case("weight-101", dynamic("            weight: 101\n"), 10, "mx A", 'invalid weight "101" in pool "one" value 1'),
    Case("bad-status", dynamic("            status: maybe\n"), 10, "mx A", 'invalid status "maybe" in pool "one" value 1'),
    Case("rules-not-a-list", dynamic(rules="      5\n").replace("    rules:\n      5\n", "    rules: 5\n"), 10, "mx A",
         "dynamic rules must be a list"),
    Case("unknown-dynamic-key", dynamic(extra="    rulez: []\n"), 12, "mx A", "unknown dynamic key 'rulez'"),
    Case("unknown-pool-key", dynamic().replace("      one:\n", "      one:\n        fallbak: two\n"), 8, "mx A",
         "unknown pool key 'fallbak'"),
    Case("unknown-pool-value-key", dynamic("            wieght: 2\n"), 10, "mx A", "unknown pool value key 'wieght'"),
    Case("unknown-rule-key", dynamic(rules="      - pool: one\n        geo: [AS]\n"), 12, "mx A", "unknown rule key 'geo'"),
    # octodns settings
    Case("octodns-not-a-mapping", a_record("  octodns: 5\n"), 7, "www A", "octodns must be a mapping"),
    Case("healthcheck-protocol", a_record("  octodns:\n    healthcheck:\n      protocol: ICMP\n"), 9, "www A",
         "healthcheck protocol must be one of HTTP, HTTPS, SMTP, TCP, got 'ICMP'"),
    Case("smartdns-healthcheck-protocol",
         a_record("  octodns:\n    smartdns:\n      healthcheck:\n        protocol: ICMP\n"), 10, "www A",
         "healthcheck protocol must be one of HTTP, HTTPS, SMTP, TCP, got 'ICMP'"),
    Case("healthcheck-port", a_record("  octodns:\n    healthcheck:\n      port: 70000\n"), 9, "www A",
         "healthcheck port must be an integer from 1 to 65535, got 70000"),
    Case("healthcheck-not-a-mapping", a_record("  octodns:\n    healthcheck: 5\n"), 8, "www A",
         "octodns.healthcheck must be a mapping"),
    Case("unknown-healthcheck-key", a_record("  octodns:\n    healthcheck:\n      prot: TCP\n"), 9, "www A",
         "unknown healthcheck key 'prot'"),
    Case("unknown-smartdns-key", a_record("  octodns:\n    smartdns:\n      max_answer: 2\n"), 9, "www A",
         "unknown octodns.smartdns key 'max_answer'"),
    Case("max-answers-0", a_record("  octodns:\n    smartdns:\n      max_answers: 0\n"), 9, "www A",
         "max_answers must be a positive integer, got 0"),
    # targets without a trailing dot would be served as target.example.com. (mail silently goes nowhere)
    Case("mx-no-dot", NS + "mail:\n  type: MX\n  value:\n    exchange: mx.example.com\n    preference: 10\n", 7,
         "mail MX", "MX exchange 'mx.example.com' missing trailing dot: write mx.example.com."),
    Case("mx-values-no-dot", NS + "mail:\n  type: MX\n  values:\n    - exchange: mx1.example.com.\n      preference: 10\n"
         "    - exchange: mx2.example.com\n      preference: 20\n", 9, "mail MX",
         "MX exchange 'mx2.example.com' missing trailing dot"),
    Case("srv-no-dot", NS + "_smtp._tcp:\n  type: SRV\n  value:\n    port: 25\n    priority: 1\n"
         "    target: mx.example.com\n    weight: 1\n", 9, "_smtp._tcp SRV", "SRV target 'mx.example.com' missing trailing dot"),
    Case("ns-no-dot", a_record(value="ns.other.example", rtype="NS"), 6, "www NS",
         "NS value 'ns.other.example' missing trailing dot: write ns.other.example."),
    Case("apex-ns-no-dot", "'':\n  - type: NS\n    values: [ns1.example.com., ns2.example.com]\n", 3, "@ NS",
         "NS value 'ns2.example.com' missing trailing dot"),
    Case("cname-no-dot", a_record(value="www2.example.com", rtype="CNAME"), 6, "www CNAME",
         "CNAME value 'www2.example.com' missing trailing dot"),
    Case("dname-no-dot", a_record(value="other.example", rtype="DNAME"), 6, "www DNAME",
         "DNAME value 'other.example' missing trailing dot"),
    Case("ptr-no-dot", a_record(value="host.example.net", rtype="PTR"), 6, "www PTR",
         "PTR value 'host.example.net' missing trailing dot"),
    Case("dynamic-cname-no-dot", NS + "cn:\n  dynamic:\n    pools:\n      one:\n        values:\n"
         "          - value: a.example.net\n    rules:\n      - pool: one\n  type: CNAME\n  value: b.example.net.\n",
         9, "cn CNAME", "CNAME value 'a.example.net' missing trailing dot"),
]


def write_zone(directory: Path, text: str | bytes) -> Path:
    zones = directory / "zones"
    zones.mkdir(parents=True, exist_ok=True)
    path = zones / "example.com.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def check(directory: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "smartdns", "check", "--zones", "zones"], cwd=directory,
                          capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def checked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Future]]:
    """Every case's `smartdns check`, run a few at a time (each in its own directory)."""
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        futures = {}
        for case in CASES:
            directory = tmp_path_factory.mktemp(case.id)
            write_zone(directory, case.text)
            futures[case.id] = pool.submit(check, directory)
        yield futures


def test_case_ids_are_unique():
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_zone_is_one_clear_line(checked, case):
    result = checked[case.id].result(timeout=120)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "Traceback" not in output, output
    lines = [line for line in result.stdout.splitlines() if line.startswith(case.expected)]
    assert any(all(part in line for part in case.reason.split(" … ")) for line in lines), \
        f"expected {case.expected!r}...{case.reason!r} in:\n{output}"


def test_file_over_the_size_limit_is_refused_unread(tmp_path, monkeypatch, capsys):
    from smartdns import cli, zonefile

    assert zonefile.MAX_ZONE_BYTES == 64 * 1024 * 1024  # the default
    text = NS + "".join(f"host{i}:\n  type: A\n  value: 192.0.2.{i % 250 + 1}\n" for i in range(200))
    write_zone(tmp_path, text)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(zonefile, "MAX_ZONE_BYTES", len(text))
    assert cli.main(["check", "--zones", "zones"]) == 0  # exactly at the limit: loaded
    assert capsys.readouterr().out.startswith("ok: 1 zone(s), 201 record(s)")
    monkeypatch.setattr(zonefile, "MAX_ZONE_BYTES", len(text) - 1)
    assert cli.main(["check", "--zones", "zones"]) == 1
    out = capsys.readouterr().out
    assert out.splitlines()[0] == f"{FILE}:1: file is {len(text)} bytes, over the limit of {len(text) - 1} bytes: not loaded"


# --------------------------------------------------------------------------- live: the last good data stays


GOOD = """\
'':
  - type: NS
    values: [ns1.example.com.]
mx:
  type: A
  value: {address}
ns1:
  type: A
  value: 192.0.2.53
"""

BAD_EDITS = [  # (what, file bytes, the log line's pattern after "zone error: ")
    ("cname-loop", GOOD.format(address="192.0.2.9") + "a:\n  type: CNAME\n  value: a.example.com.\n",
     r"example\.com\.yaml:11: a CNAME: Loop detected"),
    ("rules-not-a-list", GOOD.format(address="192.0.2.9").replace(
        "mx:\n  type: A\n", "mx:\n  type: A\n  dynamic:\n    pools: {}\n    rules: 5\n"),
     r"example\.com\.yaml:8: mx A: dynamic rules"),
    ("non-utf8", (GOOD.format(address="192.0.2.9") + "t:\n  type: TXT\n  value: caf\xe9\n").encode("latin-1"),
     r"example\.com\.yaml:12: t: not UTF-8"),
    ("out-of-zone", GOOD.format(address="192.0.2.9") + "foo.other.org.:\n  type: A\n  value: 192.0.2.1\n",
     r"example\.com\.yaml:10: foo\.other\.org\.: .* is outside the zone"),
    ("empty", "", r"example\.com\.yaml:1: the zone is empty"),
    ("healthcheck-protocol", GOOD.format(address="192.0.2.9").replace(
        "  value: 192.0.2.9\n", "  value: 192.0.2.9\n  octodns:\n    healthcheck:\n      protocol: ICMP\n"),
     r"example\.com\.yaml:9: mx A: healthcheck protocol"),
]


def replace_zone(path: Path, data: str | bytes) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(data if isinstance(data, bytes) else data.encode())
    tmp.replace(path)  # as a deploy should: write aside, rename over


def test_running_server_keeps_last_good_data_through_bad_edits(smartdns):
    server = smartdns(zones={"example.com": GOOD.format(address="192.0.2.1")})
    path = server.zones_dir / "example.com.yaml"
    address = lambda: server.query("mx.example.com", "A").answer[0][0].address  # noqa: E731
    assert address() == "192.0.2.1"
    for what, data, pattern in BAD_EDITS:
        kept = server.log.count("serving its last good version")
        replace_zone(path, data)
        server.signal(signal.SIGHUP)  # at once, rather than at the watcher's next look
        server.wait_for_log(r"zone error: .*" + pattern)
        deadline = time.monotonic() + 10
        while server.log.count("serving its last good version") <= kept and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.log.count("serving its last good version") > kept, what
        for tcp in (False, True):
            response = server.query("mx.example.com", "A", tcp=tcp)
            assert response.rcode() == dns.rcode.NOERROR and response.answer[0][0].address == "192.0.2.1", what
    replace_zone(path, GOOD.format(address="192.0.2.2"))  # a good edit still goes live after all that
    deadline = time.monotonic() + 10
    while address() != "192.0.2.2" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert address() == "192.0.2.2"
    assert "Traceback" not in server.log and "reload failed" not in server.log, server.log


@pytest.mark.slow
def test_shipped_zones_still_pass():
    result = subprocess.run([sys.executable, "-m", "smartdns", "check", "--zones", "zones"], cwd=REPO,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_serve_rejects_a_target_without_trailing_dot(smartdns):
    """The same zone `check` rejects is not served: no `mx.example.com.example.com.` exchange ever goes out."""
    server = smartdns(zones={"example.com": NS + "  - type: MX\n    value:\n      exchange: mx.example.com\n"
                                            "      preference: 10\n"})
    line = server.wait_for_log(r"zone error: .*example\.com\.yaml:6: @ MX: MX exchange 'mx\.example\.com' "
                               r"missing trailing dot")
    assert "ERROR" in line
    assert server.query("example.com", "MX").rcode() == dns.rcode.REFUSED  # not served at all


def test_readme_sample_check_output_is_what_check_prints(tmp_path):
    """The README promises an exact `check` session: the example zone with `pool: nowhere` in its first rule."""
    readme = (REPO / "README.md").read_text()
    sample = readme.split("$ smartdns check --zones zones/\n", 1)[1].split("```", 1)[0].splitlines()
    zone = (REPO / "zones" / "example.com.yaml").read_text().replace("pool: domestic", "pool: nowhere", 1)
    write_zone(tmp_path, zone)
    result = subprocess.run([sys.executable, "-m", "smartdns", "check", "--zones", "zones/"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 1
    assert (result.stdout + result.stderr).splitlines() == sample, result.stdout + result.stderr

