"""Run inside a network namespace with only loopback (`unshare -n`): smartdns behind a real caching
Unbound with its ECS module (subnetcache), clients with different subnets asking through it.

Usage: python3 ecs_resolver_scenario.py WORKDIR CLIENT_SUBNET... ; prints one JSON object: the
answers each client got, in order, and the ECS scopes smartdns echoed when asked directly.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import dns.edns
import dns.message
import dns.query

REPO = Path(__file__).resolve().parent.parent
SMARTDNS_PORT = 5300  # a fresh namespace: nothing else is here
UNBOUND_PORT = 5301


def unbound_config(workdir: Path) -> str:
    return f"""
server:
    interface: 127.0.0.1
    port: {UNBOUND_PORT}
    do-daemonize: no
    username: ""
    chroot: ""
    directory: "{workdir}"
    pidfile: ""
    use-syslog: no
    logfile: ""
    verbosity: 1
    do-ip6: no
    access-control: 127.0.0.0/8 allow
    do-not-query-localhost: no
    qname-minimisation: no
    module-config: "subnetcache iterator"
    send-client-subnet: 127.0.0.1
    max-client-subnet-ipv4: 24
stub-zone:
    name: "example.com"
    stub-addr: 127.0.0.1@{SMARTDNS_PORT}
"""


def ask(port: int, subnet: str) -> dns.message.Message:
    address, prefix = subnet.split("/")
    query = dns.message.make_query("mx.example.com", "A", use_edns=0,
                                   options=[dns.edns.ECSOption(address, int(prefix))])
    return dns.query.udp(query, "127.0.0.1", port=port, timeout=5)


def main() -> int:
    workdir = Path(sys.argv[1])
    subnets = sys.argv[2:]
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    zones = workdir / "zones"
    zones.mkdir(exist_ok=True)
    shutil.copy(REPO / "zones" / "example.com.yaml", zones)
    (workdir / "smartdns.yaml").write_text("zones: zones\nmetrics: false\n")  # the embedded country data
    (workdir / "unbound.conf").write_text(unbound_config(workdir))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    server = subprocess.Popen([sys.executable, "-m", "smartdns", "serve", "--config", "smartdns.yaml", "--listen",
                               f"127.0.0.1:{SMARTDNS_PORT}", "--workers", "1"], cwd=workdir, env=env,
                              stderr=subprocess.PIPE, text=True)
    resolver = None
    try:
        assert server.stderr is not None
        for line in server.stderr:
            if re.search(r"listening on", line):
                break
        else:
            raise SystemExit("smartdns did not start")
        resolver = subprocess.Popen(["unbound", "-d", "-c", str(workdir / "unbound.conf")], cwd=workdir,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                dns.query.udp(dns.message.make_query("example.com", "SOA"), "127.0.0.1", port=UNBOUND_PORT, timeout=1)
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        direct = {}
        for subnet in subnets:
            reply = ask(SMARTDNS_PORT, subnet)
            direct[subnet] = [o.scopelen for o in reply.options if o.otype == dns.edns.ECS]
        through = []
        for subnet in subnets:
            reply = ask(UNBOUND_PORT, subnet)
            through.append({"subnet": subnet, "answer": sorted(r.address for rrset in reply.answer for r in rrset)})
        print(json.dumps({"direct_scopes": direct, "through_unbound": through}))
        return 0
    finally:
        for process in (resolver, server):
            if process is not None:
                process.terminate()
                process.wait(10)


if __name__ == "__main__":
    sys.exit(main())
