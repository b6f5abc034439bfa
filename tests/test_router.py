"""Envelopes: what a router writes to the routed topic (see ``streamproc.router``)."""

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from streamproc.router import ENVELOPE_BYTES, OUTCOME, PREDICTION, envelopes, unwrap_envelope

_BLOB = st.one_of(st.none(), st.binary(max_size=40), st.binary(min_size=200, max_size=3000))
_ENTRY = st.tuples(
    st.sampled_from(["predictions", "outcomes", "p", "a-topic.name_with-quite-a-long-name" * 3]),
    st.integers(0, 2**31 - 1),
    st.integers(0, 2**63 - 1),
    st.sampled_from([PREDICTION, OUTCOME]),
    _BLOB,
    _BLOB,
    st.integers(-1, 2**63 - 1),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_ENTRY, max_size=400), st.integers(300, 20_000))
def test_envelopes_stay_within_the_limit_encoded_and_keep_every_entry_in_order(entries, limit):
    out = envelopes(entries, limit)
    for value in out:
        assert len(value) <= limit or len(unwrap_envelope(value)) == 1
    assert [tuple(msgspec.structs.astuple(r)) for value in out for r in unwrap_envelope(value)] == entries


def test_small_events_fill_an_envelope_to_its_limit_but_not_past_it():
    # Outcomes of about 100 bytes with their keys: msgpack's per-entry headers are a third of
    # such an envelope, so a limit on the values alone let it grow to ~1.5 times the limit.
    entries = [("outcomes", 7, 10**12 + i, OUTCOME, b"k" * 36, b"x" * 100, 1_733_000_000_000 + i) for i in range(20_000)]
    out = envelopes(entries)
    assert max(map(len, out)) <= ENVELOPE_BYTES
    assert len(out[0]) > 0.85 * ENVELOPE_BYTES  # nor needlessly small (the bound is conservative): each is a round trip
    assert sum(len(unwrap_envelope(v)) for v in out) == len(entries)


def test_an_entry_larger_than_the_limit_travels_alone():
    big = ("predictions", 0, 1, PREDICTION, None, b"x" * 5000, 0)
    small = ("predictions", 0, 2, PREDICTION, None, b"y", 0)
    out = envelopes([small, big, small], limit=1000)
    assert [len(unwrap_envelope(v)) for v in out] == [1, 1, 1]


def test_the_routed_partitions_remembered_are_bounded(monkeypatch):
    # Model ids come from the data: a flood of new ones must not grow the router's memory.
    from types import SimpleNamespace

    import streamproc.router as router_module
    from streamproc.router import Router, model_partition

    monkeypatch.setattr(router_module, "MAX_CACHED_MODELS", 10)
    sent = []
    producer = SimpleNamespace(send=lambda topic, value, partition, headers: sent.append((partition, value)))
    r = Router(None, producer, "predictions", "outcomes", "routed", 4, dead_letter=None, max_buffered=10, max_idle_ms=0)
    msgs = [SimpleNamespace(topic="predictions", partition=0, offset=i, key=None, timestamp=0,
                            value=b'{"model_id": "m%d"}' % i) for i in range(25)]
    r._forward(msgs)
    assert len(r._partition_of) <= 10
    routed = {entry.offset: part for part, value in sent for entry in unwrap_envelope(value)}
    assert routed == {i: model_partition(f"m{i}", 4) for i in range(25)}


def test_restart_markers_go_to_every_routed_partition_before_the_records_and_once_per_assignment():
    """A source partition noticed to have started again gets a marker (end -1) in every routed
    partition and its new beginning committed, before any record is forwarded; one read for
    the first time since its assignment, from no committed offset, gets a marker with the end
    its fetch saw (one read from a committed offset none); none is sent again until the
    partition is assigned again."""
    import asyncio
    from types import SimpleNamespace

    from aiokafka import TopicPartition

    from streamproc.router import RESTART_HEADER, RESTARTED, Router, restart_marker

    events = []

    class Producer:
        def send(self, topic, value, partition, headers):
            events.append(("send", partition, dict(headers), value))
            done = asyncio.get_running_loop().create_future()
            done.set_result(None)
            fut = asyncio.get_running_loop().create_future()
            fut.set_result(done)
            return fut

    lost, fresh, kept = TopicPartition("predictions", 0), TopicPartition("predictions", 1), TopicPartition("predictions", 2)

    class Consumer:
        def assignment(self):
            return {lost, fresh, kept}

        def highwater(self, tp):
            return {lost: 5, fresh: 40, kept: 90}[tp]

        async def committed(self, tp):
            return {lost: 900, fresh: None, kept: 80}[tp]

        async def commit(self, offsets):
            events.append(("commit", offsets))

    r = Router(Consumer(), Producer(), "predictions", "outcomes", "routed", 3, dead_letter=None, max_buffered=10, max_idle_ms=0)
    records = {lost: [SimpleNamespace(offset=0), SimpleNamespace(offset=4)], fresh: [SimpleNamespace(offset=30)],
               kept: [SimpleNamespace(offset=80)]}

    async def run():
        r._restarted({lost}, {}, set())
        await r._mark(records)
        sent = list(events)
        events.clear()
        await r._mark(records)  # marked since assigned: nothing more
        assert events == []
        await r.listener().on_partitions_revoked({lost, fresh, kept})
        await r._mark(records)  # assigned again: the first records are marked again
        return sent, list(events)

    sent, again = asyncio.run(run())
    markers = [(e[1], restart_marker(SimpleNamespace(headers=list(e[2].items()), value=e[3], topic="routed",
                                                   partition=e[1], offset=0))) for e in sent if e[0] == "send"]
    assert all(e[2] == {RESTART_HEADER: b"1"} for e in sent if e[0] == "send")
    assert sorted((part, m.source, m.end) for part, m in markers) == sorted(
        [(p, "predictions:0", RESTARTED) for p in range(3)] + [(p, "predictions:1", 40) for p in range(3)])
    assert sent[-1] == ("commit", {lost: 0})  # the new log's beginning, after the markers
    assert sorted((e[1], restart_marker(SimpleNamespace(headers=list(e[2].items()), value=e[3], topic="routed",
                                                        partition=e[1], offset=0)).end) for e in again if e[0] == "send") \
        == [(p, 40) for p in range(3)]  # (the fake's committed offsets stay as they were)


