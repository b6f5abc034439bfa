"""The public event contract: pydantic models of every event streamproc reads or writes.

These models are the source of truth for ``schemas/*.json`` (``streamproc schemas``
regenerates them, ``streamproc schemas --check`` says whether they are current; a test fails
when the two disagree). The worker's hot path does not build
these models per event: ``streamproc.decode`` checks the same rules on plain dicts, and a test
proves the two accept and reject the same inputs.

Versioning: ``SCHEMA_VERSION`` is written into every event streamproc produces. Adding an
optional field is a minor change; removing or retyping a field bumps the major number.
"""

from __future__ import annotations

import re
import sys
from datetime import datetime
from typing import Annotated, Literal, Union

from pydantic import (AfterValidator, BaseModel, ConfigDict, Field, model_validator, StrictBool, StrictFloat, StrictInt, StrictStr,
                      TypeAdapter, ValidationError)

SCHEMA_VERSION = "1.0"
DEFAULT_MODEL_VERSION = "default"

# An RFC 3339 date-time (with seconds and an offset), or seconds since the Unix epoch. The
# pattern is enforced by pydantic, the JSON Schema and the fast decoder alike.
RFC3339_PATTERN = r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$"


def parse_rfc3339(text: str) -> float:
    """Epoch seconds of an RFC 3339 date-time; ValueError if it is not one."""
    if not _RFC3339.match(text):
        raise ValueError("ts must be RFC 3339 with seconds and a UTC offset (e.g. 2026-01-01T00:00:00Z) or epoch seconds")
    try:
        return datetime.fromisoformat(text.upper()).timestamp()
    except ValueError:
        raise ValueError(f"ts {text!r} is not a valid date-time") from None


_RFC3339 = re.compile(RFC3339_PATTERN)


def _check_rfc3339(text: str) -> str:
    parse_rfc3339(text)
    return text


Timestamp = Annotated[StrictStr, Field(pattern=RFC3339_PATTERN, json_schema_extra={"format": "date-time"}),
                      AfterValidator(_check_rfc3339)]
# The largest integer a double holds without overflowing (read as one, larger ones round up
# to infinity): a number's bounds, as the fast decoder applies them to numbers read as doubles.
DOUBLE_INT_MAX = 2 ** 1024 - 2 ** 970 - 1
DoubleInt = Annotated[StrictInt, Field(ge=-DOUBLE_INT_MAX, le=DOUBLE_INT_MAX)]
# Bounded too, for the JSON Schema: its "number" takes integers as well, of any size.
DoubleFloat = Annotated[StrictFloat, Field(ge=-sys.float_info.max, le=sys.float_info.max)]
EventTime = Union[DoubleFloat, DoubleInt, Timestamp]
FeatureValue = Union[StrictBool, StrictInt, StrictFloat, StrictStr, None]
ID_PATTERN = r"^[^\x00-\x1f]+$"  # no control characters (ids name state records and metric labels)
NonEmptyStr = Annotated[StrictStr, Field(min_length=1, max_length=256, pattern=ID_PATTERN)]
_IDS = TypeAdapter(NonEmptyStr)


def is_id(value: object) -> bool:
    """Whether ``value`` is an id the event contract allows (``NonEmptyStr``): a model id or
    version anything else names (a reference, a CLI flag) must be one, or it never meets an event.

    >>> is_id("fraud"), is_id("fraud\\n"), is_id(""), is_id(["fraud"])
    (True, False, False, False)
    """
    try:
        _IDS.validate_python(value)
    except ValidationError:
        return False
    return True


class _Input(BaseModel):
    """Inputs tolerate unknown fields (producers may add metadata); outputs do not.

    Numbers must be finite doubles: NaN/Infinity literals and overflowing numbers are rejected
    (an integer feature value beyond the doubles' range is accepted, and counts as missing).
    """

    model_config = ConfigDict(extra="allow", strict=True, allow_inf_nan=False)


