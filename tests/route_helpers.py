"""Helpers for the routing-service tests: a socketmap client, TLS certificates, SMTP servers on loopback.

SMTP servers are aiosmtpd sessions on their own event loop thread: destination MXes that accept,
answer "blocked", or stall (a listening socket that never greets), and relays that require
STARTTLS and AUTH, recording every message they accept.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import ssl
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

RELAY_USER, RELAY_PASSWORD = "postfix-out", "s3cret-relay"


def netstring(data: bytes) -> bytes:
    return b"%d:%s," % (len(data), data)


class SocketmapClient:
    """A blocking client speaking the socketmap protocol, as Postfix's does."""

    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = 5.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buffer = b""

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read_reply(self) -> bytes | None:
        """The next netstring's payload; None when the server closed the connection."""
        while b":" not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                return None
            self.buffer += chunk
        digits, _, rest = self.buffer.partition(b":")
        length = int(digits)
        while len(rest) < length + 1:
            chunk = self.sock.recv(65536)
            if not chunk:
                return None
            rest += chunk
        assert rest[length:length + 1] == b",", rest
        self.buffer = rest[length + 1:]
        return rest[:length]

    def lookup(self, key: str, name: str = "route") -> str:
        self.send_raw(netstring(f"{name} {key}".encode()))
        reply = self.read_reply()
        assert reply is not None, "connection closed"
        return reply.decode()

    def closed(self) -> bool:
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True

    def close(self) -> None:
        self.sock.close()


@dataclass
class Certificates:
    ca: Path
    cert: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert, self.key)
        return context

    def fingerprint(self) -> str:
        out = subprocess.run(["openssl", "x509", "-in", str(self.cert), "-noout", "-fingerprint", "-sha256"],
                             capture_output=True, text=True, check=True).stdout
        return out.strip().split("=", 1)[1]


def make_certificates(directory: Path, names: list[str], addresses: list[str]) -> Certificates:
    """A private CA and one server certificate for these names and addresses (openssl CLI)."""
    if shutil.which("openssl") is None:
        import pytest

        pytest.skip("openssl is not installed (needed to make the relays' certificates)")
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca, key, csr, cert = (directory / n for n in ("ca.key", "ca.pem", "relay.key", "relay.csr", "relay.pem"))

    def run(*args: str) -> None:
        subprocess.run(args, check=True, capture_output=True)

    run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key), "-out", str(ca),
        "-days", "2", "-subj", "/CN=smartdns test CA")
    run("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr),
        "-subj", f"/CN={names[0]}")
    sans = ",".join([f"DNS:{n}" for n in names] + [f"IP:{a}" for a in addresses])
    ext = directory / "ext.cnf"
    ext.write_text(f"subjectAltName={sans}\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n"
                   "extendedKeyUsage=serverAuth\n")
    run("openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial",
        "-out", str(cert), "-days", "2", "-extfile", str(ext))
    return Certificates(ca, cert, key)


@dataclass
class Received:
    sender: str
    recipients: list[str]
    data: bytes


class _Handler:
    def __init__(self, server: SmtpServer) -> None:
        self.server = server

    async def handle_RCPT(self, srv: SMTP, session: Session, envelope: Envelope, address: str,
                          rcpt_options: list[str]) -> str:
        if self.server.rcpt_reply is not None:
            return self.server.rcpt_reply
        once = [p for p in self.server.temp_fail_once if address.startswith(p) and address not in self.server.failed_once]
        if once:
            self.server.failed_once.add(address)
            return "451 4.3.0 Temporary failure, try again"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, srv: SMTP, session: Session, envelope: Envelope) -> str:
        self.server.received.append(Received(envelope.mail_from or "", list(envelope.rcpt_tos),
                                             envelope.original_content or b""))
        return "250 2.0.0 queued"


@dataclass
class SmtpServer:
    """One SMTP server on `host:port`: `mode` accept (default), stall (never greets) or a relay (TLS + AUTH)."""

    host: str
    port: int = 0
    rcpt_reply: str | None = None  # e.g. "450 4.7.1 ... blocked": every RCPT gets it
    certificates: Certificates | None = None  # set: a relay requiring STARTTLS and AUTH
    stall: bool = False
    temp_fail_once: tuple[str, ...] = ()  # recipients starting with one of these get a 451 the first time
    failed_once: set[str] = field(default_factory=set)
    running: bool = False
    received: list[Received] = field(default_factory=list)
    auth_logins: list[str] = field(default_factory=list)
    connections: int = 0

    def start(self) -> SmtpServer:
        self.loop = asyncio.new_event_loop()
        started = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(started,), daemon=True)
        self.thread.start()
        if not started.wait(10):
            raise RuntimeError("SMTP server did not start")
        self.running = True
        return self

    def _run(self, started: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        self.server = self.loop.run_until_complete(self.loop.create_server(self._protocol, self.host, self.port))
        self.port = self.server.sockets[0].getsockname()[1]
        started.set()
        self.loop.run_forever()

    def _protocol(self) -> asyncio.BaseProtocol:
        self.connections += 1
        if self.stall:
            return asyncio.Protocol()  # accepts, never says a word
        kwargs: dict[str, Any] = {"hostname": f"mx-{self.host}"}
        if self.certificates is not None:
            kwargs.update(tls_context=self.certificates.server_context(), require_starttls=True,
                          auth_required=True, auth_require_tls=True, authenticator=self._authenticate)
        return SMTP(_Handler(self), **kwargs)

    def _authenticate(self, server: SMTP, session: Session, envelope: Envelope, mechanism: str,
                      auth_data: Any) -> AuthResult:
        if isinstance(auth_data, LoginPassword) and auth_data.login.decode() == RELAY_USER \
                and auth_data.password.decode() == RELAY_PASSWORD:
            self.auth_logins.append(RELAY_USER)
            return AuthResult(success=True)
        return AuthResult(success=False, handled=False)

    def stop(self) -> None:
        def close() -> None:
            self.server.close()
            self.loop.stop()

        self.loop.call_soon_threadsafe(close)
        self.thread.join(5)
        self.running = False


def closed_port(host: str = "127.0.0.1") -> int:
    """A port on which nothing listens (connections are refused)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])
