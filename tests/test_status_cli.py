"""``streamproc status``: the table rendered from a worker's /status, errors, and a live worker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from streamproc.cli import main
from streamproc.status_view import StatusError, fetch, render, status_url

from .conftest import ROOT, unique_topics, wait_until

# What a worker answers (streamproc/worker.py status()), trimmed to two models.
STATUS = {
    "ready": True,
    "published": {"alerts": 7, "retrain_requests": 1, "dead_letters": 2},
    "partitions": ["streamproc-routed[0]", "streamproc-routed[1]"],
    "models": [
        {"model_id": "churn", "model_version": "default", "events": 2500, "warming_up": True, "reference": None,
         "window": {"kind": "count", "index": 0, "fill": 500, "size": 1000}, "late_events": 0, "quantiles": {},
         "latest_psi": {}, "active_drift": []},
        {"model_id": "fraud", "model_version": "2026-11-01", "events": 24000, "warming_up": False,
         "reference": "file:fraud.csv", "window": {"kind": "count", "index": 21, "fill": 250, "size": 1000},
         "late_events": 0, "quantiles": {"x0": {"p05": -1.6, "p25": -0.6, "p50": 0.0, "p75": 0.7, "p95": 1.6}},
         "latest_psi": {"x0": 0.8803, "x1": 0.0123, "c0": 2.382, "prediction.score": 0.31, "x2": 0.0049},
         "active_drift": [
             {"type": "data_drift", "detector": "psi", "signal": "feature", "feature": "x0", "severity": "critical"},
             {"type": "data_drift", "detector": "psi", "signal": "feature", "feature": "c0", "severity": "critical"},
             {"type": "prediction_drift", "detector": "page_hinkley", "signal": "prediction_score", "feature": None,
              "severity": "warning"}]},
        {"model_id": "pricing", "model_version": "default", "events": 300, "warming_up": False,
         "reference": "topic", "window": {"kind": "time", "index": 4, "fill": 120, "size": None},
         "late_events": 3, "quantiles": {}, "latest_psi": {"x0": 0.01}, "active_drift": []},
        {"model_id": "spam", "model_version": "default", "events": 1200, "warming_up": True, "reference": None,
         "warmup": {"events": 1200, "kept": 150, "stride": 8}, "window": None, "late_events": 0, "quantiles": {},
         "latest_psi": {}, "active_drift": []},
    ],
}


def test_table_from_a_status():
    text = render(STATUS)
    lines = text.splitlines()
    assert lines[0] == "ready: yes   partitions: 2   published: 7 alerts, 1 retrain requests, 2 dead letters"
    header, churn, fraud, pricing, spam = lines[2:]
    assert header.split() == ["MODEL", "VERSION", "EVENTS", "REFERENCE", "WARMING", "UP", "WINDOW", "TOP", "PSI", "DRIFT"]
    # columns line up: every row starts each column where the header does
    for col in ("VERSION", "REFERENCE", "WARMING UP", "WINDOW", "TOP PSI"):
        at = header.index(col)
        assert churn[at - 1] == " " and churn[at] != " ", col
    assert churn.split()[:5] == ["churn", "default", "2500", "-", "yes"]
    assert "#0 500/1000" in churn and churn.split()[-2:] == ["-", "0"]  # no PSI yet, no drift
    assert fraud.split()[:5] == ["fraud", "2026-11-01", "24000", "file:fraud.csv", "no"]
    assert "#21 250/1000" in fraud
    assert "c0 2.38, x0 0.88, prediction.score 0.31" in fraud  # the top 3 by latest PSI, largest first
    assert "x1" not in fraud and fraud.endswith("3")  # three active drifts
    assert "#4 120 (time)" in pricing and "x0 0.01" in pricing
    assert spam.split()[:7] == ["spam", "default", "1200", "-", "yes,", "1", "in"] and " 1 in 8 " in spam  # thinned


def test_a_worker_without_models():
    text = render({"ready": False, "published": {"alerts": 0, "retrain_requests": 0, "dead_letters": 0},
                   "partitions": [], "models": []})
    assert text.splitlines() == ["ready: no   partitions: 0   published: 0 alerts, 0 retrain requests, 0 dead letters",
                                 "no models yet (no prediction events applied)"]


def test_a_statistic_json_could_not_carry_is_left_out_of_the_top_psi():
    # NaN or infinity: the worker's JSON says null, and the table crashed on it.
    model = {**STATUS["models"][1], "latest_psi": {"x0": None, "x1": 0.5, "x2": 0.25}}
    row = next(line for line in render({**STATUS, "models": [model]}).splitlines() if "x1 0.5" in line)
    assert "x1 0.5, x2 0.25" in row and "x0" not in row


def test_a_worker_holding_packed_models_says_how_many():
    """The direct route loads every model's saved state, packed until an event of it arrives."""
    text = render({"ready": True, "published": {}, "partitions": ["predictions[0]"], "models": [], "packed_models": 1200})
    assert text.splitlines() == [
        "ready: yes   partitions: 1   published: 0 alerts, 0 retrain requests, 0 dead letters   packed: 1200 models "
        "(their saved state loaded, no event yet)",
        "no models yet (no prediction events applied since the start)"]


