"""The command line as a new user meets it: every bad argument is one clear line and exit 2, never a
traceback; `--help` tells the exit codes; `check` refuses what `serve` refuses, before binding."""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import dns.rcode
import pytest

from conftest import REPO, SmartDNS, build_mmdb, wait_for


def run_cli(*args: str, cwd: Path = REPO, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "smartdns", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL, check=False)


# (arguments, what the one error line must say)
BAD_ARGUMENTS = [
    ((), "the following arguments are required: COMMAND"),
    (("bogus",), "argument COMMAND: invalid choice: 'bogus'"),
    (("serve", "--listen", "127.0.0.1"), "argument --listen: listen address '127.0.0.1' is not HOST:PORT"),
    (("serve", "--listen", "localhost:5353"), "argument --listen: listen host 'localhost' is not an IP address"),
    (("serve", "--listen", "[::1]:99999"), "argument --listen: listen port '99999' is not 0-65535"),
    (("serve", "--log-level", "bogus"), "argument --log-level: invalid choice: 'bogus' (choose from 'debug', 'info'"),
    (("serve", "--log-format", "xml"), "argument --log-format: invalid choice: 'xml'"),
    (("serve", "--workers", "-1"), "argument --workers: '-1' is not a whole number >= 0"),
    (("serve", "--workers", "two"), "argument --workers: 'two' is not a whole number >= 0"),
    (("serve", "--frobnicate"), "unrecognized arguments: --frobnicate"),
    (("serve", "--config", "/nonexistent/smartdns.yaml"), "/nonexistent/smartdns.yaml: cannot read"),
    (("serve", "--listen", "127.0.0.1:0", "--zones", "/nonexistent/zones"), "zones directory /nonexistent/zones does not exist"),
    (("serve", "--listen", "127.0.0.1:0", "--geodb", "/nonexistent/x.mmdb"), "geodb /nonexistent/x.mmdb: cannot open"),
    (("serve", "--listen", "127.0.0.1:0", "--user", "no-such-user-here"), "user 'no-such-user-here': no such user"),
    (("check", "--zones", "/nonexistent/zones"), "zones directory /nonexistent/zones does not exist"),
    (("check", "--config", "/nonexistent/smartdns.yaml"), "/nonexistent/smartdns.yaml: cannot read"),
    (("check", "extra"), "unrecognized arguments: extra"),
    (("explain",), "the following arguments are required: ADDRESS [NAME [TYPE]]"),
    (("explain", "nothing"), "argument ADDRESS: 'nothing' is not an IPv4 or IPv6 address"),
    (("explain", "1.2.3.4", "example.com", "BOGUS"), "argument TYPE: 'BOGUS' is not a record type"),
    (("explain", "1.2.3.4", "bad..name"), "argument NAME: 'bad..name' is not a domain name"),
    (("explain", "1.2.3.4", "a" * 64 + ".com"), "argument NAME: '" + "a" * 64 + ".com' is not a domain name"),
    (("explain", "1.2.3.4", "--ecs", "foo"), "argument --ecs: 'foo' is not a subnet"),
    (("explain", "1.2.3.4", "a.example", "A", "extra"), "too many arguments 'extra'"),
    (("explain", "1.2.3.4", "--geodb", "/nonexistent/x.mmdb"), "geodb /nonexistent/x.mmdb: cannot open"),
    (("geodb",), "the following arguments are required: TOOL"),
    (("geodb", "build", "in.csv"), "the following arguments are required: -o/--output"),
    (("geodb", "build", "/nonexistent/in.csv", "-o", "/nonexistent/out.mmdb"),
     "argument INPUT.csv: /nonexistent/in.csv: no such file"),
]


@pytest.mark.slow
def test_every_subcommand_answers_bad_arguments_with_one_line_and_exit_2(tmp_path):
    """A table of bad arguments over every subcommand: no traceback, one line naming the argument, exit 2."""
    (tmp_path / "zones").mkdir()  # so that each case fails on its own argument alone
    (tmp_path / "zones" / "example.com.yaml").write_text((REPO / "zones" / "example.com.yaml").read_text())
    def run(case):
        return case, run_cli(*case[0], cwd=tmp_path, timeout=30)

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(run, BAD_ARGUMENTS))
    failures = []
    for (args, expected), result in results:
        lines = result.stderr.strip().splitlines()
        if (result.returncode != 2 or "Traceback" in result.stderr or len(lines) != 1 or expected not in lines[0]
                or result.stdout.strip()):
            failures.append(f"smartdns {' '.join(args)}: exit {result.returncode}\n{result.stdout}{result.stderr}")
    assert not failures, "\n\n".join(failures)


