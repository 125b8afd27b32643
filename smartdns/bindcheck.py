"""Binding listen addresses safely: nobody else's port is shared, and failures say what to do.

Workers share one port with SO_REUSEPORT, and the kernel would just as gladly
share it with any other process of the same user that set the option too: a
second smartdns started by mistake would silently take part of the traffic.
So before binding, each address is probed without SO_REUSEPORT; if anyone holds
it, smartdns refuses to start and names the holder when /proc tells who it is.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
from pathlib import Path

from .config import ListenAddress


class BindError(Exception):
    """An address that cannot be listened on; the message names it and the likely fix."""


def ensure_free(address: ListenAddress) -> None:
    """Raise BindError if another process already has `address` (UDP or TCP)."""
    if address.port == 0:
        return  # an ephemeral port is fresh by definition
    family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
    for kind, transport in ((socket.SOCK_DGRAM, "udp"), (socket.SOCK_STREAM, "tcp")):
        with socket.socket(family, kind) as probe:
            if kind == socket.SOCK_STREAM:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the real listener: TIME_WAIT is no holder
            if family == socket.AF_INET6:
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                probe.bind((address.host, address.port))
            except OSError as exc:
                raise BindError(explain(address, exc, transport)) from None


def explain(address: ListenAddress, exc: OSError, transport: str = "udp+tcp") -> str:
    """`cannot listen on ADDR: reason — fix`."""
    where = f"cannot listen on {address} ({transport})"
    if exc.errno == errno.EADDRINUSE:
        holder = holder_of(address, transport)
        who = f" by {holder}" if holder else " by another process"
        return (f"{where}: address already in use{who} — stop it, or give another --listen "
                f"(only smartdns's own workers share a port)")
    if exc.errno == errno.EACCES:
        return (f"{where}: permission denied — ports below 1024 need root: run as root with --user, "
                f"or grant CAP_NET_BIND_SERVICE")
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"{where}: no interface of this machine has {address.host} — use one of its addresses, or 0.0.0.0 / [::]"
    return f"{where}: {exc.strerror or exc}"


def holder_of(address: ListenAddress, transport: str) -> str | None:
    """`pid 1234 (smartdns ...)` of a process holding the port, from /proc; None if not found."""
    inodes = _socket_inodes(address, transport)
    if not inodes:
        return None
    for pid_dir in Path("/proc").iterdir():
        if not pid_dir.name.isdigit() or int(pid_dir.name) == os.getpid():
            continue
        try:
            for fd in (pid_dir / "fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:[") and target[8:-1] in inodes:
                    return f"pid {pid_dir.name} ({_command(pid_dir)})"
        except OSError:
            continue  # gone meanwhile, or not ours to read
    return None


def _command(pid_dir: Path) -> str:
    try:
        raw = (pid_dir / "cmdline").read_bytes().rstrip(b"\0").replace(b"\0", b" ")
        return raw.decode(errors="replace")[:120] or (pid_dir / "comm").read_text().strip()
    except OSError:
        return "?"


def _socket_inodes(address: ListenAddress, transport: str) -> set[str]:
    """Inodes of bound sockets on the port at this address or a wildcard one (what conflicts)."""
    ip = ipaddress.ip_address(address.host)
    wildcards = {ipaddress.ip_address("0.0.0.0"), ipaddress.ip_address("::")}  # [::] may hold IPv4 too
    # a wildcard of ours conflicts with every address
    wanted: set[ipaddress.IPv4Address | ipaddress.IPv6Address] | None = None if ip in wildcards else {ip, *wildcards}
    tables = ["tcp", "tcp6"] if transport == "tcp" else ["udp", "udp6"]
    inodes: set[str] = set()
    for table in tables:
        try:
            lines = Path(f"/proc/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            host_hex, port_hex = local.split(":")
            if int(port_hex, 16) != address.port or (transport == "tcp" and state != "0A"):  # 0A: LISTEN
                continue
            if wanted is None or _proc_address(host_hex) in wanted:
                inodes.add(inode)
    return inodes


def _proc_address(hex_text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """/proc/net's address: 32-bit words in host (little-endian) order."""
    raw = bytes.fromhex(hex_text)
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    address = ipaddress.ip_address(words)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped
    return address
