"""Operations: privileges after binding port 53, node identity (NSID, CHAOS), log formats."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import tempfile
from pathlib import Path

import dns.edns
import dns.message
import dns.query
import dns.rcode
import dns.rdataclass
import pytest

from conftest import SmartDNS, children

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="binding port 53 and dropping privileges need root")


def uid_of(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("Uid:"):
                return int(line.split()[2])  # effective uid
    raise AssertionError("no Uid line")


@pytest.mark.slow
@needs_root
@pytest.mark.parametrize("workers", ["1", "2"])
def test_binds_port_53_as_root_then_runs_as_the_user(workers):
    nobody = pwd.getpwnam("nobody")
    workdir = Path(tempfile.mkdtemp(prefix="smartdns-user-"))  # pytest's tmp_path is root's alone
    server = SmartDNS(workdir, copy_example=True, args=("--user", "nobody", "--workers", workers))
    for path in (workdir, *workdir.rglob("*")):
        path.chmod(0o755 if path.is_dir() else 0o644)
    server.start(listen="127.0.0.1:53")
    try:
        assert server.port == 53
        response = dns.query.udp(dns.message.make_query("mx.example.com", "A"), "127.0.0.1", port=53, timeout=3)
        assert response.answer
        response = dns.query.tcp(dns.message.make_query("mx.example.com", "A"), "127.0.0.1", port=53, timeout=3)
        assert response.answer
        pids = [server.proc.pid, *children(server.proc.pid)]
        assert len(pids) == (2 if workers == "1" else 4)  # and a zone loader: with the server, or the supervisor
        assert {uid_of(pid) for pid in pids} == {nobody.pw_uid}
        server.wait_for_log(r"running as user nobody")
    finally:
        server.stop()
        shutil.rmtree(workdir)


@needs_root
def test_running_as_root_without_user_warns(smartdns):
    server = smartdns(copy_example=True)
    server.wait_for_log(r"running as root: give --user")


def test_nsid_and_chaos_identify_the_node(smartdns):
    server = smartdns(copy_example=True, config={"server_id": "ns1-shanghai"})
    response = server.query("mx.example.com", "A", use_edns=0, options=[dns.edns.GenericOption(dns.edns.NSID, b"")])
    (nsid,) = [o for o in response.options if o.otype == dns.edns.NSID]
    assert nsid.nsid == b"ns1-shanghai"
    for name in ("id.server", "hostname.bind"):
        for tcp in (False, True):
            chaos = server.query(name, "TXT", rdclass=dns.rdataclass.CH, tcp=tcp)
            assert chaos.rcode() == dns.rcode.NOERROR
            assert chaos.answer[0][0].strings == (b"ns1-shanghai",)
    assert server.query("version.bind", "TXT", rdclass=dns.rdataclass.CH).rcode() == dns.rcode.REFUSED


def test_node_identity_is_off_by_default(smartdns):
    server = smartdns(copy_example=True)
    response = server.query("mx.example.com", "A", use_edns=0, options=[dns.edns.GenericOption(dns.edns.NSID, b"")])
    assert not [o for o in response.options if o.otype == dns.edns.NSID]
    assert server.query("id.server", "TXT", rdclass=dns.rdataclass.CH).rcode() == dns.rcode.REFUSED


def test_json_logs_and_sampled_query_log(smartdns):
    server = smartdns(copy_example=True, config={"query_log": {"sample": 1.0}}, args=("--log-format", "json"))
    server.query("mx.example.com", "A", source="127.0.0.3", use_edns=0,
                 options=[dns.edns.ECSOption("8.8.8.0", 24)])
    line = server.wait_for_log(r'"message": "query"')
    entries = [json.loads(text) for text in server.log_lines]  # one JSON object per line, every line
    assert all({"time", "level", "message"} <= set(e) for e in entries)
    logged = json.loads(line)  # the fields at the top level, not JSON inside a string
    assert logged["client"] == "127.0.0.3" and logged["ecs"] == "8.8.8.0/24"
    assert logged["qname"] == "mx.example.com." and logged["qtype"] == "A" and logged["rcode"] == "NOERROR"
    assert logged["pools"] == ["mx:overseas"]
