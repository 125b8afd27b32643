"""The README's Layout section lists exactly the package's modules and packages, so that a newcomer
can trust it to find where a query is answered, a zone loaded and health decided."""

from __future__ import annotations

import re

from conftest import REPO


def test_layout_lists_every_module_and_nothing_else():
    readme = (REPO / "README.md").read_text()
    layout = readme[readme.index("## Layout"):]
    block = layout[layout.index("```\nsmartdns/\n") + 4:]
    block = block[:block.index("```")]
    listed = set(re.findall(r"^ +(\w+\.py|\w+/) ", block, re.M))
    package = REPO / "smartdns"
    present = {p.name for p in package.glob("*.py") if p.name not in ("__init__.py", "__main__.py")}
    present |= {p.name + "/" for p in package.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert listed == present, f"listed but missing: {listed - present}; not listed: {present - listed}"
