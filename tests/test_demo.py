"""``streamproc demo`` as a user runs it: a subprocess with its own embedded broker and worker."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from streamproc.cli import build_parser
from streamproc.demo import MIN_EVENTS, WARMUP_SIZE, WINDOW_SIZE

from .conftest import ROOT
from .test_readme import README


def run_demo(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "streamproc", "demo", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=ROOT, stdin=subprocess.DEVNULL)


@pytest.mark.integration
def test_json_puts_only_the_events_on_stdout_and_the_fewest_events_still_show_the_drift():
    proc = run_demo("--json", "--events", str(MIN_EVENTS))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    events = [json.loads(line) for line in proc.stdout.splitlines()]  # every line is JSON: `| jq` works
    assert any("alert_id" in e for e in events) and any("request_id" in e for e in events)
    assert "broker (Tansu) up at" in proc.stderr and "worker ready" in proc.stderr
    assert "as expected: drift found" in proc.stderr


@pytest.mark.parametrize("value", ["-5", "0", "1000", str(MIN_EVENTS - 1)])
def test_too_few_events_are_refused_when_parsing(value, capsys):
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["demo", "--events", value])
    assert exc.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith(f"streamproc demo: error: argument --events: must be at least {MIN_EVENTS}, not {value} ")


def test_the_minimum_follows_the_demo_settings_and_is_documented():
    # The drift starts at events // 2: the reference (the first WARMUP_SIZE events) is free of it,
    # and a whole window of drifted events follows wherever the windows' boundaries fall.
    assert MIN_EVENTS // 2 >= WARMUP_SIZE and MIN_EVENTS - MIN_EVENTS // 2 >= 2 * WINDOW_SIZE - 1
    assert build_parser().parse_args(["demo", "--events", str(MIN_EVENTS)]).events == MIN_EVENTS
    assert f"at least {MIN_EVENTS} events per model" in README
