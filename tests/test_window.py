"""Window panes (mergeable sketches), time and sliding windows, quantiles, and state snapshots."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamproc.config import MonitorConfig, load_config
from streamproc.decode import PredictionBatch
from streamproc.engine import MonitorEngine
from streamproc.monitor import ModelMonitor
from streamproc.profile import build_reference
from streamproc.synth import Drift, ModelStream
from streamproc.window import Pane, merge_all

from .test_monitor import to_batch

REF_EVENTS = list(ModelStream("w", n_numeric=3, n_categorical=1, seed=70).events(3000))
REFERENCE = build_reference("w", "default", [e["features"] for e in REF_EVENTS],
                            [e["prediction"]["score"] for e in REF_EVENTS], [e["prediction"]["label"] for e in REF_EVENTS])
PROFILES = dict(REFERENCE.features)


def pane_of(events, index=0) -> Pane:
    p = Pane.empty(index, PROFILES)
    if not events:
        return p
    b = to_batch(events)
    p.add(PROFILES, b.features, b.ts_array(), b.score_array(), b.labels)
    return p


def same(a: Pane, b: Pane) -> bool:
    return (a.index, a.count, a.start, a.end, a.lo, a.hi) == (b.index, b.count, b.start, b.end, b.lo, b.hi) and all(
        np.array_equal(a.counts[k], b.counts[k]) for k in a.counts)


chunks = st.lists(st.integers(0, 2999), min_size=0, max_size=40)


@settings(max_examples=60, deadline=None)
@given(chunks, chunks, chunks)
def test_pane_merge_is_associative_and_commutative(a, b, c):
    pa, pb, pc = (pane_of([REF_EVENTS[i] for i in idx], n) for n, idx in enumerate((a, b, c)))
    assert same(pa.merge(pb).merge(pc), pa.merge(pb.merge(pc)))
    assert same(pa.merge(pb), pb.merge(pa))
    # And merging the panes of a split equals sketching everything at once.
    assert same(merge_all([pa, pb, pc]), pane_of([REF_EVENTS[i] for i in a + b + c], 2)) or not (a or b or c)


def test_sketch_gives_psi_bins_and_quantiles():
    events = list(ModelStream("w", n_numeric=3, n_categorical=1, seed=71).events(5000))
    p = pane_of(events)
    prof = PROFILES["x0"]
    xs = np.array([e["features"]["x0"] for e in events])
    assert np.array_equal(prof.to_bins(p.counts["x0"]), prof.bin_counts(xs.tolist()))
    qs = prof.quantiles(p.counts["x0"], (0.05, 0.5, 0.95), p.lo["x0"], p.hi["x0"])
    exact = np.quantile(xs, (0.05, 0.5, 0.95))
    # Within a fortieth of the reference distribution: about 0.07 standard deviations here.
    assert np.allclose(qs, exact, atol=0.1), (qs, exact)


def feed(mon: ModelMonitor, events, size=97):
    b = to_batch(events)
    alerts, closed = [], 0
    for i in range(0, len(b), size):
        r = mon.update(b.slice(i, i + size))
        alerts += r.alerts
        closed += r.windows_closed
    return alerts, closed


def test_time_windows_close_by_event_time_and_count_late_events():
    cfg = MonitorConfig(window_size=500, window={"kind": "time", "seconds": 10, "allowed_lateness": 2, "min_events": 10})
    mon = ModelMonitor("w", "default", cfg, REFERENCE)
    events = list(ModelStream("w", n_numeric=3, n_categorical=1, seed=72, rate=100).events(3000))  # 30 s of event time
    # Two events arrive 15 s late (after their window closed): counted, not dropped.
    late = [dict(events[100], event_id="late1"), dict(events[200], event_id="late2")]
    alerts, closed = feed(mon, events[:2500] + late + events[2500:])
    t0 = events[0]["ts"]
    assert mon.late_events == 2
    # Windows [t0, t0+10) and [t0+10, t0+20) closed once the watermark passed their end + 2 s.
    assert closed == 2
    assert mon.pane.index == int((t0 + 20) // 10)
    assert mon.pane.count == 1002  # [t0+20, t0+30) is still open (watermark t0+30 - 2 s), plus the 2 late ones
    assert alerts == []


def test_sliding_windows_evaluate_every_pane_over_the_last_slide_panes():
    cfg = MonitorConfig(window_size=1000, warmup_size=1000, window={"slide": 4})
    mon = ModelMonitor("w", "default", cfg)
    events = list(ModelStream("w", n_numeric=3, n_categorical=1, seed=73, drift=Drift(4000, ("x1",), 1.5)).events(6000))
    alerts, closed = feed(mon, events)
    # 5000 events after warmup = 20 panes of 250; the first window is full after 4 panes.
    assert closed == 20 - 3
    first = min(a["window"]["index"] for a in alerts if a["feature"] == "x1")
    # Drift starts at pane 12 (event 4000): a sliding window notices it within a pane or two.
    assert 12 <= first <= 13
    tumbling = ModelMonitor("w", "default", MonitorConfig(window_size=1000, warmup_size=1000))
    t_alerts, _ = feed(tumbling, events)
    assert min(a["window"]["index"] for a in t_alerts if a["feature"] == "x1") == 3  # pane 12 is in window 3


def test_window_slide_must_divide_the_window():
    with pytest.raises(ValueError, match="multiple of window.slide"):
        MonitorConfig(window_size=1000, window={"slide": 3})


@settings(max_examples=8, deadline=None)
@given(st.integers(1, 7999), st.sampled_from(["count", "time"]))
def test_snapshot_restore_round_trips_exactly(cut, kind):
    """Stopping anywhere, snapshotting, restoring into a new engine and going on gives the
    same alerts, retrain requests and final state as one uninterrupted run."""
    config = load_config(None, environ={})
    config.defaults.window_size = 500
    config.defaults.warmup_size = 1000
    if kind == "time":
        config.defaults.window = config.defaults.window.model_copy(update={"kind": "time", "seconds": 5, "min_events": 10})
    events = to_batch(list(ModelStream("w", n_numeric=3, n_categorical=1, seed=74, drift=Drift(5000, ("x0",), 1.0)).events(8000)))

    def run(engine, batch, step=700):
        out = []
        for i in range(0, len(batch), step):
            r = engine.process({("w", "default"): batch.slice(i, i + step)})
            out += [(a["alert_id"], a["statistic"]) for a in r.alerts] + [r2["request_id"] for r2 in r.retrains]
        return out

    whole = MonitorEngine(config)
    expected = run(whole, events)
    first = MonitorEngine(config)
    got = run(first, events.slice(0, cut))
    second = MonitorEngine(config)
    second.restore(first.snapshot())
    got += run(second, events.slice(cut, len(events)))
    assert got == expected
    a, b = whole.monitors[("w", "default")], second.monitors[("w", "default")]
    assert (a.events, a.late_events, a.watermark) == (b.events, b.late_events, b.watermark)
    assert same(a.pane, b.pane) and len(a.closed) == len(b.closed)
    assert vars(a.policy.state) == vars(b.policy.state)
    assert (a.detectors.adwin.width, a.detectors.adwin.estimation, a.detectors.pending) == (
        b.detectors.adwin.width, b.detectors.adwin.estimation, b.detectors.pending)
    ph_a, ph_b = vars(a.detectors.ph), vars(b.detectors.ph)
    skip = ("_test_drift", "_x_mean")  # a bound method and a river Mean: compared below
    assert {k: v for k, v in ph_a.items() if k not in skip} == {k: v for k, v in ph_b.items() if k not in skip}
    assert (ph_a["_x_mean"].get(), ph_a["_x_mean"].n) == (ph_b["_x_mean"].get(), ph_b["_x_mean"].n)
    # And they go on to behave the same.
    more = to_batch(list(ModelStream("w", n_numeric=3, n_categorical=1, seed=75, drift=Drift(0, ("x2",), 2.0)).events(3000, start=8000)))
    assert run(whole, more) == run(second, more)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_sketching_features_together_equals_one_at_a_time(data):
    """``sketch_many`` bins exactly as each profile's own ``sketch``."""
    from streamproc.profile import build_feature_profile
    from streamproc.window import sketch_many

    values = st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True, width=32), st.sampled_from([0.0, 1.0, 2.5]))
    k = data.draw(st.integers(1, 5))
    profiles = [build_feature_profile(f"f{j}", data.draw(st.lists(values, min_size=1, max_size=40)), kind="numeric")
                for j in range(k)]
    n = data.draw(st.integers(0, 30))
    # Values on the edges themselves, too: a bin is [lower edge, upper edge).
    pool = st.one_of(values, st.sampled_from([e for p in profiles for e in p.fine_edges.tolist()] or [0.0]))
    matrix = np.array([[np.nan if v is None else v for v in data.draw(st.lists(pool, min_size=n, max_size=n))]
                       for _ in range(k)], dtype=np.float64).reshape(k, n)
    together = sketch_many([p.fine_edges for p in profiles], matrix)
    assert [s.tolist() for s in together] == [p.sketch(matrix[j]).tolist() for j, p in enumerate(profiles)]


