"""The event contract: committed JSON Schemas, pydantic models and the fast decoder agree.

Three independent validators of a raw prediction payload: the pydantic model
(``PredictionEvent.model_validate_json``), the committed JSON Schema (jsonschema, with format
checks), and the hot-path decoder (``streamproc.decode``). They must accept and reject the
same inputs. Events streamproc writes (alerts, retrain requests, dead letters) must validate
against their schemas.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Optional

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator
from pydantic import ValidationError

from streamproc.config import MonitorConfig
from streamproc.decode import decode_outcomes, decode_predictions
from streamproc.events import SCHEMA_MODELS, AlertEvent, DeadLetter, OutcomeEvent, PredictionEvent, RetrainRequest, json_schema
from streamproc.monitor import ModelMonitor
from streamproc.synth import Drift, ModelStream
from streamproc.worker import dead_letter

SCHEMAS = Path(__file__).resolve().parent.parent / "schemas"


@lru_cache(maxsize=None)
def validator(name: str) -> Draft202012Validator:
    schema = json.loads((SCHEMAS / f"{name}.v1.json").read_text())
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


def _reject_constant(name):
    raise ValueError(f"{name} is not JSON")


def _finite_float(text):
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"{text} does not fit a double")
    return value


def schema_accepts(name: str, payload: bytes) -> bool:
    """Standard JSON (no NaN/Infinity, which Python's json would allow) against the committed schema."""
    try:
        # The contract's numbers are finite doubles; JSON Schema cannot say so, the parser does.
        doc = json.loads(payload, parse_constant=_reject_constant, parse_float=_finite_float)
    except ValueError:
        return False
    return validator(name).is_valid(doc)


def pydantic_accepts(model, payload: bytes) -> bool:
    try:
        model.model_validate_json(payload)
    except ValidationError:
        return False
    return True


def decoder_accepts_prediction(payload: bytes) -> bool:
    batches, rejected = decode_predictions([payload])
    assert len(rejected) + sum(len(b) for b in batches.values()) == 1
    return not rejected


def decoder_accepts_outcome(payload: bytes) -> bool:
    outcomes, rejected = decode_outcomes([payload])
    assert len(rejected) + len(outcomes) == 1
    return not rejected


def prediction_verdicts(payload: bytes) -> dict[str, bool]:
    return {
        "pydantic": pydantic_accepts(PredictionEvent, payload),
        "jsonschema": schema_accepts("prediction", payload),
        "decode": decoder_accepts_prediction(payload),
    }


def outcome_verdicts(payload: bytes) -> dict[str, bool]:
    return {
        "pydantic": pydantic_accepts(OutcomeEvent, payload),
        "jsonschema": schema_accepts("outcome", payload),
        "decode": decoder_accepts_outcome(payload),
    }


# -- committed schema files ----------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(SCHEMA_MODELS))
def test_committed_schema_files_match_the_models(name):
    committed = json.loads((SCHEMAS / f"{name}.v1.json").read_text())
    assert committed == json_schema(name)
    assert committed["$id"] == f"https://streamproc.dev/schemas/{name}.v1.json"
    assert committed["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(committed)


def test_every_schema_file_has_a_model():
    assert sorted(p.name for p in SCHEMAS.glob("*.v1.json")) == sorted(f"{n}.v1.json" for n in SCHEMA_MODELS)


# -- curated corpus: predictions -----------------------------------------------------------

_BASE = '"event_id":"e-1","model_id":"fraud","features":{"amount":12.5,"country":"DE","new":true,"age":null}'


def _p(body: str) -> bytes:
    return ("{" + body + "}").encode()


PREDICTIONS = {
    # valid
    "epoch float ts, number prediction": (_p(_BASE + ',"ts":1767225600.5,"prediction":0.42'), True),
    "epoch int ts, int prediction": (_p(_BASE + ',"ts":1767225600,"prediction":1'), True),
    "rfc3339 Z": (_p(_BASE + ',"ts":"2026-01-01T00:00:00Z","prediction":0.1'), True),
    "rfc3339 offset and fraction": (_p(_BASE + ',"ts":"2026-01-01T08:30:00.123+05:30","prediction":0.1'), True),
    "string prediction": (_p(_BASE + ',"ts":1,"prediction":"fraud"'), True),
    "score object": (_p(_BASE + ',"ts":1,"prediction":{"score":0.9}'), True),
    "label bool object": (_p(_BASE + ',"ts":1,"prediction":{"label":true}'), True),
    "label int object": (_p(_BASE + ',"ts":1,"prediction":{"label":2}'), True),
    "probabilities": (_p(_BASE + ',"ts":1,"prediction":{"probabilities":{"a":0.25,"b":0.75}}'), True),
    "empty prediction object": (_p(_BASE + ',"ts":1,"prediction":{}'), True),
    "model_version string": (_p(_BASE + ',"model_version":"v7","ts":1,"prediction":0.5'), True),
    "model_version null": (_p(_BASE + ',"model_version":null,"ts":1,"prediction":0.5'), True),
    "extra top-level fields": (_p(_BASE + ',"ts":1,"prediction":0.5,"trace":{"id":[1,2]},"x":null'), True),
    "extra prediction fields": (_p(_BASE + ',"ts":1,"prediction":{"score":0.5,"explain":[1]}'), True),
    "empty features": (_p('"event_id":"e","model_id":"m","features":{},"ts":1,"prediction":0'), True),
    "256-char event_id": (_p(f'"event_id":"{"x" * 256}","model_id":"m","features":{{}},"ts":1,"prediction":0'), True),
    # invalid
    "naive timestamp": (_p(_BASE + ',"ts":"2026-01-01T00:00:00","prediction":0.5'), False),
    "date only": (_p(_BASE + ',"ts":"2026-01-01","prediction":0.5'), False),
    "bool ts": (_p(_BASE + ',"ts":true,"prediction":0.5'), False),
    "bool prediction": (_p(_BASE + ',"ts":1,"prediction":true'), False),
    "null prediction": (_p(_BASE + ',"ts":1,"prediction":null'), False),
    "bool score": (_p(_BASE + ',"ts":1,"prediction":{"score":false}'), False),
    "float label": (_p(_BASE + ',"ts":1,"prediction":{"label":1.5}'), False),
    "empty event_id": (_p('"event_id":"","model_id":"m","features":{},"ts":1,"prediction":0'), False),
    "257-char event_id": (_p(f'"event_id":"{"x" * 257}","model_id":"m","features":{{}},"ts":1,"prediction":0'), False),
    "empty model_version": (_p(_BASE + ',"model_version":"","ts":1,"prediction":0.5'), False),
    "int event_id": (_p('"event_id":5,"model_id":"m","features":{},"ts":1,"prediction":0'), False),
    "nested list feature": (_p('"event_id":"e","model_id":"m","features":{"v":[1,2]},"ts":1,"prediction":0'), False),
    "nested object feature": (_p('"event_id":"e","model_id":"m","features":{"v":{"a":1}},"ts":1,"prediction":0'), False),
    "features not an object": (_p('"event_id":"e","model_id":"m","features":[],"ts":1,"prediction":0'), False),
    "missing features": (_p('"event_id":"e","model_id":"m","ts":1,"prediction":0'), False),
    "missing model_id": (_p('"event_id":"e","features":{},"ts":1,"prediction":0'), False),
    "not an object": (b"[1,2,3]", False),
    "null payload": (b"null", False),
    "not JSON": (b"event_id=e", False),
}


@pytest.mark.parametrize("case", list(PREDICTIONS))
def test_prediction_corpus_validators_agree(case):
    payload, valid = PREDICTIONS[case]
    assert prediction_verdicts(payload) == {"pydantic": valid, "jsonschema": valid, "decode": valid}


# Inputs on which the validators once disagreed (found while writing the corpus): pydantic was
# laxer than RFC 3339 and took NaN/Infinity; msgspec took a space separator. All three now
# reject them.
_TS_BASE = '"event_id":"e","model_id":"m","features":{},"prediction":0.5,"ts":'
_BIG = str(10 ** 400)
FORMERLY_DISPUTED = {
    "ts without seconds": _p(_TS_BASE + '"2026-01-01T00:00Z"'),
    "ts digits as string": _p(_TS_BASE + '"1767225600"'),
    "ts comma fraction": _p(_TS_BASE + '"2026-01-01T00:00:00,5Z"'),
    "ts space separator": _p(_TS_BASE + '"2026-01-01 00:00:00Z"'),
    "ts offset without colon": _p(_TS_BASE + '"2026-01-01T00:00:00+0530"'),
    "ts month 13": _p(_TS_BASE + '"2026-13-01T00:00:00Z"'),
    "NaN ts": _p(_TS_BASE + "NaN"),
    "Infinity score": _p('"event_id":"e","model_id":"m","features":{},"ts":1,"prediction":Infinity'),
    "overflowing feature": _p('"event_id":"e","model_id":"m","features":{"a":1e400},"ts":1,"prediction":0'),
    # Integer literals beyond the doubles' range: the decoder reads these as doubles, and they
    # overflow; the JSON Schema's "number" takes integers of any size unless bounded.
    "overflowing integer ts": _p(_TS_BASE.replace('"ts":', '"ts":' + _BIG)),
    "overflowing integer score": _p('"event_id":"e","model_id":"m","features":{},"ts":1,"prediction":' + _BIG),
    "overflowing integer score object": _p('"event_id":"e","model_id":"m","features":{},"ts":1,"prediction":{"score":-' + _BIG + '}'),
    "overflowing integer probability": _p('"event_id":"e","model_id":"m","features":{},"ts":1,"prediction":{"probabilities":{"a":' + _BIG + '}}'),
}


@pytest.mark.parametrize("case", list(FORMERLY_DISPUTED))
def test_formerly_disputed_inputs_are_rejected_by_all(case):
    assert prediction_verdicts(FORMERLY_DISPUTED[case]) == {"pydantic": False, "jsonschema": False, "decode": False}


@pytest.mark.parametrize("ts", ['"2026-01-01T00:00:00Z"', '"2026-01-01t00:00:00.123456789z"', '"2026-01-01T00:00:00+05:30"', "1767225600", "1.5"])
def test_rfc3339_and_epoch_forms_are_accepted_by_all(ts):
    assert prediction_verdicts(_p(_TS_BASE + ts)) == {"pydantic": True, "jsonschema": True, "decode": True}


# -- curated corpus: outcomes --------------------------------------------------------------

_O = '"event_id":"e-1","model_id":"fraud","ts":"2026-01-01T00:00:00Z"'
OUTCOMES = {
    "label string": (_p(_O + ',"label":"fraud"'), True),
    "label bool": (_p(_O + ',"label":false'), True),
    "value only": (_p(_O + ',"value":3.25'), True),
    "label null, value set": (_p(_O + ',"label":null,"value":1'), True),
    "extra fields": (_p(_O + ',"label":"x","source":"crm"'), True),
    "neither": (_p(_O), False),
    "both null": (_p(_O + ',"label":null,"value":null'), False),
    "naive timestamp": (_p('"event_id":"e","model_id":"m","ts":"2026-01-01T00:00:00","label":"x"'), False),
    "float label": (_p(_O + ',"label":0.5'), False),
    "string value": (_p(_O + ',"value":"3"'), False),
    "overflowing integer value": (_p(_O + ',"value":' + str(10 ** 400)), False),
    "the largest integer a double holds": (_p(_O + ',"value":' + str(2 ** 1024 - 2 ** 970 - 1)), True),
    "an integer label beyond any double": (_p(_O + ',"label":' + str(10 ** 400)), True),
    "empty event_id": (_p('"event_id":"","model_id":"m","ts":1,"label":"x"'), False),
}


@pytest.mark.parametrize("case", list(OUTCOMES))
def test_outcome_corpus_validators_agree(case):
    payload, valid = OUTCOMES[case]
    assert outcome_verdicts(payload) == {"pydantic": valid, "jsonschema": valid, "decode": valid}


# -- generated valid events ----------------------------------------------------------------

_text = st.text(st.characters(exclude_categories=("Cs",)), max_size=20)
_ids = st.text(st.characters(exclude_categories=("Cs",), min_codepoint=0x20), min_size=1, max_size=40)  # ids have no control characters
_finite = st.floats(allow_nan=False, allow_infinity=False)
_ints = st.integers(-(2**53), 2**53)
_feature_value = st.one_of(st.none(), st.booleans(), _ints, _finite, _text)
_label = st.one_of(st.none(), st.booleans(), _ints, _text)
_prediction_object = st.fixed_dictionaries(
    {},
    optional={
        "score": st.one_of(st.none(), _finite, _ints),
        "label": _label,
        "probabilities": st.one_of(st.none(), st.dictionaries(_text, st.floats(0, 1), max_size=4)),
    },
)
_prediction = st.one_of(_finite, _ints, _text, _prediction_object)


@st.composite
def _rfc3339_z(draw) -> str:
    dt = draw(st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)))
    text = dt.isoformat(timespec="seconds") + draw(st.sampled_from(["", dt.strftime(".%f"), ".5"]))
    return text + draw(st.sampled_from(["Z", "Z", "+00:00", "+02:00", "-07:30"]))


