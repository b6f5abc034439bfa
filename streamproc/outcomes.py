"""Joining outcomes to their predictions by ``event_id``, with bounded memory.

Per model, predictions wait for their outcome for ``ttl_seconds`` of event time, and at most
``max_pending`` of them (the oldest are dropped first). Joining starts for a model when its
first outcome arrives, so models without outcomes cost nothing; outcomes that find no waiting
prediction (never seen, expired, or answered already) are counted as unmatched.

Several versions may predict the same event (a shadow version scoring the live traffic): the
outcome is joined to each of their predictions, so every version's error is watched. The same
version predicting an event again replaces its prediction.

>>> j = OutcomeJoiner(ttl_seconds=60, max_pending=10)
>>> j.add_predictions("v1", ["a", "b"], [0.0, 1.0], [0.9, 0.2], ["1", "0"])
>>> [(m.version, m.label, m.truth) for m in j.match([("a", 5.0, "0", None), ("zz", 5.0, "1", None)])]
[('v1', '1', '0')]
>>> j.unmatched
1
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import islice
from typing import Iterable, Optional


@dataclass(frozen=True, slots=True)
class Match:
    event_id: str
    version: str
    ts: float
    score: float
    label: Optional[str]
    truth: Optional[str]
    value: Optional[float]


class Shadowed(tuple):
    """The predictions of several versions for one event: (version, ts, score, label) each,
    in the order they came; waiting since the first."""

    __slots__ = ()

    @property
    def ts(self) -> float:
        return self[0][1]


def _with(entry: tuple, new: tuple) -> tuple:
    """A waiting entry with one more version's prediction (or its version's replaced)."""
    entries = list(entry) if type(entry) is Shadowed else [entry]
    for i, e in enumerate(entries):
        if e[0] == new[0]:
            entries[i] = new
            break
    else:
        entries.append(new)
    return Shadowed(entries) if len(entries) > 1 else entries[0]


class OutcomeJoiner:
    """The predictions of one model that still wait for an outcome."""

    def __init__(self, ttl_seconds: float, max_pending: int):
        self.ttl = ttl_seconds
        self.max_pending = max_pending
        self.pending: dict[str, tuple] = {}  # event_id -> (version, ts, score, label), insertion order
        self.latest_ts = float("-inf")
        self.matched = 0
        self.unmatched = 0
        self.expired = 0

    def add_predictions(self, version: str, event_ids: list[str], ts: list[float], scores: list[float],
                        labels: list[Optional[str]]) -> None:
        pending = self.pending
        again = pending.keys() & event_ids if pending else ()
        if again:  # (rare: another version's prediction of an event waits, or this one's again)
            for event_id, t, s, lbl in zip(event_ids, ts, scores, labels):
                old = pending.get(event_id)
                pending[event_id] = (version, t, s, lbl) if old is None else _with(old, (version, t, s, lbl))
        else:
            pending.update(zip(event_ids, ((version, t, s, lbl) for t, s, lbl in zip(ts, scores, labels))))
        if ts:
            self.latest_ts = max(self.latest_ts, max(ts))
        self._evict()

    def _evict(self) -> None:
        """Drop, oldest first, what is over ``max_pending`` or older than the TTL.

        One pass: the oldest are found, then deleted. (Looking for the oldest again after each
        deletion walked the dead slots deletions leave at the dict's front every time: 32 µs a
        prediction at steady state, 100,000 waiting.)
        """
        pending = self.pending
        horizon = self.latest_ts - self.ttl
        over = len(pending) - self.max_pending
        n = predictions = 0
        for entry in pending.values():
            shadowed = type(entry) is Shadowed
            if not (n < over or (entry.ts if shadowed else entry[1]) < horizon):
                break
            n += 1
            predictions += len(entry) if shadowed else 1
        if n:
            for event_id in list(islice(pending, n)):
                del pending[event_id]
            self.expired += predictions

    def trim(self, keep: int) -> int:
        """Drop the oldest waiting events beyond ``keep`` (their predictions counted as expired);
        return how many predictions. The dict is rebuilt: deleting from its front would leave a
        run of dead slots that every later look at the oldest entry (``_evict``) walks over."""
        excess = len(self.pending) - keep
        if excess <= 0:
            return 0
        dropped = sum(len(e) - 1 for e in islice(self.pending.values(), excess) if type(e) is Shadowed) + excess
        self.pending = dict(islice(self.pending.items(), excess, None))
        self.expired += dropped
        return dropped

    def match(self, outcomes: Iterable[tuple[str, float, Optional[str], Optional[float]]]) -> list[Match]:
        """Matches for (event_id, ts, label, value) outcomes, in order; each prediction matches once."""
        found = []
        pending = self.pending
        for event_id, _ts, truth, value in outcomes:
            p = pending.pop(event_id, None)
            if p is None:
                self.unmatched += 1
            elif type(p) is Shadowed:
                found += [Match(event_id, e[0], e[1], e[2], e[3], truth, value) for e in p]
            else:
                found.append(Match(event_id, p[0], p[1], p[2], p[3], truth, value))
        self.matched += len(found)
        return found