def test_sketching_small_and_large_chunks_of_the_same_features_alike():
    """Small chunks use the cached edge index of their features, large ones the last one
    built: each chunk bins as each profile's own ``sketch``, whichever came first."""
    from streamproc.profile import build_feature_profile
    from streamproc.window import SMALL_CHUNK, sketch_many

    rng = np.random.default_rng(11)
    samples = [rng.normal(size=500), rng.lognormal(0, 2, 500), rng.poisson(3, 500).astype(float)]
    profiles = [build_feature_profile(f"f{j}", x.tolist(), kind="numeric") for j, x in enumerate(samples)]
    other = [build_feature_profile(f"g{j}", (x * 3 + 1).tolist(), kind="numeric") for j, x in enumerate(samples)]
    for n in [5, SMALL_CHUNK, 1000, 7, 2 * SMALL_CHUNK, 3]:
        for ps in (profiles, other):
            matrix = np.array([rng.choice(np.concatenate([x, [np.nan, np.inf, -np.inf]]), n) for x in samples])
            matrix[:, :3] = [[p.fine_edges[0], p.fine_edges[-1], p.fine_edges[len(p.fine_edges) // 2]] for p in ps]
            together = sketch_many([p.fine_edges for p in ps], matrix)
            assert [s.tolist() for s in together] == [p.sketch(matrix[j]).tolist() for j, p in enumerate(ps)]


@settings(max_examples=30, deadline=None)
@given(chunks, chunks)
def test_a_restored_pane_goes_on_adding_as_the_original(first, then):
    """A pane's sketches share one array while it is open (numeric ones added in one call);
    pickled and restored, they share one array again, and it adds to the same result. A pane
    without one (merged, or saved by an earlier streamproc) restores with one array per
    feature and adds feature by feature."""
    import pickle

    def add(p, idx):
        if idx:
            b = to_batch([REF_EVENTS[i] for i in idx])
            p.add(PROFILES, b.features, b.ts_array(), b.score_array(), b.labels)

    original = Pane.empty(0, PROFILES)
    add(original, first)
    restored = pickle.loads(pickle.dumps(original))
    assert restored._flat is not None and restored._flat.flags.owndata
    assert all(np.shares_memory(view, restored._flat) for view in restored.counts.values())
    separate = Pane.empty(0, PROFILES)
    add(separate, first)
    separate._flat = None  # as a merged pane, or one saved before panes were saved whole
    separate = pickle.loads(pickle.dumps(separate))
    assert separate._flat is None
    for p in (original, restored, separate):
        add(p, then)
    assert same(original, restored) and same(original, separate)
    assert list(restored.counts) == list(original.counts)
    assert same(restored, pane_of([REF_EVENTS[i] for i in first + then]))
    assert same(pickle.loads(pickle.dumps(restored)), restored)


def test_a_pane_fed_its_profiles_in_another_order_still_adds_each_feature_to_its_own_sketch():
    from streamproc.profile import build_feature_profile

    x = build_feature_profile("x", [float(i) for i in range(100)])
    y = build_feature_profile("y", [float(i) for i in range(100)])  # same edges: same sketch sizes
    pane = Pane.empty(0, {"x": x, "y": y})
    pane.add({"y": y, "x": x}, [{"x": 5.0, "y": 95.0}], [1.0])
    assert x.sketch([5.0]).tolist() == pane.counts["x"].tolist()
    assert y.sketch([95.0]).tolist() == pane.counts["y"].tolist()


def _table(events, layout):
    from streamproc.feature_table import FeatureTable

    table = FeatureTable(layout)
    for e in events:
        table.add(e["features"])
    return table


def _irregular_events():
    """REF_EVENTS' features with some rows irregular (a feature absent, an unknown one, a
    null, a numeric string, a number as a category) and some event times out of order."""
    events = []
    for i, e in enumerate(REF_EVENTS[:400]):
        f = dict(e["features"])
        if i % 13 == 0:
            del f["x1"]
        if i % 17 == 0:
            f["new"] = i
        if i % 19 == 0:
            f["x2"] = None
        if i % 23 == 0:
            f["x0"] = str(f["x0"])
        if i % 29 == 0:
            f["c0"] = i
        events.append({**e, "features": f, "ts": e["ts"] - (50.0 if i % 11 == 0 else 0.0)})
    return events


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 45), st.sampled_from(["table", "dicts", "reordered", "narrow"]),
                          st.sampled_from(["none", "read", "pickle"])), min_size=1, max_size=20),
       st.sampled_from([32, 64]))
