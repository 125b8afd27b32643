"""A real Postfix routed by `smartdns route`, delivering to SMTP servers on loopback only.

The scenarios run once, in tests/route_e2e.py, inside a private network and mount namespace
(`unshare -nm`: only loopback, a resolv.conf naming our DNS on 127.0.0.1:53); each test here
asserts one claim of its report. Needs root, `unshare`, Postfix and openssl; skips otherwise.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from conftest import REPO

pytestmark = pytest.mark.slow


def _unavailable() -> str | None:
    if os.geteuid() != 0:
        return "needs root (a private network namespace and Postfix's own users)"
    for tool in ("postfix", "sendmail", "postqueue", "unshare", "ip", "openssl"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    probe = subprocess.run(["unshare", "-nm", "true"], capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        return f"cannot make a network namespace here: {probe.stderr.strip()}"
    return None


@pytest.fixture(scope="module")
def report():
    reason = _unavailable()
    if reason:
        pytest.skip(reason)
    # Not under pytest's basetemp: pytest keeps its root at mode 0700 (and resets it when another
    # pytest starts), and Postfix's daemons run as user postfix and must reach their files.
    work = Path(tempfile.mkdtemp(prefix="smartdns-postfix-"))
    work.chmod(0o711)
    try:
        yield _run_scenarios(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _run_scenarios(work: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    run = subprocess.run(["unshare", "-nm", sys.executable, str(REPO / "tests" / "route_e2e.py"), str(work)],
                         capture_output=True, text=True, timeout=900, env=env, check=False)
    path = work / "report.json"
    if not path.exists():
        pytest.fail(f"the scenario did not run:\n{run.stdout[-3000:]}\n{run.stderr[-5000:]}")
    return json.loads(path.read_text())


CLAIMS = [
    "domestic_direct_never_touches_a_relay",
    "refused_falls_back_to_relay_in_same_attempt",
    "blocked_450_falls_back_to_relay_in_same_attempt",
    "blocked_554_filtered_falls_back_in_same_attempt",
    "stalling_mx_falls_back_to_relay_in_same_attempt",
    "overseas_healthy_goes_direct",
    "troubled_goes_straight_to_relay_until_cooldown",
    "deferred_is_retried_through_relay_within_a_minute",
    "relay_down_uses_the_other_relay",
    "service_killed_domestic_flows_once_back",
    "postfix_logged_no_configuration_warnings",
]


@pytest.mark.parametrize("claim", CLAIMS)
def test_postfix_scenario(report, claim):
    assert claim in report, f"scenario {claim} did not run (an earlier step failed hard)"
    result = report[claim]
    assert result["ok"], result["error"] + "\n" + "\n".join(result.get("log", []))