def test_records_read_again_below_a_restored_routed_position_are_applied_whatever_the_source_watermarks():
    """A record of a routed message below the routed position a model's state was saved at is
    applied in that state; its source watermark may have been reset since by a restart marker
    (the lost log's records before the marker would pass it)."""
    from types import SimpleNamespace

    from streamproc.decode import PredictionBatch
    from streamproc.engine import MonitorEngine
    from streamproc.router import ENVELOPE_HEADER, ReplayedRecord, envelopes, position_tags, routed_segments

    def msg(offset, source_offsets):
        (value,) = envelopes([("p", 0, o, PREDICTION, None, b"{}", 0) for o in source_offsets])
        return SimpleNamespace(topic="r", partition=0, offset=offset, key=None, timestamp=0,
                               headers=[(ENVELOPE_HEADER, b"1")], value=value)

    msgs = [msg(3, [40, 41]), msg(12, [5])]  # the lost log's 40, 41 (before a marker), the new log's 5
    [(records, marker)] = routed_segments(msgs, below={"r:0": 10})
    assert marker is None and [type(r) is ReplayedRecord for r in records] == [True, True, False]
    tags = position_tags(records)
    assert tags == [("p:0", 40, "r:0", 3), ("p:0", 41, "r:0", 3), ("p:0", 5)]
    mon = SimpleNamespace(applied={"r:0": 10, "p:0": 3})  # saved at routed 10, after a marker reset p:0
    batch = PredictionBatch("m", "v", ["a", "b", "c"], [0.0] * 3, [{}] * 3, [None] * 3, [None] * 3)
    batch.positions = tags
    kept, fresh = MonitorEngine._unapplied(batch, mon)
    assert kept.event_ids == ["c"] and fresh["p:0"] == 6
    assert not any(type(r) is ReplayedRecord for r in routed_segments(msgs)[0][0])  # past the replay: plain records


def test_a_rebalance_while_polling_sends_the_router_back_to_the_committed_offsets():
    """The consumer resumes a partition assigned in a rebalance at its committed offset, and a
    poll that spans the rebalance releases records of it, which the merge counts as handed out:
    dropped as stale, the next commit passed them (6 of 50 events lost in an eviction test).
    The router reads them again instead, and forwards and commits nothing of that poll."""
    import asyncio
    from types import SimpleNamespace

    from aiokafka import TopicPartition

    from streamproc.router import Router

    tp = TopicPartition("predictions", 0)
    calls = []

    class Consumer:
        def assignment(self):
            return {tp}

        async def committed(self, tp_):
            return 94

        def seek(self, tp_, offset):
            calls.append(("seek", tp_.partition, offset))

        async def commit(self, offsets):
            calls.append(("commit", offsets))

    class Producer:
        def send(self, *args, **kwargs):
            calls.append(("send",))

    r = Router(Consumer(), Producer(), "predictions", "outcomes", "routed", 4, dead_letter=None, max_buffered=10,
               max_idle_ms=0)
    released = [SimpleNamespace(topic="predictions", partition=0, offset=94 + i, key=None, timestamp=0,
                                value=b'{"model_id": "m"}') for i in range(6)]

    class Input:
        generation = 0

        async def poll(self, timeout_ms, max_records):
            self.generation += 1  # revoked and assigned again while the poll waited
            return released, [], {tp: released}

        def drop(self, tps):
            calls.append(("drop", sorted(t.partition for t in tps)))
            self.generation += 1

    r.input = Input()
    assert asyncio.run(r.run_once(100, 100)) == 0
    assert calls == [("drop", [0]), ("seek", 0, 94)]
    assert not r.in_flight and r.forwarded == 0