_ts = st.one_of(_finite, st.integers(-(2**40), 2**40), _rfc3339_z())


@st.composite
def valid_events(draw) -> dict:
    event = {
        "event_id": draw(_ids),
        "model_id": draw(_ids),
        "ts": draw(_ts),
        "features": draw(st.dictionaries(_text, _feature_value, max_size=8)),
        "prediction": draw(_prediction),
    }
    version = draw(st.one_of(st.just("absent"), st.none(), _ids))
    if version != "absent":
        event["model_version"] = version
    if draw(st.booleans()):
        event["producer_meta"] = draw(st.dictionaries(_text, _feature_value, max_size=2))
    return event


@given(valid_events())
@settings(max_examples=300, deadline=None)
def test_generated_valid_events_are_accepted_by_all_three(event):
    payload = json.dumps(event, allow_nan=False).encode()
    assert prediction_verdicts(payload) == {"pydantic": True, "jsonschema": True, "decode": True}
    (batch,) = decode_predictions([payload])[0].values()
    assert batch.event_ids == [event["event_id"]]
    assert batch.model_version == (event.get("model_version") or "default")
    assert batch.features == [event["features"]]


_bad_mutations = st.sampled_from([
    ("event_id", ""), ("model_id", None), ("ts", "2026-01-01T00:00:00"), ("ts", False), ("features", [1]),
    ("features", {"f": [1]}), ("prediction", True), ("prediction", None), ("prediction", {"score": "1"}),
    ("model_version", ""), ("model_version", 1), ("event_id", 1),
])


