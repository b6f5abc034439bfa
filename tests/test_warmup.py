"""``streamproc.warmup``: a warm-up kept by column builds the reference its rows would build."""

from __future__ import annotations

import math
import pickle

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import streamproc.warmup as warmup_module
from streamproc.columns import to_float_array
from streamproc.config import MonitorConfig
from streamproc.decode import PredictionBatch, decode_predictions
from streamproc.monitor import ModelMonitor
from streamproc.profile import build_reference
from streamproc.synth import ModelStream
from streamproc.warmup import Warmup, WarmupSample

# What a decoded feature value can be: JSON numbers (ints small and past 2**53), booleans,
# strings (numeric ones too), null. A feature's values are drawn from one of a few mixes.
_VALUES = {
    "float": st.floats(-1e6, 1e6, allow_nan=False),
    "int": st.integers(-1000, 1000),
    "number": st.one_of(st.floats(-50, 50, allow_nan=False), st.integers(-50, 50)),
    "big": st.one_of(st.integers(-2**70, 2**70), st.floats(-1e20, 1e20, allow_nan=False),
                     st.sampled_from([10**400, -10**400])),  # beyond any double
    "text": st.sampled_from(["a", "b", "c", "3", "3.0"]),
    "mixed": st.one_of(st.integers(0, 3), st.floats(0, 3, allow_nan=False), st.booleans(), st.sampled_from(["1", "x"])),
}


@st.composite
def chunked_rows(draw):
    """Rows of a few features (each of one mix, sometimes null or absent, one appearing late),
    cut into chunks."""
    n_features = draw(st.integers(1, 5))
    mixes = [draw(st.sampled_from(sorted(_VALUES))) for _ in range(n_features)]
    n_rows = draw(st.integers(1, 60))
    late = draw(st.integers(0, n_rows))  # row from which feature "late" comes
    rows = []
    for i in range(n_rows):
        row = {}
        for j, mix in enumerate(mixes):
            kind = draw(st.sampled_from(["value"] * 6 + ["null", "absent"]))
            if kind == "value":
                row[f"f{j}"] = draw(_VALUES[mix])
            elif kind == "null":
                row[f"f{j}"] = None
        if i >= late:
            row["late"] = draw(st.one_of(st.floats(0, 1), st.sampled_from(["p", "q"])))
        rows.append(row)
    cuts = sorted(set(draw(st.lists(st.integers(1, max(n_rows - 1, 1)), max_size=6))))
    bounds = [0] + [c for c in cuts if c < n_rows] + [n_rows]
    return rows, [rows[a:b] for a, b in zip(bounds, bounds[1:]) if b > a]


def assert_same_reference(a, b):
    assert (a.count, a.dropped_features, list(a.features)) == (b.count, b.dropped_features, list(b.features))
    for name in a.features:
        assert a.features[name] == b.features[name], name  # compares every field, NaN equal to NaN
        assert a.features[name].fine_edges.tolist() == b.features[name].fine_edges.tolist(), name
    assert a.score == b.score and a.label == b.label


@settings(max_examples=300, deadline=None)
@given(chunked_rows(), st.sampled_from([1, 3, 1024]), st.sampled_from([1, 5, 32]), st.sampled_from([2, 500]))
def test_a_sample_builds_the_reference_its_rows_build(data, dense, chunk, max_features):
    rows, chunks = data
    sample = WarmupSample()
    original = warmup_module.DENSE_FEATURES, warmup_module.CHUNK
    # Features past DENSE_FEATURES are kept sparse; fewer rows than CHUNK wait as dicts.
    warmup_module.DENSE_FEATURES, warmup_module.CHUNK = dense, chunk
    try:
        for part in chunks:
            sample.extend(part)
            assert len(sample) <= len(rows)
    finally:
        warmup_module.DENSE_FEATURES, warmup_module.CHUNK = original
    assert len(sample) == len(rows)
    names = set().union(*rows)
    assert sample.present() == {name: sum(name in row for row in rows) for name in names}
    for name in names:
        values = [row.get(name) for row in rows]
        got = sample.values(name)
        assert got == values and [type(v) for v in got] == [type(v) for v in values], name
    scores = [float(i % 7) for i in range(len(rows))]
    expected = build_reference("m", "v", rows, scores, max_features=max_features)
    assert_same_reference(build_reference("m", "v", sample, scores, max_features=max_features), expected)


