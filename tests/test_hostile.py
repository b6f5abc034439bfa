"""Hostile input through the decoder and the engine (no broker): nothing raises, every bad
message is rejected with a reason, every good one in the same batch is applied."""

from __future__ import annotations

import json

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from streamproc.config import load_config
from streamproc.decode import MAX_EVENT_BYTES, decode_outcomes, decode_predictions
from streamproc.engine import MonitorEngine
from streamproc.synth import ModelStream

GOOD = [orjson.dumps(e) for e in ModelStream("good", n_numeric=3, seed=80).events(400)]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


@st.composite
def hostile(draw):
    base = json.loads(GOOD[draw(st.integers(0, len(GOOD) - 1))])
    kind = draw(st.sampled_from(["bytes", "json", "drop", "retype", "deep", "huge", "nan", "features", "ts"]))
    if kind == "bytes":
        return draw(st.binary(max_size=200)).replace(b"{", b"(")  # never accidentally a valid object
    if kind == "json":
        value = draw(json_values)
        return json.dumps(value).encode() if not isinstance(value, dict) or "event_id" not in value else b"[]"
    if kind == "drop":
        del base[draw(st.sampled_from(["event_id", "model_id", "ts", "features", "prediction"]))]
    elif kind == "retype":
        field = draw(st.sampled_from(["event_id", "model_id", "ts", "features", "prediction"]))
        wrong = {"features": [[1], 3, "x"], "prediction": [[1], True, None]}  # ({} and "" are a valid prediction)
        base[field] = draw(st.sampled_from(wrong.get(field, [[1], {"a": [1]}, True, None, ""])))
    elif kind == "deep":
        return orjson.dumps(base)[:-1] + b',"x":' + b"[" * 20000 + b"]" * 20000 + b"}"
    elif kind == "huge":
        base["features"]["blob"] = "x" * (MAX_EVENT_BYTES + 1)
    elif kind == "nan":
        return orjson.dumps(base).replace(b'"prediction":{', b'"prediction":NaN,"p":{')
    elif kind == "features":
        base["features"][draw(st.text(min_size=1, max_size=5))] = draw(st.sampled_from([[1, 2], {"a": 1}]))
    elif kind == "ts":
        base["ts"] = draw(st.sampled_from(["yesterday", "2026-01-01T00:00:00", "2026-02-30T00:00:00Z", "1e999", ""]))
    return orjson.dumps(base)


@settings(max_examples=150, deadline=None)
@given(st.lists(hostile(), min_size=1, max_size=30), st.randoms(use_true_random=False))
def test_hostile_messages_are_rejected_with_a_reason_and_good_ones_applied(bad, rnd):
    good = GOOD[:100]
    mixed = [(m, False) for m in bad] + [(m, True) for m in good]
    rnd.shuffle(mixed)
    batches, rejected = decode_predictions([m for m, _ in mixed])
    assert sorted(r.index for r in rejected) == [i for i, (_, ok) in enumerate(mixed) if not ok]
    assert all(r.reason and "\n" not in r.reason for r in rejected)
    assert sum(len(b) for b in batches.values()) == len(good)
    engine = MonitorEngine(load_config(None, environ={}))
    out = engine.process(batches)
    assert out.events == {("good", "default"): len(good)}


@settings(max_examples=100, deadline=None)
@given(st.lists(st.binary(max_size=100) | json_values.map(lambda v: json.dumps(v).encode()), min_size=1, max_size=20))
def test_hostile_outcomes_never_raise(payloads):
    outcomes, rejected = decode_outcomes(payloads)
    assert len(outcomes) + len(rejected) == len(payloads)
    engine = MonitorEngine(load_config(None, environ={}))
    engine.process_outcomes(outcomes)


def test_thousands_of_feature_names_and_categories_stay_bounded():
    import numpy as np

    rng = np.random.default_rng(1)
    config = load_config(None, overrides={"warmup_size": 500, "window_size": 500}, environ={})
    engine = MonitorEngine(config)
    events = []
    for i, e in enumerate(ModelStream("wide", n_numeric=2, seed=81).events(3000)):
        e["features"].update({f"f{rng.integers(1_000_000)}": 1.0 for _ in range(20)})  # ever new names
        e["features"]["user"] = f"u{rng.integers(1_000_000)}"  # ever new categories
        events.append(orjson.dumps(e))
    batches, rejected = decode_predictions(events)
    assert rejected == []
    engine.process(batches)
    mon = engine.monitors[("wide", "default")]
    assert len(mon.reference.features) <= config.defaults.max_features
    assert len(mon.reference.features["user"].categories) <= config.defaults.max_categories
    assert len(mon.unknown_features) <= 100
    assert sum(c.size for c in mon.pane.counts.values()) < 50_000


def test_a_flood_of_model_ids_is_refused_beyond_max_models():
    engine = MonitorEngine(load_config(None, environ={}))
    engine.max_models = 3
    events = [orjson.dumps(e) for i in range(6) for e in ModelStream(f"flood{i}", n_numeric=1, seed=i).events(5)]
    batches, _ = decode_predictions(events, [("p:0", i) for i in range(len(events))])
    out = engine.process(batches)
    assert len(engine.monitors) == 3
    assert sorted(b.model_id for b in out.refused) == ["flood3", "flood4", "flood5"]
    assert sum(len(b.positions) for b in out.refused) == 15  # every refused event can be dead-lettered
    outcomes, _ = decode_outcomes([orjson.dumps({"event_id": "e", "model_id": f"o{i}", "ts": 1, "label": "1"}) for i in range(5)])
    out = engine.process_outcomes(outcomes)
    assert len(engine.joiners) == 3 and [o.model_id for o in out.refused_outcomes] == ["o3", "o4"]
    # Outcomes of ids no version of which is monitored do not take monitored models' places
    # (theirs were refused then: 10 of 10 in a reproduction).
    outcomes, _ = decode_outcomes([orjson.dumps({"event_id": "e", "model_id": f"flood{i}", "ts": 1, "label": "1"})
                                   for i in range(3)])
    out = engine.process_outcomes(outcomes)
    assert out.refused_outcomes == [] and {f"flood{i}" for i in range(3)} <= set(engine.joiners)


def test_state_per_model_stays_bounded_whatever_the_number_of_distinct_names():
    """Memory bound for cardinality attacks: the saved state of a model fed ever-new feature
    names and categories stops growing once the caps are reached (measured: the pickled
    record, which holds every sketch and counter of the model)."""
    import pickle
    import zlib

    import numpy as np

    rng = np.random.default_rng(2)
    config = load_config(None, overrides={"warmup_size": 500, "window_size": 500}, environ={})
    engine = MonitorEngine(config)
    stream = ModelStream("wide", n_numeric=2, seed=82)
    sizes = []
    for chunk in range(8):
        events = []
        for e in stream.events(2500, start=2500 * chunk):
            e["features"].update({f"f{rng.integers(10**9)}": 1.0 for _ in range(20)})
            e["features"]["user"] = f"u{rng.integers(10**9)}"
            events.append(orjson.dumps(e))
        engine.process(decode_predictions(events)[0])
        engine.dirty_monitors.add(("wide", "default"))
        record = engine.export_dirty({})["wide"]
        sizes.append(len(pickle.dumps(pickle.loads(zlib.decompress(record)))))
    # 20,000 events carried 400,000 distinct feature names and 20,000 categories.
    assert max(sizes[2:]) <= 1.05 * sizes[1], sizes
    assert max(sizes) < 2_000_000, sizes  # the documented bound: 2 MB of state per model version
