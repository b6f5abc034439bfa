"""Reading input in batches: one topic's partitions merged in timestamp order, the others after them.

Shared by the worker (which reads predictions and outcomes directly, or the repartitioned
topic) and the router (which reads predictions and outcomes to repartition them by model).
The ordering rule itself is ``streamproc.ordering.MergeBuffer``; this module adds what needs
a consumer: pausing full partitions, and deciding which partitions are idle.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from typing import Callable, Optional

from aiokafka.errors import IllegalStateError, KafkaError

from .ordering import MergeBuffer

log = logging.getLogger(__name__)


async def caught_up(consumer, tps) -> set:
    """The partitions whose position has reached the high watermark of the last fetch.

    The fetch high watermark is used, not ``end_offsets()``: Tansu's ListOffsets under-reports
    the end when the last record batch held several records.
    """
    done = set()
    for tp in tps:
        hw = consumer.highwater(tp)
        if hw is not None and await consumer.position(tp) >= hw:
            done.add(tp)
    return done


async def lags(consumer) -> dict:
    """Messages between the position and the last fetch's high watermark, per assigned partition."""
    out = {}
    for tp in consumer.assignment():
        hw = consumer.highwater(tp)
        if hw is not None:
            out[tp] = max(0, hw - await consumer.position(tp))
    return out


def fetched_since(consumer, since_ms: float) -> bool:
    """Whether a fetch answered for every assigned partition since ``since_ms`` (epoch ms):
    only then does a lag of 0 mean nothing is waiting, not a fetcher that stopped (an idle
    partition is asked again every ``fetch_max_wait_ms``; a paused one, whose records wait in
    the merge, is not asked)."""
    for tp in consumer.assignment():
        try:
            polled = consumer.last_poll_timestamp(tp)
        except (AssertionError, IllegalStateError):  # revoked meanwhile
            continue
        if polled is None or polled < since_ms:
            return False
    return True


PREFETCH_YIELDS = 3


async def prefetch() -> None:
    """Let aiokafka's fetch routine send the next fetch requests before a batch is processed.

    ``getmany`` only marks the drained partitions as ready to fetch; the requests go out when
    the fetch routine next runs (a wake-up, then a task that writes the request: three turns
    of the event loop). Without these turns they wait until the whole batch is processed, and
    the next ``getmany`` waits a full round trip; with them the broker prepares the next batch
    while this one is processed (about a third less time in ``getmany``, measured with 20,000-
    record batches on the embedded broker).
    """
    for _ in range(PREFETCH_YIELDS):
        await asyncio.sleep(0)


COMMIT_TIMEOUT = 15.0
PAST_END_SECONDS = 10.0  # how long a position must stay past its partition's end to count as lost data


async def within(awaitable, failure: str, timeout: float = COMMIT_TIMEOUT):
    """Await a request, failing with a ``KafkaError`` ("``failure`` within ``timeout`` s")
    after ``timeout`` s: aiokafka retries some errors, such as a topic that vanished with its
    broker, for ever."""
    try:
        return await asyncio.wait_for(awaitable, timeout)
    except asyncio.TimeoutError:
        raise KafkaError(f"{failure} within {timeout:.0f} s") from None


async def commit(consumer, offsets: dict, timeout: float = COMMIT_TIMEOUT) -> None:
    """Commit offsets, failing with a ``KafkaError`` after ``timeout`` s (see ``within``)."""
    await within(consumer.commit(offsets), "offset commit not acknowledged", timeout)


async def confirm_membership(consumer, timeout: float = COMMIT_TIMEOUT) -> None:
    """Fail unless ``consumer`` is still a member of its group's current generation.

    It commits again the group's committed offset of each assigned partition: a no-op for a
    member, refused by the broker for one it evicted (a stall longer than the session timeout;
    aiokafka raises ``CommitFailedError``), which may not know it yet. Partitions the group never
    committed are left out, so before the group's first commit this checks nothing.
    """
    assigned = list(consumer.assignment())
    committed = await asyncio.gather(*(within(consumer.committed(tp), "committed offsets not known", timeout)
                                       for tp in assigned))
    offsets = {tp: off for tp, off in zip(assigned, committed) if off is not None}
    if offsets:
        await commit(consumer, offsets, timeout)