def test_small_chunks_wait_in_the_pane_and_sketch_as_one(steps, defer):
    """Chunks of a known layout smaller than ``DEFER_EVENTS`` wait in the pane until that many
    (``defer``: ``DEFER_EVENTS``, or ``DEFER_EVENTS_FEW`` in a worker of few models) are
    pending or the pane is read or pickled; whatever the chunking, whatever is read when,
    the pane equals one that sketched every event at once, and its count and time range are
    right before anything is sketched. (A table of another layout than the profiles', its
    numeric features in another order or one of them missing, is sketched at once: the rows
    carrying what the layout lacks are kept whole in the table, not in pending rows.)"""
    import pickle

    from streamproc.feature_table import FeatureLayout, layout_for
    from streamproc.window import DEFER_EVENTS, DEFER_EVENTS_FEW

    assert (DEFER_EVENTS, DEFER_EVENTS_FEW) == (32, 64)
    events = _irregular_events()
    layout = layout_for(REFERENCE)
    others = {"reordered": FeatureLayout(layout.numeric[::-1], layout.other),
              "narrow": FeatureLayout(layout.numeric[:-1], layout.other)}
    profiles = {**PROFILES, "prediction.score": REFERENCE.score, "prediction.label": REFERENCE.label}
    pane, pos, waited, fed = Pane.empty(0, profiles), 0, False, []
    for n, kind, then in steps:
        chunk = events[pos:pos + n]  # shorter (or empty) once the events run out
        fed.append((len(chunk), kind))
        pos += len(chunk)
        b = to_batch(chunk) if chunk else None
        if not chunk:
            rows = []
        else:
            rows = b.features if kind == "dicts" else _table(chunk, others.get(kind, layout))
        pane.add(profiles, rows, b.ts_array() if chunk else np.zeros(0), b.score_array() if chunk else np.zeros(0),
                 b.labels if chunk else [], defer)
        waited |= pane._pending is not None
        assert pane._pending is None or pane._pending.n < defer
        ts = [e["ts"] for e in events[:pos]]
        assert (pane.count, pane.start, pane.end) == (pos, min(ts, default=np.inf), max(ts, default=-np.inf))
        if then == "read":
            assert pane.counts and pane._pending is None
        elif then == "pickle":
            state = pane.__getstate__()
            assert {"counts", "lo", "hi"} <= state.keys() and "_pending" not in state  # as panes were saved before
            pane = pickle.loads(pickle.dumps(pane))
    whole = Pane.empty(0, profiles)
    if pos:
        b = to_batch(events[:pos])
        whole.add(profiles, _table(events[:pos], layout), b.ts_array(), b.score_array(), b.labels)
    assert same(pane, whole)
    assert waited or not any(0 < n < defer and kind == "table" for n, kind in fed)


