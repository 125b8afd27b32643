"""EDNS Client Subnet (RFC 7871): classification by the client's subnet, SCOPE, malformed options."""

from __future__ import annotations

import struct

import dns.edns
import dns.rcode
import pytest

from conftest import REPO, build_mmdb

CN_PREFIX, US_PREFIX = "1.0.1.0", "8.8.8.0"  # CN and US in the embedded RIR data
DOMESTIC_A, OVERSEAS_A = {"192.0.2.10"}, {"198.51.100.10", "198.51.100.11"}


def ecs_of(response):
    found = [o for o in response.options if o.otype == dns.edns.ECS]
    return found[0] if found else None


def addresses(response, section="answer"):
    return {r.address for rrset in getattr(response, section) for r in rrset if hasattr(r, "address")}


def ask(server, name="mx.example.com", rdtype="A", options=(), tcp=False, source="127.0.0.1"):
    return server.query(name, rdtype, use_edns=0, options=list(options), tcp=tcp, source=source)


@pytest.fixture
def server(smartdns):
    return smartdns(copy_example=True)


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_ecs_replaces_the_resolver_address(server, tcp):
    cn = ask(server, options=[dns.edns.ECSOption(CN_PREFIX, 24)], tcp=tcp)
    assert addresses(cn) == DOMESTIC_A
    assert ecs_of(cn).address == CN_PREFIX and ecs_of(cn).srclen == 24
    assert ecs_of(cn).scopelen == 24  # embedded data gives no block: the query's source prefix
    us = ask(server, options=[dns.edns.ECSOption(US_PREFIX, 24)], tcp=tcp)
    assert addresses(us) <= OVERSEAS_A and ecs_of(us).scopelen == 24


def test_mx_with_geo_additional_carries_a_scope(server):
    response = ask(server, "example.com", "MX", [dns.edns.ECSOption(CN_PREFIX, 24)])
    assert addresses(response, "additional") >= DOMESTIC_A
    assert ecs_of(response).scopelen == 24


def test_answer_independent_of_client_has_scope_zero(server):
    response = ask(server, "ns1.example.com", "A", [dns.edns.ECSOption(CN_PREFIX, 24)])
    assert ecs_of(response).scopelen == 0
    nx = ask(server, "nothing.example.com", "A", [dns.edns.ECSOption(CN_PREFIX, 24)])
    assert nx.rcode() == dns.rcode.NXDOMAIN and ecs_of(nx).scopelen == 0


@pytest.mark.parametrize("prefix,srclen", [("0.0.0.0", 0), ("10.1.2.0", 24), ("192.168.0.0", 16), ("fe80::", 64),
                                           ("100.64.1.0", 24), ("127.0.0.0", 8)])
def test_unusable_ecs_falls_back_to_resolver_and_scopes_the_answer_to_the_source_prefix(smartdns, geo_mmdb, prefix,
                                                                                         srclen):
    """The resolver decided, so the answer holds for this client subnet only: SCOPE = SOURCE PREFIX (never a
    false 0, which a caching resolver would serve to all its clients); 0 only where the source prefix is 0."""
    server = smartdns(copy_example=True, config={"geodb": [str(geo_mmdb)]})
    # The resolver 127.0.0.2 is CN in the test database: its address decides.
    for tcp in (False, True):
        response = ask(server, options=[dns.edns.ECSOption(prefix, srclen)], source="127.0.0.2", tcp=tcp)
        assert addresses(response) == DOMESTIC_A
        assert ecs_of(response).scopelen == srclen and ecs_of(response).srclen == srclen
        mx = ask(server, "example.com", "MX", [dns.edns.ECSOption(prefix, srclen)], source="127.0.0.2", tcp=tcp)
        assert addresses(mx, "additional") >= DOMESTIC_A and ecs_of(mx).scopelen == srclen
    # an answer that depends on nobody stays SCOPE 0
    static = ask(server, "ns1.example.com", "A", [dns.edns.ECSOption(prefix, srclen)], source="127.0.0.2")
    assert ecs_of(static).scopelen == 0


