"""YAML reading for zone and config files: the only module that imports PyYAML.

Mappings come back as `LineDict`s that remember the line of every key, so every
error further on can name file and line. Duplicate keys are an error (PyYAML
silently keeps the last one, which would hide an admin's mistake).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from . import blockyaml

try:  # libyaml is an order of magnitude faster on big zones
    _BaseLoader: type = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - PyYAML built without libyaml
    _BaseLoader = yaml.SafeLoader


class YamlError(Exception):
    """A file that is not valid YAML (or repeats a key); `line` is 1-based."""

    def __init__(self, path: str, line: int, reason: str) -> None:
        super().__init__(f"{path}:{line}: {reason}")
        self.path = path
        self.line = line
        self.reason = reason


class LineDict(dict[Any, Any]):
    """A mapping that knows where it and each of its keys stood in the file.

    `context` is the attribute octoDNS reads from record data for its own
    error messages.
    """

    line: int = 0
    key_lines: dict[Any, int] = {}  # replaced per instance by the loader, never mutated
    path: str = ""  # the file it was read from

    @property
    def context(self) -> str:
        """Made when read (octoDNS reads it only for a message): a big zone has a mapping per record."""
        return f"{self.path}, line {self.line}" if self.path else ""

    def line_of(self, key: Any) -> int:
        return self.key_lines.get(key, self.line)


def _make_loader(path: str) -> type:
    class _Loader(_BaseLoader):  # type: ignore[misc]  # PyYAML ships no types
        def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> LineDict:
            self.flatten_mapping(node)
            mapping = LineDict()
            mapping.line = node.start_mark.line + 1
            mapping.path = path
            mapping.key_lines = {}
            for key_node, value_node in node.value:
                key = self.construct_object(key_node, deep=True)
                try:
                    hash(key)
                except TypeError:
                    raise YamlError(path, key_node.start_mark.line + 1, "unhashable mapping key") from None
                key_line = key_node.start_mark.line + 1
                if key in mapping:
                    raise YamlError(
                        path, key_line,
                        f"duplicate key {key!r} (first at line {mapping.key_lines[key]})",
                    )
                mapping[key] = self.construct_object(value_node, deep=deep)
                mapping.key_lines[key] = key_line
            return mapping

    def refuse_include(loader: Any, node: yaml.Node) -> None:
        # octoDNS's YamlProvider splices in another file here; smartdns reads one self-contained file
        # per zone (every error then names a line of the file it is in): say so, rather than "no constructor"
        raise YamlError(path, node.start_mark.line + 1,
                        f"octoDNS's !include ({getattr(node, 'value', '')}) is not supported by smartdns: "
                        f"put the included records in this file")

    _Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _Loader.construct_mapping)
    _Loader.add_constructor("!include", refuse_include)
    return _Loader


_IMPLICIT = yaml.resolver.Resolver.yaml_implicit_resolvers  # the rules CSafeLoader and SafeLoader resolve by
_CONSTRUCTOR = yaml.constructor.SafeConstructor()
_RESOLVED: dict[str, Any] = {}  # plain scalars seen before (keys, types, common values): resolved once
_UNSEEN = object()


def _plain(text: str) -> Any:
    """A plain scalar's value as PyYAML's safe loader makes it (an int, a bool, None, a date, a str)."""
    value: Any = _RESOLVED.get(text, _UNSEEN)
    if value is not _UNSEEN:
        return value
    value = text
    # a text with two dots or more is a string: each of YAML 1.1's implicit types (numbers, times) has one dot
    # at most (tests/test_blockyaml.py checks); most unique values of a big zone are addresses and names
    for tag, regexp in _IMPLICIT.get(text[0], ()) if text.count(".") < 2 else ():
        if regexp.match(text):
            construct = _CONSTRUCTOR.yaml_constructors.get(tag)
            if construct is None or tag == "tag:yaml.org,2002:merge":
                raise blockyaml.Unsupported  # '<<', '=': the full parser's to handle
            value = construct(_CONSTRUCTOR, yaml.ScalarNode(tag, text))
            break
    if len(_RESOLVED) < 4096 and (value is not text or len(text) < 16):
        _RESOLVED[text] = value
    return value


def _mapping() -> LineDict:
    return LineDict()


def load_text(text: str | bytes, path: str) -> Any:
    """Parse one YAML document; `path` is only used in messages.

    Zone files in the block style they are written in go through the fast reader
    (blockyaml.py); anything else, and every file with an error, through PyYAML.
    """
    if isinstance(text, str):
        try:
            return blockyaml.read(text, path, _plain, _mapping, _RESOLVED)
        except blockyaml.Unsupported:
            pass
        except RecursionError:
            raise YamlError(path, 1, "nested too deeply") from None
    try:
        return yaml.load(text, Loader=_make_loader(path))  # a SafeLoader subclass
    except YamlError:
        raise
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        raise YamlError(path, line, f"{exc.problem or exc.context or 'invalid YAML'}") from None
    except yaml.YAMLError as exc:
        raise YamlError(path, 1, str(exc)) from None
    except RecursionError:
        raise YamlError(path, 1, "nested too deeply") from None


def load_file(path: str | Path, max_bytes: int | None = None) -> Any:
    """Read and parse a YAML file; bytes that are not UTF-8 are an error with a line.

    A file over `max_bytes` is refused before it is read: a runaway generator or a
    wrong file must not take the whole memory of a server that is answering queries.
    """
    with open(path, "rb") as file:
        if max_bytes is None:
            raw = file.read()
        else:
            size = os.fstat(file.fileno()).st_size
            raw = b"" if size > max_bytes else file.read(max_bytes + 1)  # +1: a file growing meanwhile
            if size > max_bytes or len(raw) > max_bytes:
                raise YamlError(str(path), 1, f"file is {max(size, len(raw))} bytes, over the limit of "
                                              f"{max_bytes} bytes: not loaded")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise YamlError(str(path), line, f"not UTF-8 (byte 0x{raw[exc.start]:02x})") from None
    return load_text(text, str(path))