def test_strings_are_kept_once_and_numbers_as_doubles():
    rows = [{"x": float(i), "n": i, "c": "abc"[i % 3] * 40} for i in range(1000)]
    sample = WarmupSample()
    for start in range(0, 1000, 100):  # chunks of at least CHUNK rows go into columns at once
        sample.extend([dict(r) for r in rows[start:start + 100]])
    assert len({id(v) for v in sample.columns["c"].objects}) == 3  # one object per distinct string
    assert sample.columns["x"].objects is None and len(sample.columns["x"].numbers) == 1000
    assert sample.columns["x"].ints is None  # no int seen: no flags kept
    assert sample.values("n") == list(range(1000))  # ints come back as ints


def test_small_chunks_wait_as_dicts_until_there_are_enough():
    sample = WarmupSample()
    for i in range(warmup_module.CHUNK - 1):
        sample.extend([{"x": float(i)}])
    assert not sample.columns and len(sample) == warmup_module.CHUNK - 1
    sample.extend([{"x": -1.0}])
    assert len(sample.columns["x"].numbers) == warmup_module.CHUNK and not sample._pending
    sample.extend([{"x": 7}])
    assert sample.values("x")[-2:] == [-1.0, 7] and not sample._pending  # reading takes the waiting rows in


def to_batch(events: list[dict]) -> PredictionBatch:
    batches, rejected = decode_predictions([orjson.dumps(e) for e in events])
    assert rejected == []
    return next(iter(batches.values()))


def test_a_warmup_saved_by_an_earlier_streamproc_is_carried_on():
    """State pickled before warm-ups were kept by column holds the events as decoded (a
    ``PredictionBatch``); restored, the warm-up goes on and builds the same reference."""
    cfg = MonitorConfig(warmup_size=300, window_size=100)
    batch = to_batch(ModelStream("m", n_numeric=4, n_categorical=2, seed=3).events(300))
    fresh = ModelMonitor("m", "default", cfg)
    fresh.update(batch)

    old = ModelMonitor("m", "default", cfg)
    old.update(batch.slice(0, 120))
    assert old._warm is not None and len(old._warm) == 120
    old._warm = batch.slice(0, 120)  # as an earlier streamproc kept it
    restored = pickle.loads(pickle.dumps(old))
    assert isinstance(restored._warm, Warmup) and len(restored._warm) == 120
    restored.update(batch.slice(120, 300))
    assert restored.reference is not None and restored._warm is None
    assert_same_reference(restored.reference, fresh.reference)


def test_a_warmup_survives_pickling_and_is_dropped_with_the_reference():
    cfg = MonitorConfig(warmup_size=200, window_size=100)
    batch = to_batch(ModelStream("m", n_numeric=3, n_categorical=1, seed=5).events(200))
    mon = ModelMonitor("m", "default", cfg)
    mon.update(batch.slice(0, 150))
    mon = pickle.loads(pickle.dumps(mon))
    mon.update(batch.slice(150, 200))
    assert mon._warm is None
    whole = ModelMonitor("m", "default", cfg)
    whole.update(batch)
    assert_same_reference(mon.reference, whole.reference)
    assert not math.isnan(mon.reference.score.mean)


def test_optional_and_ever_new_features_cost_what_dicts_cost():
    """A feature most events lack, and a producer sending a new feature name per event, must
    not get a column of the sample's every row each (2,000 names x 2,000 rows of doubles)."""
    sample = WarmupSample()
    for i in range(2000):
        row = {f"x{j}": float(j) for j in range(20)}
        row[f"new{i}"] = 1.0  # ever new
        if i % 10 == 0:
            row["coupon"] = "c"  # optional: one event in ten
        sample.extend([row])
    big = WarmupSample()
    big.extend([{f"x{j}": 0.0 for j in range(20)} | {f"new{i}": 1.0} for i in range(2000)])  # one chunk
    for s in (sample, big):
        assert sorted(s.columns) == sorted(f"x{j}" for j in range(20))
        assert sum(col.rows for col in s.columns.values()) <= 20 * 2000
    assert sample.values("new1500") == [None] * 1500 + [1.0] + [None] * 499
    assert sample.present()["coupon"] == 200 and sample.values("coupon")[:11] == ["c"] + [None] * 9 + ["c"]


