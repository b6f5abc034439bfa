"""Outcome joining (bounded, counted) and the error signal behind concept drift."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

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


def test_predictions_waiting_in_all_models_are_kept_within_the_workers_bound():
    """Each model keeps at most its max_pending; all together at most the worker's bound: over
    it, the models holding the most are cut to one level (oldest first) leaving three
    quarters, and a model with few waiting keeps them."""
    import orjson

    from streamproc.config import StreamprocConfig
    from streamproc.decode import decode_predictions
    from streamproc.engine import MonitorEngine
    from streamproc.synth import ModelStream

    engine = MonitorEngine(StreamprocConfig.model_validate(
        {"defaults": {"window_size": 50, "warmup_size": 100, "concept": {"join": "always", "max_pending": 5000}}}))
    engine.waiting_budget = 6000
    streams = {m: [orjson.dumps(e) for e in ModelStream(m, n_numeric=2, seed=k).events(n)]
               for k, (m, n) in enumerate({"big": 4000, "busy": 3000, "small": 300}.items())}
    dropped = 0
    for start in range(0, 4000, 100):
        batches, _ = decode_predictions([raw for events in streams.values() for raw in events[start:start + 100]])
        dropped += engine.process(batches).waiting_dropped
        assert sum(len(j.pending) for j in engine.joiners.values()) <= 6000
    pending = {m: len(j.pending) for m, j in engine.joiners.items()}
    assert pending["small"] == 300 and dropped > 0
    assert sum(j.expired for j in engine.joiners.values()) == dropped
    # The oldest were dropped: the newest of the big model still wait.
    big = engine.joiners["big"].pending
    assert list(big)[-1] == orjson.loads(streams["big"][-1])["event_id"]
    assert len(big) < 4000 and all(int(e.rsplit("-", 1)[1]) >= 4000 - len(big) for e in big)


def test_the_cut_leaves_three_quarters_of_the_bound_the_smallest_untouched():
    from streamproc.config import StreamprocConfig
    from streamproc.engine import MonitorEngine
    from streamproc.outcomes import OutcomeJoiner

    engine = MonitorEngine(StreamprocConfig.model_validate({}))
    engine.waiting_budget = 6000
    for model, n in (("small", 300), ("busy", 3000), ("big", 4000), ("foreign", 5000)):
        j = engine.joiners[model] = OutcomeJoiner(1e9, 10**6)
        j.add_predictions("v", [f"{model}-{i}" for i in range(n)], [float(i) for i in range(n)], [0.5] * n, [None] * n)
    # Fed by this worker's input, all but "foreign": loaded from the state topic and never fed
    # (on the direct route every worker loads every model; its owner may be another worker).
    engine._fed.update(["small", "busy", "big"])
    assert engine._bound_waiting({}) == 300 + 3000 + 4000 - 4500
    # 4,500 left: 300 of the small model, and an equal 2,100 of each of the others (their newest).
    assert {m: len(j.pending) for m, j in engine.joiners.items()} == {"small": 300, "busy": 2100, "big": 2100, "foreign": 5000}
    assert next(iter(engine.joiners["big"].pending)) == "big-1900" and engine.joiners["big"].expired == 1900
    assert engine.dirty_models == {"busy", "big"}  # the foreign model is not saved over its owner's record
    assert engine._bound_waiting({}) == 0  # within the bound: nothing more


def _evict_one_at_a_time(pending: dict, max_pending: int, horizon: float) -> int:
    """What eviction means, written plainly (the joiner's own does it in one pass)."""
    n = 0
    while pending:
        first = next(iter(pending))
        if len(pending) > max_pending or pending[first][1] < horizon:
            del pending[first]
            n += 1
        else:
            break
    return n


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 30), st.floats(0.5, 20),
       st.lists(st.lists(st.floats(0, 100, allow_nan=False), min_size=0, max_size=15), max_size=12))
