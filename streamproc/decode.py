"""Fast, strict decoding of raw prediction and outcome messages into columnar batches.

The hot path must not build a pydantic object per event (about 5x slower than the topic can
be read). msgspec decodes and type-checks each message in C against the same rules as
``streamproc.events``; a test keeps the two in agreement. A message that fails becomes a
``Rejected`` with a one-line reason, never an exception: the caller dead-letters it.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Callable, Iterable, Optional, Sequence, Union

import msgspec
import numpy as np
from msgspec.structs import astuple

from .events import DEFAULT_MODEL_VERSION, ID_PATTERN, parse_rfc3339
from .feature_table import FeatureLayout, FeatureTable

if TYPE_CHECKING:
    from .model_decoder import ModelDecoder

# Ids' ``ID_PATTERN`` (no control characters) is checked after decoding (``_id_problem``):
# msgspec's regex check of three ids was a third of the time of decoding a 750-byte prediction.
_FastId = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
_CONTROL = re.compile(r"[\x00-\x1f]")


def _id_problem(value: Optional[str], path: str) -> Optional[str]:
    """Why an id breaks ``ID_PATTERN`` (no control characters), in msgspec's words; None if
    it does not. Printable text (the usual id) is settled by one C call."""
    if value is None or value.isprintable() or not _CONTROL.search(value):
        return None
    return f"invalid event: Expected `str` matching regex {ID_PATTERN!r} - at `$.{path}`"
_Label = Union[str, int, bool, None]
_WireValue = Union[bool, int, float, str, None]  # a feature's value


# ``gc=False``: decoded events hold only strings, numbers and dicts of them (no cycles), so the
# collector need not track them: about 8 % less decoding time.
class _WirePrediction(msgspec.Struct, gc=False):
    score: Optional[float] = None
    label: _Label = None
    probabilities: Optional[dict[str, float]] = None


class _WirePredictionEvent(msgspec.Struct, gc=False):
    event_id: _FastId
    model_id: _FastId
    ts: Union[str, float]
    features: dict[str, _WireValue]
    prediction: Union[float, str, _WirePrediction]
    model_version: Optional[_FastId] = None


class _WireOutcomeEvent(msgspec.Struct, gc=False):
    event_id: _FastId
    model_id: _FastId
    ts: Union[str, float]
    label: _Label = None
    value: Optional[float] = None


_PREDICTION_DECODER = msgspec.json.Decoder(_WirePredictionEvent)
_OUTCOME_DECODER = msgspec.json.Decoder(_WireOutcomeEvent)

ModelKey = tuple[str, str]


@dataclass(slots=True)
class Rejected:
    """A message that could not be used, and why."""

    index: int
    reason: str


@dataclass(slots=True)
class PredictionBatch:
    """The valid predictions of one (model, version) from one consumer batch, in input order."""

    model_id: str
    model_version: str
    event_ids: list[str] = field(default_factory=list)
    ts: list[float] = field(default_factory=list)
    # One dict per event, or (for a model version with a known reference) a FeatureTable.
    features: Union[list[dict], FeatureTable] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    labels: list[Optional[str]] = field(default_factory=list)
    # Where each event came from, ("topic:partition", offset), when the caller said so: used to
    # skip events a restored state has already applied.
    positions: list[tuple[str, int]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.event_ids)

    def slice(self, start: int, stop: int) -> "PredictionBatch":
        return PredictionBatch(
            self.model_id,
            self.model_version,
            self.event_ids[start:stop],
            self.ts[start:stop],
            self.features[start:stop],
            self.scores[start:stop],
            self.labels[start:stop],
            self.positions[start:stop],
        )

    def take(self, indices: list[int]) -> "PredictionBatch":
        return PredictionBatch(
            self.model_id,
            self.model_version,
            [self.event_ids[i] for i in indices],
            [self.ts[i] for i in indices],
            self.features.take(indices) if isinstance(self.features, FeatureTable) else [self.features[i] for i in indices],
            [self.scores[i] for i in indices],
            [self.labels[i] for i in indices],
            [self.positions[i] for i in indices] if self.positions else [],
        )

    def ts_array(self) -> np.ndarray:
        return np.asarray(self.ts, dtype=np.float64)

    def score_array(self) -> np.ndarray:
        return np.asarray(self.scores, dtype=np.float64)


@dataclass(slots=True)
class Outcome:
    event_id: str
    model_id: str
    ts: float
    label: Optional[str]
    value: Optional[float]
    position: Optional[tuple[str, int]] = None  # ("topic:partition", offset), when known


def _event_time(ts: Union[str, float]) -> float:
    if isinstance(ts, str):
        return parse_rfc3339(ts)
    if not math.isfinite(ts):
        raise ValueError("ts must be finite")
    return float(ts)


def label_text(label: _Label) -> Optional[str]:
    """Labels compare as text: true -> 'true', 1 -> '1', 'cat' -> 'cat'."""
    if label is None:
        return None
    if isinstance(label, bool):
        return "true" if label else "false"
    return str(label)


def split_prediction(prediction: Union[float, str, _WirePrediction, dict]) -> tuple[float, Optional[str]]:
    """The score (NaN if none) and label (None if none) of a prediction.

    A bare number is a score, a bare string a label. With only class probabilities, the score
    is the largest probability (the model's confidence) and the label its class.
    """
    if isinstance(prediction, (int, float)) and not isinstance(prediction, bool):
        return float(prediction), None
    if isinstance(prediction, str):
        return math.nan, prediction
    if isinstance(prediction, dict):
        prediction = _WirePrediction(**{k: prediction.get(k) for k in ("score", "label", "probabilities")})
    score = prediction.score
    label = label_text(prediction.label)
    probs = prediction.probabilities
    if probs:
        best = max(probs, key=probs.__getitem__)
        if score is None:
            score = probs[best]
        if label is None:
            label = best
    return (math.nan if score is None else float(score)), label


_TEXT_OR_NONE = (str, type(None))
MAX_EVENT_BYTES = 256 * 1024  # a prediction event larger than this is refused, whatever the broker allows


_AT_BYTE = re.compile(r"\(byte (\d+)\)$")
_NON_JSON_NUMBERS = (b"NaN", b"Infinity")  # what JavaScript and Python's json write for non-finite floats


def _empty(raw: Optional[bytes]) -> str:
    return "empty message (null value)" if raw is None else "empty message (zero-length value)"


def _future(ts: float, not_after: float) -> str:
    """Why an event dated after ``not_after`` is rejected (only ever called for one)."""
    ahead = ts - not_after
    hint = ": epoch milliseconds, not seconds?" if ts > 1e11 else ""
    return (f"ts {ts:.3f} is after the worker's clock plus worker.max_future_seconds "
            f"({not_after:.3f}) by {ahead:,.0f} s{hint}")


def _reason(exc: Exception, raw: Optional[bytes] = None) -> str:
    """The one-line reason of a rejected message (only ever called for a rejected one)."""
    if isinstance(exc, msgspec.ValidationError):
        return f"invalid event: {exc}"
    if isinstance(exc, msgspec.DecodeError):
        text = f"not valid JSON: {exc}"
        at = _AT_BYTE.search(text) if raw is not None else None
        if at is not None and bytes(raw).startswith(_NON_JSON_NUMBERS, int(at.group(1))):  # "-Infinity": at the I
            text += ": NaN and Infinity are not valid JSON (null is a missing value)"
        return text
    if isinstance(exc, RecursionError):
        return "invalid event: JSON nested too deeply"
    return f"invalid event: {exc}"


# Everything a hostile message can make the decoder raise. Anything else is a bug in streamproc.
_DECODE_ERRORS = (msgspec.DecodeError, msgspec.ValidationError, ValueError, TypeError, RecursionError, OverflowError)


def decode_predictions(payloads: Iterable[Optional[bytes]], positions: Optional[Sequence] = None,
                       max_bytes: int = MAX_EVENT_BYTES,
                       layouts: Optional[Callable[[ModelKey], Optional[FeatureLayout]]] = None,
                       known: Optional["ModelDecoder"] = None,
                       not_after: float = math.inf,
                       ) -> tuple[dict[ModelKey, PredictionBatch], list[Rejected]]:
    """Decode raw prediction messages, grouped by (model_id, model_version) in input order.

    The loop is the one per-event Python step of the hot path, so it does the least it can:
    common shapes (float ``ts``, a score/label prediction) skip the general helpers. With
    ``layouts`` (a model version's feature layout, None while it has no reference), features
    go straight into a ``FeatureTable`` instead of staying dicts. With ``known`` (a
    ``model_decoder.ModelDecoder``, which the engine teaches), events of the models it knows
    are decoded straight into their layout's fields; the result is the same.
    ``not_after``: the latest event time accepted (the worker's clock plus
    ``worker.max_future_seconds``); an event after it is rejected: one event dated in the far
    future (epoch milliseconds read as seconds) would otherwise move its model's event-time
    clock, by which time windows close and outcomes stop waiting, past every later event.
    """
    batches: dict[ModelKey, PredictionBatch] = {}
    appends: dict[ModelKey, tuple] = {}
    rejected: list[Rejected] = []
    decode = _PREDICTION_DECODER.decode
    first = (known.decode if known is not None else None) or decode
    wire = known.wire if known is not None else None
    nan = math.nan
    for i, raw in enumerate(payloads):
        if not raw:
            rejected.append(Rejected(i, _empty(raw)))
            continue
        if len(raw) > max_bytes:
            rejected.append(Rejected(i, f"too large: {len(raw)} bytes (limit {max_bytes})"))
            continue
        try:
            try:
                ev = first(raw)
            except _DECODE_ERRORS:
                if first is decode:
                    raise
                ev = decode(raw)  # the general decoder decides, and says why
            ts = ev.ts
            if type(ts) is not float or ts - ts != 0.0:  # a string, NaN or an infinity
                ts = _event_time(ts)
            if ts > not_after:
                rejected.append(Rejected(i, _future(ts, not_after)))
                continue
            pred = ev.prediction
            if type(pred) is _WirePrediction and pred.probabilities is None and type(pred.label) in _TEXT_OR_NONE:
                score = pred.score
                if score is None:
                    score = nan
                label = pred.label
            else:
                score, label = split_prediction(pred)
        except _DECODE_ERRORS as exc:
            rejected.append(Rejected(i, _reason(exc, raw)))
            continue
        event_id = ev.event_id
        if not event_id.isprintable():  # rare: only then is the call to _id_problem paid
            problem = _id_problem(event_id, "event_id")
            if problem is not None:
                rejected.append(Rejected(i, problem))
                continue
        key = (ev.model_id, ev.model_version or DEFAULT_MODEL_VERSION)
        batch = batches.get(key)
        if batch is None:
            problem = _id_problem(ev.model_id, "model_id") or _id_problem(ev.model_version, "model_version")
            if problem is not None:  # checked once per batch for a good model version
                rejected.append(Rejected(i, problem))
                continue
            batch = batches[key] = PredictionBatch(*key)
            layout = layouts(key) if layouts is not None else None
            if layout is not None:
                batch.features = FeatureTable(layout)
            appends[key] = (batch.event_ids.append, batch.ts.append,
                            batch.features.add if layout is not None else batch.features.append, batch.scores.append,
                            batch.labels.append, batch.positions.append,
                            wire(layout) if layout is not None and wire is not None else None,
                            batch.features.add_values if layout is not None else None)
        add_id, add_ts, add_features, add_score, add_label, add_position, typed, add_typed = appends[key]
        features = ev.features
        if type(features) is not dict:  # decoded by a model's layout
            if type(features) is typed:
                add_typed(astuple(features))
            else:  # another version's layout: as the general decoder gives it (the features' order)
                add_features(decode(raw).features)
        else:
            add_features(features)
        add_id(event_id)
        add_ts(ts)
        add_score(score)
        add_label(label)
        if positions is not None:
            add_position(positions[i])
    return batches, rejected


def decode_outcomes(payloads: Iterable[Optional[bytes]], positions: Optional[list[tuple[str, int]]] = None,
                    max_bytes: int = MAX_EVENT_BYTES) -> tuple[list[Outcome], list[Rejected]]:
    """Decode raw outcome messages; an outcome needs a label or a value."""
    outcomes: list[Outcome] = []
    rejected: list[Rejected] = []
    for i, raw in enumerate(payloads):
        if not raw:
            rejected.append(Rejected(i, _empty(raw)))
            continue
        if len(raw) > max_bytes:
            rejected.append(Rejected(i, f"too large: {len(raw)} bytes (limit {max_bytes})"))
            continue
        try:
            ev = _OUTCOME_DECODER.decode(raw)
            ts = _event_time(ev.ts)
            if ev.label is None and ev.value is None:
                raise ValueError("an outcome needs a label or a value")
        except _DECODE_ERRORS as exc:
            rejected.append(Rejected(i, _reason(exc, raw)))
            continue
        problem = _id_problem(ev.event_id, "event_id") or _id_problem(ev.model_id, "model_id")
        if problem is not None:
            rejected.append(Rejected(i, problem))
            continue
        outcomes.append(Outcome(ev.event_id, ev.model_id, ts, label_text(ev.label), ev.value,
                                positions[i] if positions is not None else None))
    return outcomes, rejected


class _WireRouted(msgspec.Struct, gc=False):
    model_id: _FastId


_ROUTE_DECODER = msgspec.json.Decoder(_WireRouted)


def route_keys(payloads: Iterable[Optional[bytes]], max_bytes: int = MAX_EVENT_BYTES) -> tuple[list[Optional[str]], list[Rejected]]:
    """The model id of each raw message (None where rejected), for repartitioning by model.

    Only ``model_id`` is checked here (the rest of the message is validated where it is
    applied); a message without a usable one cannot be routed and is rejected.

    >>> route_keys([b'{"model_id": "m1", "features": {}}', b'{"x": 1}'])[0]
    ['m1', None]
    """
    keys: list[Optional[str]] = []
    rejected: list[Rejected] = []
    decode = _ROUTE_DECODER.decode
    for i, raw in enumerate(payloads):
        key = None
        if not raw:
            rejected.append(Rejected(i, _empty(raw)))
        elif len(raw) > max_bytes:
            rejected.append(Rejected(i, f"too large: {len(raw)} bytes (limit {max_bytes})"))
        else:
            try:
                key = decode(raw).model_id
            except _DECODE_ERRORS as exc:
                rejected.append(Rejected(i, _reason(exc, raw)))
            else:
                problem = None if key.isprintable() else _id_problem(key, "model_id")
                if problem is not None:
                    rejected.append(Rejected(i, problem))
                    key = None
        keys.append(key)
    return keys, rejected
