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
from aiokafka.errors import CommitFailedError, KafkaError, KafkaTimeoutError

from streamproc.config import load_config
from streamproc.decode import decode_predictions
from streamproc.state import StateStore
from streamproc.synth import ModelStream
from streamproc.worker import MonitorWorker


class Producer:
    """Hands out delivery futures that the test resolves."""

    def __init__(self):
        self.sent: list[tuple[str, bytes]] = []
        self.values: dict[bytes, bytes] = {}  # the latest value per key
        self.futures: list[asyncio.Future] = []

    async def send(self, topic, value, key=None):
        self.sent.append((topic, key))
        self.values[key] = value
        fut = asyncio.get_running_loop().create_future()
        self.futures.append(fut)
        return fut


class Consumer:
    """A group member of one partition; ``evicted``: the broker refuses its commits (as Kafka's
    and Tansu's do for a member whose session expired)."""

    def __init__(self):
        self.commits: list[dict] = []
        self.group: dict = {}  # the group's committed offsets
        self.evicted = False

    def assignment(self):
        return {TopicPartition("predictions", 0)}

    async def committed(self, tp):
        return self.group.get(tp)

    async def commit(self, offsets):
        if self.evicted:
            raise CommitFailedError("the group has rebalanced and assigned the partitions to another member")
        self.commits.append(dict(offsets))
        self.group.update(offsets)


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
    w.pacer.next_at = float("-inf")  # due now
    return w



def load_from(w: MonitorWorker, store: dict, fail_after: int | None = None) -> None:
    """Stand-ins for what loading models needs: a state topic holding ``store``'s records (read
    in order, as they are when read; a ``KafkaTimeoutError`` after ``fail_after`` of them), and
    an input that takes note of nothing."""
    from types import SimpleNamespace

    async def read(apply, timeout=60.0):
        for n, (model_id, record) in enumerate(list(store.items())):
            if n == fail_after:
                raise KafkaTimeoutError("state topic not read to its end")
            apply(model_id, record)
        if fail_after is not None and fail_after >= len(store):
            raise KafkaTimeoutError("state topic not read to its end")

    async def nothing():
        pass

    w.state = SimpleNamespace(read=read)
    w.input = SimpleNamespace(assigned=lambda tps: None, hold=lambda tps: None, restored=lambda tps, offsets: None)
    w._ensure_topics = nothing

def test_offsets_are_committed_once_the_state_is_acknowledged_and_batches_go_on_meanwhile():
    async def main():
        w = worker_with_changes(["a", "b"])
        await w.checkpoint(force=False)
        assert sorted(k[-1:] for _t, k in w.producer.sent) == [b"a", b"b"]
        assert w.consumer.commits == []  # sent, not acknowledged: nothing committed, and no wait
        w.input.offsets = {TopicPartition("predictions", 0): 25}  # a later batch was processed meanwhile
        w.pacer.next_at = float("-inf")
        await w.checkpoint(force=False)
        assert w.consumer.commits == [] and len(w.producer.sent) == 2  # still on its way: no second one
        for fut in w.producer.futures:
            fut.set_result(None)
        await w.checkpoint(force=False)
        # The offsets of the state that was saved, not the newer ones.
        assert w.consumer.commits == [{TopicPartition("predictions", 0): 10}]
        assert w.metrics.checkpoints._value.get() == 1

    asyncio.run(main())


def test_a_worker_its_group_evicted_sends_no_state():
    """Its partitions' new owner may have saved newer state of the same models: this older state,
    sent after it, would be the one the compacted state topic keeps."""
    async def main():
        w = worker_with_changes(["a"])
        w.consumer.group = {TopicPartition("predictions", 0): 5}  # the group has committed before
        w.consumer.evicted = True
        with pytest.raises(CommitFailedError):
            await w.checkpoint(force=True)
        assert w.producer.sent == [] and w.engine.dirty_models == {"a"}
        w.consumer.evicted = False  # (a member: the same commit is a no-op, and the state goes)
        w.pacer.next_at = float("-inf")
        await w.checkpoint(force=False)
        assert [k[-1:] for _t, k in w.producer.sent] == [b"a"]
        assert w.consumer.commits == [{TopicPartition("predictions", 0): 5}]

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


