"""A fast reader for the block-style YAML that zone files are written in.

PyYAML builds a node object with marks for every scalar before it builds the
value, which costs ~110 us per record of a big zone (5.5 s for 50,000). Zone
files use a small part of YAML: block mappings and sequences, plain and
one-line quoted scalars, comments. This reader handles exactly that part, line
by line, and raises `Unsupported` on anything else (flow collections, block
scalars, anchors, tags, multi-line scalars, escapes, duplicate keys, several
documents...), so the caller reads the file again with the full parser, which
also gives the errors. Where it answers, the result equals PyYAML's, line
numbers included (tests/test_blockyaml.py compares them on generated files).

Plain scalars are resolved by the caller (`resolve`), with PyYAML's own
implicit-type rules; this module knows no third-party library.
"""

from __future__ import annotations

import operator
import re
from typing import Any, Callable, Protocol


class Unsupported(Exception):
    """Beyond the subset this reader handles: read the text with the full YAML parser."""


class Mapping(Protocol):
    """What the reader builds for a mapping (yamlfile.LineDict)."""

    line: int
    key_lines: dict[Any, int]
    path: str

    def __setitem__(self, key: Any, value: Any) -> None: ...
    def __contains__(self, key: object) -> bool: ...


# Characters that cannot start a plain scalar (YAML 1.1 indicators); '-', '?' and ':' can when a
# non-space follows. Anything here makes the whole file go to the full parser.
_INDICATORS = frozenset("-?:,[]{}#&*!|>'\"%@`")
_STRUCTURE = re.compile(r"^(?:---|\.\.\.)(?:\s|$)|^%", re.MULTILINE)
# A plain scalar inside [...] or {...} that reads the same in every YAML 1.1 parser: no indicators,
# and a ':' only inside (an IPv6 address), never before a space, a flow indicator or an end
_FLOW_PLAIN = re.compile(r"[A-Za-z0-9_.+/=@~^$%-](?:[A-Za-z0-9_.+/=@~^$% -]|:(?![ ,\]}]|$))*")
# "key: value" and "key:" with a plain key and a plain value that need no further look (no quotes,
# no indicator first, no '#' or ':' anywhere): most lines of a zone file (texts here never end in a space)
_SIMPLE = re.compile(r"([A-Za-z0-9_][A-Za-z0-9_./-]*) *:(?: +([^\s#'\"\[\]{}&*!|>%@`,?:-][^#:]*))?$")
_UNKNOWN = object()  # not among the known plain scalars
_DOCUMENT_START = re.compile(r"---(?: +#.*)?$")
# Characters this reader leaves to the full parser: what YAML refuses in a stream (PyYAML says which,
# and where), tabs, the line breaks other than \n (YAML 1.1 counts \r, NEL, LS, PS in line numbers),
# and a byte-order mark
_OUTSIDE = re.compile("[^\x0a\x20-\x7e\xa0-\u2027\u202a-\ud7ff\ue000-\ufefe\uff00-\ufffd\U00010000-\U0010ffff]")


def read(text: str, path: str, resolve: Callable[[str], Any], mapping: Callable[[], Mapping],
         known: dict[str, Any] | None = None) -> Any:
    """The document in `text`, or `Unsupported`. `known`: plain scalars `resolve` has resolved before (it may
    add to it), looked up before calling it."""
    if _OUTSIDE.search(text):
        raise Unsupported
    markers = [m.start() for m in _STRUCTURE.finditer(text)]
    if markers and (len(markers) > 1 or text[:markers[0]].strip(" \n") and not _only_comments(text[:markers[0]])):
        raise Unsupported  # directives, several documents, or a marker after content
    # the line number, indent, and text from the first non-space character of every line with content
    lines: list[int]
    raw = text.split("\n")
    if raw[-1] == "":
        raw.pop()  # after the final line break
    texts = [line.lstrip(" ") for line in raw]
    indents = list(map(operator.sub, map(len, raw), map(len, texts)))
    if not markers and "#" not in text and "\n\n" not in text and " \n" not in text and text[:1] != "\n" \
            and text[-1:] != " ":  # no comment, no blank line, no space at a line's end: every line is kept as it is
        lines = list(range(1, len(raw) + 1))
    else:
        keep = [number for number, stripped in enumerate(texts) if stripped and stripped[0] != "#"]
        lines = [number + 1 for number in keep]
        indents = [indents[number] for number in keep]
        texts = [texts[number].rstrip(" ") for number in keep]
    if markers:  # the explicit start of the one document, on a line of its own
        if not (indents[0] == 0 and _DOCUMENT_START.match(texts[0])):
            raise Unsupported
        del lines[0], indents[0], texts[0]
    if not texts:
        return None
    reader = _Reader(lines, indents, texts, path, resolve, mapping, {} if known is None else known)
    value, end = reader.node(0, indents[0], texts[0], -1)
    if end != len(texts):
        raise Unsupported  # text left over at a smaller indent: an error for the full parser to name
    return value