def test_eviction_drops_what_is_over_the_cap_or_too_old_oldest_first(max_pending, ttl, batches):
    j = OutcomeJoiner(ttl_seconds=ttl, max_pending=max_pending)
    plain, latest, expired, n = {}, float("-inf"), 0, 0
    for ts in batches:
        ids = [f"e{n + i}" for i in range(len(ts))]
        n += len(ts)
        j.add_predictions("v", ids, ts, [0.5] * len(ts), [None] * len(ts))
        plain.update(zip(ids, (("v", t, 0.5, None) for t in ts)))
        if ts:
            latest = max(latest, max(ts))
        expired += _evict_one_at_a_time(plain, max_pending, latest - ttl)
        assert list(j.pending.items()) == list(plain.items()) and j.expired == expired


def test_concept_drift_alert_ids_do_not_depend_on_how_outcomes_were_batched():
    # The window index in an alert's id is that of the labelled event the change was found at,
    # not of where its batch of outcomes began: a replay in larger batches repeats the same ids.
    import numpy as np

    from streamproc.config import MonitorConfig
    from streamproc.monitor import ModelMonitor
    from streamproc.outcomes import Match

    rng = np.random.default_rng(1)
    wrong = np.concatenate([rng.random(1500) < 0.1, rng.random(1500) < 0.5])
    matches = [Match(f"e{i}", "v1", float(i), 0.9, "1", "0" if w else "1", None) for i, w in enumerate(wrong)]

    def alerts(batch: int) -> list[tuple]:
        mon = ModelMonitor("m", "v1", MonitorConfig())
        out = []
        for start in range(0, len(matches), batch):
            out += mon.update_errors(matches[start:start + batch]).alerts
        return [(a["detector"], a["window"]["index"], a["alert_id"], a["window"]) for a in out]

    one = alerts(1)
    assert one and {index for _, index, _, _ in one} == {1}  # found after the 1000th labelled event
    # The whole window, not only its index: it described the batch of outcomes (count 1 here, 3000 there).
    assert alerts(7) == alerts(100) == alerts(250) == alerts(3000) == one
    for _, _, _, window in one:
        assert window["start"] == 1000.0 and window["count"] == window["end"] - 1000.0 + 1


def test_a_rate_of_wrong_labels_waits_for_enough_wrong_ones():
    # From 500 outcomes of a model wrong 3 % of the time (15 or so wrong), the rate came out as
    # low as 1.2 %, and the detectors scaled to it raised critical alerts on a stationary stream.
    mon = ErrorMonitor(MonitorConfig())  # concept.warmup 500
    wrong = [1 if i % 33 == 0 else 0 for i in range(3000)]  # 3 %
    mon.update(matches(wrong[:500]))
    assert mon.baseline is None
    mon.update(matches(wrong[500:], 500))
    assert mon.baseline[0] == 50 / (49 * 33 + 1)  # at the 50th wrong one
    # A near-perfect model: the warm-up ends at ten times its length, wrong ones or not.
    mon = ErrorMonitor(MonitorConfig())
    mon.update(matches([1 if i % 1000 == 0 else 0 for i in range(4999)]))
    assert mon.baseline is None
    mon.update(matches([0], 4999))
    assert mon.baseline[0] == 5 / 5000


def test_a_label_rate_warming_up_in_older_state_goes_on_from_its_errors():
    # Saved by a streamproc that kept the warm-up's errors in a list.
    mon = ErrorMonitor(MonitorConfig())
    mon.update(matches([1, 0, 0, 0]))
    state = mon.__dict__.copy()
    for name in ("_warm_labels", "_warm_wrong"):
        state.pop(name)
    state["_warm"] = [1.0] * 30 + [0.0] * 370
    old = ErrorMonitor.__new__(ErrorMonitor)
    old.__dict__.update(state)
    old.update(matches([1] * 20 + [0] * 80, 400))
    assert old.baseline[0] == 50 / 500


def values(errors, start=0, truth=None):
    return [Match(f"e{start + i}", "v", float(start + i), 10.0 + e, None, truth, 10.0) for i, e in enumerate(errors)]