def test_checkpoints_are_paced_to_a_tenth_of_the_loops_time():
    """An export that took d seconds of the loop's time puts the next periodic checkpoint at
    least 10·d after it began (never sooner than checkpoint_seconds); a forced one still runs."""
    import time

    from streamproc.worker import CheckpointPacer

    async def main():
        w = worker_with_changes(["a", "b"])
        engine_records = w.engine.dirty_records

        def slow_records(watermark):  # 30 ms of the loop's time per model
            for item in engine_records(watermark):
                end = time.perf_counter() + 0.03
                while time.perf_counter() < end:
                    pass
                yield item

        w.engine.dirty_records = slow_records
        w.pacer = CheckpointPacer(interval=0.1, max_share=0.1, now=float("-inf"))  # due now; 0.1 s unless paced
        began = time.monotonic()
        await w.checkpoint(force=False)
        for fut in w.producer.futures:
            fut.set_result(None)
        assert len(w.producer.sent) == 2
        work = w.metrics.checkpoint_seconds._sum.get()
        assert 0.06 <= work < 0.5
        assert w.pacer.next_at >= began + 10 * work - 0.01
        assert w.pacer.next_at > time.monotonic()
        w.engine.process(decode_predictions([orjson.dumps(e) for e in ModelStream("a", n_numeric=2, seed=6).events(5)])[0])
        await w.checkpoint(force=False)  # not due: the change waits
        assert len(w.producer.sent) == 2 and w.engine.dirty_monitors
        stop = asyncio.ensure_future(w.checkpoint(force=True))
        while len(w.producer.sent) < 3:
            await asyncio.sleep(0)
        w.producer.futures[-1].set_result(None)
        await stop
        assert not w.engine.dirty_monitors

    asyncio.run(main())


def _slow(w: MonitorWorker, seconds: float) -> list:
    """Make each model's export take ``seconds`` of the loop's time; return the list the
    exported model ids are appended to, in order."""
    import time

    engine_records, order = w.engine.dirty_records, []

    def slow_records(watermark):
        for item in engine_records(watermark):
            end = time.perf_counter() + seconds
            while time.perf_counter() < end:
                pass
            order.append(item[0])
            yield item

    w.engine.dirty_records = slow_records
    return order


def _feed(w: MonitorWorker, model: str, seed: int, version: str | None = None) -> None:
    events = list(ModelStream(model, n_numeric=2, seed=seed).events(5))
    for e in events:
        if version is not None:
            e["model_version"] = version
    w.engine.process(decode_predictions([orjson.dumps(e) for e in events])[0])


async def _forced(w: MonitorWorker) -> None:
    """A forced checkpoint (a stop's, a revocation's), the broker acknowledging all it sends."""
    stop = asyncio.ensure_future(w.checkpoint(force=True))
    while not stop.done():
        for fut in w.producer.futures:
            if not fut.done():
                fut.set_result(None)
        await asyncio.sleep(0)
    await stop


def _saved(w: MonitorWorker, model: str) -> dict:
    """The state record last sent for ``model``: its versions' watermarks."""
    import pickle
    import zlib

    [value] = [v for k, v in w.producer.values.items() if k.endswith(b"\x1f" + model.encode())]
    return {version: mon.applied for version, mon in pickle.loads(zlib.decompress(value))["monitors"].items()}


