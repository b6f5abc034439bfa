"""streamproc.consume.BatchedInput noticing partitions whose offsets started again (a broker
that lost data), with a stand-in consumer whose positions and high watermarks the test sets.
The real broker's case is tests/test_broker_restart.py."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from aiokafka import TopicPartition

from streamproc.consume import PAST_END_SECONDS, BatchedInput

TP = TopicPartition("predictions", 0)


class Consumer:
    def __init__(self):
        self.fetches: list[dict] = []
        self.pos = {TP: 0}
        self.hw = {TP: None}
        self.sought: list = []
        self.end_queries: list = []

    async def getmany(self, timeout_ms, max_records):
        records = self.fetches.pop(0) if self.fetches else {}
        for tp, msgs in records.items():
            if msgs:
                self.pos[tp] = msgs[-1].offset + 1
                self.hw[tp] = max(self.hw[tp] or 0, self.pos[tp])
        return records

    def assignment(self):
        return set(self.pos)

    def highwater(self, tp):
        return self.hw[tp]

    async def end_offsets(self, tps):
        self.end_queries.append(set(tps))
        return {tp: self.hw[tp] or 0 for tp in tps}

    async def position(self, tp):
        return self.pos[tp]

    async def seek_to_beginning(self, *tps):
        self.sought += tps
        for tp in tps:
            self.pos[tp] = 0

    def paused(self):
        return set()


def records(*offsets):
    return {TP: [SimpleNamespace(topic=TP.topic, partition=0, offset=o, timestamp=1000 + o) for o in offsets]}


def run(steps, first=None):
    """Run (clock, fetch or None, consumer changes) steps; return the consumer and the restarts.
    ``first`` changes the consumer before anything is polled (the partition as assigned)."""
    async def main():
        c = Consumer()
        if first is not None:
            first(c)
        restarts = []
        clock = [0.0]
        source = BatchedInput(c, None, 0, 1000, on_restart=restarts.append)
        source.clock = lambda: clock[0]
        for at, fetch, change in steps:
            clock[0] = at
            if fetch is not None:
                c.fetches.append(fetch)
            change(c)
            _merged, _others, got = await source.poll(0, 100)
            source.done(got)
        return c, restarts, source

    return asyncio.run(main())


def nothing(c):
    pass


def broker_lost_data(c):  # the new, empty log: the high watermark 0, the position where it was
    c.hw[TP] = 0


def test_a_position_past_the_end_for_a_moment_is_left_alone():
    """A new partition leader may report a lower high watermark for a moment (healthy Kafka)."""
    def lower(c):
        c.hw[TP] = 5

    def caught_up(c):
        c.hw[TP] = 10

    c, restarts, _ = run([(0.0, records(*range(10)), nothing), (2.0, None, lower), (2.0 + PAST_END_SECONDS - 3, None, lower),
                          (2.0 + PAST_END_SECONDS - 1, None, caught_up), (2.0 + PAST_END_SECONDS + 5, None, lower)])
    assert c.sought == [] and restarts == []


def test_a_position_that_stays_past_the_end_is_read_again_from_the_beginning():
    c, restarts, source = run([(0.0, records(*range(10)), nothing), (2.0, None, broker_lost_data),
                               (2.0 + PAST_END_SECONDS - 1, None, nothing)])
    assert c.sought == [] and restarts == []
    c, restarts, source = run([(0.0, records(*range(10)), nothing), (2.0, None, broker_lost_data),
                               (2.0 + PAST_END_SECONDS + 1, None, nothing), (3.0 + PAST_END_SECONDS + 1, records(0, 1), nothing)])
    assert c.sought == [TP] and restarts == [{TP}]
    assert source.positions() == {TP: 2}  # the new log's records, counted from its beginning


def test_records_below_those_already_read_mean_the_partition_started_again():
    """What Kafka's OFFSET_OUT_OF_RANGE makes aiokafka do by itself: go back to the beginning."""
    c, restarts, source = run([(0.0, records(*range(10)), nothing), (1.0, records(0, 1, 2), nothing)])
    assert restarts == [{TP}] and c.sought == []
    assert source.positions() == {TP: 3}
    c, restarts, _ = run([(0.0, records(*range(10)), nothing), (1.0, records(10, 11), nothing)])
    assert restarts == []


def committed_past_the_end(c):  # assigned with a committed offset of the lost log
    c.pos[TP], c.hw[TP] = 100, 0


def test_a_partition_assigned_past_its_end_is_read_from_the_beginning_before_the_first_fetch():
    """Producers fill a restarted broker at once: waiting PAST_END_SECONDS would let them write
    past the stale offset, and the records below it would be skipped."""
    c, restarts, source = run([(0.0, records(0, 1, 2), nothing)], first=committed_past_the_end)
    assert c.sought == [TP] and restarts == [{TP}]
    assert source.positions() == {TP: 3}
    c, restarts, source = run([(0.0, records(100, 101), nothing), (1.0, None, nothing)],
                              first=lambda c: c.pos.update({TP: 100}) or c.hw.update({TP: 100}))
    assert c.sought == [] and restarts == [] and source.positions() == {TP: 102}


def test_ends_are_asked_once_per_assignment_and_again_after_an_outage():
    async def main():
        c = Consumer()
        restarts = []
        source = BatchedInput(c, None, 0, 1000, on_restart=restarts.append)
        assert not source.ends_checked
        c.fetches.append(records(*range(10)))
        source.done((await source.poll(0, 100))[2])
        await source.poll(0, 100)
        assert source.ends_checked and c.end_queries == [{TP}] and restarts == []
        broker_lost_data(c)  # the broker was away, and came back empty
        source.recheck_ends()
        assert not source.ends_checked
        await source.poll(0, 100)
        assert source.ends_checked and c.sought == [TP] and restarts == [{TP}]
        source.drop({TP})  # revoked, then assigned again
        assert not source.ends_checked
        await source.poll(0, 100)
        assert len(c.end_queries) == 3 and c.sought == [TP]  # at its beginning now: nothing to do

    asyncio.run(main())