@pytest.mark.slow
def test_a_caching_resolver_keeps_cgnat_and_domestic_clients_apart(tmp_path):
    """Real Unbound with its ECS cache (subnetcache) in front of smartdns, in a namespace with only loopback.

    A carrier-grade-NAT client (100.64.1.0/24, unusable: the resolver's address decides, here the catch-all)
    asks first; a Chinese client (1.0.1.0/24) through the same resolver must still get the domestic answer,
    not the first answer from the resolver's cache."""
    import os
    import shutil
    import subprocess
    import sys

    if os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("ip") is None:
        pytest.skip("needs root, unshare and ip for a network namespace with only loopback")
    if shutil.which("unbound") is None:
        pytest.skip("unbound not installed (Debian package unbound)")
    if subprocess.run(["unshare", "-n", "true"], capture_output=True, check=False).returncode != 0:
        pytest.skip("this system does not allow network namespaces")
    result = subprocess.run(["unshare", "-n", sys.executable, str(REPO / "tests" / "ecs_resolver_scenario.py"),
                             str(tmp_path), "100.64.1.0/24", "1.0.1.0/24", "8.8.8.0/24"],
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    import json

    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen["direct_scopes"] == {"100.64.1.0/24": [24], "1.0.1.0/24": [24], "8.8.8.0/24": [24]}
    cgnat, china, usa = seen["through_unbound"]
    assert set(cgnat["answer"]) <= OVERSEAS_A and cgnat["answer"]  # the resolver (unknown) took the catch-all
    assert set(china["answer"]) == DOMESTIC_A, seen
    assert set(usa["answer"]) <= OVERSEAS_A and usa["answer"]


def test_scope_is_the_database_block(smartdns, tmp_path):
    mmdb = build_mmdb(tmp_path, "1.0.0.0/16,CN,AS\n8.8.0.0/20,US,NA\n", "scope.mmdb")
    server = smartdns(copy_example=True, config={"geodb": [str(mmdb)]})
    response = ask(server, options=[dns.edns.ECSOption("1.0.1.0", 24)])
    assert addresses(response) == DOMESTIC_A and ecs_of(response).scopelen == 16
    response = ask(server, options=[dns.edns.ECSOption("8.8.8.0", 24)])
    assert ecs_of(response).scopelen == 20


def test_scope_narrows_so_no_rule_subnet_is_cut(smartdns):
    zone = (REPO / "zones" / "example.com.yaml").read_text().replace("203.0.113.0/24", "8.8.8.128/25")
    server = smartdns(zones={"example.com": zone})
    outside = ask(server, options=[dns.edns.ECSOption("8.8.8.0", 24)])
    assert addresses(outside) <= OVERSEAS_A
    assert ecs_of(outside).scopelen == 25  # the /24 would cover the domestic /25
    inside = ask(server, options=[dns.edns.ECSOption("8.8.8.128", 25)])
    assert addresses(inside) == DOMESTIC_A and ecs_of(inside).scopelen == 25


def test_ecs_off_ignores_the_option(smartdns, geo_mmdb):
    server = smartdns(copy_example=True, config={"ecs": False, "geodb": [str(geo_mmdb)]})
    response = ask(server, options=[dns.edns.ECSOption(CN_PREFIX, 24)], source="127.0.0.3")
    assert addresses(response) <= OVERSEAS_A  # the resolver (US) decides
    assert ecs_of(response) is None


def raw_ecs(family: int, source: int, scope: int, address: bytes) -> dns.edns.GenericOption:
    return dns.edns.GenericOption(dns.edns.ECS, struct.pack("!HBB", family, source, scope) + address)


@pytest.mark.parametrize("option", [
    raw_ecs(3, 24, 0, b"\x01\x00\x01"),            # unknown family
    raw_ecs(1, 33, 0, b"\x01\x00\x01\x00\x00"),    # prefix longer than IPv4
    raw_ecs(2, 129, 0, b"\x20" + b"\x00" * 16),     # prefix longer than IPv6
    raw_ecs(1, 24, 0, b"\x01\x00\x01\x00"),        # address longer than the prefix needs
    raw_ecs(1, 23, 0, b"\x01\x00\x01"),            # bits set beyond the prefix
    raw_ecs(1, 24, 0, b"\x01\x00"),                # address too short
    dns.edns.GenericOption(dns.edns.ECS, b"\x00"),  # not even a header
], ids=["family", "v4-prefix", "v6-prefix", "long-address", "stray-bits", "short-address", "no-header"])
@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_malformed_ecs_is_formerr(server, option, tcp):
    response = ask(server, options=[option], tcp=tcp)
    assert response.rcode() == dns.rcode.FORMERR
    assert ask(server, options=[dns.edns.ECSOption(CN_PREFIX, 24)]).rcode() == dns.rcode.NOERROR


def test_ipv6_ecs(server):
    response = ask(server, "mx.example.com", "AAAA", [dns.edns.ECSOption("2400:da00::", 32)])
    assert {r.address for r in response.answer[0]} == {"2001:db8:c::10"}
    assert ecs_of(response).scopelen == 32


@pytest.mark.parametrize("prefix,resolver", [("1.0.1.0/24", "8.8.8.8"), ("8.8.8.0/24", "114.114.114.114"),
                                             ("10.1.0.0/16", "8.8.8.8"), ("0.0.0.0/0", "114.114.114.114")])
def test_explain_shows_what_the_server_answers(server, prefix, resolver):
    import ipaddress
    import subprocess
    import sys

    network = ipaddress.ip_network(prefix)
    response = ask(server, options=[dns.edns.ECSOption(str(network.network_address), network.prefixlen)])
    explained = subprocess.run([sys.executable, "-m", "smartdns", "explain", resolver, "mx.example.com", "A",
                                "--ecs", prefix, "--zones", str(REPO / "zones")], capture_output=True, text=True)
    assert f"ecs scope: /{ecs_of(response).scopelen}" in explained.stdout, explained.stdout
    # the server's source is 127.0.0.1 (unknown: catch-all) where explain's resolver is real; compare
    # only when the ECS subnet decides
    if ecs_of(response).scopelen:
        assert addresses(response) <= set(explained.stdout.split("answer: ")[1].split())