def test_a_periodic_checkpoint_exports_in_slices_between_batches_and_commits_the_offsets_of_its_start():
    """After a batch, an export spends at most its budget; the batches between its slices move
    the input on: models exported later are saved with those batches (a version they created
    included) and stamped with the later positions, the offsets committed are those of the
    export's start, and a model changed after it was exported is saved again by the next
    checkpoint."""
    p0 = TopicPartition("predictions", 0)

    async def main():
        w = worker_with_changes(["a", "b", "c"])
        order = _slow(w, 0.03)
        await w.checkpoint(force=False, budget=0.02)
        assert len(order) == 1 and w.producer.sent == [] and w._export is not None
        first = order[0]
        later = min({"a", "b", "c"} - {first})
        _feed(w, first, 7)  # a batch: the model exported already changes, one not exported yet gets
        _feed(w, later, 8, version="v2")  # a new version, and the input moves on
        w.input.offsets = {p0: 25}
        for _ in range(3):  # (the end of the models is found by the call after the last one's)
            await w.checkpoint(force=False, budget=0.02)
        assert sorted(order) == ["a", "b", "c"] and len(w.producer.sent) == 3 and w._export is None
        assert _saved(w, first) == {"default": {"predictions:0": 10}}
        assert _saved(w, later) == {"default": {"predictions:0": 25}, "v2": {"predictions:0": 25}}
        for fut in w.producer.futures:
            fut.set_result(None)
        await w.checkpoint(force=False)
        assert w.consumer.commits == [{p0: 10}]  # every record is at or past it
        assert w.engine.dirty_monitors == {(first, "default")}

    asyncio.run(main())


def test_a_forced_checkpoint_finishes_the_export_in_slices_then_saves_what_changed_since():
    """A stop or a revocation saves everything and commits the current offsets: an export on its
    way is finished, not left, and what the batches since changed is saved after it."""
    p0 = TopicPartition("predictions", 0)

    async def main():
        w = worker_with_changes(["a", "b"])
        order = _slow(w, 0.03)
        await w.checkpoint(force=False, budget=0.02)
        assert len(order) == 1
        _feed(w, order[0], 7)  # a batch after the first slice
        w.input.offsets = {p0: 25}
        await _forced(w)
        assert order == [order[0], ({"a", "b"} - {order[0]}).pop(), order[0]]
        # (between the two, the membership check commits the group's offsets again: see confirm_membership)
        assert w.consumer.commits == [{p0: 10}, {p0: 10}, {p0: 25}]
        assert _saved(w, order[0]) == {"default": {"predictions:0": 25}}
        assert not w.engine.dirty_monitors and not w.engine.dirty_models

    asyncio.run(main())


@pytest.mark.parametrize("why", ["input restarted", "restart marker", "version retired", "models forgotten"])
def test_an_export_in_slices_is_abandoned_when_positions_or_models_change_under_it(why):
    """Its records so far would stamp positions the models forget (a restart), or save models the
    worker dropped: nothing of it is sent, every model it was to save is saved by the next
    checkpoint, due at once, in one go (so that what abandons exports cannot starve them). A
    marker that no model forgets by leaves it be."""
    from types import SimpleNamespace

    async def main():
        w = worker_with_changes(["a", "b"])
        order = _slow(w, 0.03)
        await w.checkpoint(force=False, budget=0.02)
        assert len(order) == 1 and w._export is not None
        if why == "input restarted":
            w._input_restarted({TopicPartition("predictions", 0)})
            w._apply_restarts()
        elif why == "restart marker":
            w.routed_partitions = 1
            w._forget_source(SimpleNamespace(routed="routed:0", source="predictions:0", end=99, offset=3))
            assert w._export is not None  # (past every watermark: nothing forgotten)
            w._forget_source(SimpleNamespace(routed="routed:0", source="predictions:0", end=-1, offset=3))
        elif why == "version retired":  # (the retired one need not be in the export: it could be)
            w.engine.retire_idle_versions = lambda: [("c", "default")]
            w._last_retire_sweep = float("-inf")
            w._retire_idle_versions()
        else:
            w._forget_models()
        assert w._export is None and w.producer.sent == []
        if why != "models forgotten":
            assert {key[0] for key in w.engine.dirty_monitors} | w.engine.dirty_models == {"a", "b"}
            assert w.pacer.due(time.monotonic())
            await w.checkpoint(force=False, budget=0.02)
            assert sorted(k[-1:] for _t, k in w.producer.sent if b"\x00restarts" not in k) == [b"a", b"b"]

    import time

    asyncio.run(main())