@pytest.mark.slow
def test_help_lists_exit_codes_levels_and_describes_every_positional():
    top = run_cli("--help").stdout
    for command in ("serve", "check", "explain", "geodb build"):
        text = run_cli(*command.split(), "--help").stdout
        assert "exit codes:" in text and "0  ok" in text, text
        assert "1  problems found" in text and "2  usage or config error" in text, text
    assert "exit codes:" in top
    serve = run_cli("serve", "--help").stdout
    assert "--log-level {debug,info,warning,error}" in serve
    explain = " ".join(run_cli("explain", "--help").stdout.split())
    assert "ADDRESS: the resolver's IP address" in explain and "TYPE: a record type" in explain
    build = " ".join(run_cli("geodb", "build", "--help").stdout.split())
    assert "INPUT.csv" in build and "rows network,country[,continent]" in build
    readme = (REPO / "README.md").read_text()
    readme = " ".join(readme.split())
    assert "exits 0 when all is well, 1 when it found problems" in readme and "2 on a usage or config error" in readme


@pytest.fixture
def workdir(tmp_path):
    (tmp_path / "zones").mkdir()
    (tmp_path / "zones" / "example.com.yaml").write_text((REPO / "zones" / "example.com.yaml").read_text())
    return tmp_path


@pytest.mark.slow
def test_check_refuses_what_serve_refuses_before_binding(workdir):
    """Unusable geodb files, a missing user, SOA settings for no zone: `check` exits 2 and `serve` never starts."""
    (workdir / "junk.mmdb").write_text("not a database\n")
    build_mmdb(workdir, name="good.mmdb")
    config = workdir / "smartdns.yaml"
    config.write_text("zones: zones\nmetrics: false\ngeodb: [good.mmdb, junk.mmdb, missing.mmdb]\n"
                      "user: no-such-user-here\nsoa:\n  zones:\n    example.com: {serial: 7}\n"
                      "    example.org: {serial: 9}\n")
    check = run_cli("check", "--config", str(config))
    assert check.returncode == 2, check.stdout + check.stderr
    assert "Traceback" not in check.stderr
    for fragment in (f"{config}: geodb {workdir}/junk.mmdb: not a valid MaxMind DB",
                     f"{config}: geodb {workdir}/missing.mmdb: cannot open",
                     f"{config}: user 'no-such-user-here': no such user",
                     f"{config}: soa zones example.org. (serial 9 pinned): no such zone is served"):
        assert fragment in check.stderr, check.stderr
    assert "good.mmdb" not in check.stderr and "example.com." not in check.stderr
    serve = run_cli("serve", "--config", str(config), "--listen", "127.0.0.1:0", timeout=30)
    assert serve.returncode == 2, serve.stderr
    assert "listening on" not in serve.stderr and "Traceback" not in serve.stderr
    for fragment in ("junk.mmdb: not a valid MaxMind DB", "missing.mmdb: cannot open", "no-such-user-here",
                     "example.org."):
        assert fragment in serve.stderr, serve.stderr
    # fixed, check says ok and serve starts
    config.write_text("zones: zones\nmetrics: false\ngeodb: [good.mmdb]\nsoa:\n  zones:\n    example.com: {serial: 7}\n")
    check = run_cli("check", "--config", str(config))
    assert check.returncode == 0 and check.stdout.startswith("ok: 1 zone(s)"), check.stdout + check.stderr


@pytest.mark.slow
def test_no_zones_warns_and_a_missing_directory_is_an_error(workdir, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "example.com.yml").write_text("---\n")
    check = run_cli("check", "--zones", str(empty))
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"warning: no zone files (*.yaml) in {empty}: nothing will be answered" in check.stdout
    assert "example.com.yml: zone files must end in .yaml" in check.stdout
    assert "0 zone(s)" in check.stdout and "1 warning(s)" in check.stdout
    missing = run_cli("check", "--zones", str(tmp_path / "nowhere"))
    assert missing.returncode == 2 and f"zones directory {tmp_path / 'nowhere'} does not exist" in missing.stderr
    server = SmartDNS(workdir)
    server.zones_dir = empty
    server.config_path.write_text(f"zones: {empty}\nmetrics: false\n")
    try:
        server.start()
        server.wait_for_log(r"WARNING no zone files \(\*\.yaml\) in .*empty: nothing will be answered")
    finally:
        server.stop()


def test_deleting_a_zone_file_while_serving_is_a_warning(smartdns):
    server = smartdns(copy_example=True, zones={"example.net": "'':\n  - type: NS\n    value: ns1.example.net.\n"})
    assert server.query("example.net", "NS").answer
    os.unlink(server.zones_dir / "example.net.yaml")
    line = server.wait_for_log(r"WARNING .*example\.net\.yaml", timeout=10)
    assert "deleted" in line and "example.net." in line, line
    wait_for(lambda: server.query("example.net", "NS").rcode() == dns.rcode.REFUSED, 5)  # no longer ours
