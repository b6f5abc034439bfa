"""streamproc.consume.BatchedInput noticing partitions whose offsets started again (a broker
that lost data), with a stand-in consumer whose positions and high watermarks the test sets.
The real broker's case is tests/test_broker_restart.py."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

from aiokafka import TopicPartition
from aiokafka.errors import KafkaError
import pytest

from streamproc.consume import PAST_END_SECONDS, BatchedInput

TP = TopicPartition("predictions", 0)


class Consumer:
    """The broker's side: ``end``, where each partition's next record goes, and ``listed``, a
    lower end that list-offsets answers (Tansu's, when the last record batch held several
    records). The consumer's: ``pos``, ``committed``, and what the last fetch answered
    (``hw``, ``polled``: no answer while ``answering`` is False)."""

    def __init__(self, tps=(TP,)):
        self.fetches: list[dict] = []
        self.pos = {tp: 0 for tp in tps}
        self.committed_at = {tp: None for tp in tps}
        self.end = {tp: 0 for tp in tps}
        self.listed: dict = {}
        self.hw = {tp: None for tp in tps}
        self.polled = {tp: None for tp in tps}
        self.answering = True
        self.sought: list = []
        self.end_queries: list = []
        self.while_listing = None  # called during end_offsets (something happening meanwhile)
        self.while_positioning = None  # called during position, with the partition
        self.fetched_after: list = []  # per getmany, how many times the ends had been asked
        self.failing: set = set()  # partitions whose position cannot be had
        self.paused_tps: set = set()

    async def getmany(self, timeout_ms, max_records):
        self.fetched_after.append(len(self.end_queries))
        records = self.fetches.pop(0) if self.fetches else {}
        records = {tp: msgs for tp, msgs in records.items() if tp not in self.paused_tps}  # dropped, as aiokafka does
        for tp, msgs in records.items():
            if msgs:
                self.pos[tp] = msgs[-1].offset + 1
                self.end[tp] = max(self.end[tp], self.pos[tp])
        if self.answering:
            for tp in self.pos:
                self.hw[tp], self.polled[tp] = self.end[tp], time.time() * 1000 + 0.001  # answered after the check
        return records

    def assignment(self):
        return set(self.pos)

    def highwater(self, tp):
        return self.hw[tp]

    def last_poll_timestamp(self, tp):
        return self.polled[tp]

    async def end_offsets(self, tps):
        self.end_queries.append(set(tps))
        if self.while_listing is not None:
            self.while_listing()
        return {tp: self.listed.get(tp, self.end[tp]) for tp in tps}

    async def position(self, tp):
        if tp in self.failing:
            raise KafkaError("no answer")
        if self.while_positioning is not None:
            self.while_positioning(tp)
        return self.pos[tp]

    async def committed(self, tp):
        if tp in self.failing:
            raise KafkaError("not answered")
        return self.committed_at[tp]

    async def seek_to_beginning(self, *tps):
        self.sought += tps
        for tp in tps:
            self.pos[tp] = 0

    def seek(self, tp, offset):
        self.pos[tp] = offset

    def paused(self):
        return set(self.paused_tps)

    def pause(self, *tps):
        self.paused_tps.update(tps)

    def resume(self, *tps):
        self.paused_tps.difference_update(tps)


class Reports(list):
    """What ``on_restart`` was told: the partitions of each report (the list's items) and, per
    report, the lost logs' committed offsets (``lost``) and which were noticed from them alone
    (``again``)."""

    def __init__(self):
        super().__init__()
        self.lost: list[dict] = []
        self.again: list[set] = []

    def __call__(self, tps, lost, again):
        self.append(tps)
        self.lost.append(lost)
        self.again.append(again)


def records(*offsets, tp=TP):
    return {tp: [SimpleNamespace(topic=tp.topic, partition=tp.partition, offset=o, timestamp=1000 + o) for o in offsets]}


def run(steps, first=None, tps=(TP,), restored=None):
    """Run (clock, fetch or None, consumer changes) steps; return the consumer, the restarts and
    the input. ``first`` changes the consumer before anything is polled (the partition as assigned);
    ``restored``: the offsets the state restored had read (``BatchedInput.restored``)."""
    async def main():
        c = Consumer(tps)
        if first is not None:
            first(c)
        restarts = Reports()
        clock = [0.0]
        source = BatchedInput(c, None, 0, 1000, on_restart=restarts)
        if restored is not None:
            source.restored(restored, restored)
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


async def read_ten():
    """A consumer, the restarts it reports, and an input that has read offsets 0 to 9."""
    c = Consumer()
    restarts = Reports()
    source = BatchedInput(c, None, 0, 1000, on_restart=restarts)
    c.fetches.append(records(*range(10)))
    source.done((await source.poll(0, 100))[2])
    return c, restarts, source


def nothing(c):
    pass


def broker_lost_data(c):  # the new, empty log; the consumer's position where it was
    c.end[TP] = 0


def test_a_position_past_the_end_for_a_moment_is_left_alone():
    """A new partition leader may report a lower high watermark for a moment (healthy Kafka)."""
    def lower(c):
        c.end[TP] = 5

    def caught_up(c):
        c.end[TP] = 10

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
    c.pos[TP] = c.committed_at[TP] = 100


def test_a_partition_assigned_past_its_end_is_read_from_the_beginning_after_one_fetch():
    """Producers fill a restarted broker at once: waiting PAST_END_SECONDS would let them write
    past the stale offset, and the records below it would be skipped."""
    c, restarts, source = run([(0.0, None, nothing)], first=committed_past_the_end)
    assert c.sought == [TP] and restarts == [{TP}] and source.ends_checked
    assert source.positions() == {TP: 0}  # committed while it stays empty: not noticed again at every check
    c, restarts, source = run([(0.0, None, nothing), (0.5, records(0, 1, 2), nothing)], first=committed_past_the_end)
    assert c.sought == [TP] and restarts == [{TP}] and source.positions() == {TP: 3}
    c, restarts, source = run([(0.0, records(100, 101), nothing), (1.0, None, nothing)],
                              first=lambda c: committed_past_the_end(c) or c.end.update({TP: 100}))
    assert c.sought == [] and restarts == [] and source.positions() == {TP: 102} and source.ends_checked


def test_an_end_listed_too_low_is_confirmed_by_a_fetch_before_anything_is_read_again():
    """Tansu lists the first offset of the last record batch, plus one: a healthy partition read
    to its end looks past it until a fetch answers with its high watermark."""
    def tansu(c):
        committed_past_the_end(c)
        c.end[TP], c.listed[TP] = 100, 91

    c, restarts, source = run([(0.0, None, lambda c: setattr(c, "answering", False))], first=tansu)
    assert not source.ends_checked and c.sought == []  # not ready: not known yet
    c, restarts, source = run([(0.0, None, nothing), (1.0, records(100, 101), nothing)], first=tansu)
    assert source.ends_checked and c.sought == [] and restarts == [] and source.positions() == {TP: 102}
    c, restarts, source = run([(0.0, records(100, 101), nothing)], first=tansu)  # confirmed by records too
    assert source.ends_checked and c.sought == [] and restarts == [] and source.positions() == {TP: 102}


def test_a_client_that_went_back_to_the_beginning_before_the_check_is_noticed():
    """On Kafka, aiokafka may have had OFFSET_OUT_OF_RANGE and gone back to the beginning by
    itself before the first poll: the committed offset is what the models applied."""
    def reset_by_the_client(c):
        committed_past_the_end(c)
        c.pos[TP] = 0

    c, restarts, source = run([(0.0, records(0, 1, 2), nothing)], first=lambda c: reset_by_the_client(c) or c.end.update({TP: 3}))
    assert restarts == [{TP}] and c.sought == [] and source.positions() == {TP: 3}
    c, restarts, source = run([(0.0, None, nothing)], first=reset_by_the_client)  # the new log still empty
    assert restarts == [{TP}] and c.sought == [] and source.ends_checked and source.positions() == {TP: 0}


def test_a_client_that_went_back_to_the_beginning_during_an_outage_is_noticed():
    def back_to_the_beginning(c):  # the broker came back empty, and the client found out first
        c.pos[TP] = c.end[TP] = 0

    for fetch in (None, records(0, 1, 2)):
        async def main():
            c, restarts, source = await read_ten()
            back_to_the_beginning(c)
            source.recheck_ends()
            if fetch is not None:
                c.fetches.append(fetch)
            source.done((await source.poll(0, 100))[2])
            return c, restarts, source

        c, restarts, source = asyncio.run(main())
        assert restarts == [{TP}] and c.sought == [] and source.positions() == {TP: 3 if fetch else 0}


def test_ends_are_checked_once_per_assignment_and_again_after_an_outage():
    async def main():
        c = Consumer()
        restarts = Reports()
        source = BatchedInput(c, None, 0, 1000, on_restart=restarts)
        assert not source.ends_checked
        c.fetches.append(records(*range(10)))
        source.done((await source.poll(0, 100))[2])
        await source.poll(0, 100)
        assert source.ends_checked and c.end_queries == [{TP}] and restarts == []
        broker_lost_data(c)  # the broker was away, and came back empty
        source.recheck_ends()
        assert not source.ends_checked
        c.answering = False  # the high watermark the consumer knows is the old log's
        await source.poll(0, 100)
        assert not source.ends_checked and c.sought == [] and restarts == []
        c.answering = True
        await source.poll(0, 100)
        assert source.ends_checked and c.sought == [TP] and restarts == [{TP}]
        source.drop({TP})  # revoked, then assigned again
        assert not source.ends_checked
        await source.poll(0, 100)
        assert len(c.end_queries) == 3 and c.sought == [TP]  # at its beginning now: nothing to do
        source.assigned({TP})  # assigned again, nothing revoked (the consumer still lists it meanwhile)
        assert not source.ends_checked
        await source.poll(0, 100)
        assert source.ends_checked and len(c.end_queries) == 4

    asyncio.run(main())


def test_a_check_overtaken_by_a_rebalance_is_done_again_before_anything_is_fetched():
    async def main():
        c = Consumer()
        source = BatchedInput(c, None, 0, 1000)

        def reassigned():
            c.while_listing = None
            source.assigned({TP})

        c.while_listing = reassigned
        await source.poll(0, 100)
        assert source.ends_checked and len(c.end_queries) == 2 and c.fetched_after == [2]

    asyncio.run(main())


def test_a_partition_revoked_while_others_are_confirmed_ends_the_pass():
    other = TopicPartition("predictions", 1)

    async def main():
        c = Consumer((TP, other))
        restarts = Reports()
        source = BatchedInput(c, None, 0, 1000, on_restart=restarts)
        c.fetches.append({**records(*range(10)), **records(*range(5), tp=other)})
        await source.poll(0, 100)
        c.end[TP] = c.end[other] = 0  # the broker came back empty
        source.recheck_ends()
        c.answering = False
        await source.poll(0, 100)
        c.answering = True

        def revoke(tp):
            if tp == TP:
                c.while_positioning = None
                source.drop({other})
                del c.pos[other]

        c.while_positioning = revoke
        await source.poll(0, 100)  # the pass ends: nothing acted on from a stale assignment
        assert c.sought == [] and restarts == []
        await source.poll(0, 100)
        assert c.sought == [TP] and restarts == [{TP}] and source.ends_checked
        return c

    asyncio.run(main())


def test_a_restart_acted_on_is_reported_even_when_a_later_partition_fails():
    other = TopicPartition("predictions", 1)
    restarts = Reports()

    async def main():
        c = Consumer((TP, other))
        source = BatchedInput(c, None, 0, 1000, on_restart=restarts)
        c.fetches.append({**records(*range(10)), **records(*range(5), tp=other)})
        await source.poll(0, 100)
        broker_lost_data(c)
        source.recheck_ends()
        c.failing = {other}
        with pytest.raises(KafkaError):
            await source.poll(0, 100)  # the check asks the position of both
        c.failing = set()
        c.answering = False
        await source.poll(0, 100)
        c.answering, c.failing = True, {other}
        source.clock = lambda: time.monotonic() + 100  # the past-the-end scan is due, and fails on the other partition
        with pytest.raises(KafkaError):
            await source.poll(0, 100)
        return c

    c = asyncio.run(main())
    assert c.sought == [TP] and restarts == [{TP}]


def test_a_partition_assigned_again_lower_than_read_is_not_a_restart():
    """Assigned again after a revocation whose commit failed: the group's offset is below what
    this consumer had read, and the records from it are re-read, not new."""
    async def main():
        c, restarts, source = await read_ten()
        c.pos[TP] = c.committed_at[TP] = 5
        source.assigned({TP})
        c.fetches.append(records(5, 6, 7))
        source.done((await source.poll(0, 100))[2])
        assert restarts == [] and c.sought == [] and source.positions() == {TP: 8}

    asyncio.run(main())


def test_an_assigned_partition_is_resumed_from_the_groups_committed_offset_until_it_is_read():
    """What a replay may take as passed on a partition with nothing read since its assignment:
    the input hands out nothing below the offset the group committed."""
    idle = TopicPartition("outcomes", 0)

    async def main():
        c = Consumer((TP, idle))
        c.pos[TP] = c.committed_at[TP] = 40
        c.pos[idle] = c.committed_at[idle] = 7
        c.end.update({TP: 40, idle: 7})
        source = BatchedInput(c, None, 0, 1000)
        assert source.resumed_at() == {}  # not checked yet
        c.fetches.append(records(40, 41))
        source.done((await source.poll(0, 100))[2])
        assert source.resumed_at() == {TP: 40, idle: 7} and source.positions() == {TP: 42}
        source.assigned({idle})  # assigned again: where the group resumes is asked again
        assert source.resumed_at() == {TP: 40}
        source.drop({TP})
        assert source.resumed_at() == {}

    asyncio.run(main())


def commits_gone(c):  # the topic deleted and recreated: its committed offsets went with it
    c.committed_at[TP] = None


def test_a_restored_state_past_the_end_means_the_partition_started_again():
    """A recreated topic has no committed offsets left: only the restored state, which had read
    the partition up to 300, shows that it lost its data. Nothing is sought (the client is at
    the new beginning already); the models are told."""
    c, restarts, source = run([(0.0, None, nothing)], first=commits_gone, restored={TP: 300})
    assert restarts == [{TP}] and c.sought == [] and source.ends_checked
    c, restarts, source = run([(0.0, records(0, 1, 2), nothing)], first=commits_gone, restored={TP: 300})
    assert restarts == [{TP}] and source.positions() == {TP: 3}


def test_a_restored_state_ahead_of_the_committed_offset_is_not_a_restart():
    """A worker that saved its state, then crashed before committing, left the state ahead of
    the committed offset (the models skip what they applied): within the partition's end, also
    when the end is listed too low (Tansu) and only a fetch shows it."""
    def ahead(c):
        c.pos[TP] = c.committed_at[TP] = 100
        c.end[TP] = 350

    c, restarts, source = run([(0.0, records(100, 101), nothing)], first=ahead, restored={TP: 300})
    assert restarts == [] and source.ends_checked and source.positions() == {TP: 102}
    c, restarts, source = run([(0.0, None, nothing), (1.0, records(100, 101), nothing)],
                              first=lambda c: ahead(c) or c.listed.update({TP: 341}), restored={TP: 300})
    assert restarts == [] and c.sought == [] and source.ends_checked and source.positions() == {TP: 102}
    c, restarts, source = run([(0.0, records(100, 101), nothing)],
                              first=lambda c: ahead(c) or c.listed.update({TP: 341}), restored={TP: 350})
    assert restarts == [] and source.positions() == {TP: 102}


def test_a_restart_noticed_from_the_groups_committed_offset_alone_is_told_so():
    """A worker that counted a restart and crashed before committing the new log leaves the
    lost log's committed offset, past the end, and its state, within it: the restart is told
    as noticed from that committed offset alone (``again``), which may be one counted already.
    Noticed from the restored state, from records read since, or by a running consumer, it
    is not; the committed offset is told whenever known (the group's, or the owner's commits)."""
    def stale_commit(c, client_reset=False):  # the new log holds 50 records, the restored state read 40
        committed_past_the_end(c)
        c.end[TP] = 50
        if client_reset:  # Kafka: the client went back to the beginning by itself
            c.pos[TP] = 0

    c, restarts, _ = run([(0.0, None, nothing)], first=stale_commit, restored={TP: 40})  # Tansu: nothing fetched
    assert restarts == [{TP}] and restarts.lost == [{TP: 100}] and restarts.again == [{TP}]
    for fetch in (None, records(0, 1, 2)):
        c, restarts, _ = run([(0.0, fetch, nothing)], first=lambda c: stale_commit(c, True), restored={TP: 40})
        assert restarts == [{TP}] and restarts.lost == [{TP: 100}] and restarts.again == [{TP}]
    for client_reset in (False, True):  # the state past the end too (Kafka: the client went back, nothing fetched)
        c, restarts, _ = run([(0.0, None, nothing)], first=lambda c: stale_commit(c, client_reset), restored={TP: 60})
        assert restarts == [{TP}] and restarts.lost == [{TP: 100}] and restarts.again == [set()]
    c, restarts, _ = run([(0.0, None, nothing)], first=commits_gone, restored={TP: 300})  # no committed offset left
    assert restarts == [{TP}] and restarts.lost == [{}] and restarts.again == [set()]

    async def running(answers: bool):
        """Read on from the committed offset 10, committed 14, then the broker lost the data
        (and, unless it ``answers``, does not say what was committed)."""
        c = Consumer()
        c.pos[TP] = c.committed_at[TP] = 10
        c.end[TP] = 10
        restarts = Reports()
        source = BatchedInput(c, None, 0, 1000, on_restart=restarts)
        c.fetches.append(records(10, 11, 12, 13))
        source.done((await source.poll(0, 100))[2])
        c.committed_at[TP] = 14
        if not answers:
            c.failing.add(TP)
        c.fetches.append(records(0, 1))
        source.done((await source.poll(0, 100))[2])
        return restarts

    restarts = asyncio.run(running(True))
    assert restarts == [{TP}] and restarts.lost == [{TP: 14}] and restarts.again == [set()]
    restarts = asyncio.run(running(False))  # counted as before: without the offset, nothing to match later
    assert restarts == [{TP}] and restarts.lost == [{}] and restarts.again == [set()]


def test_a_partition_past_its_end_gives_no_resumed_offset_until_confirmed():
    """A replay may take a partition with nothing read since its assignment as passed up to
    the group's committed offset, but not while that offset is past the end unconfirmed: the
    partition may be read again from its beginning (the restored state's positions there must
    still be checked)."""
    other = TopicPartition("outcomes", 0)

    async def main():
        c = Consumer((TP, other))
        c.pos[TP] = c.committed_at[TP] = 100
        c.end[TP] = 50
        c.committed_at[other] = 0
        c.answering = False  # TP's past-the-end offset not confirmed yet
        source = BatchedInput(c, None, 0, 1000)
        c.fetches.append(records(0, 1, 2, tp=other))
        source.done((await source.poll(0, 100))[2])
        assert source.resumed_at() == {other: 0} and source.positions() == {other: 3}

    asyncio.run(main())


def test_a_restored_state_given_during_a_check_is_checked_again():
    """The models are loaded while the first check of the assignment is on its way: that check
    must not mark the partition checked without the restored state's offset."""
    async def main():
        c = Consumer()
        commits_gone(c)
        restarts = Reports()
        source = BatchedInput(c, None, 0, 1000, on_restart=restarts)
        c.while_listing = lambda: (source.restored({TP}, {TP: 300}), setattr(c, "while_listing", None))
        await source.poll(0, 100)
        await source.poll(0, 100)
        return restarts, len(c.end_queries)

    restarts, queries = asyncio.run(main())
    assert restarts == [{TP}] and queries == 2


def held_input(c):
    """An input just assigned TP, held while its models load (see ``BatchedInput.hold``), and
    the restarts it reports."""
    restarts = Reports()
    source = BatchedInput(c, None, 0, 1000, on_restart=restarts)
    source.assigned({TP})
    source.hold({TP})
    return source, restarts


def test_nothing_of_a_partition_is_handed_out_while_its_models_load():
    """aiokafka fetches a new assignment while the rebalance listener still loads its models:
    held, its records wait, and once the restored state is known they are checked against it
    before they are handed out (a recreated topic: read from 0, the state at 300); a state
    within the end lets them through as they are."""
    async def main(restored_at):
        c = Consumer()
        commits_gone(c)
        source, restarts = held_input(c)
        c.fetches.append(records(0, 1, 2))
        _, during, _ = await source.poll(0, 100)
        assert during == [] and not source.ends_checked and restarts == []
        c.fetches.append(records(3))
        _, during, _ = await source.poll(0, 100)
        assert during == [] and restarts == []
        source.restored({TP}, {TP: restored_at})
        _, after, raw = await source.poll(0, 100)
        source.done(raw)
        return restarts, [m.offset for m in after], c.paused(), source.positions()

    restarts, handed_out, paused, positions = asyncio.run(main(300))
    assert restarts == [{TP}] and handed_out == [0, 1, 2, 3] and positions == {TP: 4}
    restarts, handed_out, paused, positions = asyncio.run(main(3))
    assert restarts == [] and handed_out == [0, 1, 2, 3] and positions == {TP: 4}


def test_records_read_again_from_the_beginning_while_the_models_load_drop_those_of_the_lost_log():
    """Held, a partition is still fetched: one that loses its data meanwhile is read again from
    0 by the client. The records of the lost log read before must not be joined in front of
    the new log's (the jump back would go unseen): they are dropped, and the restart is noticed
    from the committed offset as usual before anything is handed out."""
    async def main():
        c = Consumer()
        c.pos[TP] = c.committed_at[TP] = 1000
        c.end[TP] = 1000
        source, restarts = held_input(c)
        c.fetches.append(records(*range(1000, 1005)))
        assert (await source.poll(0, 100))[1] == []
        c.pos[TP], c.end[TP] = 0, 0  # the broker lost the log; the client starts again at 0
        c.fetches.append(records(0, 1, 2))
        assert (await source.poll(0, 100))[1] == []
        source.restored({TP}, {})
        _, out, _ = await source.poll(0, 100)
        return restarts, [m.offset for m in out]

    restarts, handed_out = asyncio.run(main())
    assert restarts == [{TP}] and handed_out == [0, 1, 2]


def test_records_fetched_while_the_models_are_restored_wait_for_the_end_check():
    """The listener may finish loading while a poll waits for its fetch: that fetch's records of
    the partitions just restored were not checked against the restored positions yet, so they
    wait for the next poll's check."""
    class Loading(Consumer):
        async def getmany(self, timeout_ms, max_records):
            if self.on_fetch is not None:
                self.on_fetch()
                self.on_fetch = None
            return await super().getmany(timeout_ms, max_records)

    async def main():
        c = Loading()
        commits_gone(c)
        source, restarts = held_input(c)
        c.on_fetch = lambda: source.restored({TP}, {TP: 300})
        c.fetches.append(records(0, 1, 2))
        _, during, _ = await source.poll(0, 100)
        assert during == [] and restarts == []
        _, out, _ = await source.poll(0, 100)
        return restarts, [m.offset for m in out]

    restarts, handed_out = asyncio.run(main())
    assert restarts == [{TP}] and handed_out == [0, 1, 2]


def test_an_outcome_is_handed_out_only_after_the_predictions_stamped_before_it():
    # Predictions wait in the merge for every partition to pass them; outcomes handed out at once
    # would find nothing to join (on a backlog, outcomes, small, are fetched far ahead of them).
    p0, p1, o0 = TopicPartition("predictions", 0), TopicPartition("predictions", 1), TopicPartition("outcomes", 0)

    def rec(tp, offset, ts):
        return SimpleNamespace(topic=tp.topic, partition=tp.partition, offset=offset, timestamp=ts)

    async def main():
        c = Consumer((p0, p1, o0))
        source = BatchedInput(c, "predictions", 1000, 60_000)
        source.assigned({p0, p1, o0})
        handed = []
        for fetch in ({o0: [rec(o0, 0, 150)], p0: [rec(p0, 0, 100)]},  # p1 not seen yet: anything may come
                      {p1: [rec(p1, 0, 50), rec(p1, 1, 200)]},  # predictions before 100 go; 100 may still have company
                      {p0: [rec(p0, 1, 300)]}):  # everything before 200 goes: the prediction at 100, then its outcome
            c.fetches.append(fetch)
            merged, others, got = await source.poll(0, 100)
            handed.append(([(m.partition, m.offset) for m in merged], [(m.topic, m.offset) for m in others]))
            source.done(got)
            if len(handed) == 2:
                assert source.positions()[o0] == 0  # the outcome, not handed out, is not committed past
        assert handed == [([], []), ([(1, 0)], []), ([(0, 0)], [("outcomes", 0)])]
        assert source.positions()[o0] == 1

    asyncio.run(main())


# -- found by review: merging while partitions are paused, idle, or a poll fails ---------------


def _rec(tp, offset, ts, value=b"{}"):
    return SimpleNamespace(topic=tp.topic, partition=tp.partition, offset=offset, timestamp=ts, key=None, value=value,
                           headers=[])


def _poller(c, src, out: list, item):
    """A poll of ``src`` answered by ``fetch``, what it hands out appended to ``out`` (as ``item``)."""
    async def poll(fetch):
        c.fetches.append(fetch)
        merged, others, got = await src.poll(0, 100)
        out.extend(item(m) for m in merged + others)
        src.done(got)
    return poll


def test_a_partition_paused_with_its_buffer_full_is_never_idle():
    """Partition 0 fills its buffer and is paused; its producer goes on (a record stamped 105 in
    the log, not fetched while paused). Partition 1 reads a backlog stamped past 105: none of
    its later records goes before 105 (before, the paused partition looked quiet and caught up
    against its stale high watermark, counted as idle, and left the horizon)."""
    p0, p1 = TopicPartition("predictions", 0), TopicPartition("predictions", 1)
    log = {p0: [_rec(p0, i, 100 + i) for i in range(4)], p1: [_rec(p1, i, 10 + 7 * i) for i in range(30)]}

    class Log(Consumer):
        async def getmany(self, timeout_ms, max_records):  # a fetch reads the log; paused partitions are not asked
            want = self.fetches.pop(0) if self.fetches else {}
            out = {}
            for tp, n in want.items():
                if tp in self.paused_tps:
                    continue
                got = [m for m in log[tp] if m.offset >= self.pos[tp]][:n]
                if got:
                    out[tp] = got
                    self.pos[tp] = got[-1].offset + 1
                self.hw[tp], self.polled[tp] = len(log[tp]), time.time() * 1000
            return out

    c = Log((p0, p1))
    src = BatchedInput(c, "predictions", max_buffered=4, max_idle_ms=50)
    src.assigned({p0, p1})
    order = []

    async def run():
        poll = _poller(c, src, order, lambda m: m.timestamp)
        await poll({p0: 4, p1: 1})  # p0's buffer full: paused
        log[p0].append(_rec(p0, 4, 105))
        await asyncio.sleep(0.1)
        for _ in range(30):
            await poll({p0: 5, p1: 3})
        for _ in range(3):
            await asyncio.sleep(0.1)
            await poll({p0: 5, p1: 5})

    asyncio.run(run())
    assert 105 in order and order == sorted(order)


@pytest.mark.parametrize("second", ["predictions", "outcomes"])
@pytest.mark.parametrize("history", ["after a pause", "a new topic", "after a rewind"])
def test_an_outcome_waits_like_a_prediction_for_a_prediction_in_flight_on_an_idle_partition(second, history):
    """Both partitions are idle (caught up and silent: after a pause in production, or a new
    topic's, which have delivered nothing yet); prediction X (stamped now) is in flight on
    predictions[0] when Y, stamped 5 ms later, and a later record arrive: a prediction or an
    outcome, Y goes after X. Before, an outcome went at once after a pause, and found nothing to
    join; and on a new topic, Y went at once (a router or worker idle for more than max_idle
    released a topic's first records in arrival order, which a replay does not reproduce), as it
    did after a rewind (the router's after a failed delivery: what the partitions had delivered
    is forgotten) that came more than max_idle after the first records (found by review)."""
    p0, other = TopicPartition("predictions", 0), TopicPartition(second, 0 if second == "outcomes" else 1)
    c = Consumer((p0, other))
    src = BatchedInput(c, "predictions", 1000, 100)
    src.assigned({p0, other})
    order = []
    first = 0 if history == "a new topic" else 1  # offsets of X and Y

    async def run():
        poll = _poller(c, src, order, lambda m: (m.topic, m.partition, m.offset))
        old = time.time() * 1000 - 10_000
        await poll({p0: [_rec(p0, 0, old)], other: [_rec(other, 0, old)]} if first else {})
        if history == "after a rewind":
            await asyncio.sleep(0.2)
            await poll({})
            src.drop({p0, other})  # (positions stay: the committed offsets)
            src.assigned({p0, other})
            await poll({})
        await asyncio.sleep(0.2)
        await poll({})  # both quiet and caught up: idle
        await asyncio.sleep(0.2)
        now = time.time() * 1000
        await poll({other: [_rec(other, first, now + 5), _rec(other, first + 1, now + 6)]})  # Y first; X in flight
        await poll({p0: [_rec(p0, first, now)]})
        for _ in range(5):
            await asyncio.sleep(0.1)
            await poll({})

    asyncio.run(run())
    assert order.index(("predictions", 0, first)) < order.index((other.topic, other.partition, first))


def test_a_poll_that_fails_after_its_fetch_reads_those_records_again():
    """A KafkaError after ``getmany`` returned (here the end check cannot get another
    partition's position in time) hands nothing out: the consumer goes back to the first
    record fetched, so the records are read again, not committed past (before, outcomes[0]'s
    offsets 1 and 2 were never forwarded and the commit went to 4)."""
    p0, p1 = TopicPartition("outcomes", 0), TopicPartition("outcomes", 1)
    c = Consumer((p0, p1))
    src = BatchedInput(c, None, 100, 1000)
    src.assigned({p0, p1})
    t = [0.0]
    src.clock = lambda: t[0]
    handed = []

    async def run():
        poll = _poller(c, src, handed, lambda m: (m.partition, m.offset))
        await poll({p0: [_rec(p0, 0, 1000)], p1: [_rec(p1, 0, 1000)]})
        t[0], c.failing = 5.0, {p1}
        with pytest.raises(KafkaError):
            await poll({p0: [_rec(p0, 1, 1001), _rec(p0, 2, 1002)]})
        assert c.pos[p0] == 1  # back to the first record of the failed fetch
        c.failing, t[0] = set(), 10.0
        await poll({p0: [_rec(p0, 1, 1001), _rec(p0, 2, 1002), _rec(p0, 3, 1003)]})  # read again from there

    asyncio.run(run())
    assert handed == [(0, 0), (1, 0), (0, 1), (0, 2), (0, 3)]
    assert src.positions()[p0] == 4
