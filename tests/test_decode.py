"""Unit tests of ``streamproc.decode``: raw prediction/outcome bytes to columnar batches."""

from __future__ import annotations

import math
import re
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamproc.decode import PredictionBatch, decode_outcomes, decode_predictions, label_text, route_keys, split_prediction
from streamproc.events import ID_PATTERN

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z


def ev(event_id: str = "e1", **kw) -> dict:
    e = {"event_id": event_id, "model_id": "fraud", "ts": T0, "features": {"x": 1.5, "c": "a"}, "prediction": 0.25}
    e.update(kw)
    return e


def raw(e) -> bytes:
    return orjson.dumps(e)


def one(e) -> tuple[PredictionBatch, float, str]:
    batches, rejected = decode_predictions([raw(e)])
    assert rejected == []
    (batch,) = batches.values()
    assert len(batch) == 1
    return batch, batch.scores[0], batch.labels[0]


# -- grouping ------------------------------------------------------------------------------


def test_groups_by_model_and_version_in_input_order():
    events = [
        ev("a1", model_id="a", model_version="v1", ts=1.0),
        ev("b1", model_id="b", ts=2.0),
        ev("a2", model_id="a", model_version="v2", ts=3.0),
        ev("a3", model_id="a", model_version="v1", ts=4.0),
        ev("b2", model_id="b", model_version=None, ts=5.0),
        ev("b3", model_id="b", model_version="default", ts=6.0),
    ]
    batches, rejected = decode_predictions([raw(e) for e in events])
    assert rejected == []
    assert list(batches) == [("a", "v1"), ("b", "default"), ("a", "v2")]
    assert batches[("a", "v1")].event_ids == ["a1", "a3"]
    assert batches[("a", "v1")].ts == [1.0, 4.0]
    assert batches[("b", "default")].event_ids == ["b1", "b2", "b3"]
    assert batches[("a", "v2")].event_ids == ["a2"]
    b = batches[("a", "v1")]
    assert (b.model_id, b.model_version) == ("a", "v1")
    assert b.features == [{"x": 1.5, "c": "a"}] * 2


def test_batch_columns_slice_and_arrays():
    events = [ev(f"e{i}", ts=float(i), prediction=i / 10) for i in range(6)]
    (batch,) = decode_predictions([raw(e) for e in events])[0].values()
    part = batch.slice(2, 5)
    assert part.event_ids == ["e2", "e3", "e4"]
    assert part.ts_array().tolist() == [2.0, 3.0, 4.0]
    assert part.score_array().tolist() == pytest.approx([0.2, 0.3, 0.4])
    assert (part.model_id, part.model_version) == ("fraud", "default")
    assert len(batch) == 6  # slicing copies


# -- timestamps ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "ts, expected",
    [
        (T0, T0),
        (1_767_225_600, T0),
        (12.5, 12.5),
        (-1.25, -1.25),
        ("2026-01-01T00:00:00Z", T0),
        ("2026-01-01T00:00:00.250Z", T0 + 0.25),
        ("2026-01-01T01:00:00+01:00", T0),
        ("2025-12-31T19:00:00-05:00", T0),
        ("2026-01-01T00:00:00+00:00", T0),
    ],
)
def test_timestamps_rfc3339_and_epoch(ts, expected):
    batch, _, _ = one(ev(ts=ts))
    assert batch.ts[0] == pytest.approx(expected, abs=1e-6)
    assert isinstance(batch.ts[0], float)