def test_a_feature_that_comes_back_after_a_gap_reads_absent_in_between():
    sample = WarmupSample()
    sample.extend([{"a": 1.0, "b": 1}] * 40)
    sample.extend([{"a": 2.0}] * 40)
    sample.extend([{"a": 3.0, "b": "x"}] * 40)
    assert sample.values("b") == [1] * 40 + [None] * 40 + ["x"] * 40
    assert sample.present() == {"a": 120, "b": 80}


@pytest.mark.parametrize("values", [[1, 2.5, None], [2**60 + 1, 1.0, 3], [10**400, 2.0], [True, 1, 1.0, "1"]])
def test_values_come_back_as_decoded(values):
    sample = WarmupSample()
    for v in values:
        sample.extend([{"f": v}])
    assert sample.values("f") == values and [type(v) for v in sample.values("f")] == [type(v) for v in values]
    assert np.array_equal(sample.floats("f"), to_float_array(values), equal_nan=True)


# -- thinning (a bound on warm-up memory) ----------------------------------------------------

@settings(max_examples=300, deadline=None)
@given(chunked_rows(), st.lists(st.tuples(st.integers(0, 60), st.integers(0, 2)), max_size=4), st.sampled_from([1, 5, 32]))
def test_a_thinned_warmup_keeps_every_stride_th_event(data, thins, chunk):
    """However chunked, and whenever it is thinned, a warm-up ends up holding exactly its
    events 0, stride, 2*stride, ...: which features they carried, their values, and the
    reference those events build."""
    rows, chunks = data
    scores = [float(i % 7) for i in range(len(rows))]
    labels = ["ab"[i % 2] for i in range(len(rows))]
    thin_at = {}
    for at, doublings in thins:  # before the first chunk starting at or after row `at`
        thin_at[at] = thin_at.get(at, 0) + doublings
    warm = Warmup()
    original = warmup_module.CHUNK
    warmup_module.CHUNK = chunk
    try:
        pos = 0
        for part in chunks:
            for at in [a for a in sorted(thin_at) if a <= pos]:
                warm.thin(warm.stride * 2 ** thin_at.pop(at))
            n = len(part)  # as decode_predictions gives them (big ints would not go through orjson)
            warm.extend(PredictionBatch("m", "v", [f"e{i}" for i in range(pos, pos + n)], [1.0] * n, list(part),
                                        scores[pos:pos + n], labels[pos:pos + n]))
            pos += n
        for doublings in thin_at.values():
            warm.thin(warm.stride * 2 ** doublings)
    finally:
        warmup_module.CHUNK = original
    stride = warm.stride
    kept = rows[::stride]
    assert len(warm) == len(rows) and warm.kept == len(kept) == len(warm.features)
    assert warm.scores.tolist() == scores[::stride] and warm.labels == labels[::stride]
    names = set().union(*kept)
    assert warm.features.present() == {name: sum(name in row for row in kept) for name in names}
    for name in names:
        values = [row.get(name) for row in kept]
        got = warm.features.values(name)
        assert got == values and [type(v) for v in got] == [type(v) for v in values], name
    assert_same_reference(build_reference("m", "v", warm.features, warm.scores, warm.labels),
                          build_reference("m", "v", kept, scores[::stride], labels[::stride]))


def test_thinning_frees_the_memory_and_survives_pickling():
    batch = to_batch(ModelStream("m", n_numeric=20, n_categorical=2, seed=2).events(1000))
    warm = Warmup.of(batch.slice(0, 600))
    full = warm.nbytes()
    warm.thin(4)
    assert warm.kept == 150 and len(warm) == 600 and warm.nbytes() < full / 3.5
    with pytest.raises(ValueError, match="multiple"):
        warm.thin(6)
    warm = pickle.loads(pickle.dumps(warm))
    assert (warm.stride, len(warm), warm.kept) == (4, 600, 150)
    warm.extend(batch.slice(600, 1000))  # event 600 is kept, then every 4th
    assert warm.kept == 250 and warm.scores.tolist() == batch.scores[::4]


