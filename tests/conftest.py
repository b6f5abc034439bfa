"""Shared fixtures: the real broker (embedded Tansu, or an external Kafka) and worker processes.

Set STREAMPROC_BOOTSTRAP=host:port to run the integration tests against your own Kafka
instead of the embedded broker. Nothing here mocks the broker.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from streamproc.broker import EmbeddedBroker, free_port
from streamproc.demo import http_json

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def bootstrap(tmp_path_factory):
    external = os.environ.get("STREAMPROC_BOOTSTRAP")
    if external:
        yield external
        return
    log = tmp_path_factory.mktemp("broker") / "broker.log"
    with EmbeddedBroker(log_path=str(log)) as broker:
        yield broker.bootstrap


def wait_until(predicate, timeout: float, what: str, interval: float = 0.1, detail=None):
    """Poll ``predicate`` until it returns something truthy; fail the test after ``timeout`` s
    (the message ends with ``detail()`` when given: what a failure in CI needs to be understood)."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}" + (f"\n{detail()}" if detail else ""))
        time.sleep(interval)


def parse_error(argv: list[str], capsys) -> str:
    """The error line argparse prints for ``streamproc`` arguments it refuses (exit 2 asserted)."""
    from streamproc.cli import build_parser

    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(argv)
    assert exc.value.code == 2
    return capsys.readouterr().err.strip().splitlines()[-1]


class WorkerProcess:
    """``streamproc worker`` in a subprocess, on topics of its own."""

    def __init__(self, bootstrap: str, topics: dict[str, str], log_path: Path, extra_args=(), env=None, group_id=None):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.topics = topics
        self.log_path = log_path
        environ = dict(os.environ)
        environ.pop("STREAMPROC_BOOTSTRAP", None)
        for name, topic in topics.items():
            environ[f"STREAMPROC_TOPIC_{name.upper()}"] = topic
        environ.update(env or {})
        self.log = open(log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streamproc", "worker", "--bootstrap", bootstrap, "--metrics-port", str(self.port),
             "--group-id", group_id or f"test-{uuid.uuid4().hex[:8]}", *extra_args],
            stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=environ, cwd=ROOT,
        )

    def wait_ready(self, timeout: float = 60.0) -> None:
        def ready():
            if self.proc.poll() is not None:
                pytest.fail(f"worker exited with {self.proc.returncode}:\n{self.log_text()[-3000:]}")
            return http_json(self.base + "/healthz")[0] == 200

        wait_until(ready, timeout, "the worker's /healthz to report ready")

    def status(self) -> dict:
        return http_json(self.base + "/status")[1] or {}

    def metrics(self) -> str:
        import urllib.request

        with urllib.request.urlopen(self.base + "/metrics", timeout=5) as r:
            return r.read().decode()

    def log_text(self) -> str:
        self.log.flush()
        return self.log_path.read_text(errors="replace")

    def warnings(self, last: int = 20) -> str:
        """The log's last warnings and errors (the INFO lines left out), for a failure message."""
        lines = [line for line in self.log_text().splitlines() if "WARNING" in line or "ERROR" in line]
        return "worker log, last warnings:\n" + "\n".join(lines[-last:])

    def stop(self, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.proc.returncode


def unique_topics() -> dict[str, str]:
    tag = uuid.uuid4().hex[:8]
    return {
        "predictions": f"predictions-{tag}",
        "outcomes": f"outcomes-{tag}",
        "alerts": f"drift-alerts-{tag}",
        "retrain": f"retrain-requests-{tag}",
        "dead_letter": f"streamproc-dlq-{tag}",
    }


@pytest.fixture
def start_worker(bootstrap, tmp_path):
    started: list[WorkerProcess] = []

    def _start(topics: dict[str, str], *extra_args, env=None) -> WorkerProcess:
        w = WorkerProcess(bootstrap, topics, tmp_path / f"worker{len(started)}.log", extra_args, env)
        started.append(w)
        w.wait_ready()
        return w

    yield _start
    for w in started:
        w.stop()
