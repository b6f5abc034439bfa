"""How many times each input partition's offsets have started again, so that positions saved
before a restart are known to be of the lost log, after a crash too.

A partition whose broker lost its data (or whose topic was recreated) numbers its records
from 0 again; a model's saved position there ("applied up to offset N") then means nothing,
and kept, it would skip the new log's records below N. The worker forgets such positions when
it notices the restart, but a model it holds packed (``MonitorEngine.dormant``) is saved as it
was loaded: after a crash, its record would bring the old position back. So each partition
has a restart count, saved on the state topic (``streamproc.state``) before any offset of
the new log is committed, and every saved position carries the count it was applied under
(``applied_restarts``, beside ``applied``). A position under a lower count than its
partition's is of a lost log, and is forgotten when its model is restored or unpacked.

Pure: the counts, the stamps, the comparison. The worker reads and writes the records.

>>> r = PartitionRestarts()
>>> class Saved: applied = {"p:0": 900, "p:1": 50}
>>> old = Saved()
>>> r.stamp(old, {"p:0", "p:1"})
>>> r.bump({"p:0"})
>>> sorted(r.stale(old)), r.unsaved
(['p:0'], {'p:0': 1})
>>> new = Saved()
>>> r.stamp(new, {"p:0"})
>>> new.applied_restarts, sorted(r.stale(new))
({'p:0': 1}, [])
"""

from __future__ import annotations

from typing import Iterable


class PartitionRestarts:
    """Per "topic:partition", how many restarts of its offsets are known (0 if none)."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.unsaved: dict[str, int] = {}  # counts raised here and not yet on the state topic

    def __bool__(self) -> bool:
        return bool(self.counts)

    def note(self, tp: str, count: int) -> None:
        """A count read from the state topic (the highest read wins)."""
        if count > self.counts.get(tp, 0):
            self.counts[tp] = count

    def bump(self, tps: Iterable[str]) -> None:
        """These partitions started again: their positions applied so far are of a lost log."""
        for tp in tps:
            self.counts[tp] = self.unsaved[tp] = self.counts.get(tp, 0) + 1

    def saved(self, counts: dict[str, int]) -> None:
        """These counts are on the state topic (a count raised again since stays unsaved)."""
        for tp, count in counts.items():
            if self.unsaved.get(tp) == count:
                del self.unsaved[tp]

    def stamp(self, obj, current: Iterable[str]) -> None:
        """Stamp ``obj.applied`` (about to be saved) with the counts its positions were applied
        under: the current count for the ``current`` partitions (those just read), the stamp
        it already had for the others (read by whoever saved it, this worker may not know
        their latest count)."""
        before = getattr(obj, "applied_restarts", None) or {}
        if not self.counts and not before:
            return  # no restart known: nothing to stamp (and no attribute on every object)
        current = set(current)
        stamps = {}
        for tp in obj.applied:
            count = self.counts.get(tp, 0) if tp in current else before.get(tp, 0)
            if count:
                stamps[tp] = count
        obj.applied_restarts = stamps

    def stale(self, obj) -> set[str]:
        """The partitions of ``obj.applied`` whose positions were applied before their
        partition's latest known restart."""
        if not self.counts:
            return set()
        stamps = getattr(obj, "applied_restarts", None) or {}
        return {tp for tp in getattr(obj, "applied", None) or () if stamps.get(tp, 0) < self.counts.get(tp, 0)}

    def count_of(self, obj, tp: str) -> int:
        """The count ``obj``'s position of ``tp`` was applied under."""
        return (getattr(obj, "applied_restarts", None) or {}).get(tp, 0)