async def seek_committed(consumer, tps) -> None:
    """Move each partition back to its committed offset (the beginning if none), as a restart would."""
    for tp in tps:
        committed = await consumer.committed(tp)
        if committed is None:
            await consumer.seek_to_beginning(tp)
        else:
            consumer.seek(tp, committed)


class BatchedInput:
    """A subscribed consumer read a batch at a time.

    Records of ``merged_topic`` (None: no topic) are released in the order of
    ``MergeBuffer``; records of other topics (outcomes) once every merged record stamped before
    them is (an outcome handed out before its prediction would find nothing to join: on a
    backlog, outcomes, small, are fetched far ahead of the predictions the merge holds back),
    and without a merged topic at once, in partition order.
    ``positions()`` gives, per partition, the next offset not yet handled (handed out and
    marked ``done``): what may be committed. ``generation`` changes when partitions are
    dropped, so a caller can tell that a batch it polled before a rebalance is stale.
    """

    def __init__(self, consumer, merged_topic: Optional[str], max_buffered: int, max_idle_ms: int,
                 on_restart: Optional[Callable[[set, dict, set], None]] = None):
        self.consumer = consumer
        # Called with the partitions read again from their beginning, the group's committed
        # offsets of their lost logs where known, and those of them noticed from that committed
        # offset alone at their assignment (see ``_restarts``).
        self.on_restart = on_restart
        self.merged_topic = merged_topic
        self.merge = MergeBuffer(max_buffered=max_buffered)
        self.after = MergeBuffer(max_buffered=max_buffered)  # other topics' records, with a merged topic
        self.max_idle = max_idle_ms / 1000
        self.next: dict = {}  # next offset per unmerged partition, once its records are done
        self.last_arrival: dict = {}  # monotonic time records last arrived, per merged partition
        self._done: dict = {}  # positions() as of the last done()
        self._expected: dict = {}  # per partition, the offset after the last record fetched
        self._past_end: dict = {}  # per partition, since when (monotonic) its position is past its end
        self._ends_checked: set = set()  # partitions checked against their end since assigned (see _check_ends)
        # Per partition past its listed end: (its offset then, when asked in ms, the restored state's offset).
        self._unconfirmed: dict = {}
        self._epoch = 0  # changes with the assignment, and when every end must be checked again
        self._restarted_at: dict = {}  # per partition read again from its beginning, and empty since: where it starts
        self._resumed_at: dict = {}  # per partition, the group's committed offset when it was assigned (see resumed_at)
        self._from_commit: set = set()  # partitions checked at the group's committed offset, nothing read since
        self._restored: dict = {}  # per partition, the offset the restored state read up to (see restored)
        self._loading: set = set()  # partitions whose models are being loaded (see hold)
        self._held: set = set()  # partitions whose records wait: loading, or not checked since (see hold)
        self._stash: dict = {}  # per partition, its records fetched while held
        self._last_end_check = -math.inf
        self.clock = time.monotonic  # for the past-the-end timing (tests set their own)
        self.generation = 0

    async def poll(self, timeout_ms: int, max_records: int) -> tuple[list, list, dict]:
        """One fetch: (merged records released now, other records, the raw fetch)."""
        c = self.consumer
        while not await self._check_ends():
            pass  # overtaken by a rebalance or an outage: check the partitions as they are now
        waiting = any(tp not in self._held for tp in self._stash)  # records to hand out at once
        records = await c.getmany(timeout_ms=0 if waiting else timeout_ms, max_records=max_records)
        if records:
            await prefetch()
        if self._stash or self._held:
            records = self._hold_back(records)
        try:
            await self._restarts(records)
        except BaseException:
            # None of these is handed out, and the consumer's positions are past them: read
            # them again (else the next commit passes them, and they are never applied).
            for tp, msgs in records.items():
                if msgs:
                    try:
                        c.seek(tp, msgs[0].offset)
                    except (AssertionError, IllegalStateError):  # revoked meanwhile
                        pass
            raise
        others = []
        arrival = time.monotonic()
        for tp, msgs in records.items():
            if tp.topic == self.merged_topic:
                self.merge.add(tp, msgs, arrival)
            elif self.merged_topic is not None:
                self.after.add(tp, msgs, arrival)
            else:
                others.extend(msgs)
        if self.merge.first_arrival is None and self.merged_topic is not None and any(records.values()):
            self.merge.first_arrival = arrival  # (an outcome's too: its prediction may be in flight)
        merged_tps = [tp for tp in c.assignment() if tp.topic == self.merged_topic]
        if not merged_tps:
            return [], others + self.after.release_below(math.inf), records
        for tp in c.assignment():
            buffer = self.merge if tp.topic == self.merged_topic else self.after
            if buffer.full(tp) and tp not in self._unconfirmed:  # (an unconfirmed end needs a fetch)
                c.pause(tp)
            elif tp in c.paused():
                c.resume(tp)
        now = time.monotonic()
        paused = c.paused()
        for tp in merged_tps:
            # A paused partition (its buffer full) is not fetched: its high watermark and
            # arrivals stand still while its log grows, so it never counts as idle (it would
            # drop out of the horizon, and later records of the others go before its own).
            if tp in records or tp not in self.last_arrival or tp in paused:
                self.last_arrival[tp] = now
        quiet = {tp for tp in merged_tps if now - self.last_arrival[tp] >= self.max_idle}
        idle = quiet & await caught_up(c, quiet)
        # Records stamped (by their producers, in ms) within the last max_idle may still have
        # earlier records of an idle partition in flight; they wait, up to max_idle after
        # arrival. Outcomes too: one handed out before its prediction would find nothing.
        hold_after = time.time() * 1000 - self.max_idle * 1000
        merged = self.merge.release(idle, merged_tps, hold_after, now - self.max_idle)
        others += self.after.release_below(self.merge.frontier(merged_tps, idle),
                                           self.merge.held(merged_tps, idle, hold_after, now - self.max_idle),
                                           now - self.max_idle)
        return merged, others, records

    @property
    def ends_checked(self) -> bool:
        """Every assigned partition's position was checked against its end (see ``_check_ends``)."""
        return self.consumer.assignment() <= self._ends_checked

    def assigned(self, tps) -> None:
        """Partitions were assigned: check them against their ends before they count as checked
        (while a group rejoins, the consumer's ``assignment()`` still returns the old one)."""
        self._epoch += 1
        self._ends_checked.difference_update(tps)
        for tp in tps:
            self._unconfirmed.pop(tp, None)
            self._expected.pop(tp, None)  # perhaps set from a check of the new assignment before this call
            self._resumed_at.pop(tp, None)
            self._from_commit.discard(tp)
            self._restored.pop(tp, None)
            self._stash.pop(tp, None)

    def hold(self, tps) -> None:
        """Hand out nothing of these partitions until ``restored``: aiokafka fetches a new
        assignment while the rebalance listener still loads its models, and its records would
        be checked against positions not yet known. What is fetched meanwhile waits, and is
        checked and handed out once they are. (Not paused: a paused partition's prefetched
        records are dropped and fetched again, and in ``throughput.py`` the worker then had
        applied none at its start mark, against 5,000 to 8,000. What waits is bounded by the
        caller: the worker's loop polls once, then waits for the lock the loading listener holds.)"""
        self._loading |= set(tps)
        self._held |= set(tps)

    def _hold_back(self, records: dict) -> dict:
        """``records`` with the held partitions' taken out (kept, see ``hold``) and the waiting
        records of those no longer held put back in front. Records fetched below those waiting
        mean the partition started again meanwhile: those waiting are of the lost log, and are
        dropped (joined to the new log's, the jump back would go unseen)."""
        c = self.consumer
        records = dict(records)
        for tp in set(self._stash) | set(records):
            waiting, fetched = self._stash.get(tp), records.get(tp)
            if waiting and fetched and fetched[0].offset <= waiting[-1].offset:
                log.warning("%s[%d]: records at offset %d were read after offset %d while its models loaded: the "
                            "partition started again (its data was lost); the %d read before are dropped",
                            tp.topic, tp.partition, fetched[0].offset, waiting[-1].offset, len(waiting))
                del self._stash[tp]
                waiting = None
            if tp in self._held:
                if fetched:
                    self._stash.setdefault(tp, []).extend(records.pop(tp))
            elif waiting is not None:
                del self._stash[tp]
                if tp in c.assignment():
                    records[tp] = waiting + (fetched or [])
        return records

    def restored(self, tps, offsets: dict) -> None:
        """The state of these partitions' models is restored (``hold`` ends), and had read them up
        to ``offsets``: checked against the partitions' ends as a committed offset is. A topic
        deleted and recreated loses its committed offsets with its data, so only the restored
        state shows that its offsets started again (a state is never saved past what was read:
        one past the end means the data it read is gone)."""
        for tp in tps:
            self._restored[tp] = offsets.get(tp, 0)
            self._ends_checked.discard(tp)
            self._unconfirmed.pop(tp, None)
        self._epoch += 1  # a check on its way (without them) must not mark them checked
        self._loading -= set(tps)  # (their records wait on until their end is checked)

    def recheck_ends(self) -> None:
        """Check every partition against its end again before the next fetch: the broker was
        unreachable, and may have come back without its data."""
        self._epoch += 1
        self._ends_checked.clear()
        self._unconfirmed.clear()

    async def _check_ends(self) -> bool:
        """Check against their end the partitions newly assigned, or unchecked since
        ``recheck_ends``; False if a rebalance or ``recheck_ends`` overtook the check. Those whose
        offset (the largest of the position, the offset after the records read, and, if none
        were read since the assignment, the committed offset) is not past the end the broker
        lists are checked; the others wait for a fetch to confirm (see ``_restarts``). Records
        below that offset mean the client went back to the beginning by itself.

        Done at once, before the first fetch is handed out, because producers write to a broker
        as soon as it is back: a partition that waited to be noticed could be filled past the
        stale offset meanwhile, and the records below it would be skipped. Kafka's list-offsets
        answer is exact (on Kafka 2.2 and later a leader does not answer before its high
        watermark is current, KIP-207), so a partition within it is not confirmed again: a new
        leader's fetch high watermark may be low for a moment. Tansu's answer may be too low
        (the first offset of the last record batch, plus one), hence the confirmation.
        """
        c = self.consumer
        new = [tp for tp in c.assignment()
               if tp not in self._ends_checked and tp not in self._unconfirmed and tp not in self._loading]
        if not new:
            return True
        epoch = self._epoch
        asked_ms = time.time() * 1000
        ends = await within(c.end_offsets(new), "the end offsets of the assigned partitions not known")
        offsets = {}
        for tp in new:
            try:
                # (records waiting since a hold are where the client was)
                position = self._stash[tp][0].offset if self._stash.get(tp) else await self._position(tp)
                # Nothing read since assigned: the client may have left the committed offset already.
                committed = (None if tp in self._expected else
                             await within(c.committed(tp), f"the committed offset of {tp.topic}[{tp.partition}] not known"))
            except IllegalStateError:  # revoked meanwhile
                continue
            offsets[tp] = max(position, committed or 0, self._expected.get(tp, 0))
            if committed is not None:
                self._resumed_at[tp] = committed
                if offsets[tp] == committed:
                    self._from_commit.add(tp)
        if self._epoch != epoch:
            return False
        for tp, offset in offsets.items():
            floor = self._restored.pop(tp, 0)
            self._held.discard(tp)  # checked, or confirmed before its records are handed out
            self._expected[tp] = offset
            if tp in ends and max(offset, floor) > ends[tp]:
                self._unconfirmed[tp] = (offset, asked_ms, floor)
            else:
                self._ends_checked.add(tp)
                self._from_commit.discard(tp)
        return True

    async def _restarts(self, records: dict) -> None:
        """Notice partitions whose offsets started again (their data was lost) and read them
        from their beginning.

        A broker that lost data (one without persistent storage restarted, a topic deleted and
        recreated) leaves the committed offsets, and the positions of a consumer that stayed
        up, past the partitions' new end. Kafka answers a fetch there with
        OFFSET_OUT_OF_RANGE, and aiokafka goes back to the beginning by itself
        (``auto_offset_reset`` earliest): seen here as records at offsets below those already
        read, or expected (see ``_check_ends``), or as a position that went back while none
        came. Tansu answers with nothing, for ever: seen here as a position past the high
        watermark of a fetch answered after the check. Past the first check, a position past
        the high watermark also happens for a moment on a healthy cluster (a new partition
        leader may report a lower high watermark than the old one), so such a partition is
        sought to its beginning only once it has stayed past its end for ``PAST_END_SECONDS``.
        Either way ``on_restart`` is told, so the models forget the offsets they applied from it.
        It is told too which were noticed, at their assignment, from the group's committed
        offset alone (the restored state within the end): a worker that counted the restart
        and crashed before committing the new log leaves that (see ``streamproc.restarts``).
        """
        c = self.consumer
        epoch = self._epoch
        restarted, sought = set(), set()
        fresh = self._from_commit & set(self._unconfirmed)  # assigned at the committed offset, not yet confirmed
        by_state = set()  # noticed from the restored state's offset
        try:
            for tp, msgs in records.items():
                expected = self._expected.get(tp)
                if msgs and expected is not None and msgs[0].offset < expected:
                    log.warning("%s[%d]: records at offset %d were read, where offset %d was expected: the "
                                "partition started again (its data was lost)", tp.topic, tp.partition,
                                msgs[0].offset, expected)
                    restarted.add(tp)
            # Each partition as it is after the awaits before it: a rebalance (or recheck_ends)
            # meanwhile ends the pass, and the next poll checks the partitions as they are then.
            for tp, (offset, asked_ms, floor) in list(self._unconfirmed.items()):
                if self._epoch != epoch:
                    break
                got = records.get(tp)
                if got and not floor:  # read on from that offset (or, as above, from the beginning)
                    self._confirmed(tp)
                    continue
                try:
                    polled, hw = c.last_poll_timestamp(tp), c.highwater(tp)
                    if got:  # decided now, before they are handed out: their fetch saw the end
                        hw = max(hw or 0, got[-1].offset + 1)
                    elif polled is None or polled <= asked_ms or hw is None:
                        continue  # no fetch answered since the check
                    position = await self._position(tp)
                except (AssertionError, IllegalStateError):  # revoked meanwhile
                    continue
                if self._epoch != epoch:
                    break
                self._confirmed(tp)
                if floor > hw:
                    by_state.add(tp)  # (whichever sign below is taken: the state is of a lost log)
                # (Records fetched: the position is past them, and one gone back was seen above.)
                if not got and position < offset:
                    log.warning("%s[%d]: the position went back from %d to %d: the partition started again "
                                "(its data was lost)", tp.topic, tp.partition, offset, position)
                    restarted.add(tp)
                elif floor > hw:
                    log.warning("%s[%d]: the state restored had read it up to offset %d, past its end (%d): the "
                                "partition started again (its data was lost)", tp.topic, tp.partition, floor, hw)
                    restarted.add(tp)
                    if not got and position > hw:
                        sought.add(tp)
                elif not got and position > hw:
                    log.warning("%s[%d]: position %d is past the end of the partition (%d): the broker lost data; "
                                "reading it from the beginning", tp.topic, tp.partition, position, hw)
                    sought.add(tp)
            now = self.clock()
            if self._epoch == epoch and now - self._last_end_check >= 1.0:
                self._last_end_check = now
                for tp in c.assignment():
                    hw = c.highwater(tp)
                    if tp in records or tp in self._unconfirmed or tp in sought or hw is None:
                        self._past_end.pop(tp, None)
                        continue
                    try:
                        position = await self._position(tp)
                    except IllegalStateError:  # revoked meanwhile
                        continue
                    if self._epoch != epoch:
                        break
                    if position <= hw:
                        self._past_end.pop(tp, None)
                        continue
                    if now - self._past_end.setdefault(tp, now) >= PAST_END_SECONDS:
                        log.warning("%s[%d]: position %d has been past the end of the partition (%d) for %.0f s: "
                                    "the broker lost data; reading it from the beginning", tp.topic, tp.partition,
                                    position, hw, now - self._past_end[tp])
                        sought.add(tp)
                        fresh.discard(tp)
        finally:
            # Acted on, or to act on, even after an error above; not after a rebalance meanwhile
            # (the partitions' owner checks them again).
            if sought and self._epoch == epoch:
                sought &= c.assignment()
                try:
                    if sought:
                        await c.seek_to_beginning(*sought)
                except IllegalStateError:  # revoked meanwhile
                    sought = set()
                restarted |= sought
            lost = await self._committed(restarted) if restarted and self._epoch == epoch else {}
            if restarted and self._epoch == epoch:
                self._forget(restarted)  # not a rebalance: the batch being polled stays valid
                if self.on_restart is not None:
                    self.on_restart(restarted, lost, (restarted & fresh) - by_state)
        for tp, msgs in records.items():
            if msgs:
                self._expected[tp] = msgs[-1].offset + 1
                self._from_commit.discard(tp)
        # Where a restarted partition starts, committed while it stays empty: the committed
        # offset of the lost log would have it noticed again at every check.
        for tp in restarted - set(records):
            try:
                self._restarted_at[tp] = await self._position(tp)
            except IllegalStateError:  # revoked meanwhile
                pass

    async def _committed(self, tps) -> dict:
        """The group's committed offsets of these restarted partitions (of their lost logs: the
        new logs' are committed later), where there is one and the broker answers (asked, not
        remembered: a commit that timed out may have landed)."""
        offsets = {}
        for tp in tps:
            try:
                offset = await within(self.consumer.committed(tp), f"the committed offset of {tp.topic}[{tp.partition}] not known")
            except (KafkaError, IllegalStateError) as exc:
                log.warning("%s[%d]: the committed offset of the lost log is not known (%s): if this worker stops "
                            "before it commits the new log, its successor counts the restart again", tp.topic,
                            tp.partition, exc)
                continue
            if offset is not None:
                offsets[tp] = offset
        return offsets

    def _confirmed(self, tp) -> None:
        if self._unconfirmed.pop(tp, None) is not None:
            self._ends_checked.add(tp)
        self._from_commit.discard(tp)

    async def _position(self, tp) -> int:
        return await within(self.consumer.position(tp), f"the position of {tp.topic}[{tp.partition}] not known")

    def done(self, records: dict) -> None:
        """Everything the last ``poll`` handed out is handled (its output acknowledged)."""
        if self.merged_topic is None:
            for tp, msgs in records.items():
                if msgs:
                    self.next[tp] = msgs[-1].offset + 1
        self._done = {**self.merge.commit_offsets(), **self.after.commit_offsets(), **self.next}

    def positions(self) -> dict:
        assigned = self.consumer.assignment()
        return {tp: off for tp, off in {**self._restarted_at, **self._done}.items() if tp in assigned}

    def resumed_at(self) -> dict:
        """Per assigned partition, the group's committed offset when it was assigned: the input
        hands out nothing below it (the consumer starts there), so a partition without a
        position yet (nothing read since) is at least there."""
        assigned = self.consumer.assignment()
        # (Not one past its end, not yet confirmed: it may be read again from its beginning.)
        return {tp: off for tp, off in self._resumed_at.items() if tp in assigned and tp not in self._unconfirmed}

    def drop(self, tps) -> None:
        """Forget partitions no longer owned (the new owner re-reads from the committed offset)."""
        self._forget(tps)
        self._ends_checked.difference_update(tps)
        self._epoch += 1
        self.generation += 1

    def _forget(self, tps) -> None:
        self.merge.drop(tps)
        self.after.drop(tps)
        for tp in tps:
            self.next.pop(tp, None)
            self.last_arrival.pop(tp, None)
            self._done.pop(tp, None)
            self._expected.pop(tp, None)
            self._past_end.pop(tp, None)
            self._unconfirmed.pop(tp, None)
            self._restarted_at.pop(tp, None)
            self._resumed_at.pop(tp, None)
            self._from_commit.discard(tp)
            self._restored.pop(tp, None)
            self._held.discard(tp)
            self._loading.discard(tp)
            self._stash.pop(tp, None)
