"""`smartdns check` says what `octodns-validate` would say about the same zones directory."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from conftest import REPO

UNSORTED = """---
'':
  - type: NS
    values: [ns1.example.org., ns2.example.org.]
mx:
  type: A
  ttl: 60
  dynamic:
    pools:
      domestic:
        values:
          - value: 192.0.2.10
      overseas:
        values:
          - value: 198.51.100.10
    rules:
      - geos: [AS-CN]
        pool: domestic
      - pool: overseas
  values: [192.0.2.10, 198.51.100.10]
"""


def octodns_validate(directory: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "octodns.cmds.validate", "--config-file", "octodns.yaml"],
                          cwd=directory, capture_output=True, text=True, timeout=120, check=False)


def check(directory: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "smartdns", "check", "--zones", "zones"], cwd=directory,
                          capture_output=True, text=True, timeout=60, check=False)


def workdir(tmp_path: Path, zone: str) -> Path:
    shutil.copytree(REPO / "zones", tmp_path / "zones")
    shutil.copy(REPO / "octodns.yaml", tmp_path)
    (tmp_path / "zones" / "example.org.yaml").write_text(zone)
    return tmp_path


def test_the_shipped_octodns_config_validates_the_zones_directory():
    """The README's command, as written, from the repository."""
    assert "octodns-validate --config-file octodns.yaml" in (REPO / "README.md").read_text()
    result = octodns_validate(REPO)
    assert result.returncode == 0, result.stdout + result.stderr


def test_check_warns_where_octodns_validate_fails_on_key_order(tmp_path):
    directory = workdir(tmp_path, UNSORTED)
    octodns = octodns_validate(directory)
    assert octodns.returncode != 0 and "keys out of order: expected dynamic got type" in octodns.stderr
    ours = check(directory)
    assert ours.returncode == 0, ours.stdout + ours.stderr  # smartdns serves it: a warning, not an error
    assert ("warning: zones/example.org.yaml:6: mx A: keys out of order for octoDNS: dynamic must come before type "
            "(octoDNS's YamlProvider refuses this by default): sort the keys, or set enforce_order: false") in ours.stdout
    # the fix the warning names: sorted keys (dynamic, ttl, type, values) pass both
    fixed = UNSORTED.replace("  type: A\n  ttl: 60\n  dynamic:\n", "  dynamic:\n").replace(
        "\n  values: [", "\n  ttl: 60\n  type: A\n  values: [")
    (directory / "zones" / "example.org.yaml").write_text(fixed)
    assert octodns_validate(directory).returncode == 0
    ours = check(directory)
    assert ours.returncode == 0 and "warning:" not in ours.stdout and "0 warning(s)" in ours.stdout, ours.stdout


def test_include_is_refused_with_the_gap_named(tmp_path):
    directory = workdir(tmp_path, "---\n'':\n  - type: NS\n    values: [ns1.example.org.]\nwww: !include www.part\n")
    (directory / "zones" / "www.part").write_text("type: A\nvalue: 192.0.2.1\n")
    result = check(directory)
    assert result.returncode == 1
    assert ("zones/example.org.yaml:5: www: octoDNS's !include (www.part) is not supported by smartdns: put the "
            "included records in this file") in result.stdout, result.stdout
    assert "Traceback" not in result.stderr
