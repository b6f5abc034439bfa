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

    def add(self, tp: Hashable, msgs: Iterable) -> None:
        msgs = list(msgs)
        if not msgs:
            return
        buf = self.buffers.setdefault(tp, deque())
        buf.extend(msgs)
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

    def release(self, idle: set, assigned: Iterable[Hashable] | None = None) -> list:
        """Remove and return the records older than the horizon, in (timestamp, partition, offset) order."""
        assigned = list(self.buffers) if assigned is None else list(assigned)
        limit = self.horizon(assigned, idle)
        runs = []
        for tp in assigned:
            buf = self.buffers.get(tp)
            if not buf:
                continue
            run = []
            while buf and buf[0].timestamp < limit:
                run.append(buf.popleft())
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
            self.next_offset.pop(tp, None)
            self.last_ts.pop(tp, None)