@given(valid_events(), _bad_mutations)
@settings(max_examples=150, deadline=None)
def test_generated_invalid_events_are_rejected_by_all_three(event, mutation):
    key, value = mutation
    event[key] = value
    payload = json.dumps(event, allow_nan=False).encode()
    assert prediction_verdicts(payload) == {"pydantic": False, "jsonschema": False, "decode": False}


# -- events streamproc writes --------------------------------------------------------------


@lru_cache(maxsize=None)
def drift_run() -> tuple[list[dict], list[dict]]:
    stream = ModelStream("fraud", n_numeric=4, seed=3, model_version="v9",
                         drift=Drift(start=3600, features=("x0", "c0"), shift=1.5, new_category_rate=0.5))
    events = list(stream.events(7000))
    for e in events[2500:]:
        e["features"]["surprise"] = 1
    batches, rejected = decode_predictions([orjson.dumps(e) for e in events])
    assert not rejected
    mon = ModelMonitor("fraud", "v9", MonitorConfig(window_size=500, warmup_size=2000))
    res = mon.update(batches[("fraud", "v9")])
    # Through the wire format, as published.
    return [json.loads(orjson.dumps(a)) for a in res.alerts], [json.loads(orjson.dumps(r)) for r in res.retrains]


def test_alerts_from_a_drift_run_validate():
    alerts, _ = drift_run()
    kinds = {(a["type"], a["detector"]) for a in alerts}
    assert {("data_drift", "psi"), ("prediction_drift", "psi"), ("data_quality", "schema")} <= kinds
    assert any(a["detector"] in ("adwin", "page_hinkley") for a in alerts)
    v = validator("alert")
    for a in alerts:
        errors = [e.message for e in v.iter_errors(a)]
        assert errors == [], (a, errors)
        model = AlertEvent.model_validate(a)
        assert model.alert_id == a["alert_id"]
        assert model.window.index == a["window"]["index"]