def test_a_warmup_pickled_before_thinning_existed_reads_as_unthinned():
    warm = Warmup.of(to_batch(ModelStream("m", n_numeric=3, seed=1).events(50)))
    old = Warmup.__new__(Warmup)
    old.__setstate__((None, {"features": warm.features, "scores": warm.scores, "labels": warm.labels}))
    assert (len(old), old.kept, old.stride) == (50, 50, 1)
    # ... and an unthinned one is saved as earlier versions saved it, so they can read it back.
    assert set(warm.__getstate__()[1]) == {"features", "scores", "labels"}
    warm.thin(2)
    assert set(warm.__getstate__()[1]) == {"features", "scores", "labels", "seen", "stride"}


def test_thinning_lets_go_of_the_strings_of_the_events_it_drops():
    rows = [{"x": float(i), "request": f"req-{i:06d}"} for i in range(2000)]
    warm = Warmup.of(PredictionBatch("m", "v", [f"e{i}" for i in range(2000)], [0.0] * 2000, rows, [0.5] * 2000,
                                     ["yes" if i % 3 else "no" for i in range(2000)]))
    full = warm.nbytes()
    warm.thin(16)
    assert len(warm.features._strings) == 125 + 2  # the kept events' ids, and the two labels
    assert warm.features.values("request") == [f"req-{i:06d}" for i in range(0, 2000, 16)]
    assert warm.labels == ["yes" if i % 3 else "no" for i in range(0, 2000, 16)]
    assert warm.nbytes() < full / 12


def _engine_with_budget(budget: int, warmup_size: int = 2000):
    from streamproc.config import load_config
    from streamproc.engine import MonitorEngine

    engine = MonitorEngine(load_config(None, overrides={"window_size": 500, "warmup_size": warmup_size}, environ={}))
    engine.warmup_budget = budget
    return engine


def _numeric_only(event: dict) -> dict:
    event["features"].pop("c0", None)
    return event


def _tracked(engine) -> int:
    return sum(mon.warmup.nbytes() for mon in engine.monitors.values() if mon.warmup is not None)


def test_the_engine_keeps_warmups_within_their_memory_budget():
    """20 models warming up at once would hold about 8 MB; with 2.5 MB each keeps a fair share
    (every 4th of its events), and its reference is the one those events build."""
    n_models, warmup_size, budget = 20, 2000, 5 * 2**19
    streams = {f"m{k}": [orjson.dumps(e) for e in ModelStream(f"m{k}", n_numeric=20, n_categorical=2, seed=k).events(warmup_size)]
               for k in range(n_models)}
    assert Warmup.of(to_batch([orjson.loads(raw) for raw in streams["m0"]])).nbytes() * n_models > 3 * budget
    engine = _engine_with_budget(budget)
    thinned = {}
    for start in range(0, warmup_size, 100):
        batches, rejected = decode_predictions([raw for events in streams.values() for raw in events[start:start + 100]])
        assert rejected == []
        out = engine.process(batches)
        thinned.update(out.thinned)
        assert set(out.thinned) <= engine.dirty_monitors
        assert engine.warmup_bytes == _tracked(engine) <= budget
    assert len(thinned) == n_models and engine.warmup_bytes == 0
    for key, mon in engine.monitors.items():
        stride = thinned[key]
        assert stride == 4 and mon.reference is not None and mon.reference.count == warmup_size // stride
        kept = to_batch([orjson.loads(raw) for raw in streams[key[0]][::stride]])
        assert_same_reference(mon.reference, build_reference(key[0], key[1], kept.features, kept.scores, kept.labels))