class _Reader:
    def __init__(self, lines: list[int], indents: list[int], texts: list[str], path: str,
                 resolve: Callable[[str], Any], mapping: Callable[[], Mapping], known: dict[str, Any]) -> None:
        self.lines = lines
        self.indents = indents + [-1]  # -1: the end closes every collection
        self.texts = texts
        self.path = path
        self.resolve = resolve
        self.known = known
        self.mapping = mapping

    def node(self, i: int, col: int, text: str, parent: int) -> tuple[Any, int]:
        """The block node starting with `text` at column `col` of entry i, in a collection at column
        `parent`; returns it and the index of the first entry after it."""
        if text[0] == "-" and (len(text) == 1 or text[1] == " "):
            return self.sequence(i, col, text)
        simple = _SIMPLE.match(text)
        if simple is not None or text[0] != "[" and text[0] != "{" and (text[0] == "?" or self.split_key(text) is not None):
            return self.map(i, col, text, simple)
        value = self.scalar(text, self.lines[i])
        if self.indents[i + 1] > parent:
            raise Unsupported  # a scalar continued on the next line
        return value, i + 1

    def sequence(self, i: int, col: int, text: str) -> tuple[list[Any], int]:
        items: list[Any] = []
        indents, texts = self.indents, self.texts
        while True:
            item = text[1:].lstrip(" ")
            if not item or item[0] == "#":
                i += 1
                if indents[i] > col:
                    value, i = self.node(i, indents[i], texts[i], col)
                else:
                    value = None
            else:
                value, i = self.node(i, col + len(text) - len(item), item, col)
            items.append(value)
            if indents[i] != col:
                if indents[i] > col:
                    raise Unsupported
                return items, i
            text = texts[i]
            if not _is_item(text):
                return items, i  # a key after a sequence that is a mapping's value at the mapping's indent

    def map(self, i: int, col: int, text: str, simple: re.Match[str] | None = None) -> tuple[Mapping, int]:
        """`simple`: the first line's match of _SIMPLE, when the caller has made it."""
        indents, texts, lines = self.indents, self.texts, self.lines
        result = self.new_mapping(lines[i])
        key_lines = result.key_lines
        resolve, known, simple_match = self.resolve, self.known, _SIMPLE.match
        if simple is None:
            simple = simple_match(text)
        while True:
            line = lines[i]
            if simple is not None:  # most lines of a zone: "key: value" or "key:", both plain
                name, rest = simple.groups()
                key = known.get(name, _UNKNOWN)
                if key is _UNKNOWN:
                    key = resolve(name)
                if key in result:
                    raise Unsupported  # the full parser names both lines
                i += 1
                if rest is None:
                    if indents[i] > col or indents[i] == col and _is_item(texts[i]):
                        value, i = self.node(i, indents[i], texts[i], col)
                    else:
                        value = None
                else:
                    value = known.get(rest, _UNKNOWN)
                    if value is _UNKNOWN:
                        value = resolve(rest)
                    if indents[i] > col:
                        raise Unsupported  # a value continued on the next line
            else:
                value, key, i = self.entry(i, col, text, result)
            result[key] = value
            key_lines[key] = line
            if indents[i] != col:
                if indents[i] > col:
                    raise Unsupported
                return result, i
            text = texts[i]
            if text[0] == "-" and (len(text) == 1 or text[1] == " "):
                raise Unsupported  # a sequence entry among keys: an error for the full parser
            simple = simple_match(text)

    def entry(self, i: int, col: int, text: str, result: Mapping) -> tuple[Any, Any, int]:
        """One key of a mapping and its value, in any shape the reader handles: (value, key, next index)."""
        indents, texts, line = self.indents, self.texts, self.lines[i]
        if text[0] == "?":  # an explicit key ("? ''" as PyYAML writes the apex), then ": value"
            if len(text) < 2 or text[1] != " ":
                raise Unsupported
            key = self.scalar(text[2:].lstrip(" "), line)
            i += 1
            if indents[i] != col or texts[i][0] != ":":
                raise Unsupported
            after = texts[i]
            if len(after) > 1 and after[1] != " ":
                raise Unsupported
            rest = after[1:].lstrip(" ")
            compact = True  # "? k" / ": - a": a block node may start on the ':' line
        else:
            split = self.split_key(text)
            if split is None:
                raise Unsupported
            key, rest = split
            after = text
            compact = False
        try:
            if key in result:
                raise Unsupported  # the full parser names both lines
        except TypeError:
            raise Unsupported from None
        if not rest or rest[0] == "#":
            i += 1
            if indents[i] > col or (indents[i] == col and _is_item(texts[i])):
                value, i = self.node(i, indents[i], texts[i], col)
            else:
                value = None
        elif compact:
            value, i = self.node(i, col + len(after) - len(rest), rest, col)
        else:
            if rest[0] == "-" and (len(rest) == 1 or rest[1] == " "):
                raise Unsupported  # "key: - a" is not YAML
            value = self.scalar(rest, line)
            i += 1
            if indents[i] > col:
                raise Unsupported  # a value continued on the next line
        return value, key, i

    def new_mapping(self, line: int) -> Mapping:
        mapping = self.mapping()
        mapping.line = line
        mapping.path = self.path
        mapping.key_lines = {}
        return mapping

    def split_key(self, text: str) -> tuple[Any, str] | None:
        """`key: rest` -> (key, rest), or None when `text` is not a mapping key."""
        first = text[0]
        if first == "'" or first == '"':
            value, end = _quoted(text)
            after = text[end:].lstrip(" ")
            if after[:1] == ":" and (len(after) == 1 or after[1] == " "):
                return value, after[1:].lstrip(" ")
            return None
        at = text.find(": ")
        if at < 0:
            if not text.endswith(":"):
                return None
            at = len(text) - 1
        key = text[:at].rstrip(" ")
        if "#" in key or " #" in text[: at + 1]:
            raise Unsupported  # a comment or '#' near a key: the full parser decides what it is
        return self.plain(key), text[at + 1:].lstrip(" ")

    def scalar(self, text: str, line: int) -> Any:
        """A whole scalar written on one line (with its comment, if any)."""
        first = text[0]
        if first == "'" or first == '"':
            value, end = _quoted(text)
            after = text[end:].lstrip(" ")
            if after and after[0] != "#":
                raise Unsupported
            if after and end < len(text) and text[end] != " ":
                raise Unsupported  # '#' right after the quote is not a comment
            return value
        if first == "[" or first == "{":
            return self.flow(text, line)
        comment = text.find(" #")
        if comment >= 0:
            text = text[:comment].rstrip(" ")
        if ": " in text or text.endswith(":"):
            raise Unsupported  # "a: b: c": an error for the full parser
        return self.plain(text)

    def flow(self, text: str, line: int) -> Any:
        """`[a, 'b']`, `{type: A, value: 10.0.0.1}`, nested, on one line; anything else: Unsupported."""
        if "#" in text:
            raise Unsupported  # a comment, or a '#' in a value: the full parser tells them apart
        body = text.rstrip(" ")
        value, end = self.flow_node(body, 0, line)
        if end != len(body):
            raise Unsupported
        return value

    def flow_node(self, text: str, at: int, line: int) -> tuple[Any, int]:
        """The flow node at text[at] and the index after it."""
        first = text[at:at + 1]
        if first == "[" or first == "{":
            closing = "]" if first == "[" else "}"
            items: list[Any] = []
            pairs = self.new_mapping(line) if first == "{" else None
            at = _skip(text, at + 1)
            while text[at:at + 1] != closing:
                if pairs is not None:
                    key, at = self.flow_node(text, at, line)
                    if text[at:at + 2] != ": " or isinstance(key, (list, dict)) or key in pairs:
                        raise Unsupported
                    value, at = self.flow_node(text, _skip(text, at + 2), line)
                    pairs[key] = value
                    pairs.key_lines[key] = line
                else:
                    value, at = self.flow_node(text, at, line)
                    items.append(value)
                at = _skip(text, at)
                if text[at:at + 1] == ",":
                    at = _skip(text, at + 1)
                    if text[at:at + 1] == closing:
                        raise Unsupported  # a trailing comma
                elif text[at:at + 1] != closing:
                    raise Unsupported
            if pairs is None:
                return items, at + 1
            return pairs, at + 1
        if first == "'" or first == '"':
            value, end = _quoted(text[at:])
            return value, at + end
        match = _FLOW_PLAIN.match(text, at)
        if match is None:
            raise Unsupported
        return self.plain(match.group().rstrip(" ")), match.end()

    def plain(self, text: str) -> Any:
        if not text:
            raise Unsupported
        first = text[0]
        if first in _INDICATORS and (first not in "-?:" or len(text) == 1 or text[1] == " "):
            raise Unsupported
        return self.resolve(text)


def _skip(text: str, at: int) -> int:
    while text[at:at + 1] == " ":
        at += 1
    return at


def _only_comments(text: str) -> bool:
    return all(not line.strip(" ") or line.lstrip(" ").startswith("#") for line in text.split("\n"))


def _is_item(text: str) -> bool:
    return text[0] == "-" and (len(text) == 1 or text[1] == " ")


def _quoted(text: str) -> tuple[str, int]:
    """A quoted scalar that ends on this line: its value and the index after the closing quote."""
    quote = text[0]
    if quote == '"':
        end = text.find('"', 1)
        if end < 0 or "\\" in text[1:end]:
            raise Unsupported  # escapes, or continued on the next line
        return text[1:end], end + 1
    parts = []
    at = 1
    while True:
        end = text.find("'", at)
        if end < 0:
            raise Unsupported  # continued on the next line
        parts.append(text[at:end])
        if text[end + 1:end + 2] != "'":
            return "'".join(parts), end + 1
        at = end + 2