def test_the_pacer_keeps_the_configured_interval_when_exports_are_quick():
    from streamproc.worker import CheckpointPacer

    pacer = CheckpointPacer(interval=5.0, max_share=0.1, now=100.0)
    assert not pacer.due(104.0) and pacer.due(105.0)
    pacer.started(105.0)
    pacer.finished(work=0.2)  # 10 x 0.2 = 2 s < 5 s
    assert not pacer.due(109.9) and pacer.due(110.0)
    pacer.started(110.0)
    pacer.finished(work=3.0)  # 30 s
    assert not pacer.due(139.9) and pacer.due(140.0)
    pacer.started(140.0)
    pacer.finished(work=60.0)  # 600 s, capped: a crash must not replay without bound
    assert not pacer.due(259.9) and pacer.due(260.0)


def test_a_checkpoint_on_its_way_commits_nothing_for_a_partition_that_restarted():
    """Its offsets are of the log the broker lost: committed, they would put the group past the
    new end again (see streamproc.consume)."""
    async def main():
        w = worker_with_changes(["a"])
        other = TopicPartition("predictions", 1)
        w.input.offsets = {TopicPartition("predictions", 0): 10, other: 7}
        await w.checkpoint(force=False)
        w._input_restarted({TopicPartition("predictions", 0)})
        w._apply_restarts()
        assert w.engine.dirty_monitors  # the models forget that partition's offsets, and are saved again
        for fut in w.producer.futures:
            fut.set_result(None)
        await w.checkpoint(force=False)
        assert w.consumer.commits == [{other: 7}]

    asyncio.run(main())


def test_an_export_on_its_way_commits_nothing_for_a_partition_a_poll_noticed_restarted():
    """A poll runs outside the lock: while a revocation's forced checkpoint finishes an export,
    it may notice a restart, which the export's offsets (of the lost log) must not commit."""
    p0, other = TopicPartition("predictions", 0), TopicPartition("predictions", 1)

    async def main():
        w = worker_with_changes(["a", "b"])
        w.input.offsets = {p0: 10, other: 7}
        _slow(w, 0.03)
        await w.checkpoint(force=False, budget=0.02)
        w._input_restarted({p0})
        await _forced(w)
        assert w.consumer.commits[0] == {other: 7}

    asyncio.run(main())


def test_a_restart_of_a_revoked_partition_is_left_to_its_next_owner():
    """A poll runs outside the worker's lock, so it may notice a restart of a partition while
    its revocation's checkpoint is on its way; and a count not saved (that checkpoint failed)
    would be saved later from here, after the next owner's positions, which would then read as
    of a lost log. Both are the next owner's to notice and count."""
    p0, p1, kept = (TopicPartition("predictions", p) for p in range(3))

    async def main():
        w = worker_with_changes(["a"])
        w._input_restarted({p1}, {p1: 9}, set())
        w._apply_restarts()  # counted, not saved yet

        async def checkpoint_while_a_poll_notices_restarts(force=False):
            w._input_restarted({p0, kept}, {p0: 30}, set())
            raise KafkaError("not acknowledged")

        w.checkpoint = checkpoint_while_a_poll_notices_restarts
        w.input.drop = lambda tps: None
        await w._revoked({p0, p1})
        assert [entry[0] for entry in w._restarted] == [{"predictions:2"}]
        assert w.engine.restarts.unsaved == {} and w.engine.restarts.counts == {"predictions:1": 1}

    asyncio.run(main())


