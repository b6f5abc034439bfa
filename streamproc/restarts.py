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

A count is raised once per restart, also when the worker that raised it crashed after saving
it and before committing any offset of the new log (or its commit failed): the group's
committed offset is then still the lost log's, past the new end, and the next worker would
notice the same restart again, count it again, and apply the new log's records a second
time. So a count keeps the group's committed offset of the log it replaced (``lost``), and a
restart noticed from that same committed offset alone, at a partition's assignment, while the
restored positions of the current count are within the end, is the one already counted.

Pure: the counts, the stamps, the comparison. The worker reads and writes the records.

>>> r = PartitionRestarts()
>>> class Saved: applied = {"p:0": 900, "p:1": 50}
>>> old = Saved()
>>> r.stamp(old, {"p:0", "p:1"})
>>> r.bump({"p:0"})
{'p:0'}
>>> sorted(r.stale(old)), r.unsaved
(['p:0'], {'p:0': 1})
>>> new = Saved()
>>> r.stamp(new, {"p:0"})
>>> new.applied_restarts, sorted(r.stale(new))
({'p:0': 1}, [])
>>> r.bump({"p:1"}, lost={"p:1": 300}), r.bump({"p:1"}, lost={"p:1": 300}, again={"p:1"}), r.counts["p:1"]
({'p:1'}, set(), 1)
"""

from __future__ import annotations

from typing import Iterable, Optional


class PartitionRestarts:
    """Per "topic:partition", how many restarts of its offsets are known (0 if none)."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.unsaved: dict[str, int] = {}  # counts raised here and not yet on the state topic
        # (partition, count) -> the group's committed offsets of the log that count replaced, when
        # known (more than one if several workers raised the same count)
        self.lost: dict[tuple[str, int], set[int]] = {}

    def __bool__(self) -> bool:
        return bool(self.counts)

    def note(self, tp: str, count: int, lost: Optional[int] = None) -> None:
        """A count read from the state topic (the highest read wins), with the committed offset
        of the log it replaced if it was saved."""
        if count > self.counts.get(tp, 0):
            self.counts[tp] = count
        if lost is not None:
            self.lost.setdefault((tp, count), set()).add(lost)

    def bump(self, tps: Iterable[str], lost: Optional[dict[str, int]] = None, again: Iterable[str] = ()) -> set[str]:
        """These partitions started again: their positions applied so far are of a lost log.
        ``lost``: the group's committed offsets of the lost logs, where known. ``again``: those
        noticed from that committed offset alone (see the module's doc); one whose latest
        count replaced the log of the same committed offset is not counted again. Returns the
        partitions counted."""
        lost = lost or {}
        again = set(again)
        counted = set()
        for tp in tps:
            offset, count = lost.get(tp), self.counts.get(tp, 0)
            if tp in again and offset is not None and count and offset in self.lost.get((tp, count), ()):
                continue
            count += 1
            self.counts[tp] = self.unsaved[tp] = count
            if offset is not None:
                self.lost[(tp, count)] = {offset}
            counted.add(tp)
        return counted

    def disown(self, tps: Iterable[str]) -> None:
        """These partitions went to another worker: their counts not saved yet are not saved
        from here (the new owner notices the restart and counts it)."""
        for tp in tps:
            self.unsaved.pop(tp, None)

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
