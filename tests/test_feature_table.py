"""Features decoded straight into columns (``streamproc.feature_table``) mean what the dicts
they replace mean: same columns, same sketches, same alerts."""

from __future__ import annotations

import math

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamproc.columns import numeric_columns, raw_columns
from streamproc.config import load_config
from streamproc.decode import decode_predictions
from streamproc.engine import MonitorEngine
from streamproc.feature_table import FeatureLayout, FeatureTable, layout_for
from streamproc.profile import build_reference
from streamproc.synth import Drift, ModelStream
from streamproc.window import Pane

NUMERIC, OTHER = ["a", "b", "c"], ["k", "m"]
values = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True), st.integers(-10**6, 10**6), st.booleans(), st.none(),
    st.sampled_from(["2.5", "x", "", "nan", "1e3"]), st.integers(10**300, 10**301),
)
# Rows mostly carry exactly the layout's features, sometimes one fewer or an extra one.
names = st.sampled_from(NUMERIC + OTHER + ["extra", "z"])


@st.composite
def rows(draw):
    row = {name: draw(values) for name in NUMERIC + OTHER}
    if draw(st.integers(0, 4)) == 0:
        row.pop(draw(st.sampled_from(NUMERIC + OTHER)))
    if draw(st.integers(0, 4)) == 0:
        row[draw(names)] = draw(values)
    return row


def same_columns(expected, got) -> bool:
    return all(list(e) == list(g) for e, g in zip(expected, got)) and len(expected) == len(got)


def table_of(data) -> FeatureTable:
    table = FeatureTable(FeatureLayout(NUMERIC, OTHER))
    for row in data:
        table.add(row)
    return table


@settings(max_examples=300, deadline=None)
@given(st.lists(rows(), max_size=30), st.data())
def test_a_table_reads_back_what_the_dicts_said(data, draw):
    table = table_of(data)
    assert len(table) == len(data)
    np.testing.assert_array_equal(table.numeric_matrix(NUMERIC), numeric_columns(data, NUMERIC))
    assert same_columns(raw_columns(data, OTHER), table.columns(OTHER))
    # Names in another order, and names the layout lacks, read back too.
    asked = draw.draw(st.lists(st.sampled_from(NUMERIC + ["extra", "z"]), min_size=1, max_size=4))
    np.testing.assert_array_equal(table.numeric_matrix(asked), numeric_columns(data, asked))
    assert same_columns(raw_columns(data, ["extra", "k"]), table.columns(["extra", "k"]))
    assert table.unknown_names() == set().union(*data) - set(NUMERIC + OTHER)
    # Slices and selections keep rows and their irregular parts together.
    start = draw.draw(st.integers(0, len(data)))
    picked = draw.draw(st.lists(st.integers(0, max(len(data) - 1, 0)), max_size=10)) if data else []
    for part, expected in ((table[start:], data[start:]), (table.take(picked), [data[i] for i in picked])):
        np.testing.assert_array_equal(part.numeric_matrix(NUMERIC), numeric_columns(expected, NUMERIC))
        assert same_columns(raw_columns(expected, ["extra", "k", "m"]), part.columns(["extra", "k", "m"]))
        assert part.unknown_names() == (set().union(*expected) - set(NUMERIC + OTHER) if expected else set())
    back = table.rows()
    np.testing.assert_array_equal(numeric_columns(back, NUMERIC), numeric_columns(data, NUMERIC))
    assert same_columns(raw_columns(back, OTHER + ["extra"]), raw_columns(data, OTHER + ["extra"]))


@settings(max_examples=100, deadline=None)
@given(st.lists(rows(), min_size=1, max_size=40))
def test_a_pane_sketches_a_table_as_it_sketches_dicts(data):
    ref_rows = [{"a": float(i), "b": float(i % 7), "c": i * 0.5, "k": "kv"[i % 2], "m": str(i % 3)} for i in range(60)]
    reference = build_reference("m", "v", ref_rows)
    profiles = dict(reference.features)
    layout = layout_for(reference)
    assert (layout.numeric, layout.other) == (("a", "b", "c"), ("k", "m"))
    ts = np.arange(len(data), dtype=np.float64)
    by_dicts, by_table = Pane.empty(0, profiles), Pane.empty(0, profiles)
    by_dicts.add(profiles, data, ts)
    by_table.add(profiles, table_of(data), ts)
    assert by_dicts.lo == by_table.lo and by_dicts.hi == by_table.hi and by_dicts.count == by_table.count
    for name in profiles:
        np.testing.assert_array_equal(by_dicts.counts[name], by_table.counts[name])


def test_a_row_with_a_null_or_a_string_among_numbers_converts_value_by_value():
    table = table_of([{"a": 1.0, "b": None, "c": "2.5", "k": "x", "m": "y"}, {"a": 3, "b": True, "c": 4.0, "k": 1, "m": None}])
    assert table.irregular == {}  # same features: the fast layout, only the conversion differed
    got = table.numeric_matrix(NUMERIC)  # a, b, c by rows
    assert got[0].tolist() == [1.0, 3.0] and math.isnan(got[1, 0]) and got[1, 1] == 1.0 and got[2].tolist() == [2.5, 4.0]
    assert table.columns(OTHER) == [("x", 1), ("y", None)]


