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
from .broker import BrokerError, EmbeddedBroker, free_port
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


class DemoTimeout(Exception):
    """The demo ran out of its --timeout; the message says what it was doing."""


async def _wait(predicate, interval: float = 0.25):
    """Poll ``predicate`` until it returns something truthy (the demo's deadline cancels it)."""
    while True:
        result = predicate()
        if result:
            return result
        await asyncio.sleep(interval)


async def _demo(events: int, timeout: float, as_json: bool) -> int:
    """The whole demo, from starting the broker to the last alert read, within ``timeout`` s
    (DemoTimeout otherwise); stopping the worker and the broker afterwards is not counted."""
    started = time.monotonic()
    deadline = started + timeout
    # With --json, stdout carries only the events (JSON lines, for jq and the like); everything else goes to stderr.
    say = _say(sys.stderr if as_json else sys.stdout)
    logdir = tempfile.mkdtemp(prefix="streamproc-demo-")
    stage = ["starting the broker"]  # what the demo is doing, for the timeout message
    seen: list[dict] = []
    scope = None
    finished = False
    broker = EmbeddedBroker(log_path=os.path.join(logdir, "broker.log"))
    try:
        try:
            broker.start(timeout=max(0.0, deadline - time.monotonic()))
        except BrokerError:
            if time.monotonic() < deadline:
                raise
            raise TimeoutError from None
        say(f"broker (Tansu) up at {broker.bootstrap}")
        async with asyncio.timeout(deadline - time.monotonic()) as scope:
            await _run(broker, events, as_json, say, seen, stage, deadline, logdir)
        finished = True
    except TimeoutError:
        if scope is not None and not scope.expired():
            raise  # not the demo's deadline
        raise DemoTimeout(f"the demo gave up after {timeout:g} s (--timeout {timeout:g}) {stage[0]}; "
                          f"logs in {logdir}") from None
    finally:
        # Memory storage, nothing to save: a broker still serving the killed worker's requests
        # (it takes seconds to stop then) is not waited for.
        broker.stop(timeout=10.0 if finished else 1.0)
    return _summary(seen, time.monotonic() - started, logdir, say)


async def _run(broker: EmbeddedBroker, events: int, as_json: bool, say, seen: list[dict], stage: list[str],
               deadline: float, logdir: str) -> None:
    drift_at = events // 2
    streams = demo_streams(drift_at)
    stage[0] = "creating the topics"
    await kafka.ensure_topics(broker.bootstrap, TOPICS, partitions=4)
    port = free_port()
    worker_log = open(os.path.join(logdir, "worker.log"), "wb")
    worker = subprocess.Popen(
        [sys.executable, "-m", "streamproc", "worker", "--bootstrap", broker.bootstrap, "--metrics-port", str(port),
         "--window-size", str(WINDOW_SIZE), "--warmup-size", str(WARMUP_SIZE), "--group-id", "streamproc-demo"],
        stdout=worker_log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
    )
    stop_tail = asyncio.Event()

    def on_event(topic: str, event: dict) -> None:
        seen.append(event)
        print(orjson.dumps(event).decode() if as_json else format_event(event), flush=True)

    tailer = asyncio.create_task(tail(broker.bootstrap, ["drift-alerts", "retrain-requests"], True, as_json, on_event, stop_tail))
    base = f"http://127.0.0.1:{port}"

    def check() -> None:
        """Raise if the worker or the tail has failed."""
        if worker.poll() is not None:
            raise RuntimeError(f"worker exited with code {worker.returncode}; see {logdir}/worker.log")
        if tailer.done():
            tailer.result()  # its error, if it failed

    def get(path: str):
        check()
        return http_json(base + path, timeout=min(2.0, max(0.1, deadline - time.monotonic())))

    finished = False
    try:
        stage[0] = "waiting for the worker to become ready"
        await _wait(lambda: get("/healthz")[0] == 200)
        say(f"worker ready ({base}/metrics); producing {events} events for each of "
            f"{', '.join(s.model_id for s in streams)}; drift starts at event {drift_at} for fraud and churn")
        stage[0] = "producing the events"
        await produce(broker.bootstrap, streams, events)

        def consumed():
            status = get("/status")[1] or {}
            counts = {m["model_id"]: m["events"] for m in status.get("models", [])}
            return status if all(counts.get(s.model_id) == events for s in streams) else None

        stage[0] = "waiting for the worker to consume every event"
        status = await _wait(consumed)
        published = status["published"]["alerts"] + status["published"]["retrain_requests"]
        stage[0] = "waiting for the alerts to reach the tail"

        def tailed() -> bool:
            check()
            return len(seen) >= published

        await _wait(tailed)
        finished = True
    finally:
        stop_tail.set()
        # The tail ends within 0.2 s of the stop; one still starting (the demo gave up early) is cancelled.
        if finished:
            await asyncio.wait({tailer}, timeout=5)
        tailer.cancel()
        await asyncio.gather(tailer, return_exceptions=True)
        if finished:  # a clean stop; a demo that gave up or failed does not wait for one
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(20)
            except subprocess.TimeoutExpired:
                pass
        if worker.poll() is None:
            worker.kill()
            worker.wait()
        worker_log.close()


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
    if not any(a["model_id"] == "fraud" and a["type"] == "prediction_drift" and a["signal"] == "prediction_score"
               for a in alerts):
        problems.append("no prediction-drift alert for fraud's score")
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
    except DemoTimeout as exc:
        print(f"streamproc: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr if as_json else sys.stdout)
        return 130  # as every command does on Ctrl-C
