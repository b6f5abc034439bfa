"""``streamproc demo``: the embedded broker, a worker and a drifting synthetic producer.

Three models: ``fraud`` (x0 shifts by one standard deviation and c0 gains a new category at
event 12,000, so its score moves too), ``churn`` (x2 shifts at event 12,000; the score does
not depend on it) and ``pricing`` (stationary: it should raise nothing). Alerts and retrain
requests are printed as they arrive; the demo ends when the worker has consumed every event,
and exits 0 if every expected drift was alerted and the stationary model stayed quiet.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

import orjson

from . import kafka
from .broker import EmbeddedBroker, free_port
from .synth import Drift, ModelStream
from .tail import format_event, tail

TOPICS = ["predictions", "outcomes", "drift-alerts", "retrain-requests", "streamproc-dlq"]

# The demo worker's settings: its reference is each model's first WARMUP_SIZE events, then
# windows of WINDOW_SIZE events are compared with it.
WINDOW_SIZE = 1000
WARMUP_SIZE = 2000
# The drift starts halfway through, so the first half must cover the warm-up (a reference
# without drift) and the second half at least one whole window of drifted events, wherever the
# windows' boundaries fall (2 windows' worth).
MIN_EVENTS = 2 * max(WARMUP_SIZE, 2 * WINDOW_SIZE)


def demo_streams(drift_at: int) -> list[ModelStream]:
    return [
        ModelStream("fraud", n_numeric=8, n_categorical=2, seed=11, drift=Drift(drift_at, ("x0", "c0"), 1.0, 0.3)),
        ModelStream("churn", n_numeric=8, n_categorical=2, seed=12, drift=Drift(drift_at, ("x2",), 1.0)),
        ModelStream("pricing", n_numeric=8, n_categorical=2, seed=13),
    ]


def http_json(url: str, timeout: float = 2.0):
    """GET ``url``; (status, parsed JSON body) or (None, None) when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, orjson.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, None
    except (urllib.error.URLError, OSError):
        return None, None


async def produce(bootstrap: str, streams: list[ModelStream], n: int, chunk: int = 2000) -> None:
    """Interleave the models' events; no keys, so any partition may carry any model."""
    producer = kafka.producer(bootstrap, linger_ms=20, max_batch_size=256 * 1024)
    await producer.start()
    try:
        for start in range(0, n, chunk):
            size = min(chunk, n - start)
            per_model = [list(s.events(size, start)) for s in streams]
            futures = []
            for i in range(size):
                for events in per_model:
                    futures.append(await producer.send("predictions", orjson.dumps(events[i])))
            await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def _wait(predicate, timeout: float, what: str, interval: float = 0.25):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        await asyncio.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


async def _demo(events: int, timeout: float, as_json: bool) -> int:
    started = time.monotonic()
    # With --json, stdout carries only the events (JSON lines, for jq and the like); everything else goes to stderr.
    say = _say(sys.stderr if as_json else sys.stdout)
    drift_at = events // 2
    streams = demo_streams(drift_at)
    logdir = tempfile.mkdtemp(prefix="streamproc-demo-")
    with EmbeddedBroker(log_path=os.path.join(logdir, "broker.log")) as broker:
        say(f"broker (Tansu) up at {broker.bootstrap}")
        await kafka.ensure_topics(broker.bootstrap, TOPICS, partitions=4)
        port = free_port()
        worker_log = open(os.path.join(logdir, "worker.log"), "wb")
        worker = subprocess.Popen(
            [sys.executable, "-m", "streamproc", "worker", "--bootstrap", broker.bootstrap, "--metrics-port", str(port),
             "--window-size", str(WINDOW_SIZE), "--warmup-size", str(WARMUP_SIZE), "--group-id", "streamproc-demo"],
            stdout=worker_log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
        seen: list[dict] = []
        stop_tail = asyncio.Event()

        def on_event(topic: str, event: dict) -> None:
            seen.append(event)
            print(orjson.dumps(event).decode() if as_json else format_event(event), flush=True)

        tailer = asyncio.create_task(tail(broker.bootstrap, ["drift-alerts", "retrain-requests"], True, as_json, on_event, stop_tail))
        try:
            base = f"http://127.0.0.1:{port}"

            def healthy():
                if worker.poll() is not None:
                    raise RuntimeError(f"worker exited with code {worker.returncode}; see {logdir}/worker.log")
                return http_json(base + "/healthz")[0] == 200

            await _wait(healthy, 60, "the worker to become ready")
            say(f"worker ready ({base}/metrics); producing {events} events for each of "
                  f"{', '.join(s.model_id for s in streams)}; drift starts at event {drift_at} for fraud and churn")
            await produce(broker.bootstrap, streams, events)

            def consumed():
                status = http_json(base + "/status")[1] or {}
                counts = {m["model_id"]: m["events"] for m in status.get("models", [])}
                return status if all(counts.get(s.model_id) == events for s in streams) else None

            remaining = lambda: max(5.0, timeout - (time.monotonic() - started))  # noqa: E731
            status = await _wait(consumed, remaining(), "the worker to consume every event")
            published = status["published"]["alerts"] + status["published"]["retrain_requests"]
            await _wait(lambda: len(seen) >= published, remaining(), "the alerts to reach the tail")
        finally:
            stop_tail.set()
            await tailer
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(20)
            except subprocess.TimeoutExpired:
                worker.kill()
            worker_log.close()
    return _summary(seen, time.monotonic() - started, logdir, say)


def _say(stream):
    def say(line: str) -> None:
        print(line, file=stream, flush=True)

    return say


def _summary(seen: list[dict], elapsed: float, logdir: str, say) -> int:
    alerts = [e for e in seen if "alert_id" in e]
    retrains = [e for e in seen if "request_id" in e]
    say(f"\n{len(alerts)} alerts and {len(retrains)} retrain requests in {elapsed:.0f} s (logs in {logdir})")
    problems = []
    for model, feature in (("fraud", "x0"), ("fraud", "c0"), ("churn", "x2")):
        if not any(a["model_id"] == model and a["feature"] == feature and a["type"] == "data_drift" for a in alerts):
            problems.append(f"no data-drift alert for {model}.{feature}")
    if not any(r["model_id"] == "fraud" for r in retrains):
        problems.append("no retrain request for fraud")
    quiet = [a for a in alerts if a["model_id"] == "pricing"]
    if quiet:
        problems.append(f"{len(quiet)} alert(s) for the stationary model pricing")
    for p in problems:
        say(f"UNEXPECTED: {p}")
    if not problems:
        say("as expected: drift found in fraud (x0, c0, score) and churn (x2); pricing stayed quiet")
    return 1 if problems else 0


def run_demo(events: int = 24000, timeout: float = 100.0, as_json: bool = False) -> int:
    try:
        return asyncio.run(_demo(events, timeout, as_json))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr if as_json else sys.stdout)
        return 0