def test_retrain_requests_from_a_drift_run_validate():
    alerts, retrains = drift_run()
    assert len(retrains) >= 1
    ids = {a["alert_id"] for a in alerts}
    v = validator("retrain_request")
    for r in retrains:
        assert [e.message for e in v.iter_errors(r)] == []
        RetrainRequest.model_validate(r)
        assert r["alert_ids"] and set(r["alert_ids"]) <= ids


def test_output_schemas_reject_unknown_fields_and_bad_values():
    alerts, retrains = drift_run()
    a = dict(alerts[0], extra=1)
    assert not validator("alert").is_valid(a)
    with pytest.raises(ValidationError):
        AlertEvent.model_validate(a)
    b = dict(alerts[0], severity="info")
    assert not validator("alert").is_valid(b)
    c = dict(retrains[0])
    del c["alert_ids"]
    assert not validator("retrain_request").is_valid(c)


@dataclass
class FakeMessage:
    topic: str
    partition: int
    offset: int
    key: Optional[bytes]
    value: Optional[bytes]


@pytest.mark.parametrize(
    "msg, limit, truncated",
    [
        (FakeMessage("predictions", 3, 1234, b"k\x00\xff", b'{"broken'), 16384, False),
        (FakeMessage("outcomes", 0, 0, None, None), 16384, False),
        (FakeMessage("predictions", 1, 99, None, bytes(range(256)) * 4), 100, True),
        (FakeMessage("predictions", 1, 99, b"", b"abc"), 0, True),
    ],
)
def test_dead_letters_validate(msg, limit, truncated):
    letter = json.loads(orjson.dumps(dead_letter(msg, "not valid JSON: boom", limit)))
    assert [e.message for e in validator("dead_letter").iter_errors(letter)] == []
    model = DeadLetter.model_validate(letter)
    assert model.failed_at.tzinfo is not None
    value = msg.value or b""
    assert letter["error"] == "not valid JSON: boom"
    assert (letter["source_topic"], letter["source_partition"], letter["source_offset"]) == (msg.topic, msg.partition, msg.offset)
    assert letter["payload_size"] == len(value)
    assert letter["truncated"] is truncated
    assert base64.b64decode(letter["payload"]) == value[:limit]
    assert letter["key"] == (None if msg.key is None else base64.b64encode(msg.key).decode())
    assert datetime.fromisoformat(letter["failed_at"]) <= datetime.now(timezone.utc)



def test_ids_with_control_characters_are_rejected_by_all():
    payload = _p('"event_id":"e","model_id":"m\\u001fx","features":{},"ts":1,"prediction":0.5')
    assert prediction_verdicts(payload) == {"pydantic": False, "jsonschema": False, "decode": False}


def test_schemas_check_says_which_files_are_missing_and_which_out_of_date(tmp_path, capsys):
    from streamproc.cli import main

    assert main(["schemas", "--check", "--dir", str(tmp_path / "nowhere")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("missing: ") and "out of date" not in err and not (tmp_path / "nowhere").exists()
    assert main(["schemas", "--dir", str(tmp_path)]) == 0
    (tmp_path / "alert.v1.json").write_text("{}\n")
    (tmp_path / "outcome.v1.json").unlink()
    assert main(["schemas", "--check", "--dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "missing: " in err and "outcome.v1.json" in err.split(";")[0] and "out of date: " in err and "alert.v1.json" in err.split(";")[1]
    assert main(["schemas", "--dir", str(tmp_path)]) == 0 and main(["schemas", "--check", "--dir", str(tmp_path)]) == 0
