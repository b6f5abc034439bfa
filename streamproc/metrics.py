"""Prometheus metrics of a worker, in a registry of its own (so tests can run several).

Names are a contract (documented in the README): prefix ``streamproc_``, counters end in
``_total``, durations in ``_seconds``.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["Metrics", "CONTENT_TYPE_LATEST", "dead_letter_reason"]


def dead_letter_reason(reason: str) -> str:
    """The bounded label value for a dead-letter reason text."""
    if reason.startswith("not valid JSON"):
        return "invalid_json"
    if reason.startswith("empty message"):
        return "empty"
    if reason.startswith("too large"):
        return "too_large"
    if reason.startswith("invalid reference"):
        return "invalid_reference"
    return "invalid_event"


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        r = self.registry = registry or CollectorRegistry()
        self.events = Counter(
            "streamproc_events_consumed_total", "Valid prediction events applied, per model version.",
            ["model_id", "model_version"], registry=r)
        self.outcomes = Counter(
            "streamproc_outcomes_consumed_total", "Valid outcome events consumed, per model.", ["model_id"], registry=r)
        self.dead_letters = Counter(
            "streamproc_events_dead_lettered_total", "Messages sent to the dead-letter topic, per source topic and reason.",
            ["topic", "reason"], registry=r)
        self.alerts = Counter(
            "streamproc_alerts_total", "Alerts published, per model, type and severity.",
            ["model_id", "type", "severity"], registry=r)
        self.retrains = Counter(
            "streamproc_retrain_requests_total", "Retrain requests published, per model.", ["model_id"], registry=r)
        self.psi = Gauge(
            "streamproc_psi", "PSI of the latest closed window, per model version and feature "
            "(prediction.score and prediction.label for the prediction).",
            ["model_id", "model_version", "feature"], registry=r)
        self.psi_threshold = Gauge(
            "streamproc_psi_threshold", "Warning threshold the latest PSI was compared with (sample-size corrected).",
            ["model_id", "model_version", "feature"], registry=r)
        self.windows = Counter(
            "streamproc_windows_closed_total", "Tumbling windows closed and evaluated, per model version.",
            ["model_id", "model_version"], registry=r)
        self.joins = Counter(
            "streamproc_outcome_joins_total", "Outcomes joined to their prediction (matched), outcomes with no waiting "
            "prediction (unmatched), and predictions dropped unanswered after the TTL or the pending cap (expired).",
            ["model_id", "result"], registry=r)
        self.error_rate = Gauge(
            "streamproc_error_rate", "Error over the last 1000 labelled predictions: misclassification rate for labels "
            "(1 - accuracy), mean absolute error for values.", ["model_id", "model_version"], registry=r)
        self.late_events = Counter(
            "streamproc_late_events_total", "Events later than the allowed lateness of event-time windows "
            "(added to the oldest open window, not dropped).", ["model_id", "model_version"], registry=r)
        self.score_quantile = Gauge(
            "streamproc_prediction_score_quantile", "Quantiles of the prediction score in the latest closed window.",
            ["model_id", "model_version", "quantile"], registry=r)
        self.checkpoints = Counter(
            "streamproc_checkpoints_total", "Checkpoints: changed state saved to the state topic, then input offsets committed.",
            registry=r)
        self.state_bytes = Gauge(
            "streamproc_checkpoint_bytes", "Bytes of state written by the latest checkpoint (changed models only).", registry=r)
        self.models = Gauge("streamproc_models", "Model versions monitored by this worker.", registry=r)
        self.ready = Gauge("streamproc_ready", "1 when the worker is connected and consuming, else 0.", registry=r)
        self.batch_seconds = Histogram(
            "streamproc_batch_duration_seconds", "Time to decode, process, publish and commit one batch.",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5), registry=r)
        self.batch_size = Histogram(
            "streamproc_batch_size_messages", "Messages per consumed batch.",
            buckets=(1, 10, 100, 500, 1000, 2500, 5000, 10000), registry=r)

    @staticmethod
    def set_counter(counter: Counter, labels: tuple, total: float) -> None:
        """Advance a labelled counter to ``total`` (a cumulative count kept by the core)."""
        child = counter.labels(*labels)
        delta = total - child._value.get()
        if delta > 0:
            child.inc(delta)

    def render(self) -> bytes:
        return generate_latest(self.registry)