def test_status_url():
    assert status_url("http://127.0.0.1:9464") == "http://127.0.0.1:9464/status"
    assert status_url("http://127.0.0.1:9464/") == "http://127.0.0.1:9464/status"
    assert status_url("http://h:1/status") == "http://h:1/status"
    # the worker's other views, as copied from a scrape config (it asked /metrics/status: 404)
    assert status_url("http://h:1/metrics") == status_url("h:1/healthz/") == "http://h:1/status"
    assert status_url("10.0.0.7:9464") == "http://10.0.0.7:9464/status"


class Server:
    """Answers GET with a fixed status code and body."""

    def __init__(self, code: int, body: bytes):
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def test_table_and_raw_json_from_a_server(capsys):
    body = json.dumps(STATUS).encode()
    with Server(200, body) as server:
        assert main(["status", "--url", server.url]) == 0
        assert capsys.readouterr().out == render(STATUS) + "\n"
        assert main(["status", "--url", server.url + "/status", "--json"]) == 0
        assert capsys.readouterr().out == body.decode() + "\n"


@pytest.mark.parametrize("code,body,message", [
    (503, b"{}", "answered 503"),
    (200, b"<html>hello</html>", "did not answer with JSON"),
    (200, b'{"status": "ready"}', "did not answer with a worker status"),
])
def test_answers_that_are_not_a_status(code, body, message, capsys):
    with Server(code, body) as server:
        with pytest.raises(StatusError, match=message):
            fetch(server.url)
        assert main(["status", "--url", server.url]) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("streamproc: error: ") and message in err


def test_nothing_listening_is_one_line_and_exit_1():
    from streamproc.broker import free_port

    env = dict(os.environ)
    env.pop("STREAMPROC_DEBUG", None)
    done = subprocess.run([sys.executable, "-m", "streamproc", "status", "--url", f"http://127.0.0.1:{free_port()}"],
                          capture_output=True, text=True, timeout=60, env=env, cwd=ROOT)
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and "cannot reach a worker at http://127.0.0.1:" in done.stderr, done.stderr
    assert "Connection refused" in done.stderr and done.stdout == ""


@pytest.mark.integration
def test_status_of_a_running_worker(bootstrap, start_worker):
    topics = unique_topics()
    worker = start_worker(topics, "--window-size", "200", "--warmup-size", "400")
    env = dict(os.environ)
    env.pop("STREAMPROC_BOOTSTRAP", None)
    sent = subprocess.run([sys.executable, "-m", "streamproc", "produce", "--bootstrap", bootstrap, "--topic",
                           topics["predictions"], "--synthetic", "--models", "alpha,beta", "--events", "1000",
                           "--drift-at", "600", "--drift-features", "x0", "--drift-shift", "2"],
                          capture_output=True, text=True, timeout=120, env=env, cwd=ROOT)
    assert sent.returncode == 0, sent.stderr
    wait_until(lambda: sum(m["events"] for m in worker.status().get("models", [])) == 2000, 90,
               "the worker to apply every event")

    def status(*args):
        done = subprocess.run([sys.executable, "-m", "streamproc", "status", "--url", worker.base, *args],
                              capture_output=True, text=True, timeout=60, env=env, cwd=ROOT)
        assert done.returncode == 0, done.stderr
        return done.stdout

    raw = json.loads(status("--json"))
    assert {m["model_id"]: m["events"] for m in raw["models"]} == {"alpha": 1000, "beta": 1000}
    lines = status().splitlines()
    assert lines[0].startswith("ready: yes") and "alerts" in lines[0]
    rows = {line.split()[0]: line for line in lines[3:]}
    assert set(rows) == {"alpha", "beta"}
    for row in rows.values():
        cells = row.split()
        assert cells[1:6] == ["default", "1000", "warmup", "no", "#3"], row  # 400 warm-up + 3 windows of 200
        assert "x0" in row.split("#3", 1)[1]  # x0 drifted by 2 sd: the largest PSI
        assert int(cells[-1]) >= 1  # active drift
