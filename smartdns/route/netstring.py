"""Netstrings (`LEN:DATA,`), the framing of Postfix's socketmap protocol."""

from __future__ import annotations

import asyncio

MAX_LENGTH_DIGITS = 6  # 100,000 bytes, the protocol's largest reply, has six digits


class NetstringError(ValueError):
    """The peer does not speak netstrings (or sends one larger than allowed): drop the connection."""


def encode(data: bytes) -> bytes:
    return b"%d:%s," % (len(data), data)


async def read(reader: asyncio.StreamReader, max_length: int, first: bytes = b"") -> bytes:
    """The next netstring's payload; `first` is its first byte when the caller already read it."""
    try:
        prefix = first + await reader.readuntil(b":") if first != b":" else first
    except asyncio.IncompleteReadError:
        raise NetstringError("stream ended inside a length prefix") from None
    except asyncio.LimitOverrunError:
        raise NetstringError("length prefix too long") from None
    digits = prefix[:-1]
    if not digits.isdigit() or len(digits) > MAX_LENGTH_DIGITS or (len(digits) > 1 and digits[0:1] == b"0"):
        raise NetstringError(f"bad length prefix {digits[:20]!r}")
    length = int(digits)
    if length > max_length:
        raise NetstringError(f"netstring of {length} bytes, over the limit of {max_length}")
    try:
        body = await reader.readexactly(length + 1)
    except asyncio.IncompleteReadError:
        raise NetstringError("stream ended inside a netstring") from None
    if body[-1:] != b",":
        raise NetstringError("netstring not terminated by ','")
    return body[:-1]
