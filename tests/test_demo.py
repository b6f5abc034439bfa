"""``streamproc demo`` as a user runs it: a subprocess with its own embedded broker and worker."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from .conftest import ROOT


def run_demo(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "streamproc", "demo", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=ROOT, stdin=subprocess.DEVNULL)


@pytest.mark.integration
def test_json_puts_only_the_events_on_stdout():
    proc = run_demo("--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    events = [json.loads(line) for line in proc.stdout.splitlines()]  # every line is JSON: `| jq` works
    assert any("alert_id" in e for e in events) and any("request_id" in e for e in events)
    assert "broker (Tansu) up at" in proc.stderr and "worker ready" in proc.stderr
    assert "as expected: drift found" in proc.stderr