def test_thinning_stops_at_about_a_hundred_events_and_restored_warmups_count():
    engine = _engine_with_budget(1, warmup_size=1000)  # no budget can be met: 1000 // 100 allows every 8th event
    events = [orjson.dumps(e) for e in ModelStream("m", n_numeric=5, seed=4).events(1000)]
    batches, _ = decode_predictions(events[:600])
    assert engine.process(batches).thinned == {("m", "default"): 8}
    warm = engine.monitors[("m", "default")].warmup
    assert (len(warm), warm.kept, warm.stride) == (600, 75, 8) and engine.warmup_bytes == warm.nbytes() > 1
    records = engine.export_dirty({})
    restored = _engine_with_budget(1, warmup_size=1000)
    restored.import_state(records)
    assert restored.warmup_bytes == engine.warmup_bytes  # restored warm-ups are within the budget's reckoning
    batches, _ = decode_predictions(events[600:])
    restored.process(batches)
    mon = restored.monitors[("m", "default")]
    assert mon.reference.count == 125 and restored.warmup_bytes == 0
    restored.forget("m", [("m", "default")])
    assert restored.warmup_bytes == 0


def test_the_engine_reckons_warmup_memory_however_a_warmup_ends():
    """Tracked with or without a budget: as models warm up, get a reference from the topic,
    are forgotten, restored, or dropped."""
    from streamproc.engine import MonitorEngine
    from streamproc.profile import build_reference as build

    engine = _engine_with_budget(None)  # no budget: tracked all the same (the gauge reads it)
    streams = {f"m{k}": [orjson.dumps(e) for e in ModelStream(f"m{k}", n_numeric=5, seed=k).events(300)] for k in range(3)}
    batches, _ = decode_predictions([raw for events in streams.values() for raw in events])
    engine.process(batches)
    assert engine.warmup_bytes == _tracked(engine) > 0
    rows = [orjson.loads(raw)["features"] for raw in streams["m0"]]
    engine.set_reference(build("m0", "default", rows))  # from the references topic
    assert engine.monitors[("m0", "default")].warmup is None and engine.warmup_bytes == _tracked(engine) > 0
    engine.forget("m1", [("m1", "default")])
    assert engine.warmup_bytes == _tracked(engine) > 0
    restored = MonitorEngine(engine.config)
    restored.restore(engine.snapshot())
    assert restored.warmup_bytes == engine.warmup_bytes
    engine.drop_all()
    assert engine.warmup_bytes == 0


def test_a_budget_that_cannot_be_met_is_not_swept_for_every_batch():
    """Every warm-up as thin as it gets and still over the budget: sweeping again is useless
    until warm-ups have grown by an eighth of the budget."""
    engine = _engine_with_budget(2**18, warmup_size=1000)  # 40 models x 20 features at every 8th event: about 420 KB
    streams = [[orjson.dumps(_numeric_only(e)) for e in ModelStream(f"m{k}", n_numeric=20, seed=k).events(600)]
               for k in range(40)]  # (a categorical feature's rare categories may stop thinning early)
    batches, _ = decode_predictions([raw for events in streams for raw in events[:500]])
    assert set(engine.process(batches).thinned.values()) == {8}
    sweeps = []
    sweep = engine._thin_warmups
    engine._thin_warmups = lambda: sweeps.append(1) or sweep()
    for start in range(500, 600):  # 100 batches of an event per model
        batches, _ = decode_predictions([events[start] for events in streams])
        engine.process(batches)
        assert engine.warmup_bytes <= max(engine.warmup_budget, engine._sweep_above)
    assert engine.warmup_bytes > engine.warmup_budget and 0 < len(sweeps) <= 50  # at most every other batch
    assert all(mon.warmup.stride == 8 and len(mon.warmup) == 600 for mon in engine.monitors.values())


def test_warmups_thinned_by_another_models_batch_are_saved_at_the_next_checkpoint():
    engine = _engine_with_budget(400_000)
    streams = {f"m{k}": [orjson.dumps(e) for e in ModelStream(f"m{k}", n_numeric=20, seed=k).events(800)] for k in range(3)}
    batches, _ = decode_predictions(streams["m0"] + streams["m1"])
    assert engine.process(batches).thinned == {}
    engine.export_dirty({})  # a checkpoint: nothing left to save
    batches, _ = decode_predictions(streams["m2"])
    out = engine.process(batches)
    assert {("m0", "default"), ("m1", "default")} <= set(out.thinned) and set(out.thinned) <= engine.dirty_monitors


