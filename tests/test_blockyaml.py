"""The fast block-YAML reader against PyYAML: the same values, types and line numbers, or it steps aside.

Every case is read twice: by `blockyaml.read` (what zone loading uses first) and by the
full PyYAML loader. Where the fast reader answers, both results must be equal, line numbers
of every mapping and key included; where PyYAML fails, the fast reader must have stepped
aside (`Unsupported`), so that the error an admin sees is always the full parser's.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
import yaml

from smartdns import blockyaml, yamlfile

ROOT = Path(__file__).resolve().parent.parent


def full(text: str, path: str) -> Any:
    return yaml.load(text, Loader=yamlfile._make_loader(path))


def fast(text: str, path: str) -> Any:
    return blockyaml.read(text, path, yamlfile._plain, yamlfile._mapping, yamlfile._RESOLVED)  # as load_text reads


def difference(a: Any, b: Any, where: str = "$") -> str | None:
    if type(a) is not type(b):
        return f"{where}: {type(a).__name__} {a!r} vs {type(b).__name__} {b!r}"
    if isinstance(a, yamlfile.LineDict):
        if (a.line, a.key_lines, a.context) != (b.line, b.key_lines, b.context):
            return f"{where}: lines {a.line} {a.key_lines} vs {b.line} {b.key_lines}"
        if list(a) != list(b):
            return f"{where}: keys {list(a)} vs {list(b)}"
        return next((d for k in a if (d := difference(a[k], b[k], f"{where}.{k}"))), None)
    if isinstance(a, list):
        if len(a) != len(b):
            return f"{where}: {len(a)} items vs {len(b)}"
        return next((d for n, (x, y) in enumerate(zip(a, b)) if (d := difference(x, y, f"{where}[{n}]"))), None)
    return None if a == b else f"{where}: {a!r} vs {b!r}"


def outcome(text: str) -> str:
    """'same', 'stepped aside', or what went wrong."""
    try:
        ours = fast(text, "z.yaml")
    except blockyaml.Unsupported:
        return "stepped aside"
    try:
        theirs = full(text, "z.yaml")
    except Exception as exc:  # any error of the full parser
        return f"fast reader accepted what PyYAML refuses ({exc})"
    found = difference(ours, theirs)
    return "same" if found is None else f"differs: {found}"


SCALARS = ["10.0.0.1", "fd00::1", "::1", "2001:db8::10", "mx.example.com.", "v=spf1 ip4:10.0.0.0/8 -all",
           "yes", "No", "on", "OFF", "true", "null", "~", "", "0", "0x1F", "0o17", "017", "1_000", "1:20", "1.5",
           "-1", "+3", ".5", ".inf", "-.Inf", ".nan", "1e3", "2001-12-14", "2001-12-14t21:59:43.10-05:00", "a b",
           "a  b", "#x", "a#b", "a #b", "a: b", "a:b", "-all", "- x", "?x", "? x", ":x", "'q'", 'say "hi"', "it's",
           "[x]", "{x}", "x, y", "*a", "&a", "!t", "|", ">", "%x", "@x", "`x`", "<<", "=", "é", "\u2028", 3, -7,
           3.25, True, False, None, "x" * 100, " lead", "trail ", "a\\b", "ключ"]
KEYS = ["type", "value", "values", "ttl", "", "*", "*.wild", "_dmarc", "mx", "1", "yes", "null", "a b", "a:b",
        "x#y", "2001-12-14", "Key", "é"]


def random_value(rng: random.Random, depth: int) -> Any:
    roll = rng.random()
    if depth > 3 or roll < 0.45:
        return rng.choice(SCALARS)
    if roll < 0.7:
        return [random_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    return {rng.choice(KEYS): random_value(rng, depth + 1) for _ in range(rng.randint(0, 4))}


def dumped(rng: random.Random, data: Any) -> str:
    return yaml.safe_dump(data, sort_keys=rng.random() < 0.5, default_flow_style=rng.choice([False, False, None]),
                          indent=rng.choice([2, 2, 4]), width=rng.choice([1000, 40]), allow_unicode=rng.random() < 0.5,
                          explicit_start=rng.random() < 0.2)


def mutated(rng: random.Random, text: str) -> str:
    """An edit an admin (or a bad merge) might make: a line dropped, doubled, shifted, or a character added."""
    lines = text.split("\n")
    at = rng.randrange(len(lines))
    kind = rng.randrange(6)
    if kind == 0:
        del lines[at]
    elif kind == 1:
        lines.insert(at, lines[at])
    elif kind == 2:
        lines[at] = " " * rng.randint(1, 3) + lines[at]
    elif kind == 3:
        lines[at] = lines[at][rng.randint(0, 2):]
    elif kind == 4:
        spot = rng.randint(0, len(lines[at]))
        lines[at] = lines[at][:spot] + rng.choice(list(":-#'\"[]{} ?&*!|>%\t@")) + lines[at][spot:]
    else:
        lines.insert(at, rng.choice(["# a comment", "", "   ", "  # indented comment", "---", "...", "%YAML 1.1"]))
    return "\n".join(lines)


def test_repository_yaml_files_read_the_same() -> None:
    for path in [*ROOT.glob("zones/*.yaml"), ROOT / "smartdns.yaml", ROOT / "octodns.yaml"]:
        text = path.read_text()
        assert difference(fast(text, str(path)), full(text, str(path))) is None, path


def test_zone_as_pyyaml_and_octodns_write_it_reads_fast_and_the_same() -> None:
    """The shapes big zones come in: PyYAML's dump (`? ''` apex, sequences at the key's indent),
    octoDNS's style (indented sequences), flow lists, quoted keys and values, comments."""
    text = """---
# a zone
? ''
: - type: NS
    values:
    - ns1.example.com.
    - ns2.example.com.
  - type: MX   # mail
    values:
      - exchange: mx.example.com.
        preference: 10
'*':
  type: TXT
  value: "v=spf1 -all"
_dmarc:
  type: TXT
  value: 'v=DMARC1; p=reject; rua=mailto:d@example.com'
mx:
  - type: A
    values: [10.0.0.1, '10.0.0.2']
  - type: AAAA
    value: fd00::1
    octodns: {}
"""
    assert outcome(text) == "same"
    assert isinstance(fast(text, "z.yaml"), yamlfile.LineDict)