def test_waiting_rows_are_copies_that_do_not_keep_their_batch_alive():
    import gc
    import weakref

    from streamproc.feature_table import layout_for

    layout = layout_for(REFERENCE)
    batch = _table(REF_EVENTS[:2000], layout)
    numbers = weakref.ref(batch.numbers)
    pane = Pane.empty(0, PROFILES)
    chunk = batch[100:105]
    pane.add(PROFILES, chunk, np.arange(5.0))
    assert pane._pending is not None and pane._pending.n == 5
    del batch, chunk
    gc.collect()
    assert numbers() is None
    expected = pane_of(REF_EVENTS[100:105])
    assert all(np.array_equal(pane.counts[k], expected.counts[k]) for k in PROFILES) and pane.lo == expected.lo


_extreme_values = st.one_of(st.none(), st.sampled_from([0.0, -3.5, 1e300, -1e300, np.nan, np.inf, -np.inf]),
                            st.floats(-10, 10))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(st.dictionaries(st.sampled_from(["x0", "x1", "x2"]), _extreme_values), min_size=1, max_size=8),
                min_size=1, max_size=4))
def test_a_panes_lows_and_highs_are_its_smallest_and_largest_finite_values(chunks):
    # Infinities, NaN, nulls and absent values are not values for lo and hi; a feature with
    # none finite in the pane has neither.
    pane = Pane.empty(0, PROFILES)
    for rows in chunks:
        pane.add(PROFILES, rows, np.zeros(len(rows)))
    finite = {name: [v for rows in chunks for row in rows if (v := row.get(name)) is not None and np.isfinite(v)]
              for name in ("x0", "x1", "x2")}
    assert pane.lo == {name: min(vs) for name, vs in finite.items() if vs}
    assert pane.hi == {name: max(vs) for name, vs in finite.items() if vs}