def test_a_column_saved_without_absent_flags_reads_back_and_goes_on():
    """Columns are saved without ``absent`` while every row carried the feature, as earlier
    versions saved them (so they can read them); such a column reads back and takes gaps."""
    sample = WarmupSample()
    sample.extend([{"x": float(i), "c": "ab"[i % 2]} for i in range(40)])
    assert all("absent" not in col.__getstate__()[1] for col in sample.columns.values())
    sample = pickle.loads(pickle.dumps(sample))
    sample.extend([{"c": "a"}] * 40)  # x absent from row 40 on
    sample.extend([{"x": 1, "c": "b"}] * 40)
    sample.thin(2)
    assert sample.present() == {"x": 40, "c": 60}
    assert sample.values("x") == [float(i) for i in range(0, 40, 2)] + [None] * 20 + [1] * 20


def test_references_from_thinned_warmups_raise_no_false_alarm_and_still_see_a_large_drift():
    """Eight models, thinned to every 16th event (125 of 2,000): five stationary windows each
    raise no data drift alert; a shift of x0 by one standard deviation is still seen."""
    from streamproc.synth import Drift

    engine = _engine_with_budget(70_000)
    drifting = {"m0", "m1"}
    streams = {f"m{k}": [orjson.dumps(e) for e in ModelStream(
        f"m{k}", n_numeric=5, seed=90 + k, drift=Drift(4500, ("x0",), 1.0) if f"m{k}" in drifting else None).events(7000)]
        for k in range(8)}
    alerts = []
    for start in range(0, 7000, 500):
        batches, _ = decode_predictions([raw for events in streams.values() for raw in events[start:start + 500]])
        alerts += engine.process(batches).alerts
    assert {mon.reference.count for mon in engine.monitors.values()} == {125}
    drift = [a for a in alerts if a["type"] == "data_drift"]
    assert drift and {a["model_id"] for a in drift} == drifting and {a["feature"] for a in drift} == {"x0"}


def test_a_budget_met_again_once_a_stuck_cohort_has_finished_warming_up():
    """40 models as thin as they get and over the budget raise the mark for the next sweep;
    once they have references, what they freed lowers it: 12 new models are held to the
    budget as on a fresh worker (peak within 10 %)."""
    budget = 2**18
    engine = _engine_with_budget(budget, warmup_size=1000)
    first = [[orjson.dumps(e) for e in ModelStream(f"m{k}", n_numeric=20, seed=k).events(1000)] for k in range(40)]
    for start in range(0, 1000, 100):
        batches, _ = decode_predictions([raw for events in first for raw in events[start:start + 100]])
        engine.process(batches)
    assert engine.warmup_bytes == 0 and engine._sweep_above < budget
    second = [[orjson.dumps(e) for e in ModelStream(f"n{k}", n_numeric=20, seed=100 + k).events(900)] for k in range(12)]
    peak = 0
    for start in range(0, 900, 50):
        batches, _ = decode_predictions([raw for events in second for raw in events[start:start + 50]])
        engine.process(batches)
        peak = max(peak, engine.warmup_bytes)
    assert budget < peak <= 1.1 * budget
    engine._sweep_above = 10 * budget
    engine.drop_all()
    assert engine._sweep_above == 0


def test_strings_count_by_their_size_in_the_memory_estimate():
    """A producer sending a distinct 20 kB string per event holds 20 kB an event: the estimate
    says so (else the budget would never see it), and thinning lets most of it go."""
    rows = [{"x": 1.0, "blob": f"{i:05d}" + "z" * 20_000} for i in range(200)]
    warm = Warmup.of(PredictionBatch("m", "v", [f"e{i}" for i in range(200)], [0.0] * 200, rows, [0.5] * 200, [None] * 200))
    assert warm.nbytes() > 200 * 20_000
    warm.thin(4)
    assert 50 * 20_000 < warm.nbytes() < 60 * 20_000


def test_a_column_saved_with_gaps_by_an_earlier_version_thins_exactly():
    """Earlier versions counted a feature's absences but did not flag them: reading such a
    column flags them from its nulls, so thinning still drops a feature no kept event had."""
    sample = WarmupSample()
    sample.extend([{"x": 1.0, "y": float(i)} for i in range(40)])
    sample.extend([{"y": float(i)} for i in range(40)])  # x absent from row 40 on
    sample.extend([{"x": 2, "y": 0.5}] * 40)
    col = sample.columns["x"]
    flags = bytes(col.absent)
    state = col.__getstate__()
    del state[1]["absent"]  # as an earlier version saved it
    old = warmup_module._Column.__new__(warmup_module._Column)
    old.__setstate__(state)
    assert bytes(old.absent) == flags and old.present == col.present == 80


