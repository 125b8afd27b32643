"""Listening: a port held by anyone else is refused (only our own workers share one), and bind
errors name the address and the likely fix."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, SmartDNS


def serve(workdir, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "smartdns", "serve", "--zones", str(REPO / "zones"), *args],
                          cwd=workdir, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
                          check=False)


@pytest.mark.slow
@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_second_smartdns_on_a_port_in_use_refuses_to_start(tmp_path, workers):
    """With SO_REUSEPORT on both sides the kernel would split the traffic between strangers."""
    first = SmartDNS(tmp_path, copy_example=True, args=("--workers", "2"))
    first.start()
    try:
        address = f"127.0.0.1:{first.port}"
        second = serve(tmp_path, "--listen", address, "--workers", workers)
        assert second.returncode == 1, second.stderr
        assert "listening on" not in second.stderr and "Traceback" not in second.stderr
        line = next(text for text in second.stderr.splitlines() if "ERROR" in text)
        assert f"cannot listen on {address} (udp): address already in use by pid {first.proc.pid} (" in line, line
        assert "smartdns serve" in line and "only smartdns's own workers share a port" in line
        # the first server still gets every query
        for _ in range(20):
            assert first.query("mx.example.com", "A").answer
    finally:
        first.stop()


@pytest.mark.slow
def test_a_port_held_by_another_program_names_it(tmp_path):
    """A plain UDP socket of another process (here: a Python one-liner) on the address we want."""
    program = ("import socket,sys,time; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
               "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1); s.bind(('127.0.0.1', 0)); "
               "print(s.getsockname()[1], flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", program], stdout=subprocess.PIPE, text=True)
    try:
        port = int(holder.stdout.readline())
        result = serve(tmp_path, "--listen", f"127.0.0.1:{port}", "--workers", "2")
        assert result.returncode == 1, result.stderr
        assert f"cannot listen on 127.0.0.1:{port} (udp): address already in use by pid {holder.pid} (" in result.stderr
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.slow
def test_workers_still_share_their_own_port(smartdns):
    server = smartdns(copy_example=True, args=("--workers", "2"))
    for _ in range(10):
        assert server.query("mx.example.com", "A").answer


@pytest.mark.slow
def test_permission_denied_names_the_address_and_the_fix(tmp_path):
    """Port 53 without CAP_NET_BIND_SERVICE (root with that capability taken away, or any other user)."""
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("setpriv (util-linux) is needed to run without CAP_NET_BIND_SERVICE as root")
        prefix = [setpriv, "--bounding-set=-net_bind_service", "--inh-caps=-net_bind_service"]
    else:
        prefix = []
    if int(Path("/proc/sys/net/ipv4/ip_unprivileged_port_start").read_text()) <= 53:
        pytest.skip("this system lets anyone bind port 53")
    result = subprocess.run([*prefix, sys.executable, "-m", "smartdns", "serve", "--zones", str(REPO / "zones"),
                             "--listen", "127.0.0.1:53"], cwd=tmp_path, capture_output=True, text=True, timeout=30,
                            stdin=subprocess.DEVNULL, check=False)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert ("cannot listen on 127.0.0.1:53 (udp): permission denied — ports below 1024 need root: "
            "run as root with --user, or grant CAP_NET_BIND_SERVICE") in result.stderr, result.stderr


@pytest.mark.slow
def test_an_address_of_no_interface_says_so(tmp_path):
    # an address in 127.0.0.0/8 exists on lo; ::2 is assigned to no interface (bind only: nothing is sent)
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    result = serve(tmp_path, "--listen", "[::2]:5353")
    assert result.returncode == 1, result.stderr
    assert "cannot listen on [::2]:5353 (udp): no interface of this machine has ::2" in result.stderr, result.stderr
