"""The soak and memory scripts of tests/soak/, run small so that CI exercises them (issue 6, items 1 and 4).

The full runs (`python tests/soak/soak.py` sends 1,000,000 packets; `python tests/soak/memory.py`
floods 200,000 random names and 200,000 random ECS prefixes) take minutes; their numbers are
recorded in SECURITY.md / the issue's closing note.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import REPO

SOAK = REPO / "tests" / "soak"


def run(script: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SOAK / script), *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.slow
def test_soak_small():
    result = run("soak.py", "--packets", "20000", "--seconds", "120", "--seed", "7")
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert "packets sent:          20000" in out, out
    assert "exceptions in log:     0" in out and "answers after:         ok" in out and "bad replies:           0" in out
    assert "PASSED" in out


@pytest.mark.slow
def test_memory_small():
    # 60,000 distinct queries: past the 50,000 entries at which the caches are cleared
    result = run("memory.py", "--names", "30000", "--ecs", "30000", "--seconds", "120")
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert "PASSED" in out


@pytest.mark.slow
def test_memory_random_ecs_with_a_ten_thousand_subnet_rule():
    # issue 13: every random ECS prefix is a new client decided against 10,000 segments
    result = run("memory.py", "--names", "2000", "--ecs", "30000", "--rule-subnets", "10000", "--seconds", "150")
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert "known names after the floods                     2000      2000" in out, out
    assert "PASSED" in out
