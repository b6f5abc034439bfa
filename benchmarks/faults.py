"""Crash report: kill -9 a worker N times while it processes a drifting stream, restart it each
time, and compare it with a worker that ran the same input without interruption.

    python benchmarks/faults.py [--crashes 5] [--events 20000] [--seed 1]

Runs on the embedded broker (or STREAMPROC_BOOTSTRAP). Kills land at random moments: while
a batch is processed, between checkpoints, or right after one. Prints events produced,
applied, dead-lettered, lost (must be 0), applied twice (must be 0), and alert ids missing or
extra against the uninterrupted worker (must be 0).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid

import orjson

from streamproc import kafka
from streamproc.broker import EmbeddedBroker, free_port
from streamproc.demo import http_json
from streamproc.synth import Drift, ModelStream
from streamproc.tail import tail


class Worker:
    def __init__(self, bootstrap: str, group: str, topics: dict, logdir: str):
        self.bootstrap, self.group, self.topics, self.logdir = bootstrap, group, topics, logdir
        self.port = free_port()
        self.proc = None
        self.starts = 0

    def start(self) -> None:
        env = dict(os.environ, STREAMPROC_CHECKPOINT_SECONDS="1")
        env.update({f"STREAMPROC_TOPIC_{k.upper()}": v for k, v in self.topics.items()})
        log = open(os.path.join(self.logdir, f"{self.group}-{self.starts}.log"), "wb")
        self.starts += 1
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streamproc", "worker", "--bootstrap", self.bootstrap, "--group-id", self.group,
             "--metrics-port", str(self.port), "--window-size", "500", "--warmup-size", "1000"],
            stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 90
        while http_json(f"http://127.0.0.1:{self.port}/healthz")[0] != 200:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker {self.group} did not become ready; see {self.logdir}")
            time.sleep(0.2)

    def status(self) -> dict:
        return http_json(f"http://127.0.0.1:{self.port}/status")[1] or {}

    def applied(self) -> int:
        return sum(m["events"] for m in self.status().get("models", []))

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(30)


async def alert_ids(bootstrap: str, topic: str, expect_at_least: int, timeout: float = 30) -> set:
    seen: set = set()
    stop = asyncio.Event()

    def on_event(_topic, event):
        seen.add(event["alert_id"])

    task = asyncio.create_task(tail(bootstrap, [topic], True, False, on_event, stop))
    deadline = time.monotonic() + timeout
    while len(seen) < expect_at_least and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    await asyncio.sleep(1.0)  # a moment more for duplicates and stragglers: this is a report, not a test
    stop.set()
    await task
    return seen


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--crashes", type=int, default=5)
    ap.add_argument("--events", type=int, default=20_000, help="events per model (3 models)")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    logdir = tempfile.mkdtemp(prefix="streamproc-faults-")
    external = os.environ.get("STREAMPROC_BOOTSTRAP")
    broker = None if external else EmbeddedBroker().start()
    bootstrap = external or broker.bootstrap
    tag = uuid.uuid4().hex[:6]
    inputs = {"predictions": f"f-predictions-{tag}", "outcomes": f"f-outcomes-{tag}"}

    def outputs(name):
        return {**inputs, "alerts": f"f-alerts-{name}-{tag}", "retrain": f"f-retrain-{name}-{tag}",
                "dead_letter": f"f-dlq-{name}-{tag}", "state": f"f-state-{name}-{tag}"}

    steady = Worker(bootstrap, f"steady-{tag}", outputs("steady"), logdir)
    crashing = Worker(bootstrap, f"crashing-{tag}", outputs("crashing"), logdir)
    try:
        steady.start()
        crashing.start()
        streams = [ModelStream(f"m{i}", n_numeric=10, n_categorical=2, seed=i,
                               drift=Drift(args.events // 2, (f"x{i}",), 1.0)) for i in range(3)]
        events = [orjson.dumps(e) for group in zip(*(s.events(args.events) for s in streams)) for e in group]
        produced = len(events)

        async def produce(batch):
            p = kafka.producer(bootstrap, linger_ms=20)
            await p.start()
            try:
                futures = [await p.send(inputs["predictions"], v) for v in batch]
                await asyncio.gather(*futures)
            finally:
                await p.stop()

        chunks = args.crashes + 1
        size = produced // chunks + 1
        for k in range(chunks):
            asyncio.run(produce(events[k * size:(k + 1) * size]))
            if k < args.crashes:
                # Kill at a random moment while the chunk is being processed (or just after).
                time.sleep(rng.uniform(0.05, 1.5))
                crashing.kill()
                crashing.start()
        deadline = time.monotonic() + 120
        while (steady.applied() < produced or crashing.applied() < produced) and time.monotonic() < deadline:
            time.sleep(0.5)
        s_status, c_status = steady.status(), crashing.status()
        applied = crashing.applied()
        dead = c_status["published"]["dead_letters"]
        expected = asyncio.run(alert_ids(bootstrap, steady.topics["alerts"], s_status["published"]["alerts"]))
        got = asyncio.run(alert_ids(bootstrap, crashing.topics["alerts"], len(expected)))
        print(f"crashes (kill -9)          {args.crashes}")
        print(f"events produced            {produced}")
        print(f"events applied             {applied}  (uninterrupted worker: {steady.applied()})")
        print(f"dead-lettered              {dead}")
        print(f"lost                       {max(produced - applied - dead, 0)}")
        print(f"applied twice              {max(applied - produced, 0)}")
        print(f"alert ids (uninterrupted)  {len(expected)}")
        print(f"alert ids missing          {len(expected - got)}")
        print(f"alert ids extra            {len(got - expected)}")
        print(f"logs in {logdir}")
    finally:
        crashing.stop()
        steady.stop()
        if broker:
            broker.stop()


if __name__ == "__main__":
    main()