@pytest.mark.parametrize("seed", range(6))
def test_generated_documents_and_their_mutations(seed: int) -> None:
    rng = random.Random(seed)
    counts: dict[str, int] = {}
    for _ in range(250):
        text = dumped(rng, {rng.choice(KEYS): random_value(rng, 0) for _ in range(rng.randint(1, 6))})
        for case in (text, mutated(rng, text), mutated(rng, mutated(rng, text))):
            result = outcome(case)
            assert result in ("same", "stepped aside"), f"{result}\n--- case ---\n{case}"
            counts[result] = counts.get(result, 0) + 1
    assert counts.get("same", 0) > 100  # the fast reader does answer many of these (of 750, most adversarial)


def test_zone_shaped_documents_all_read_fast() -> None:
    """Records as admins and octoDNS write them: the fast reader answers every one, the same as PyYAML."""
    rng = random.Random(7)
    for _ in range(200):
        zone: dict[str, Any] = {}
        for n in range(rng.randint(1, 8)):
            kind = rng.choice(["A", "AAAA", "TXT", "MX", "CNAME"])
            value: Any = {"A": "10.1.2.3", "AAAA": "fd00::5", "TXT": "v=spf1 -all", "CNAME": "x.example.com.",
                          "MX": {"exchange": "mx.example.com.", "preference": 10}}[kind]
            record: dict[str, Any] = {"type": kind, "ttl": rng.choice([60, 300, 3600])}
            copies = [dict(value) if isinstance(value, dict) else value for _ in range(2)]  # one shared: an anchor
            record["values" if rng.random() < 0.5 else "value"] = copies if rng.random() < 0.5 else copies[0]
            zone[rng.choice(["", "www", f"host{n}", "*", "_dmarc"]) + ("" if n == 0 else str(n))] = record
        text = yaml.safe_dump(zone, sort_keys=rng.random() < 0.5, default_flow_style=rng.choice([False, None]),
                              indent=rng.choice([2, 4]), width=1000)  # (a value folded over lines steps aside)
        assert outcome(text) == "same", text


@pytest.mark.parametrize("text", [
    "a: 1\na: 2\n",  # duplicate key: the full parser names both lines
    "a: [1, 2\n",  # an unclosed flow list
    "a: b: c\n",
    "a:\n  - x\n  b: y\n",
    "a: |\n  text\n",
    "a: &x 1\nb: *x\n",
    "a: !include other.yaml\n",
    "a: 'x\n  y'\n",
    "a: x\n  y\n",
    "a:\tb\n",
    "--- a\n",
    "a: 1\n---\nb: 2\n",
    "<<: {a: 1}\n",
])
def test_what_the_fast_reader_leaves_to_the_full_parser(text: str) -> None:
    with pytest.raises(blockyaml.Unsupported):
        fast(text, "z.yaml")


def test_an_error_is_still_named_with_its_line() -> None:
    with pytest.raises(yamlfile.YamlError) as error:
        yamlfile.load_text("a: 1\nb:\n  c: 2\na: 3\n", "z.yaml")
    assert error.value.line == 4 and "duplicate key 'a' (first at line 1)" in error.value.reason


@pytest.mark.parametrize("text", [
    "a:\n", "a: 1\nb:\n", "a:", "a: 1\nb:", "", "\n", "a: 1\n\n", "a: 1  \nb: 2\n", "  # c\na: 1\n", "---\na: 1\n",
    "--- # x\na:\n  - 1\n", "a:\n  b:\n", "a:\n- 1\n-\n", "a: 1\n   \n", " a: 1\n b: 2", "a:\n  - x\n  -\n",
    "a: 1\n# end", "a: 1\n  # indented\nb: 2  ", "\n\na:\n  b: 1\n", "a: 1 \n",
])
def test_ends_blank_lines_and_comments_read_the_same(text: str) -> None:
    """Files whose every line has content are split without filtering (blockyaml.read): the edges of both ways."""
    assert outcome(text) == "same"


def test_texts_with_two_dots_resolve_as_pyyaml_resolves_them() -> None:
    """Plain scalars with two dots or more are taken as strings without trying YAML's implicit types
    (yamlfile._plain): PyYAML reads every such text as a string too."""
    rng = random.Random(11)
    alphabet = "0123456789.....:-+_eEtTZ x"
    seen = 0
    for _ in range(20000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(3, 14)))
        text = text.strip(" ")
        if text.count(".") < 2 or not text:
            continue
        try:
            theirs = yaml.safe_load(f"v: {text}\n")
        except yaml.YAMLError:
            continue
        if not isinstance(theirs, dict) or "v" not in theirs or theirs["v"] is None and text not in ("~", "null"):
            continue
        assert yamlfile._plain(text) == theirs["v"] and type(yamlfile._plain(text)) is type(theirs["v"]), text
        seen += 1
    for text in ("1.2.3", "10.0.0.1", "1.5.", ".5.", "1.2e+3.4", "2001-12-14t21:59:43.10.5", ".inf.", "1_0.0.1"):
        assert yamlfile._plain(text) == yaml.safe_load(f"v: {text}\n")["v"] == text
    assert seen > 5000