def test_a_long_tail_of_rare_categories_stops_thinning_so_no_false_alarm():
    """A feature of 100 categories with Zipf weights: a reference from every 16th event would
    lack many of them (and count each of the others a few times), and raise PSI and unseen-
    category alerts on a stream that never changes. Thinning stops while rare categories
    would hold over 5 % of the kept values; a numeric model next to it is thinned all the way."""
    rng = np.random.default_rng(5)
    n = 12_000
    weights = 1.0 / np.arange(1, 101) ** 1.1
    cats = rng.choice(100, size=n, p=weights / weights.sum())
    x = rng.standard_normal((2, n))
    events = [orjson.dumps({"event_id": f"{m}-{i}", "model_id": m, "ts": 1.7e9 + i, "prediction": {"score": float(x[0, i])},
                            "features": {"x": float(x[1, i])} | ({"c": f"k{cats[i]}"} if m == "tail" else {})})
              for i in range(n) for m in ("tail", "plain")]
    engine = _engine_with_budget(1)  # no budget can be met: only thinnable() and the floor stop thinning
    alerts = []
    for start in range(0, len(events), 200):
        batches, _ = decode_predictions(events[start:start + 200])
        alerts += engine.process(batches).alerts
    tail, plain = engine.monitors[("tail", "default")], engine.monitors[("plain", "default")]
    assert plain.reference.count == 125 and tail.reference.count >= 1000
    assert [a for a in alerts if a["type"] in ("data_drift", "data_quality") and a["detector"] != "category_cap"] == []


def test_a_restored_warmup_adopts_a_reference_published_meanwhile():
    """A model warming up on one worker; its reference is published (and read by a second
    worker) before the second worker restores the model's state: the reference wins, as it
    would have had the model been there, instead of one built later from the warm-up."""
    from streamproc.engine import MonitorEngine
    from streamproc.profile import build_reference as build

    events = [orjson.dumps(e) for e in ModelStream("m", n_numeric=3, seed=8).events(600)]
    first = _engine_with_budget(None)
    batches, _ = decode_predictions(events[:300])
    first.process(batches)
    records = first.export_dirty({})
    published = build("m", "default", [orjson.loads(raw)["features"] for raw in events], source="topic")
    second = MonitorEngine(first.config, {("m", "default"): published})
    second.import_state(records)
    mon = second.monitors[("m", "default")]
    assert mon.reference is published and mon.warmup is None and second.warmup_bytes == 0
    assert ("m", "default") in second.dirty_monitors


def test_one_models_warmups_are_kept_within_what_its_state_record_can_hold():
    """A model of 400 features warming up three versions at once would keep about 19 MB, and
    its state (one record for all its versions) would pass the state topic's 16 MiB limit,
    which the worker could then never save. Its warm-ups are thinned to share
    ``MODEL_WARMUP_BYTES``, whatever the worker-wide budget; other models are left alone."""
    from streamproc.engine import MODEL_WARMUP_BYTES
    from streamproc.state import MAX_STATE_BYTES

    engine = _engine_with_budget(None)  # no worker-wide budget
    versions = ["v1", "v2", "v3"]
    streams = {}
    for k, version in enumerate(versions):
        events = []
        for e in ModelStream("wide", n_numeric=400, seed=k).events(2000):
            e["model_version"] = version
            events.append(orjson.dumps(e))
        streams[version] = events
    small = [orjson.dumps(e) for e in ModelStream("small", n_numeric=20, seed=9).events(2000)]
    thinned = {}
    for start in range(0, 1900, 100):
        batches, _ = decode_predictions([raw for events in [*streams.values(), small] for raw in events[start:start + 100]])
        out = engine.process(batches)
        thinned.update(out.thinned_large)
        assert out.thinned == {}  # (that is the worker-wide budget's)
        held = sum(engine.monitors[("wide", v)].warmup.nbytes() for v in versions)
        assert held <= MODEL_WARMUP_BYTES
    assert set(thinned) == {("wide", v) for v in versions} and engine.monitors[("small", "default")].warmup.stride == 1
    record = dict(engine.dirty_records({}))["wide"]
    assert len(record) < MAX_STATE_BYTES // 2
    batches, _ = decode_predictions([raw for events in streams.values() for raw in events[1900:]])
    engine.process(batches)
    for version in versions:
        mon = engine.monitors[("wide", version)]
        stride = thinned[("wide", version)]
        assert stride > 1 and mon.reference is not None and mon.reference.count == 2000 // stride


