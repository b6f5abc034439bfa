"""Merging partitions in timestamp order, so a model's events are windowed in the order they
were produced whatever keys (and so partitions) the producers chose.

A consumer does not read its partitions in step: on a backlog it may return all of partition 0
before any of partition 1, and a count window of one model would then mix events from hours
apart (a drift would show before it happened, and a reference could contain drifted data).
Like Kafka Streams, records are buffered per partition and released in (timestamp, partition,
offset) order only up to the *horizon*: the smallest latest timestamp seen on any partition,
since a partition's later records carry later timestamps (and those at it, from a partition
whose buffer is full: see ``release``). A partition that is *idle* (caught
up with its high watermark and silent for ``max_idle`` seconds, Kafka Streams'
``max.task.idle.ms``) holds nothing back, so a quiet partition cannot stall the others. The
released order is then a function of the topics' contents (as long as no partition lags the
others by more than ``max_idle``), so a replay after a crash releases the same sequence.

An idle partition that has delivered records before may still have some in flight: after a
pause in production, the first new records of one partition can arrive a moment before those
of another, with earlier timestamps. So, when the caller says so (``hold_after``), an idle
partition still holds back records stamped within the last ``max_idle`` of wall-clock time
(an in-flight record carries a timestamp at least that recent), unless they arrived at least
``max_idle`` ago (``arrived_before``: nothing waits longer, whatever its timestamp). So does
an idle partition that has delivered nothing yet (since it was assigned, or dropped and read
again), for ``max_idle`` after the first records since then arrived: a topic's first records,
or the first after a start or a rewind, reach the consumer one partition's fetch at a time too,
and released at once they would go in arrival order (a partition that never gets any costs that
wait only then).

>>> from collections import namedtuple
>>> M = namedtuple("M", "topic partition offset timestamp")
>>> a = MergeBuffer(max_buffered=100)
>>> a.add(("t", 0), [M("t", 0, 0, 10), M("t", 0, 1, 30)])
>>> a.add(("t", 1), [M("t", 1, 0, 20)])
>>> [(m.partition, m.offset) for m in a.release(idle=set())]  # horizon 20: partition 1 may still hold ts 20
[(0, 0)]
>>> a.commit_offsets()
{('t', 0): 1, ('t', 1): 0}
>>> [(m.partition, m.offset) for m in a.release(idle={("t", 0), ("t", 1)})]  # nothing more to come
[(1, 0), (0, 1)]
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from typing import Hashable, Iterable

import numpy as np


class _Partition:
    """One partition's buffered records (those from ``head`` on are not yet released), with
    their merge keys and arrival times in parallel lists. Both lists are non-decreasing, so a
    release finds its cut by bisection, with no Python work per record.

    A record's key is its timestamp, raised to the latest timestamp before it in the partition
    (producers' clocks are not monotonic): the partition's records keep their offset order.
    """

    __slots__ = ("records", "keys", "arrivals", "head", "latest")

    def __init__(self) -> None:
        self.records: list = []
        self.keys: list = []
        self.arrivals: list = []
        self.head = 0
        self.latest = float("-inf")

    def __len__(self) -> int:
        return len(self.records) - self.head

    def add(self, msgs: list, arrival: float) -> None:
        ts = np.fromiter((m.timestamp for m in msgs), dtype=np.float64, count=len(msgs))
        ts[0] = max(ts[0], self.latest)
        keys = np.maximum.accumulate(ts)
        self.latest = float(keys[-1])
        self.records.extend(msgs)
        self.keys.extend(keys.tolist())
        self.arrivals.extend([arrival] * len(msgs))

    def held_cut(self, cut: int, held: float, ripe: float) -> int:
        """``cut`` lowered so that records keyed at ``held`` or later stay, unless they arrived at
        ``ripe`` or before (see ``MergeBuffer.held``)."""
        if held == float("inf"):
            return cut
        h, end = self.head, len(self.records)
        return min(cut, max(bisect_left(self.keys, held, h, end), bisect_right(self.arrivals, ripe, h, end)))

    def take(self, n: int) -> tuple[list, list]:
        h = self.head
        run, keys = self.records[h:h + n], self.keys[h:h + n]
        self.head = h + n
        if self.head >= 4096 and 2 * self.head >= len(self.records):  # drop what was released
            del self.records[:self.head], self.keys[:self.head], self.arrivals[:self.head]
            self.head = 0
        return run, keys


class MergeBuffer:
    def __init__(self, max_buffered: int = 20_000):
        self.max_buffered = max_buffered
        self.parts: dict[Hashable, _Partition] = {}
        self.next_offset: dict[Hashable, int] = {}  # first offset not yet released, per partition
        # When the first records arrived since the last ``drop`` (see ``held``; ``BatchedInput``
        # also notes outcomes' arrival here).
        self.first_arrival: float | None = None

    def add(self, tp: Hashable, msgs: Iterable, arrival: float = 0.0) -> None:
        """Buffer one fetch of a partition (``arrival``: when it arrived, on the caller's clock)."""
        msgs = list(msgs)
        if not msgs:
            return
        part = self.parts.get(tp)
        if part is None:
            part = self.parts[tp] = _Partition()
        part.add(msgs, arrival)
        self.next_offset.setdefault(tp, msgs[0].offset)
        if self.first_arrival is None:
            self.first_arrival = arrival

    def size(self, tp: Hashable) -> int:
        part = self.parts.get(tp)
        return len(part) if part is not None else 0

    def full(self, tp: Hashable) -> bool:
        return self.size(tp) >= self.max_buffered

    def horizon(self, assigned: Iterable[Hashable], idle: set) -> float:
        """Records strictly older than this can be released."""
        bound = float("inf")
        for tp in assigned:
            if tp in idle:
                continue
            part = self.parts.get(tp)
            if part is None:
                return float("-inf")  # nothing seen yet: anything may come
            bound = min(bound, part.latest)
        return bound

    def release(self, idle: set, assigned: Iterable[Hashable] | None = None, hold_after: float | None = None,
                arrived_before: float | None = None) -> list:
        """Remove and return the records older than the horizon, in (timestamp, partition, offset) order.

        Each partition releases a prefix of its buffer, so its records keep their offset order;
        a record stamped earlier than one before it in its partition (producers' clocks are not
        monotonic) counts as stamped like that one. ``hold_after`` (a timestamp) and
        ``arrived_before`` (an arrival time): see the module's docstring; without them idle
        partitions hold nothing back.
        """
        assigned = list(self.parts) if assigned is None else list(assigned)
        limit = self.horizon(assigned, idle)
        held = self.held(assigned, idle, hold_after, arrived_before)
        ripe = float("-inf") if arrived_before is None else arrived_before
        runs, keys = [], []
        for tp in assigned:
            part = self.parts.get(tp)
            if not part:
                continue
            h, end = part.head, len(part.records)
            # Keys and arrivals are non-decreasing: records may go up to the first key at the
            # horizon, and (when holding) the first key at ``held`` that arrived after ``ripe``.
            cut = bisect_left(part.keys, limit, h, end)
            if cut == h and end - h >= self.max_buffered:
                # Full (so no longer fetched) and every record keyed at the horizon or later: those
                # at it go, or this partition, which sets the horizon, would hold the merge for ever
                # (a burst of one timestamp; ordinary records after one stamped ahead). No later
                # record of any partition is keyed below the horizon.
                cut = bisect_right(part.keys, limit, h, end)
            self._take(tp, part, part.held_cut(cut, held, ripe), runs, keys)
        return _merged(runs, keys)

    def held(self, assigned: Iterable[Hashable], idle: set, hold_after: float | None,
             arrived_before: float | None = None) -> float:
        """The key from which records wait for in-flight records of idle partitions (see the
        module's docstring; inf: none wait). Partitions that delivered nothing yet count while
        the first records arrived after ``arrived_before``."""
        held = float("inf")
        if hold_after is not None:
            young = (arrived_before is not None and self.first_arrival is not None
                     and self.first_arrival > arrived_before)
            for tp in assigned:
                if tp in idle:
                    part = self.parts.get(tp)
                    if part is not None:
                        held = min(held, max(part.latest, hold_after))
                    elif young:
                        held = min(held, hold_after)
        return held

    def _take(self, tp: Hashable, part: _Partition, cut: int, runs: list, keys: list) -> None:
        """Release a partition's records up to ``cut`` (a run, and its keys)."""
        if cut > part.head:
            run, run_keys = part.take(cut - part.head)
            self.next_offset[tp] = run[-1].offset + 1
            runs.append(run)
            keys.append(run_keys)

    def frontier(self, assigned: Iterable[Hashable], idle: set) -> float:
        """The smallest key of these partitions' records not released yet, or of a record that
        may still come (a partition seen and not idle: its latest; one never seen: -inf)."""
        bound = float("inf")
        for tp in assigned:
            part = self.parts.get(tp)
            if part:
                bound = min(bound, part.keys[part.head])
            elif tp not in idle:
                if part is None:
                    return float("-inf")
                bound = min(bound, part.latest)
        return bound

    def release_below(self, limit: float, held: float = float("inf"), arrived_before: float | None = None) -> list:
        """Remove and return every partition's records keyed below ``limit`` (another merge's
        ``frontier``), in (timestamp, partition, offset) order; those keyed at ``held`` or later
        (another merge's ``held``) only if they arrived before ``arrived_before``, as ``release``
        holds its own."""
        ripe = float("-inf") if arrived_before is None else arrived_before
        runs, keys = [], []
        for tp, part in self.parts.items():
            if part:
                cut = bisect_left(part.keys, limit, part.head, len(part.records))
                self._take(tp, part, part.held_cut(cut, held, ripe), runs, keys)
        return _merged(runs, keys)

    def commit_offsets(self) -> dict:
        """Per partition, the offset to commit: the first record not yet released."""
        out = {}
        for tp, nxt in self.next_offset.items():
            part = self.parts.get(tp)
            out[tp] = part.records[part.head].offset if part else nxt
        return out

    def drop(self, tps: Iterable[Hashable]) -> None:
        """Forget partitions this worker no longer owns (their records will be re-read by the new owner)."""
        for tp in tps:
            self.parts.pop(tp, None)
            self.next_offset.pop(tp, None)
        # What they delivered is forgotten: their next records are, for ``held``, a start's first.
        self.first_arrival = None


def _merged(runs: list, keys: list) -> list:
    """Runs of records (each in offset order) merged by (key, partition), each run's order kept."""
    if not runs:
        return []
    if len(runs) == 1:
        return runs[0]
    # A stable sort by (timestamp, partition) keeps each run's (offset) order among equals.
    partition = np.repeat([run[0].partition for run in runs], [len(run) for run in runs])
    order = np.lexsort((partition, np.concatenate(keys)))
    merged = [m for run in runs for m in run]
    return [merged[i] for i in order.tolist()]