def _time_monitor(seconds: float, lateness: float, slide: int = 1) -> ModelMonitor:
    cfg = MonitorConfig(window_size=100 * slide, window={"kind": "time", "seconds": seconds, "slide": slide,
                                                         "allowed_lateness": lateness, "min_events": 1})
    return ModelMonitor("w", "default", cfg, REFERENCE)


def _at(times, start: int = 0) -> PredictionBatch:
    """Reference-like events at these event times."""
    evs = REF_EVENTS[start:start + len(times)]
    return PredictionBatch("w", "default", [f"e{start + i}" for i in range(len(times))], [float(t) for t in times],
                           [dict(e["features"]) for e in evs], [e["prediction"]["score"] for e in evs],
                           [e["prediction"]["label"] for e in evs])


def _windows(mon: ModelMonitor, times, cuts) -> list:
    """Feed events at ``times`` in chunks ending at ``cuts``; every pane closed and evaluated,
    then those left open, as (index, count, start, end, sketch totals)."""
    seen = []
    close = mon._close_pane
    mon._close_pane = lambda pane, result: (seen.append(pane), close(pane, result))[1]
    start = 0
    for stop in sorted(set(cuts) | {len(times)}):
        if stop > start:
            mon.update(_at(times[start:stop], start))
            start = stop
    shape = lambda p: (p.index, p.count, p.start, p.end, {k: int(v.sum()) for k, v in p.counts.items()})  # noqa: E731
    return [shape(p) for p in seen] + ["open"] + [shape(mon.open_panes[k]) for k in sorted(mon.open_panes)]


