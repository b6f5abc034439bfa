"""A checkpoint commits the input offsets only once the broker has acknowledged the state they
go with, without holding up the batches in between; a failed save commits nothing and keeps
the models for the next checkpoint. (Unit test of the worker's bookkeeping, with stand-ins for
the Kafka clients; tests/test_faults.py and tests/test_persistence.py cover crashes against
the real broker and the engine.)"""

from __future__ import annotations

import asyncio

import orjson
import pytest
from aiokafka import TopicPartition
from aiokafka.errors import KafkaTimeoutError

from streamproc.config import load_config
from streamproc.decode import decode_predictions
from streamproc.state import StateStore
from streamproc.synth import ModelStream
from streamproc.worker import MonitorWorker


class Producer:
    """Hands out delivery futures that the test resolves."""

    def __init__(self):
        self.sent: list[tuple[str, bytes]] = []
        self.futures: list[asyncio.Future] = []

    async def send(self, topic, value, key=None):
        self.sent.append((topic, key))
        fut = asyncio.get_running_loop().create_future()
        self.futures.append(fut)
        return fut


class Consumer:
    def __init__(self):
        self.commits: list[dict] = []

    async def commit(self, offsets):
        self.commits.append(dict(offsets))


class Input:
    def __init__(self):
        self.offsets = {TopicPartition("predictions", 0): 10}

    def positions(self):
        return dict(self.offsets)


def worker_with_changes(models: list[str]) -> MonitorWorker:
    w = MonitorWorker(load_config(None, environ={"STREAMPROC_WARMUP_SIZE": "20", "STREAMPROC_WINDOW_SIZE": "20"}))
    w.producer, w.consumer, w.input = Producer(), Consumer(), Input()
    w.state = StateStore("unused:9092", "streamproc-state", "g")
    for model in models:
        batches, _ = decode_predictions([orjson.dumps(e) for e in ModelStream(model, n_numeric=2, seed=5).events(30)])
        w.engine.process(batches)
    w._last_checkpoint = float("-inf")  # due now
    return w


def test_offsets_are_committed_once_the_state_is_acknowledged_and_batches_go_on_meanwhile():
    async def main():
        w = worker_with_changes(["a", "b"])
        await w.checkpoint(force=False)
        assert sorted(k[-1:] for _t, k in w.producer.sent) == [b"a", b"b"]
        assert w.consumer.commits == []  # sent, not acknowledged: nothing committed, and no wait
        w.input.offsets = {TopicPartition("predictions", 0): 25}  # a later batch was processed meanwhile
        w._last_checkpoint = float("-inf")
        await w.checkpoint(force=False)
        assert w.consumer.commits == [] and len(w.producer.sent) == 2  # still on its way: no second one
        for fut in w.producer.futures:
            fut.set_result(None)
        await w.checkpoint(force=False)
        # The offsets of the state that was saved, not the newer ones.
        assert w.consumer.commits == [{TopicPartition("predictions", 0): 10}]
        assert w.metrics.checkpoints._value.get() == 1

    asyncio.run(main())


def test_a_failed_save_commits_nothing_and_keeps_the_models_for_the_next_checkpoint():
    async def main():
        w = worker_with_changes(["a"])
        await w.checkpoint(force=False)
        w.producer.futures[0].set_exception(KafkaTimeoutError())
        await asyncio.sleep(0)
        with pytest.raises(KafkaTimeoutError):
            await w.checkpoint(force=False)
        assert w.consumer.commits == []
        assert w.engine.dirty_models == {"a"}
        stop = asyncio.ensure_future(w.checkpoint(force=True))  # a stop: saved again, and waited for
        while len(w.producer.sent) < 2:
            await asyncio.sleep(0)
        assert not stop.done()
        w.producer.futures[1].set_result(None)
        await stop
        assert w.consumer.commits == [{TopicPartition("predictions", 0): 10}]
        assert not w.engine.dirty_models

    asyncio.run(main())
