"""The typed decoder of known models (``streamproc.model_decoder``) changes nothing but speed:
whatever the events, decoding with it gives the batches and rejections the general decoder
gives."""

from __future__ import annotations

import json

import msgspec
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from streamproc.decode import decode_predictions
from streamproc.feature_table import FeatureLayout, FeatureTable
from streamproc.model_decoder import ModelDecoder

LAYOUTS = {
    "m0": FeatureLayout(["x0", "x1"], ["c0"], ["skip"]),
    ("m0", "v2"): FeatureLayout(["x0"], ["x1", "c0"]),  # the same names, other kinds
    "m1": FeatureLayout(["x0"], ["c\u00e9 0"], order=["c\u00e9 0", "x0"]),  # as its events carry them
    "m2": FeatureLayout([], ["c0"]),
}
NAMES = ["x0", "x1", "c0", "skip", "c\u00e9 0", "other"]


def layouts(key):
    """m0, m1 and m2 have references, by version: m0's v2 another one, m1 only in v1, m2 not in
    v2 (warming up); m3 has none."""
    if key[0] == "m1" and key[1] != "v1" or key == ("m2", "v2"):
        return None
    return LAYOUTS.get(key) or LAYOUTS.get(key[0])


values = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False), st.integers(-2**70, 2**70), st.booleans(), st.none(),
    st.sampled_from(["a", "b", "7.5", ""]), st.sampled_from([[1], {"a": 1}]))
# Features as (name, value) pairs: names may repeat (the last wins) or be \u-escaped.
features = st.lists(st.tuples(st.sampled_from(NAMES), values, st.booleans()), max_size=7)


def text(pairs, escape: bool) -> str:
    items = []
    for name, value, esc in pairs:
        key = json.dumps(name, ensure_ascii=escape)
        if esc and escape:
            key = '"' + "".join(f"\\u{ord(c):04x}" for c in name) + '"'
        items.append(f"{key}: {json.dumps(value)}")
    return "{" + ", ".join(items) + "}"


@st.composite
def event(draw) -> bytes:
    if draw(st.integers(0, 30)) == 0:
        return draw(st.sampled_from([b"{", b"[]", b'{"model_id": "m0"}', b"null"]))
    model = draw(st.sampled_from(["m0", "m0", "m1", "m2", "m2", "m3", 5]))
    pairs = [("event_id", json.dumps(draw(st.sampled_from(["e1", "e2", "e3", "e4", ""])))),
             ("ts", json.dumps(draw(st.sampled_from([1.0, 2.5, 3.0, "2026-01-01T00:00:00Z", "soon"])))),
             ("model_id", json.dumps(model))]
    version = draw(st.sampled_from([None, "v1", "v2", "v2", 3]))
    if version is not None:
        pairs.append(("model_version", json.dumps(version)))
    if draw(st.integers(0, 20)):
        if draw(st.booleans()):  # features as the model's layouts want them, in any order
            names = draw(st.permutations(["x0", "x1", "c0"] if model == "m0" else ["c0"] if model == "m2" else ["x0", "c\u00e9 0"]))
            pairs.append(("features", text([(n, draw(values), draw(st.booleans())) for n in names], draw(st.booleans()))))
        else:
            pairs.append(("features", text(draw(features), draw(st.booleans()))))
    pairs.append(("prediction", json.dumps(draw(st.sampled_from([0.5, "yes", {"score": 0.2, "label": 1}])))))
    if draw(st.integers(0, 10)) == 0:  # the model id twice
        pairs.insert(draw(st.integers(0, len(pairs))), ("model_id", json.dumps(draw(st.sampled_from(["m0", "m1"])))))
    pairs = draw(st.permutations(pairs))
    return ("{" + ", ".join(f'"{k}": {v}' for k, v in pairs) + ', "context": {"trace": "x"}}').encode()