def test_one_models_warmups_that_cannot_be_thinned_further_are_not_looked_at_every_batch(monkeypatch):
    """A model over its cap whose warm-ups cannot be thinned (a categorical feature with many
    rare categories) is looked at again only once it has taken an eighth more events."""
    import streamproc.engine as engine_module

    cap = 40_000
    monkeypatch.setattr(engine_module, "MODEL_WARMUP_BYTES", cap)
    engine = _engine_with_budget(None)
    events = []
    for i, e in enumerate(ModelStream("rare", n_numeric=10, seed=1).events(1900)):
        e["features"]["c0"] = f"category-{i % 400}"  # each kept under 5 times: never thinnable
        events.append(orjson.dumps(e))
    looks = []
    thin = engine._thin
    engine._thin = lambda sizes, share: looks.append(1) or thin(sizes, share)
    for start in range(0, 1900, 10):
        batches, _ = decode_predictions(events[start:start + 10])
        engine.process(batches)
    warm = engine.monitors[("rare", "default")].warmup
    assert warm.stride == 1 and warm.nbytes() > 4 * cap  # never thinned
    # Over the cap from about 150 events on, with 190 batches of 10: from then on a look each
    # time the warm-up grew by an eighth (about 20 looks), not one per batch (about 175).
    assert 0 < len(looks) <= 30, len(looks)


def _rows_batch(rows: list[dict]) -> PredictionBatch:
    n = len(rows)
    return PredictionBatch("m", "v", [str(i) for i in range(n)], [0.0] * n, rows, [0.5] * n, [None] * n)


def test_thinning_guards_an_optional_categorical_feature_kept_sparsely():
    # A long tail of categories in a feature 40 % of events carry (kept sparsely, not as a
    # column) would be thinned to noise if only columns were checked.
    rng = np.random.default_rng(0)
    p = 1 / np.arange(1, 101)
    rows = [{"x": float(rng.normal()), **({"opt": f"cat{rng.choice(100, p=p / p.sum())}"} if i % 5 < 2 else {})}
            for i in range(2000)]
    warm = Warmup.of(_rows_batch(rows))
    assert "opt" in warm.features.sparse
    assert not warm.thinnable(2)
    assert Warmup.of(_rows_batch([{k: v for k, v in r.items() if k != "opt"} for r in rows])).thinnable(16)


@pytest.mark.parametrize("kept_rare, thinnable", [(True, False), (False, True)])
def test_thinning_checks_the_rows_thinning_keeps(kept_rare, thinnable):
    # A column from sample row 41 on: thin(2) keeps its even sample rows. Rare values on exactly
    # those rows must stop it; rare values only on the rows it drops must not.
    warm = Warmup()
    warm.extend(_rows_batch([{"x": 0.0}] * 41))
    rare_parity = 0 if kept_rare else 1
    warm.extend(_rows_batch([{"x": 0.0, "c": f"rare{r}" if r % 2 == rare_parity else "common"} for r in range(41, 441)]))
    assert warm.features.columns["c"].start == 41
    assert warm.thinnable(2) is thinnable


def test_a_column_pickled_without_its_start_restores_from_row_0():
    # The first columnar warm-up's columns had no start (every column began at row 0).
    col = warmup_module._Column(0)
    col.extend(0, [1.5, 2.5], {})
    col.present = 2
    state = col.__getstate__()
    del state[1]["start"]
    restored = warmup_module._Column.__new__(warmup_module._Column)
    restored.__setstate__(state)
    assert restored.values(3) == [1.5, 2.5, None]
