"""Outcome joining (bounded, counted) and the error signal behind concept drift."""

from __future__ import annotations

import numpy as np

from streamproc.concept import ErrorMonitor, error_of
from streamproc.config import MonitorConfig
from streamproc.outcomes import Match, OutcomeJoiner


def test_joiner_matches_once_and_counts_unmatched():
    j = OutcomeJoiner(ttl_seconds=100, max_pending=10)
    j.add_predictions("v1", ["a", "b"], [0.0, 1.0], [0.9, 0.1], ["1", "0"])
    j.add_predictions("v2", ["c"], [2.0], [0.5], [None])
    found = j.match([("b", 9.0, "1", None), ("c", 9.0, None, 0.7), ("b", 9.0, "1", None), ("nope", 9.0, "1", None)])
    assert [(m.event_id, m.version, m.label, m.truth, m.value) for m in found] == [("b", "v1", "0", "1", None), ("c", "v2", None, None, 0.7)]
    assert (j.matched, j.unmatched, j.expired) == (2, 2, 0)
    assert list(j.pending) == ["a"]


def test_joiner_expires_by_event_time_and_by_count():
    j = OutcomeJoiner(ttl_seconds=10, max_pending=3)
    j.add_predictions("v", ["a", "b"], [0.0, 5.0], [0.1, 0.2], [None, None])
    j.add_predictions("v", ["c"], [12.0], [0.3], [None])  # a is now older than 12 - 10
    assert list(j.pending) == ["b", "c"] and j.expired == 1
    j.add_predictions("v", ["d", "e"], [13.0, 14.0], [0.4, 0.5], [None, None])  # over max_pending
    assert list(j.pending) == ["c", "d", "e"] and j.expired == 2
    assert j.match([("a", 20.0, "1", None)]) == [] and j.unmatched == 1


def test_error_of_labels_scores_and_values():
    m = lambda **kw: Match(**{"event_id": "e", "version": "v", "ts": 0.0, "score": float("nan"), "label": None,
                              "truth": None, "value": None, **kw})  # noqa: E731
    assert error_of(m(label="cat", truth="cat"), 0.5) == 0.0
    assert error_of(m(label="cat", truth="dog"), 0.5) == 1.0
    assert error_of(m(score=0.8, truth="1"), 0.5) == 0.0
    assert error_of(m(score=0.8, truth="false"), 0.5) == 1.0
    assert error_of(m(score=0.3, truth="dog"), 0.5) is None  # a score cannot be checked against "dog"
    assert error_of(m(score=2.5, value=4.0), 0.5) == 1.5
    assert error_of(m(value=4.0), 0.5) is None


def matches(errors, start=0):
    return [Match(f"e{start + i}", "v", float(start + i), 0.9, "1", "1" if e == 0 else "0", None) for i, e in enumerate(errors)]


def test_error_monitor_warms_up_then_detects_an_increase_only():
    rng = np.random.default_rng(3)
    mon = ErrorMonitor(MonitorConfig())
    changes, _ = mon.update(matches((rng.random(5000) < 0.1).astype(int)))
    assert changes == [] and mon.baseline[0] == mon.baseline[0] and abs(mon.baseline[0] - 0.1) < 0.03
    # Better accuracy is not drift ...
    changes, _ = mon.update(matches((rng.random(5000) < 0.02).astype(int), 5000))
    assert changes == []
    # ... worse is.
    changes, start = mon.update(matches((rng.random(3000) < 0.3).astype(int), 10000))
    assert changes and all(c.effect > 0 for c in changes) and start == 10000
    assert changes[0].critical
    assert 0.2 < mon.rolling_error < 0.4