def same(a, b) -> None:
    assert a.keys() == b.keys()
    for key in a:
        x, y = a[key], b[key]
        assert (x.event_ids, x.ts, x.labels, x.positions) == (y.event_ids, y.ts, y.labels, y.positions)
        np.testing.assert_array_equal(np.asarray(x.scores), np.asarray(y.scores))
        assert type(x.features) is type(y.features)
        if isinstance(x.features, FeatureTable):
            assert x.features.layout is y.features.layout
            np.testing.assert_array_equal(x.features.numbers, y.features.numbers)
            assert x.features.others == y.features.others
            assert {i: list(r.items()) for i, r in x.features.irregular.items()} == \
                   {i: list(r.items()) for i, r in y.features.irregular.items()}
        else:  # dicts, in the order the event gave its features
            assert [list(r.items()) for r in x.features] == [list(r.items()) for r in y.features]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(event(), max_size=40), min_size=2, max_size=4))
def test_typed_decoding_gives_what_the_general_decoder_gives(batches):
    known = ModelDecoder(rebuild_every=1)
    for raw in batches:
        positions = [("p:0", i) for i in range(len(raw))]
        general = decode_predictions(raw, positions, layouts=layouts)
        typed = decode_predictions(raw, positions, layouts=layouts, known=known)
        known.learn(typed[0])
        same(typed[0], general[0])
        assert typed[1] == general[1]


def teach(known: ModelDecoder, raw: list, layouts) -> None:
    """Decode as the worker does, and let the decoder learn as its engine would."""
    known.learn(decode_predictions(raw, layouts=layouts, known=known)[0])


def regular(model: str, version: str = "v1", **features) -> bytes:
    event = {"event_id": "e", "model_id": model, "model_version": version, "ts": 1.0, "prediction": 0.5,
             "features": features or {"x0": 1.0, "x1": 2, "c0": "a"}}
    return msgspec.json.encode(event)


def test_a_known_model_is_decoded_by_its_layout_and_others_are_not():
    known = ModelDecoder(rebuild_every=1)
    raw = [regular("m0"), regular("m3", x0=1.0)]
    teach(known, raw, layouts)
    assert len(known) == 2
    assert type(known.decode(raw[0]).features).__name__ == "Features"
    assert type(known.decode(raw[1]).features) is dict  # m3 is warming up: its features stay a dict
    for other in (regular("m0", x0=1.0, x1=2.0), regular("m0", x0=1.0, x1=2.0, c0="a", new=1), regular("m9")):
        try:
            known.decode(other)
        except msgspec.ValidationError:
            pass
        else:
            raise AssertionError(f"{other!r} decoded by m0's layout")
    assert type(known.decode(regular("m0", x0=1.0, x1=2.0, c0="a", skip=3)).features).__name__ == "Features"


def test_the_union_is_rebuilt_in_steps_and_forgets_idle_models():
    known = ModelDecoder(rebuild_every=4, forget_after=10)
    teach(known, [regular(f"m{i}") for i in range(16)], lambda key: None)
    assert known.decode is not None and len(known) == 16
    before = known.decode
    teach(known, [regular("n1")], lambda key: None)  # 1 change in 17: waits
    assert known.decode is before
    for _ in range(3):
        teach(known, [regular("n1")], lambda key: None)
    assert known.decode is not before  # rebuilt after rebuild_every batches
    for _ in range(24):
        teach(known, [regular("n2")], lambda key: None)
    assert len(known) == 1  # the others were not seen in the last 10 batches
    assert type(known.decode(regular("n2")).features) is dict