# -- prediction forms ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "prediction, score, label",
    [
        (0.75, 0.75, None),
        (1, 1.0, None),
        ("fraud", None, "fraud"),
        ({"score": 0.9}, 0.9, None),
        ({"label": "yes"}, None, "yes"),
        ({"label": True}, None, "true"),
        ({"label": False}, None, "false"),
        ({"label": 3}, None, "3"),
        ({"score": 0.2, "label": "no"}, 0.2, "no"),
        ({"probabilities": {"cat": 0.2, "dog": 0.7, "eel": 0.1}}, 0.7, "dog"),
        ({"probabilities": {"cat": 0.5, "dog": 0.5}}, 0.5, "cat"),  # ties: the first
        ({"score": 0.99, "probabilities": {"a": 0.3, "b": 0.7}}, 0.99, "b"),
        ({"label": "a", "probabilities": {"a": 0.3, "b": 0.7}}, 0.7, "a"),
        ({"probabilities": {}}, None, None),
        ({}, None, None),
        ({"score": None, "label": None, "extra": [1, 2]}, None, None),
    ],
)
def test_prediction_forms(prediction, score, label):
    _, s, lbl = one(ev(prediction=prediction))
    if score is None:
        assert math.isnan(s)
    else:
        assert s == pytest.approx(score)
    assert lbl == label


def test_split_prediction_accepts_plain_dicts():
    assert split_prediction({"probabilities": {"x": 0.1, "y": 0.9}}) == (0.9, "y")
    s, lbl = split_prediction("spam")
    assert math.isnan(s) and lbl == "spam"


def test_label_text():
    assert [label_text(v) for v in (None, True, False, 0, 17, "x")] == [None, "true", "false", "0", "17", "x"]


def test_features_keep_their_types():
    batch, _, _ = one(ev(features={"i": 3, "f": 2.5, "s": "x", "b": False, "n": None}))
    assert batch.features[0] == {"i": 3, "f": 2.5, "s": "x", "b": False, "n": None}
    assert type(batch.features[0]["i"]) is int and type(batch.features[0]["b"]) is bool


def test_extra_fields_are_ignored():
    batch, _, _ = one(dict(ev(), trace_id="abc", meta={"k": [1, 2]}))
    assert batch.event_ids == ["e1"]


# -- rejections ----------------------------------------------------------------------------


def _without(key):
    e = ev()
    del e[key]
    return raw(e)


@pytest.mark.parametrize(
    "payload, reason",
    [
        (b"not json", "not valid JSON"),
        (b'{"event_id": "e1", ', "not valid JSON"),
        (b"", "empty message (zero-length value)"),
        (None, "empty message (null value)"),
        (b"null", "Expected `object`, got `null`"),
        (b"[1, 2]", "Expected `object`, got `array`"),
        (_without("event_id"), "missing required field `event_id`"),
        (_without("model_id"), "missing required field `model_id`"),
        (_without("ts"), "missing required field `ts`"),
        (_without("features"), "missing required field `features`"),
        (_without("prediction"), "missing required field `prediction`"),
        (raw(ev(event_id=7)), "$.event_id"),
        (raw(ev(event_id="")), "$.event_id"),
        (raw(ev(model_version=2)), "$.model_version"),
        (raw(ev(ts="yesterday")), "ts must be RFC 3339"),
        (raw(ev(ts=True)), "$.ts"),
        (raw(ev(ts="2026-01-01T00:00:00")), "UTC offset"),
        (raw(ev(features=[1, 2])), "$.features"),
        (raw(ev(features={"x": [1, 2]})), "$.features"),
        (raw(ev(features={"x": {"y": 1}})), "$.features"),
        (raw(ev(prediction=True)), "$.prediction"),
        (raw(ev(prediction=None)), "$.prediction"),
        (raw(ev(prediction={"score": "high"})), "$.prediction.score"),
        (raw(ev(prediction={"probabilities": {"a": "x"}})), "$.prediction.probabilities"),
    ],
)
def test_rejections_have_a_clear_reason(payload, reason):
    batches, rejected = decode_predictions([payload])
    assert batches == {}
    assert len(rejected) == 1
    assert rejected[0].index == 0
    assert reason in rejected[0].reason, rejected[0].reason
    assert "\n" not in rejected[0].reason
    assert rejected[0].reason.startswith(("not valid JSON", "invalid event", "empty message"))