def test_a_restart_noticed_while_models_load_is_applied_to_the_models_loaded():
    """A poll runs outside the worker's lock, so an input restart may be noticed while
    ``_assigned`` is still restoring models: forgotten at once, the offsets would come back with
    the models restored after it, and the new log's records below them would be skipped."""
    w = worker_with_changes(["a", "b"])
    records = w.engine.export_dirty({"predictions:0": 30, "predictions:1": 4})
    w.engine.drop_all()
    w.engine.import_record("a", records["a"])  # loading...
    w._input_restarted({TopicPartition("predictions", 0)})
    w.engine.import_record("b", records["b"])  # ...loaded after the restart was noticed
    w._apply_restarts()
    for obj in [*w.engine.monitors.values(), *w.engine.joiners.values()]:
        assert obj.applied == {"predictions:1": 4}
    assert w.engine.replay_until == {"predictions:1": 4} and not w._restarted


def test_a_routed_partition_read_again_forgets_the_watermarks_of_its_models_only():
    """Repartitioned: a restart of one routed partition forgot every model's source watermarks,
    so what a router forwards again (it crashed between forwarding and committing) was applied
    twice to the models of the other routed partitions (reproduced on the real broker: 200
    events of a model applied twice, after a restart of a routed partition holding no model)."""
    from streamproc.router import model_partition

    models = ["a", "b", "c", "d", "e", "f"]
    w = worker_with_changes(models)
    w.repartition, w.routed_partitions = True, 4
    for obj in [*w.engine.monitors.values(), *w.engine.joiners.values()]:
        obj.applied = {"predictions:0": 30, "predictions:1": 4}
    restarted = model_partition("a", 4)
    w._input_restarted({TopicPartition("g-routed", restarted)}, every=True)
    w._apply_restarts()
    forgot = {key[0] for key, mon in w.engine.monitors.items() if not mon.applied}
    assert forgot == {m for m in models if model_partition(m, 4) == restarted} != set(models)
    for model_id, joiner in w.engine.joiners.items():
        assert bool(joiner.applied) == (model_id not in forgot)


def test_a_state_over_the_record_limit_is_not_sent_the_others_are_saved_and_committed(caplog):
    async def main():
        w = worker_with_changes(["small"])
        batches, _ = decode_predictions([orjson.dumps(e) for e in ModelStream("big", n_numeric=40, seed=5).events(30)])
        w.engine.process(batches)
        sizes = dict((m, len(r)) for m, r in w.engine.dirty_records({}))
        w.engine.dirty_monitors.update(w.engine.monitors)  # (exported above: changed again)
        big, small = "big", "small"
        assert sizes[big] > sizes[small]
        w.state.max_record_bytes = (sizes[small] + sizes[big]) // 2  # the larger one is over it
        await w.checkpoint(force=False)
        assert [k.rsplit(b"\x1f", 1)[1] for _t, k in w.producer.sent] == [small.encode()]
        w.producer.futures[0].set_result(None)
        await w.checkpoint(force=False)
        assert w.consumer.commits == [{TopicPartition("predictions", 0): 10}]  # the others' progress is kept
        assert w.metrics.state_too_large._value.get() == 1 and w.metrics.state_unsaved._value.get() == 1
        assert [r.getMessage() for r in caplog.records if r.levelname == "ERROR" and big in r.getMessage()]
        # Changed again and still too large: counted, not logged again.
        w.engine.dirty_monitors.update(w.engine.monitors)
        w.pacer.next_at = float("-inf")
        await w.checkpoint(force=False)
        assert w.metrics.state_too_large._value.get() == 2
        assert len([r for r in caplog.records if r.levelname == "ERROR"]) == 1
        # It fits again: saved, and no longer counted as unsaved.
        for fut in w.producer.futures:
            if not fut.done():
                fut.set_result(None)
        await w.checkpoint(force=False)
        w.state.max_record_bytes = 10 * sizes[big]
        w.engine.dirty_monitors.update(w.engine.monitors)
        w.pacer.next_at = float("-inf")
        await w.checkpoint(force=False)
        assert big.encode() in [k.rsplit(b"\x1f", 1)[1] for _t, k in w.producer.sent]
        assert w.metrics.state_unsaved._value.get() == 0

    asyncio.run(main())