def test_features_to_ignore_keep_a_row_regular_and_anything_else_does_not():
    layout = FeatureLayout(["a"], ["k"], skipped=["request_id"])
    table = FeatureTable(layout)
    for row in ({"a": 1.0, "k": "x", "request_id": "r1"}, {"a": 2.0, "k": "y"},
                {"a": 3.0, "k": "x", "request_id": "r2", "new": 1}, {"k": "x", "request_id": "r3", "b": 2.0}):
        table.add(row)
    assert sorted(table.irregular) == [2, 3]
    assert table.numeric_matrix(["a"]).tolist()[0][:3] == [1.0, 2.0, 3.0] and math.isnan(table.numeric_matrix(["a"])[0, 3])
    assert table.unknown_names() == {"new", "b", "request_id"}  # as dicts say; the monitor leaves ignored ones out


def test_slicing_many_irregular_rows_keeps_each_with_its_row():
    data = [{"a": float(i), "k": str(i % 3), **({f"extra{i % 50}": i} if i % 2 else {})} for i in range(500)]
    table = FeatureTable(FeatureLayout(["a"], ["k"]))
    for row in data:
        table.add(row)
    assert len(table.irregular) == 250
    for start in range(0, 500, 37):
        part, expected = table[start:start + 37], data[start:start + 37]
        assert same_columns(raw_columns(expected, ["extra1", "extra3", "k"]), part.columns(["extra1", "extra3", "k"]))
        assert part.unknown_names() == set().union(*expected) - {"a", "k"}
        assert len(part.irregular) == sum(len(r) > 2 for r in expected)


def test_the_layout_cache_does_not_keep_a_reference_alive():
    import gc
    import weakref

    reference = build_reference("m", "v", [{"x": float(i), "c": "ab"[i % 2]} for i in range(50)])
    layout = layout_for(reference, ["request_id"])
    assert layout_for(reference, ["request_id"]) is layout and layout_for(reference) is not layout
    assert layout.skipped == {"request_id"}
    alive = weakref.ref(reference)
    del reference
    gc.collect()
    assert alive() is None


@pytest.mark.parametrize("kind", ["count", "time"])
def test_decoding_into_tables_changes_no_alert_and_no_state(kind):
    """The engine fed with tables (the worker) and with dicts (no layouts) ends up identical."""
    env = {"STREAMPROC_WINDOW_SIZE": "200", "STREAMPROC_WARMUP_SIZE": "400"}
    streams = [ModelStream(f"m{i}", n_numeric=4, n_categorical=2, seed=i, drift=Drift(1500, ("x0", "c0"), 1.0, 0.3))
               for i in range(3)]
    events = [e for group in zip(*(s.events(3000) for s in streams)) for e in group]
    for n, e in enumerate(events):  # now and then a null, a string, a missing and an unknown feature
        if n % 97 == 0:
            e["features"]["x1"] = None
        if n % 89 == 0:
            e["features"]["x2"] = "7.5"
        if n > 4000 and n % 83 == 0:  # a numeric string in a feature the reference found numeric
            e["features"]["x3"] = "7.5"
        if n % 211 == 0:
            del e["features"]["c1"]
        if n == 5000:
            e["features"]["surprise"] = 1.0
        e["features"]["request_id"] = f"r{n}"  # configured to be ignored: rows stay regular
    raw = [orjson.dumps(e) for e in events]

    def run(with_layouts: bool, typed: bool = False):
        cfg = load_config(None, environ=env)
        cfg.defaults.ignore_features = ["request_id"]
        if kind == "time":  # 2 s of event time: 200 events per model
            cfg.defaults.window = cfg.defaults.window.model_copy(update={"kind": "time", "seconds": 2, "min_events": 10})
        engine = MonitorEngine(cfg)
        alerts, tables, irregular = [], 0, 0
        for i in range(0, len(raw), 700):
            batches, rejected = decode_predictions(raw[i:i + 700], layouts=engine.feature_layout if with_layouts else None,
                                                   known=engine.decoder if typed else None)
            assert rejected == []
            tables += sum(isinstance(b.features, FeatureTable) for b in batches.values())
            irregular += sum(len(b.features.irregular) for b in batches.values() if isinstance(b.features, FeatureTable))
            alerts += engine.process(batches).alerts
        return alerts, tables, engine, irregular

    alerts_t, tables, engine_t, irregular = run(True)
    alerts_d, none, engine_d, _ = run(False)
    alerts_k, _, engine_k, irregular_k = run(True, typed=True)  # and the typed decoder of known models
    assert tables > 0 and none == 0
    assert 0 < irregular < 40  # only the rows lacking c1 and the one with a surprise
    assert irregular_k == irregular and len(engine_k.decoder) == 3
    assert type(engine_k.decoder.decode(raw[-1]).features) is not dict  # the typed path was taken
    def stable(alerts):
        return [{k: v for k, v in a.items() if k != "detected_at"} for a in alerts]

    assert stable(alerts_t) == stable(alerts_d) == stable(alerts_k) and len(alerts_t) > 3
    assert any(a["detector"] == "schema" for a in alerts_t)
    for key, mon in [(k, m) for k, m in engine_d.monitors.items()] + [(k, m) for k, m in engine_k.monitors.items()]:
        other = engine_t.monitors[key]
        assert mon.latest == other.latest and mon.quantiles == other.quantiles
        assert mon.events == other.events and mon.unknown_features == other.unknown_features
        assert mon.open_panes.keys() == other.open_panes.keys()
        for a, b in [(mon.pane, other.pane)] + [(mon.open_panes[k], other.open_panes[k]) for k in mon.open_panes]:
            assert (a.count, a.lo, a.hi) == (b.count, b.lo, b.hi)
            for name in a.counts:
                np.testing.assert_array_equal(a.counts[name], b.counts[name])