def test_good_events_in_the_same_batch_are_unaffected():
    payloads = [
        raw(ev("g0")),
        b"{broken",
        raw(ev("g1", model_id="other")),
        None,
        raw(ev("bad", ts="2026-01-01T00:00:00")),
        raw(ev("g2", prediction={"label": "x"})),
        raw(ev("bad2", features={"x": [1]})),
        raw(ev("g3")),
    ]
    batches, rejected = decode_predictions(payloads)
    assert [r.index for r in rejected] == [1, 3, 4, 6]
    assert batches[("fraud", "default")].event_ids == ["g0", "g2", "g3"]
    assert batches[("fraud", "default")].labels == [None, "x", None]
    assert batches[("other", "default")].event_ids == ["g1"]


def test_a_prediction_dated_after_not_after_is_rejected_saying_how_far():
    # The worker passes its clock plus worker.max_future_seconds: an event dated beyond it (here
    # epoch milliseconds read as seconds) would carry its model's event-time clock past every
    # later event. At or before it, and without it, events are accepted as ever.
    payloads = [raw(ev("ms", ts=T0 * 1000)), raw(ev("edge", ts=T0 + 60)), raw(ev("rfc", ts="2026-01-01T00:02:00.5Z")),
                raw(ev("ok", ts=T0))]
    batches, rejected = decode_predictions(payloads, not_after=T0 + 60)
    assert [r.index for r in rejected] == [0, 2]
    assert rejected[0].reason.startswith("ts 1767225600000.000 is after the worker's clock plus")
    assert "epoch milliseconds" in rejected[0].reason
    assert "by 60 s" in rejected[1].reason and "milliseconds" not in rejected[1].reason
    assert batches[("fraud", "default")].event_ids == ["edge", "ok"]
    assert decode_predictions(payloads)[1] == []


def test_empty_input():
    assert decode_predictions([]) == ({}, [])
    assert decode_outcomes([]) == ([], [])


# -- outcomes ------------------------------------------------------------------------------


def outcome(**kw) -> bytes:
    o = {"event_id": "e1", "model_id": "fraud", "ts": "2026-01-01T00:00:00Z"}
    o.update(kw)
    return orjson.dumps(o)


def test_outcomes_need_a_label_or_value():
    payloads = [
        outcome(label="fraud"),
        outcome(value=12.5),
        outcome(label=True, value=1),
        outcome(),
        outcome(label=None, value=None),
        outcome(label=0),
        outcome(value=None, label=None, extra="x"),
    ]
    outcomes, rejected = decode_outcomes(payloads)
    assert [r.index for r in rejected] == [3, 4, 6]
    assert all("an outcome needs a label or a value" in r.reason for r in rejected)
    assert [(o.label, o.value) for o in outcomes] == [("fraud", None), (None, 12.5), ("true", 1.0), ("0", None)]
    assert outcomes[0].ts == T0
    assert (outcomes[0].event_id, outcomes[0].model_id) == ("e1", "fraud")


@pytest.mark.parametrize(
    "payload, reason",
    [
        (None, "empty message (null value)"),
        (b"", "empty message (zero-length value)"),
        (b"{", "not valid JSON"),
        (outcome(label=1.5), "$.label"),
        (outcome(value="1"), "$.value"),
        (outcome(label="x", ts="2026-01-01T00:00:00"), "UTC offset"),
        (orjson.dumps({"model_id": "m", "ts": 1, "label": "a"}), "missing required field `event_id`"),
    ],
)
def test_outcome_rejections(payload, reason):
    outcomes, rejected = decode_outcomes([payload])
    assert outcomes == []
    assert len(rejected) == 1 and reason in rejected[0].reason, rejected


# Ids: text of any characters, control characters (and a few printable lookalikes) likely.
_any_ids = st.text(st.one_of(st.characters(exclude_categories=("Cs",)), st.sampled_from("\x00\x1f\x7f\u00a0\u2028a")),
                   min_size=1, max_size=12)