def test_an_event_of_another_version_is_decoded_as_the_general_decoder_does():
    """m0's decoder is typed by v1's layout; v2 (other kinds) and v3 (warming up, whose dicts
    keep the event's order) get what the general decoder gives."""
    def versioned(key):
        return {"v1": LAYOUTS["m0"], "v2": LAYOUTS[("m0", "v2")]}.get(key[1])

    known = ModelDecoder(rebuild_every=1)
    teach(known, [regular("m0", "v1", x0=1.0, x1=2.0, c0="a")] * 3, versioned)
    raw = [regular("m0", "v1", c0="b", x1=3.0, x0=4.0), regular("m0", "v2", c0="a", x0=1.0, x1=2.0),
           regular("m0", "v3", c0="a", x1=2.0, x0=1.0)]
    assert type(known.decode(raw[1]).features) is type(known.decode(raw[0]).features)  # v1's struct
    typed, general = decode_predictions(raw, layouts=versioned, known=known), decode_predictions(raw, layouts=versioned)
    same(typed[0], general[0])
    assert not typed[0][("m0", "v2")].features.irregular
    assert list(typed[0][("m0", "v3")].features[0]) == ["c0", "x1", "x0"]


def test_the_union_holds_the_busiest_models():
    known = ModelDecoder(rebuild_every=1, max_members=2)
    teach(known, [regular("a")] * 3 + [regular("b")] * 2, lambda key: None)
    assert len(known) == 2
    teach(known, [regular("c")] * 2, lambda key: None)  # b and c tie: b stays
    members = {m for m in "abc" if _decodes(known, m)}
    assert members == {"a", "b"}
    teach(known, [regular("c")] * 5, lambda key: None)
    assert {m for m in "abc" if _decodes(known, m)} == {"a", "c"}


def _decodes(known, model) -> bool:
    try:
        known.decode(regular(model))
    except msgspec.ValidationError:
        return False
    return True


def test_models_the_engine_refuses_are_not_learned():
    from streamproc.config import load_config
    from streamproc.engine import MonitorEngine

    engine = MonitorEngine(load_config(None, environ={}))
    engine.max_models = 1
    for _ in range(3):
        out = engine.process(decode_predictions([regular("a"), regular("b"), regular("c")], known=engine.decoder)[0])
        assert [b.model_id for b in out.refused] == ["b", "c"]
    assert len(engine.decoder) == 1 and list(engine.decoder._seen) == ["a"]


def test_steady_traffic_over_many_layouts_rebuilds_nothing():
    """5,000 models of their own layouts, 1,000 per batch, a union of 100: once chosen, the
    union stays as it is (no struct is made again)."""
    layouts = {f"m{i}": FeatureLayout([f"x{i}"], []) for i in range(5000)}
    known = ModelDecoder(max_members=100)
    raw = {m: regular(m, **{f"x{m[1:]}": 1.0}) for m in layouts}
    names = list(layouts)
    for round_ in range(40):
        part = names[(round_ % 5) * 1000:(round_ % 5 + 1) * 1000]
        teach(known, [raw[m] for m in part], lambda key: layouts[key[0]])
        if round_ == 20:
            decoder = known.decode
    assert len(known) == 100 and known.decode is decoder


def test_a_layout_msgspec_refuses_leaves_its_model_to_the_general_decoder():
    layout = FeatureLayout(["x"], ["c"], ["\ud800"])  # a lone surrogate, from a YAML ignore_features
    known = ModelDecoder(rebuild_every=1)
    raw = [regular("m", x=1.0, c="a")] * 2
    teach(known, raw, lambda key: layout)
    typed, general = decode_predictions(raw, layouts=lambda key: layout, known=known), \
        decode_predictions(raw, layouts=lambda key: layout)
    same(typed[0], general[0])
    assert len(known) == 0


def test_the_features_struct_follows_the_references_order():
    layout = FeatureLayout(["x", "y"], ["c"], order=["y", "c", "x"])
    known = ModelDecoder(rebuild_every=1)
    raw = [regular("m", y=2.0, c="a", x=1.0)]
    teach(known, raw, lambda key: layout)
    features = known.decode(raw[0]).features
    assert msgspec.structs.astuple(features) == (2.0, "a", 1.0)
    (batch,) = decode_predictions(raw, layouts=lambda key: layout, known=known)[0].values()
    assert batch.features.numbers.tolist() == [[1.0, 2.0]] and batch.features.others == [("a",)]