def test_a_glitch_in_the_warm_up_does_not_blind_the_detectors():
    # One error of 1e9 among errors of about 1 made the baseline's spread so wide (4.5e7) that a
    # tenfold rise was never detected.
    rng = np.random.default_rng(5)
    errors = np.abs(rng.normal(1.0, 0.3, 500))
    errors[100] = 1e9
    mon = ErrorMonitor(MonitorConfig())
    mon.update(values(errors))
    mean, std = mon.baseline
    assert abs(mean - 1.0) < 0.1 and std < 1
    assert mon.update(values(np.abs(rng.normal(1.0, 0.3, 500)), 500))[0] == []
    changes, _ = mon.update(values(np.abs(rng.normal(10.0, 0.3, 300)), 1000))
    assert changes and changes[0].critical


def test_errors_that_cannot_be_compared_are_not_scored():
    mon = ErrorMonitor(MonitorConfig())
    # Two huge values of opposite signs: an infinite error.
    mon.update([Match("e0", "v", 0.0, -1.5e308, None, None, 1.5e308)])
    assert (mon.count, mon.unscorable, mon.kind) == (0, 1, None)
    # A version whose outcomes were labels: values (|score - value|) are another error.
    mon.update(matches([0, 1, 0], 1))
    mon.update(values([0.5, 0.25], 4) + matches([1], 6))
    assert (mon.count, mon.unscorable, mon.kind) == (4, 3, "classification")
    assert list(mon.rolling) == [0, 1, 0, 1]


def test_an_event_predicted_by_two_versions_is_joined_to_both():
    # A shadow version scoring the live traffic: its prediction replaced the live one's, whose
    # error was then never watched (and 2000 of its predictions were in none of the counts).
    from streamproc.engine import MonitorEngine
    from streamproc.config import load_config
    from streamproc.decode import decode_outcomes, decode_predictions
    import orjson
    from streamproc.synth import ModelStream

    events = list(ModelStream("m", n_numeric=2, seed=8).events(600))
    shadow = [{**e, "model_version": "shadow", "prediction": {"score": 1 - e["prediction"]["score"]}} for e in events]
    engine = MonitorEngine(load_config(None, environ={"STREAMPROC_WARMUP_SIZE": "100"}))
    engine.process_outcomes(decode_outcomes([b'{"event_id": "none", "model_id": "m", "ts": 0, "label": "1"}'])[0])
    for part in (events[:300], shadow[:300], shadow[300:], events[300:]):
        engine.process(decode_predictions([orjson.dumps(e) for e in part])[0])
    joiner = engine.joiners["m"]
    assert len(joiner.pending) == 600
    outcomes = [{"event_id": e["event_id"], "model_id": "m", "ts": e["ts"] + 1, "label": "1"} for e in events]
    engine.process_outcomes(decode_outcomes([orjson.dumps(o) for o in outcomes])[0])
    assert (joiner.matched, joiner.unmatched, len(joiner.pending)) == (1200, 1, 0)
    live, other = engine.monitors[("m", "default")].errors, engine.monitors[("m", "shadow")].errors
    assert live.count == other.count == 600
    # The same version predicting an event again replaces its prediction (one match, not two).
    j = OutcomeJoiner(ttl_seconds=100, max_pending=10)
    j.add_predictions("v1", ["a"], [0.0], [0.1], [None])
    j.add_predictions("v2", ["a"], [1.0], [0.2], [None])
    j.add_predictions("v1", ["a"], [2.0], [0.3], [None])
    assert [(m.version, m.score) for m in j.match([("a", 5.0, None, 1.0)])] == [("v1", 0.3), ("v2", 0.2)]
    # Waiting since the first prediction: expired by its time.
    j.add_predictions("v1", ["b"], [3.0], [0.1], [None])
    j.add_predictions("v2", ["b"], [50.0], [0.1], [None])
    j.add_predictions("v1", ["c"], [104.0], [0.1], [None])
    assert list(j.pending) == ["c"] and j.expired == 2  # (predictions, as matches count)