def test_a_standby_worker_loads_the_state_when_it_is_given_partitions():
    """More workers than partitions: a worker given none holds nothing. When another worker
    dies it is given partitions with nothing revoked from it, and loads the state as it is
    then, not as it was at its own start."""
    from types import SimpleNamespace

    from streamproc.engine import MonitorEngine

    w = MonitorWorker(load_config(None, overrides={"window_size": 20, "warmup_size": 20, "route": "direct"}, environ={}))
    owner = MonitorEngine(w.config)
    events = [orjson.dumps(e) for e in ModelStream("a", n_numeric=2, seed=5).events(60)]
    owner.process(decode_predictions(events[:30])[0])
    store = dict(owner.export_dirty({"predictions:0": 30}))
    load_from(w, store)

    async def main():
        await w._assigned(set())  # the standby
        assert not w.engine.dormant and not w.engine.monitors
        owner.process(decode_predictions(events[30:])[0])
        store.update(owner.export_dirty({"predictions:0": 60}))  # the owner saved on, then died
        await w._revoked(set())
        await w._assigned({TopicPartition("predictions", 0)})

    asyncio.run(main())
    w.engine.thaw("a")
    assert w.engine.monitors[("a", "default")].events == 60


def test_on_the_direct_route_the_replay_ends_once_this_workers_partitions_pass_their_watermarks():
    """A model's record stamps every partition its saving worker read: with several workers on
    the direct route, most are other workers' partitions, which never reach this one. Waiting
    for them, the replay never ended, and every batch was checked against the watermarks."""
    from types import SimpleNamespace

    w = MonitorWorker(load_config(None, overrides={"route": "direct"}, environ={}))
    mine = TopicPartition("predictions", 0)
    idle = TopicPartition("outcomes", 0)
    w.consumer = SimpleNamespace(assignment=lambda: {mine, idle})
    resumed = {mine: 90, idle: 30}
    w.input = SimpleNamespace(positions=lambda: {mine: 120}, resumed_at=lambda: dict(resumed))
    w.engine.replay_until = {"predictions:0": 100, "predictions:1": 500, "outcomes:1": 30, "outcomes:0": 30}
    w._end_replay()  # outcomes[0], idle since assigned, resumed at its watermark: nothing below it comes
    assert w.engine.replay_until == {}
    w.engine.replay_until = {"predictions:0": 200, "predictions:1": 500, "outcomes:0": 25}
    w._end_replay()  # its own partition not there yet: still replaying, for it alone
    assert w.engine.replay_until == {"predictions:0": 200}
    w.engine.replay_until = {"predictions:0": 100, "outcomes:0": 31}
    w._end_replay()  # the state saved past the commit on outcomes[0]: its records from 30 are checked
    assert w.engine.replay_until == {"outcomes:0": 31}


