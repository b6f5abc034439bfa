"""Merging partitions in timestamp order, so a model's events are windowed in the order they
were produced whatever keys (and so partitions) the producers chose.

A consumer does not read its partitions in step: on a backlog it may return all of partition 0
before any of partition 1, and a count window of one model would then mix events from hours
apart (a drift would show before it happened, and a reference could contain drifted data).
Like Kafka Streams, records are buffered per partition and released in (timestamp, partition,
offset) order only up to the *horizon*: the smallest latest timestamp seen on any partition,
since a partition's later records carry later timestamps. A partition that is *idle* (caught
up with its high watermark and silent for ``max_idle`` seconds, Kafka Streams'
``max.task.idle.ms``) holds nothing back, so a quiet partition cannot stall the others. The
released order is then a function of the topics' contents (as long as no partition lags the
others by more than ``max_idle``), so a replay after a crash releases the same sequence.

An idle partition that has delivered records before may still have some in flight: after a
pause in production, the first new records of one partition can arrive a moment before those
of another, with earlier timestamps. So, when the caller says so (``hold_after``), an idle
partition still holds back records stamped within the last ``max_idle`` of wall-clock time
(an in-flight record carries a timestamp at least that recent), unless they arrived at least
``max_idle`` ago (``arrived_before``: nothing waits longer, whatever its timestamp).

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

import heapq
from collections import deque
from typing import Hashable, Iterable


class MergeBuffer:
    def __init__(self, max_buffered: int = 20_000):
        self.max_buffered = max_buffered
        self.buffers: dict[Hashable, deque] = {}
        self.next_offset: dict[Hashable, int] = {}  # first offset not yet released, per partition
        self.last_ts: dict[Hashable, float] = {}  # latest timestamp seen, per partition
        self.arrivals: dict[Hashable, deque] = {}  # when each buffered record arrived (caller's clock)

    def add(self, tp: Hashable, msgs: Iterable, arrival: float = 0.0) -> None:
        msgs = list(msgs)
        if not msgs:
            return
        buf = self.buffers.setdefault(tp, deque())
        buf.extend(msgs)
        self.arrivals.setdefault(tp, deque()).extend([arrival] * len(msgs))
        self.last_ts[tp] = max(self.last_ts.get(tp, float("-inf")), msgs[-1].timestamp)
        self.next_offset.setdefault(tp, msgs[0].offset)

    def size(self, tp: Hashable) -> int:
        return len(self.buffers.get(tp, ()))

    def full(self, tp: Hashable) -> bool:
        return self.size(tp) >= self.max_buffered

    def horizon(self, assigned: Iterable[Hashable], idle: set) -> float:
        """Records strictly older than this can be released."""
        bound = float("inf")
        for tp in assigned:
            if tp in idle:
                continue
            last = self.last_ts.get(tp)
            if last is None:
                return float("-inf")  # nothing seen yet: anything may come
            bound = min(bound, last)
        return bound

    def release(self, idle: set, assigned: Iterable[Hashable] | None = None, hold_after: float | None = None,
                arrived_before: float | None = None) -> list:
        """Remove and return the records older than the horizon, in (timestamp, partition, offset) order.

        ``hold_after`` (a timestamp) and ``arrived_before`` (an arrival time): see the module's
        docstring; without them idle partitions hold nothing back.
        """
        assigned = list(self.buffers) if assigned is None else list(assigned)
        limit = self.horizon(assigned, idle)
        held = float("inf")  # records from here on wait for in-flight records of idle partitions
        if hold_after is not None:
            for tp in assigned:
                if tp in idle and tp in self.last_ts:
                    held = min(held, max(self.last_ts[tp], hold_after))
        ripe = float("-inf") if arrived_before is None else arrived_before
        runs = []
        for tp in assigned:
            buf = self.buffers.get(tp)
            if not buf:
                continue
            arrived = self.arrivals[tp]
            run = []
            while buf and buf[0].timestamp < limit and (buf[0].timestamp < held or arrived[0] <= ripe):
                run.append(buf.popleft())
                arrived.popleft()
            if run:
                self.next_offset[tp] = run[-1].offset + 1
                runs.append(run)
        if len(runs) == 1:
            return runs[0]
        return list(heapq.merge(*runs, key=lambda m: (m.timestamp, m.partition, m.offset)))

    def commit_offsets(self) -> dict:
        """Per partition, the offset to commit: the first record not yet released."""
        return {tp: (buf[0].offset if (buf := self.buffers.get(tp)) else nxt) for tp, nxt in self.next_offset.items()}

    def drop(self, tps: Iterable[Hashable]) -> None:
        """Forget partitions this worker no longer owns (their records will be re-read by the new owner)."""
        for tp in tps:
            self.buffers.pop(tp, None)
            self.arrivals.pop(tp, None)
            self.next_offset.pop(tp, None)
            self.last_ts.pop(tp, None)