class _Output(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PredictionObject(BaseModel):
    """A structured prediction: a score, a label, and/or class probabilities."""

    model_config = ConfigDict(extra="allow", strict=True, allow_inf_nan=False)

    score: Union[DoubleFloat, DoubleInt, None] = None
    label: Union[StrictStr, StrictInt, StrictBool, None] = None
    probabilities: Union[dict[str, Union[DoubleFloat, DoubleInt]], None] = None


class PredictionEvent(_Input):
    """One model prediction, as emitted by the serving system for every request."""

    event_id: NonEmptyStr = Field(description="Unique per prediction; outcomes refer to it.")
    model_id: NonEmptyStr
    model_version: Union[NonEmptyStr, None] = Field(
        default=None, description=f"Absent or null means the version '{DEFAULT_MODEL_VERSION}'."
    )
    ts: EventTime = Field(description="Event time: RFC 3339 with offset, or epoch seconds.")
    features: dict[str, FeatureValue]
    prediction: Union[DoubleFloat, DoubleInt, StrictStr, PredictionObject]


class OutcomeEvent(_Input):
    """The ground truth for an earlier prediction, usually arriving much later.

    It carries a ``label`` (classification) or a ``value`` (regression), or both.
    """

    model_config = ConfigDict(
        extra="allow", strict=True, allow_inf_nan=False,
        json_schema_extra={"anyOf": [{"required": ["label"], "properties": {"label": {"not": {"type": "null"}}}},
                                     {"required": ["value"], "properties": {"value": {"not": {"type": "null"}}}}]},
    )

    event_id: NonEmptyStr = Field(description="event_id of the prediction this answers.")
    model_id: NonEmptyStr
    ts: EventTime
    label: Union[StrictStr, StrictInt, StrictBool, None] = None
    value: Union[DoubleFloat, DoubleInt, None] = None

    @model_validator(mode="after")
    def _has_truth(self) -> "OutcomeEvent":
        if self.label is None and self.value is None:
            raise ValueError("an outcome needs a label or a value")
        return self


class AlertWindow(_Output):
    """The data an alert was computed on: event-time range and event count."""

    index: int = Field(description="Sequence number of the window within the model version.")
    start: float = Field(description="Earliest event time in the window, epoch seconds.")
    end: float = Field(description="Latest event time in the window, epoch seconds.")
    count: int


AlertType = Literal["data_drift", "prediction_drift", "concept_drift", "data_quality"]


class AlertEvent(_Output):
    """Published to the alerts topic when a detector finds drift."""

    schema_version: Literal["1.0"] = SCHEMA_VERSION
    alert_id: str = Field(description="Deterministic: the same drift in the same window gives the same id.")
    model_id: str
    model_version: str
    type: AlertType
    detector: str = Field(description="psi, adwin, page_hinkley (drift); missing_rate, unseen_categories, schema (data quality)")
    signal: Literal["feature", "prediction_score", "prediction_label", "error"] = Field(
        description="What the statistic was computed on."
    )
    feature: Union[str, None] = Field(description="Feature name, or null for prediction and error signals.")
    statistic: float
    threshold: float
    severity: Literal["warning", "critical"]
    window: AlertWindow
    detected_at: datetime = Field(description="Wall-clock time of detection (not part of the id).")


class RetrainRequest(_Output):
    """Published to the retrain topic when drift is critical enough to retrain the model."""

    schema_version: Literal["1.0"] = SCHEMA_VERSION
    request_id: str = Field(description="Deterministic, derived from the alert ids that caused it.")
    model_id: str
    model_version: str
    alert_ids: list[str]
    drifted_features: list[str]
    data_window: AlertWindow = Field(description="The drifted data to retrain on.")
    reason: str
    created_at: datetime


class DeadLetter(_Output):
    """A message streamproc could not use, with why, so nothing is silently lost."""

    schema_version: Literal["1.0"] = SCHEMA_VERSION
    error: str
    source_topic: str
    source_partition: int
    source_offset: int
    key: Union[str, None] = Field(description="The original key, base64.")
    payload: str = Field(description="The original bytes (at most payload_limit of them), base64.")
    payload_size: int = Field(description="Size of the original message in bytes.")
    truncated: bool
    failed_at: datetime


SCHEMA_MODELS: dict[str, type[BaseModel]] = {
    "prediction": PredictionEvent,
    "outcome": OutcomeEvent,
    "alert": AlertEvent,
    "retrain_request": RetrainRequest,
    "dead_letter": DeadLetter,
}


def json_schema(name: str) -> dict:
    """The JSON Schema of one event, as committed under ``schemas/<name>.v1.json``."""
    model = SCHEMA_MODELS[name]
    schema = model.model_json_schema(mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = f"https://streamproc.dev/schemas/{name}.v1.json"
    schema["x-schema-version"] = SCHEMA_VERSION
    return schema