@pytest.mark.parametrize("rebalance_during_the_load", [False, True])
def test_a_rewind_checks_the_restored_positions_even_when_a_rebalance_overlaps_it(rebalance_during_the_load):
    """A rewind reloads the models of a recreated topic's partition (its committed offset gone,
    the saved models at offset 300, the new log at 0-2). A rebalance that keeps the partition
    may run its listener meanwhile: it finds the models loaded, and must still hand the restored
    positions to the input, else the new log's records would be skipped as applied."""
    from types import SimpleNamespace

    from streamproc.consume import BatchedInput
    from streamproc.engine import MonitorEngine

    from .test_consume import TP, Consumer, records
    from .test_persistence import CONFIG, LOG, process

    saved = MonitorEngine(CONFIG)
    process(saved, LOG[:600])
    topic = saved.export_dirty({"predictions:0": 300})

    class State:
        async def read(self, apply):
            await asyncio.sleep(0.05)  # a load takes a while
            for name, record in topic.items():
                apply(name, record)

    async def nothing():
        pass

    async def main():
        c = Consumer()
        c.committed_at[TP] = None
        w = MonitorWorker.__new__(MonitorWorker)
        w.repartition, w.routed_partitions, w.state_sizes, w._too_large = False, 1, {}, set()
        w.engine, w.lock, w.state = MonitorEngine(CONFIG), asyncio.Lock(), State()
        w._restarted, w._saving, w._in_flight, w._must_rewind, w._unexported = [], None, False, True, set()
        w._stream_drifting = set()
        w.metrics = SimpleNamespace(forget_model=lambda m: None, start_model=lambda m: None,
                                    state_unsaved=SimpleNamespace(set=lambda v: None))
        w._ensure_topics = nothing
        w.consumer = c
        w.input = BatchedInput(c, "predictions", 1000, 0, w._input_restarted)

        async def rebalance():  # the listener of a rejoin that kept the partition
            await asyncio.sleep(0.01)
            await w._assigned({TP})

        tasks = [asyncio.create_task(w._rewind())]
        if rebalance_during_the_load:
            tasks.append(asyncio.create_task(rebalance()))
        await tasks[0]
        c.fetches.append(records(0, 1, 2))
        await w.input.poll(0, 100)
        await asyncio.gather(*tasks)
        return w._restarted, c.paused(), w.input.ends_checked

    restarted, paused, checked = asyncio.run(main())
    assert restarted == [({"predictions:0"}, True, {}, set(), None)] and paused == set() and checked


class Stoppable:
    async def stop(self):
        pass


@pytest.mark.parametrize("why", ["in_flight", "must_rewind"])
def test_a_stop_saves_nothing_while_the_state_is_not_one_to_go_on_from(why):
    """A batch applied whose output the broker did not acknowledge (the loop was backing off to
    rewind when SIGTERM came), or models loaded part-way: saving them would stamp state ahead
    of, or older than, the committed offsets, so a restart would apply the batch twice or lose
    events. The stop leaves the last checkpoint as it is; the same goes for a revocation."""
    w = worker_with_changes(["a"])
    setattr(w, f"_{why}", True)
    w.producer.stop = w.consumer.stop = Stoppable().stop
    w.input.drop = lambda tps: None
    asyncio.run(w.stop(timeout=5))
    assert w.producer.sent == [] and w.consumer.commits == []
    w = worker_with_changes(["a"])
    setattr(w, f"_{why}", True)
    w.input.drop = lambda tps: None
    asyncio.run(w._revoked({TopicPartition("predictions", 0)}))
    assert w.producer.sent == [] and w.consumer.commits == []


def test_a_load_that_fails_part_way_keeps_nothing_it_read():
    """The records read before the failure may be older ones of some models (the state topic is
    compacted lazily): held, a later checkpoint would save them over the newer ones."""
    from types import SimpleNamespace

    from streamproc.engine import MonitorEngine

    w = MonitorWorker(load_config(None, overrides={"window_size": 20, "warmup_size": 20, "route": "direct"}, environ={}))
    owner = MonitorEngine(w.config)
    owner.process(decode_predictions([orjson.dumps(e) for e in ModelStream("a", n_numeric=2, seed=5).events(30)])[0])
    load_from(w, owner.export_dirty({"predictions:0": 30}), fail_after=1)
    held = []
    install = w.engine.import_record
    w.engine.import_record = lambda *a, **k: (install(*a, **k), held.append(set(w.engine.dormant)))[0]
    asyncio.run(w._assigned({TopicPartition("predictions", 0)}))
    assert held == [{"a"}] and w._must_rewind
    assert not w.engine.monitors and not w.engine.dormant and not w.engine.dirty_monitors
