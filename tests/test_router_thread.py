"""The repartitioning worker's router runs on a loop of its own (``streamproc.loop_thread``),
against the real broker: it forwards while the monitor is in the middle of a batch, and it
stops with the worker."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid

import pytest

from streamproc.config import load_config
from streamproc.synth import ModelStream
from streamproc.worker import MonitorWorker

from .conftest import unique_topics
from .test_integration import produce

pytestmark = pytest.mark.integration


def test_the_router_forwards_while_the_monitor_is_busy_with_a_batch(bootstrap):
    topics = {**unique_topics(), "references": f"refs-{uuid.uuid4().hex[:8]}", "state": f"state-{uuid.uuid4().hex[:8]}"}
    env = {"STREAMPROC_BOOTSTRAP": bootstrap, "STREAMPROC_GROUP_ID": f"thread-{uuid.uuid4().hex[:8]}",
           **{f"STREAMPROC_TOPIC_{k.upper()}": v for k, v in topics.items()}}
    worker = MonitorWorker(load_config(None, environ=env))
    events = [json.dumps(e).encode() for e in ModelStream("m", n_numeric=3, seed=5).events(200)]
    first, second = events[:100], events[100:]
    seen_while_busy = []
    process = worker._process_predictions

    def busy(msgs):
        # The monitor's first batch: while it is in hand (this thread blocked, as in a long
        # batch), the second half is produced; the router must forward it meanwhile.
        if not seen_while_busy:
            produce(bootstrap, topics["predictions"], second)
            deadline = time.monotonic() + 30
            while worker.router.forwarded < len(events) and time.monotonic() < deadline:
                time.sleep(0.01)
            seen_while_busy.append(worker.router.forwarded)
        return process(msgs)

    worker._process_predictions = busy

    async def main():
        await worker.start()
        worker.start_loop()
        try:
            produce(bootstrap, topics["predictions"], first)
            while sum(m.events for m in worker.engine.monitors.values()) < len(events):
                await asyncio.sleep(0.05)  # (polled; the worker's loop runs meanwhile)
        finally:
            await worker.stop()

    asyncio.run(asyncio.wait_for(main(), 90))
    assert seen_while_busy == [len(events)]
    assert worker.router_thread.loop.is_closed()
    assert "streamproc-router" not in {t.name for t in threading.enumerate()}
