"""What crosses between the worker's loop and its router's (which runs in a thread of its own,
``streamproc.loop_thread``), without a broker: the router's lags are read on its loop, a
failure of the router's loop reaches ``on_failure`` on the worker's, its dead letters are
counted apart, and stopping twice is harmless."""

from __future__ import annotations

import asyncio
import threading

from aiokafka import TopicPartition

from streamproc.config import load_config
from streamproc.loop_thread import InlineLoop, LoopThread
from streamproc.worker import MonitorWorker

from .test_lag_gauge import Consumer, _lags


class ThreadNoting(Consumer):
    """A consumer that notes the thread its positions are asked from."""

    def __init__(self, ends: dict):
        super().__init__(ends)
        self.asked_from: set = set()

    async def position(self, tp):
        self.asked_from.add(threading.current_thread().name)
        return await super().position(tp)


def test_the_routers_lags_are_read_on_its_loop_and_exported_by_the_next_pass():
    async def main():
        w = MonitorWorker(load_config(None, environ={}))
        w.router_thread = LoopThread("router-test")
        try:
            w.router = object()  # (only its presence matters here)
            p0 = TopicPartition("predictions", 0)
            r0 = TopicPartition(w.settings.topics.routed_topic(w.settings.group_id), 0)
            w.consumer = ThreadNoting({r0: 10})
            w.router_consumer = ThreadNoting({p0: 300})
            await w._update_gauges()  # asks the router's loop; its figures come with the next pass
            await w.router_thread.run(asyncio.sleep(0))  # (queued after the request: it has run)
            w._last_gauges = float("-inf")
            await w._update_gauges()
            assert _lags(w) == {(r0.topic, "0"): 10, ("predictions", "0"): 300}
            assert w.router_consumer.asked_from == {"router-test"}
            assert w.consumer.asked_from == {threading.current_thread().name}
        finally:
            w.router_thread.close()

    asyncio.run(main())


def test_a_failure_of_the_routers_loop_calls_on_failure_on_the_workers_loop():
    async def main():
        w = MonitorWorker(load_config(None, environ={}))
        w._worker_loop = asyncio.get_running_loop()
        called = asyncio.Event()
        where = []

        def on_failure():
            where.append(threading.current_thread().name)
            called.set()

        w.on_failure = on_failure
        thread = LoopThread("router-test")

        async def a_bug():
            raise ValueError("a bug in routing")

        try:
            stop = await thread.run(_event())
            await thread.run(w._loop(a_bug, lambda: False, None, "routing", stop))
            await asyncio.wait_for(called.wait(), 10)
        finally:
            thread.close()
        assert where == [threading.current_thread().name] and w.failed and not w.ready

    asyncio.run(main())


def test_the_routers_dead_letters_survive_a_monitor_batch_that_fails():
    """A monitor batch whose output fails puts ``published`` back as it was (it is replayed);
    dead letters the router sent meanwhile are not the batch's."""
    class Msg:
        topic, partition, offset, key, value, timestamp, headers = "predictions", 0, 5, None, b"{", 0, []

    class Producer:
        def send(self, *args, **kwargs):
            return None

    async def main():
        w = MonitorWorker(load_config(None, environ={}))
        w.router_producer = Producer()

        def process(msgs):
            w._router_dead_letter(Msg(), "not JSON")  # the router, meanwhile
            raise RuntimeError("the batch's output failed")

        w._process_predictions = process
        try:
            await w._apply([object()], [])
        except RuntimeError:
            pass
        assert w.status()["published"]["dead_letters"] == 1

    asyncio.run(main())


def test_stopping_a_worker_twice_is_harmless():
    async def main():
        w = MonitorWorker(load_config(None, environ={}))
        w.router_thread = LoopThread("router-test")
        w._router_stop = await w.router_thread.run(_event())
        await w.stop()
        await w.stop()
        return w

    w = asyncio.run(main())
    assert w.router_thread.loop.is_closed()
    assert "router-test" not in {t.name for t in threading.enumerate()}


async def _event() -> asyncio.Event:
    return asyncio.Event()


def test_on_the_workers_loop_the_router_shares_the_workers_producer_which_stops_once():
    """Only a router on a thread of its own needs a producer of its own (a client belongs to one
    loop); inline it adds a client and a connection for nothing."""
    stops = []

    class Producer:
        async def stop(self):
            stops.append(self)

    async def main():
        w = MonitorWorker(load_config(None, environ={}))
        w.producer = Producer()
        w.routed_partitions = 4
        w.router_thread = InlineLoop()
        await w.router_thread.run(w._open_router({}))
        assert w.router.producer is w.producer and w.router_producer is w.producer
        await w.stop()

    asyncio.run(main())
    assert len(stops) == 1