@settings(max_examples=300, deadline=None)
@given(_any_ids, _any_ids, st.one_of(st.none(), _any_ids))
def test_ids_are_checked_as_the_pattern_says(event_id, model_id, version):
    """Ids are checked after decoding (faster than msgspec's regex): an id with a control
    character anywhere is refused, with msgspec's words for the first such field. (msgspec's
    own check, a Python regex, let a trailing newline through; pydantic and ECMA-262, which
    JSON Schema patterns follow, do not.)"""
    e = ev(event_id, model_id=model_id, **({"model_version": version} if version is not None else {}))
    bad = [k for k in ("event_id", "model_id", "model_version") if e.get(k) is not None and re.search("[\x00-\x1f]", e[k])]
    batches, rejected = decode_predictions([raw(e)])
    if bad:
        assert [r.reason for r in rejected] == [
            f"invalid event: Expected `str` matching regex {ID_PATTERN!r} - at `$.{bad[0]}`"]
        assert batches == {}
    else:
        assert rejected == [] and len(batches) == 1
    keys, refused = route_keys([raw(e)])
    assert keys == [None if "model_id" in bad else model_id] and len(refused) == ("model_id" in bad)


def test_a_trailing_newline_is_a_control_character_too():
    assert [r.reason for r in decode_predictions([raw(ev("e\n"))])[1]] == [
        f"invalid event: Expected `str` matching regex {ID_PATTERN!r} - at `$.event_id`"]


@settings(max_examples=200, deadline=None)
@given(_any_ids, _any_ids)
def test_outcome_ids_are_checked_as_prediction_ids_are(event_id, model_id):
    o = {"event_id": event_id, "model_id": model_id, "ts": T0, "label": "x"}
    bad = [k for k in ("event_id", "model_id") if re.search("[\\x00-\\x1f]", o[k])]
    outcomes, rejected = decode_outcomes([raw(o)])
    assert [r.reason for r in rejected] == (
        [f"invalid event: Expected `str` matching regex {ID_PATTERN!r} - at `$.{bad[0]}`"] if bad else [])
    assert len(outcomes) == (not bad)


# -- empty and non-JSON numbers ------------------------------------------------------------


@pytest.mark.parametrize("payload", [None, b""])
def test_a_null_or_zero_length_value_is_an_empty_message_everywhere(payload):
    from streamproc.metrics import dead_letter_reason

    reasons = [decode_predictions([payload])[1], decode_outcomes([payload])[1], route_keys([payload])[1]]
    for (rejected,) in reasons:
        assert rejected.reason.startswith("empty message (") and dead_letter_reason(rejected.reason) == "empty"


NON_JSON_NUMBERS = [
    raw(ev()).replace(b'"x":1.5', b'"x":NaN'),
    raw(ev()).replace(b'"prediction":0.25', b'"prediction":-Infinity'),
    raw(ev()).replace(b'"prediction":0.25', b'"prediction":{"score":Infinity}'),
    raw(ev()).replace(b'"x":1.5', b'"x":-NaN'),
]


@pytest.mark.parametrize("payload", NON_JSON_NUMBERS)
def test_nan_and_infinity_literals_are_named_as_the_cause(payload):
    from streamproc.metrics import dead_letter_reason

    (rejected,) = decode_predictions([payload])[1]
    assert rejected.reason.startswith("not valid JSON: ") and "\n" not in rejected.reason
    assert "NaN and Infinity are not valid JSON" in rejected.reason, rejected.reason
    assert dead_letter_reason(rejected.reason) == "invalid_json"


def test_an_outcome_or_a_routed_message_with_a_nan_literal_names_it():
    (rejected,) = decode_outcomes([b'{"event_id":"e","model_id":"m","ts":1,"value":NaN}'])[1]
    assert "NaN and Infinity are not valid JSON" in rejected.reason, rejected.reason
    (rejected,) = route_keys([b'{"x":Infinity,"model_id":"m"}'])[1]
    assert "NaN and Infinity are not valid JSON" in rejected.reason, rejected.reason


@pytest.mark.parametrize("payload", [b'{"event_id": Nope}', b"not json", b'{"event_id": "e1", ', b"{broken"])
def test_other_malformed_json_gets_no_nan_hint(payload):
    (rejected,) = decode_predictions([payload])[1]
    assert rejected.reason.startswith("not valid JSON: ") and "NaN" not in rejected.reason, rejected.reason
