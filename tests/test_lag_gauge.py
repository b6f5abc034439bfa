"""The consumer-lag gauge covers the partitions a worker owns now, not those it owned once
(a stale lag would look like a stuck worker to the StreamprocThroughputStalled rule)."""

from __future__ import annotations

import asyncio
import time

from aiokafka import TopicPartition

from streamproc.config import load_config
from streamproc.worker import MonitorWorker


class Consumer:
    def __init__(self, ends: dict):
        self.ends = ends  # partition -> high watermark of the last fetch
        self.positions: dict = {}
        self.polled: dict = {}  # partition -> when a fetch last answered for it (ms); now if not set

    def assignment(self):
        return set(self.ends)

    def highwater(self, tp):
        return self.ends.get(tp)

    async def position(self, tp):
        return self.positions.get(tp, 0)

    def last_poll_timestamp(self, tp):
        return self.polled.get(tp, time.time() * 1000)


def _lags(w: MonitorWorker) -> dict:
    return {key: child._value.get() for key, child in w.metrics.lag.series.items()}


def test_the_lag_of_a_partition_that_moved_away_is_dropped():
    async def main():
        w = MonitorWorker(load_config(None, environ={}))
        p0, p1 = TopicPartition("predictions", 0), TopicPartition("predictions", 1)
        w.consumer = Consumer({p0: 500, p1: 40})
        await w._update_gauges()
        assert _lags(w) == {("predictions", "0"): 500, ("predictions", "1"): 40}
        w.consumer.ends = {p1: 40}  # p0 was revoked
        w.consumer.positions = {p1: 40}
        w._last_gauges = float("-inf")
        await w._update_gauges()
        assert _lags(w) == {("predictions", "1"): 0}
        text = w.metrics.render().decode()
        assert "streamproc_consumer_lag_messages{partition=\"1\",topic=\"predictions\"} 0.0" in text and "partition=\"0\"" not in text

    asyncio.run(main())


def _stalled(w: MonitorWorker, consumer: str) -> float:
    text = w.metrics.render().decode()
    prefix = f'streamproc_input_stalled_seconds{{consumer="{consumer}"}} '
    return float(next(line for line in text.splitlines() if line.startswith(prefix))[len(prefix):])


def test_a_consumer_with_input_waiting_and_no_progress_reads_as_stalled(monkeypatch):
    import streamproc.worker as worker_module

    now = [1000.0]
    monkeypatch.setattr(worker_module.time, "monotonic", lambda: now[0])

    async def main():
        w = MonitorWorker(load_config(None, environ={}))
        p0 = TopicPartition("predictions", 0)
        w.consumer = Consumer({p0: 500})  # 500 waiting, none applied
        await w._update_gauges()
        now[0] += 700
        assert _stalled(w, "monitor") == 700  # read at the scrape: grows while nothing happens
        w._last_gauges = float("-inf")
        await w._update_gauges()
        assert _stalled(w, "monitor") == 700  # still waiting
        w.consumer.positions = {p0: 500}  # caught up: nothing waiting is no stall
        w._last_gauges = float("-inf")
        await w._update_gauges()
        assert _stalled(w, "monitor") == 0

    asyncio.run(main())


def test_nothing_waiting_counts_as_progress_only_while_fetches_answer(monkeypatch):
    """A fetcher that stopped leaves the last high watermark, so the lag reads 0: with no fetch
    answered for a minute, that is no longer taken for an idle input."""
    import streamproc.worker as worker_module

    now = [1000.0]
    monkeypatch.setattr(worker_module.time, "monotonic", lambda: now[0])

    async def main():
        w = MonitorWorker(load_config(None, environ={}))
        p0 = TopicPartition("predictions", 0)
        w.consumer = Consumer({p0: 500})
        w.consumer.positions = {p0: 500}  # caught up
        w.consumer.polled = {p0: time.time() * 1000 - 1000 * (worker_module.FETCH_STALE_SECONDS + 5)}
        await w._update_gauges()
        now[0] += 700
        assert _stalled(w, "monitor") == 700
        w.consumer.polled = {}  # answering again
        w._last_gauges = float("-inf")
        await w._update_gauges()
        assert _stalled(w, "monitor") == 0

    asyncio.run(main())