@settings(max_examples=150, deadline=None)
@given(st.lists(st.one_of(st.floats(0, 3), st.floats(-40, 0), st.just(0.0)), min_size=1, max_size=60),
       st.lists(st.integers(1, 59), max_size=8), st.sampled_from([(10, 0, 1), (10, 5, 1), (10, 2, 2), (600, 0, 9)]))
def test_time_windows_do_not_depend_on_batching(steps, cuts, window):
    # Each event goes where it would had it come alone: to the pane of its time, or, when the
    # events before it closed that pane (late), to the oldest open pane holding events; so the
    # panes evaluated, their events and the late count are the same however the input is cut.
    seconds, lateness, slide = window
    times, t = [], 1_767_225_600.0
    for step in steps:  # mostly forward, some events behind the newest, some far behind
        t += step if step >= 0 else 0.0
        times.append(t + min(step, 0.0))
    one, many = _time_monitor(seconds, lateness, slide), _time_monitor(seconds, lateness, slide)
    assert _windows(one, times, []) == _windows(many, times, cuts)
    scale = slide / seconds  # panes per second, as the monitor reckons them
    assert one.late_events == many.late_events == sum(
        1 for i, ts in enumerate(times) if i and math.floor(ts * scale) + 1 <= (max(times[:i]) - lateness) * scale)


def test_an_event_within_the_lateness_is_not_late_whatever_batch_it_comes_in():
    a, b = _time_monitor(10, 60), _time_monitor(10, 60)
    a.update(_at([100.0, 95.0]))
    b.update(_at([100.0]))
    b.update(_at([95.0], 1))
    assert a.late_events == b.late_events == 0
    assert sorted(b.open_panes) == [9, 10] and b.open_panes[9].count == 1


def test_a_late_event_after_a_gap_joins_the_oldest_open_pane_not_one_of_its_own():
    mon = _time_monitor(10, 5)
    mon.update(_at([1.0 + i * 0.05 for i in range(100)]))
    mon.update(_at([500.0 + i * 0.05 for i in range(100)], 100))  # pane 0 closes
    result = mon.update(_at([200.0] * 10 + [3.0] * 10, 200))  # 300 s and more behind: late
    assert mon.late_events == 20 and result.windows_closed == 0
    assert list(mon.open_panes) == [50] and mon.open_panes[50].count == 120


def test_an_event_on_a_window_boundary_opens_that_window():
    # seconds / slide = 66.66... rounded put t0 (a multiple of 600) in the pane before it.
    mon = _time_monitor(600, 0, slide=9)
    t0 = 1_767_225_600.0
    mon.update(_at([t0 - 1.0, t0, t0 + 1000.0]))
    assert [(p.index, p.start) for p in mon.closed][-2:] == [(int(t0) * 9 // 600 - 1, t0 - 1.0), (int(t0) * 9 // 600, t0)]


def test_a_late_event_after_a_new_reference_joins_the_pane_of_the_newest_event_time():
    # A new reference starts fresh windows (no pane open) but keeps the event-time clock.
    mon = _time_monitor(10, 5)
    mon.update(_at([1.0, 100.0]))
    mon.set_reference(REFERENCE)
    mon.update(_at([2.0, 3.0], 2))
    assert mon.late_events == 2 and list(mon.open_panes) == [10] and mon.open_panes[10].count == 2


def test_a_late_event_joins_the_oldest_open_pane_even_one_opened_in_its_own_chunk():
    mon = _time_monitor(10, 30)
    mon.update(_at([1.0]))
    mon.update(_at([100.0, 125.0, 2.0], 1))  # 2.0 is late: panes below 9 are closed at 125
    assert mon.late_events == 1 and {k: p.count for k, p in mon.open_panes.items()} == {10: 2, 12: 1}
