"""``streamproc demo`` as a user runs it: a subprocess with its own embedded broker and worker."""

from __future__ import annotations

import json
import re
import os
import subprocess
import sys
import time

import pytest

from streamproc.cli import build_parser
from streamproc.demo import MIN_EVENTS, WARMUP_SIZE, WINDOW_SIZE, _summary

from .conftest import ROOT, parse_error
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
    assert parse_error(["demo", "--events", value], capsys).startswith(
        f"streamproc demo: error: argument --events: must be at least {MIN_EVENTS}, not {value} ")


def test_the_minimum_follows_the_demo_settings_and_is_documented():
    # The drift starts at events // 2: the reference (the first WARMUP_SIZE events) is free of it,
    # and a whole window of drifted events follows wherever the windows' boundaries fall.
    assert MIN_EVENTS // 2 >= WARMUP_SIZE and MIN_EVENTS - MIN_EVENTS // 2 >= 2 * WINDOW_SIZE - 1
    assert build_parser().parse_args(["demo", "--events", str(MIN_EVENTS)]).events == MIN_EVENTS
    assert f"at least {MIN_EVENTS} events per model" in README


@pytest.mark.integration
def test_timeout_bounds_the_whole_demo():
    # The worker alone takes longer than a second to become ready: the demo gives up at 1 s,
    # saying what it was doing, instead of waiting on (60 s for readiness, 5 s floors before).
    started = time.monotonic()
    proc = run_demo("--timeout", "1")
    elapsed = time.monotonic() - started
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert re.fullmatch(r"streamproc: error: the demo gave up after 1 s \(--timeout 1\) (starting the broker|creating "
                        r"the topics|waiting for the worker to become ready); logs in \S+", proc.stderr.strip().splitlines()[-1])
    assert elapsed < 10, f"{elapsed:.1f} s"  # 1 s, then stopping the worker and the broker and Python's start-up


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "soon"])
def test_a_timeout_that_is_not_a_positive_number_is_refused_when_parsing(value, capsys):
    assert parse_error(["demo", "--timeout", value], capsys) == f"streamproc demo: error: argument --timeout: must be a positive number of seconds, not '{value}'"


def test_an_interrupted_demo_exits_130_as_every_command_does(monkeypatch, capsys):
    import streamproc.demo

    async def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(streamproc.demo, "_demo", interrupted)
    assert streamproc.demo.run_demo() == 130 and capsys.readouterr().out == "interrupted\n"


def _alert(model: str, type_: str, signal: str, feature=None) -> dict:
    return {"alert_id": f"{model}-{signal}-{feature}", "model_id": model, "type": type_, "signal": signal, "feature": feature}


EXPECTED = [_alert("fraud", "data_drift", "feature", "x0"), _alert("fraud", "data_drift", "feature", "c0"),
            _alert("churn", "data_drift", "feature", "x2"), _alert("fraud", "prediction_drift", "prediction_score"),
            {"request_id": "r1", "model_id": "fraud"}]


def test_the_summary_claims_only_the_drifts_it_saw():
    lines: list[str] = []
    assert _summary(EXPECTED, 17.0, "/tmp/logs", lines.append) == 0
    assert lines[-1] == "as expected: drift found in fraud (x0, c0, score) and churn (x2); pricing stayed quiet"
    # The score's drift was claimed without being checked: a label drift is not it.
    lines.clear()
    seen = [e for e in EXPECTED if e.get("signal") != "prediction_score"]
    seen.append(_alert("fraud", "prediction_drift", "prediction_label"))
    assert _summary(seen, 17.0, "/tmp/logs", lines.append) == 1
    assert lines[1:] == ["UNEXPECTED: no prediction-drift alert for fraud's score"]


def test_the_readme_sample_is_a_demo_run():
    # The sample showed the stream detectors' alerts on whole windows, "(1000 events)", where a
    # run shows the events their window had when they alerted (e.g. "(172 events)").
    start = README.index("```\nbroker (Tansu) up at") + 4
    sample = README[start:README.index("```", start)].splitlines()
    alerts = [line for line in sample if line.startswith("ALERT ")]
    retrains = [line for line in sample if line.startswith("RETRAIN ")]
    assert f"{len(alerts)} alerts and {len(retrains)} retrain requests in " in README
    streaming = [line for line in alerts if re.search(r"  (adwin|page_hinkley)=", line)]
    assert streaming and all(int(re.search(r"\((\d+) events\)", line)[1]) < WINDOW_SIZE for line in streaming)
    lines: list[str] = []
    _summary(EXPECTED, 17.0, "/tmp/logs", lines.append)
    assert sample[-1] == lines[-1]
