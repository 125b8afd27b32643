"""The socketmap protocol server (Postfix socketmap_table(5)): `NAME KEY` in, `STATUS DATA` out.

Postfix keeps a connection per client process and sends one netstring request at a time.
Each connection is its own task, so a slow or broken peer never stalls the others. Framing
errors close the connection (the peer does not speak the protocol); anything that goes wrong
inside answers `NOTFOUND ` and is logged, because a `TEMP` (or no answer) would make Postfix
defer all mail, domestic included.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from . import netstring

log = logging.getLogger("smartdns.route")

MAX_REQUEST = 2048  # "NAME KEY": an address is at most 254 octets (RFC 5321), Postfix's keys stay far below
MAX_REPLY = 100_000  # the protocol's limit on a reply
NOTFOUND = b"NOTFOUND "

# A lookup: (map name, key) -> the reply ("OK DATA", "NOTFOUND ", "PERM reason" ...).
Lookup = Callable[[str, str], Awaitable[str]]


class SocketmapServer:
    def __init__(self, lookup: Lookup, *, idle_timeout: float = 600.0, request_deadline: float = 10.0,
                 max_connections: int = 2048, observe: Callable[[float], None] | None = None) -> None:
        self.lookup = lookup
        self.idle_timeout = idle_timeout  # Postfix keeps idle connections; a dead peer's are reclaimed
        self.request_deadline = request_deadline  # for the rest of a request once its first byte came
        self.max_connections = max_connections
        self.observe = observe  # seconds per answered request, for the latency histogram
        self.connections = 0
        self.server: asyncio.base_events.Server | None = None

    async def start(self, host: str, port: int) -> int:
        self.server = await asyncio.start_server(self._client, host, port, limit=MAX_REQUEST + 16, backlog=1024)
        return int(self.server.sockets[0].getsockname()[1])

    def close(self) -> None:
        if self.server is not None:
            self.server.close()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.connections >= self.max_connections:
            log.warning("route: %d connections open, refusing one more", self.connections)
            writer.close()
            return
        self.connections += 1
        try:
            while True:
                first = await asyncio.wait_for(reader.read(1), self.idle_timeout)
                if not first:
                    break  # closed between requests: the normal end
                request = await asyncio.wait_for(netstring.read(reader, MAX_REQUEST, first), self.request_deadline)
                started = time.perf_counter()
                reply = await self.answer(request)
                writer.write(netstring.encode(reply))
                await writer.drain()
                if self.observe is not None:
                    self.observe(time.perf_counter() - started)
        except netstring.NetstringError as exc:
            log.warning("route: closing a socketmap connection: %s", exc)
        except (TimeoutError, ConnectionError):
            pass  # idle, too slow, or gone: nothing to answer
        except Exception:
            log.exception("route: socketmap connection failed")
        finally:
            self.connections -= 1
            writer.close()

    async def answer(self, request: bytes) -> bytes:
        """One request -> one reply; never raises."""
        try:
            text = request.decode("utf-8")
        except UnicodeDecodeError:
            log.warning("route: request is not UTF-8: %r", request[:80])
            return NOTFOUND
        name, sep, key = text.partition(" ")
        if not sep:
            return b"PERM request is not NAME KEY"
        try:
            reply = (await self.lookup(name, key)).encode("utf-8")
        except Exception:
            log.exception("route: lookup of %r failed; answering NOTFOUND", key[:100])
            return NOTFOUND
        if len(reply) > MAX_REPLY:
            log.error("route: reply for %r over %d bytes; answering NOTFOUND", key[:100], MAX_REPLY)
            return NOTFOUND
        return reply
