"""Prometheus metrics of a worker, in a registry of its own (so tests can run several).

Names are a contract (documented in the README): prefix ``streamproc_``, counters end in
``_total``, durations in ``_seconds``.
"""

from __future__ import annotations

from typing import get_args

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from .bounded_series import Bounded, LatestGauge
from .events import AlertEvent, AlertType

__all__ = ["Metrics", "CONTENT_TYPE_LATEST", "dead_letter_reason", "Bounded"]

DEFAULT_MAX_SERIES = 10_000
WINDOW_DETECTORS = ("psi", "missing_rate", "unseen_categories")  # streamproc_statistic's of a closed window


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
    if reason.startswith("too many models"):
        return "too_many_models"
    return "invalid_event"


# (type, severity) of every alert a model can publish (schemas/alert.v1.json)
ALERT_SERIES = tuple((kind, severity) for kind in get_args(AlertType)
                     for severity in get_args(AlertEvent.model_fields["severity"].annotation))


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None, max_series: int = DEFAULT_MAX_SERIES):
        r = self.registry = registry or CollectorRegistry()
        self.series_dropped = Counter(
            "streamproc_metric_series_dropped_total", "Label combinations not exported because their metric was at its "
            "cap of series (worker.max_series).", ["metric"], registry=r)

        def bounded(metric):
            return Bounded(metric, max_series, self.series_dropped)

        def latest(name: str, documentation: str, labelnames: list[str]) -> LatestGauge:
            # The latest values of each model version's statistics: thousands of series, set
            # at every closed window (see streamproc.bounded_series).
            return LatestGauge(name, documentation, labelnames, max_series, self.series_dropped, r)
        self.events = bounded(Counter(
            "streamproc_events_consumed_total", "Valid prediction events applied, per model version.",
            ["model_id", "model_version"], registry=r))
        self.outcomes = bounded(Counter(
            "streamproc_outcomes_consumed_total", "Valid outcome events consumed, per model.", ["model_id"], registry=r))
        self.dead_letters = Counter(
            "streamproc_events_dead_lettered_total", "Messages sent to the dead-letter topic, per source topic and reason.",
            ["topic", "reason"], registry=r)
        self.alerts = bounded(Counter(
            "streamproc_alerts_total", "Alerts published, per model, type and severity.",
            ["model_id", "type", "severity"], registry=r))
        self.retrains = bounded(Counter(
            "streamproc_retrain_requests_total", "Retrain requests published, per model.", ["model_id"], registry=r))
        self.psi = latest(
            "streamproc_psi", "PSI of the latest closed window, per model version and feature "
            "(prediction.score and prediction.label for the prediction).",
            ["model_id", "model_version", "feature"])
        self.psi_threshold = latest(
            "streamproc_psi_threshold", "Warning threshold the latest PSI was compared with (sample-size corrected).",
            ["model_id", "model_version", "feature"])
        self.statistic = latest(
            "streamproc_statistic", "Latest value of each statistic the monitor computes, per model version, feature "
            "and detector: psi (per feature, prediction.score, prediction.label), missing_rate and unseen_categories "
            "(per feature) of the latest closed window; adwin and page_hinkley on prediction.score and error, after "
            "the latest batch (in baseline standard deviations).",
            ["model_id", "model_version", "feature", "detector"])
        self.statistic_threshold = latest(
            "streamproc_statistic_threshold", "Warning threshold streamproc_statistic is compared with, per model "
            "version, feature and detector.", ["model_id", "model_version", "feature", "detector"])
        self.windows = bounded(Counter(
            "streamproc_windows_closed_total", "Tumbling windows closed and evaluated, per model version.",
            ["model_id", "model_version"], registry=r))
        self.joins = bounded(Counter(
            "streamproc_outcome_joins_total", "Outcomes joined to their prediction (matched), outcomes with no waiting "
            "prediction (unmatched), and predictions dropped unanswered after the TTL or the pending cap (expired).",
            ["model_id", "result"], registry=r))
        self.error_rate = latest(
            "streamproc_error_rate", "Error over the last 1000 labelled predictions: misclassification rate for labels "
            "(1 - accuracy), mean absolute error for values.", ["model_id", "model_version"])
        self.late_events = bounded(Counter(
            "streamproc_late_events_total", "Events later than the allowed lateness of event-time windows "
            "(added to the oldest open window, not dropped).", ["model_id", "model_version"], registry=r))
        self.score_quantile = latest(
            "streamproc_prediction_score_quantile", "Quantiles of the prediction score in the latest closed window.",
            ["model_id", "model_version", "quantile"])
        self.checkpoints = Counter(
            "streamproc_checkpoints_total", "Checkpoints: changed state saved to the state topic, then input offsets committed.",
            registry=r)
        self.state_bytes = Gauge(
            "streamproc_checkpoint_bytes", "Bytes of state written by the latest checkpoint (changed models only).", registry=r)
        self.state_too_large = Counter(
            "streamproc_state_too_large_total", "Model states not saved at a checkpoint because their record was over "
            "the state topic's limit (16 MiB); the worker logs which model.", registry=r)
        self.state_unsaved = Gauge(
            "streamproc_state_unsaved_models", "Models whose latest state was over the state topic's limit (16 MiB) "
            "and is not saved (until one of theirs fits again).", registry=r)
        self.stalled = Gauge(
            "streamproc_input_stalled_seconds", "Seconds since a consumer of this worker last made progress or had "
            "nothing waiting (by a fetch answered within the last minute): monitor (applying predictions and "
            "outcomes), router (forwarding them; route: repartition).",
            ["consumer"], registry=r)
        self.versions_retired = Counter(
            "streamproc_versions_retired_total", "Model versions retired: no events for retire_version_seconds while "
            "another version of their model had some.", registry=r)
        self.models = Gauge("streamproc_models", "Model versions monitored by this worker.", registry=r)
        self.warmup_bytes = Gauge(
            "streamproc_warmup_memory_bytes", "Memory held by the warm-ups of model versions without a reference "
            "(estimated; bounded by worker.warmup_memory_mb).", registry=r)
        self.warmups_thinned = Counter(
            "streamproc_warmups_thinned_total", "Warm-ups thinned to stay within worker.warmup_memory_mb (or a model's "
            "within 8 MiB, so its state fits a record), once per model version each time (it then keeps every 2nd, "
            "4th, ... of its events).", registry=r)
        self.features = Gauge("streamproc_features", "Features monitored by this worker, summed over its model versions.",
                              registry=r)
        self.state_bytes_total = Gauge(
            "streamproc_state_bytes", "Bytes of this worker's monitoring state: the latest saved record of each model "
            "it holds (compressed, as on the state topic).", registry=r)
        self.lag = bounded(Gauge(
            "streamproc_consumer_lag_messages", "Messages between a partition's consumed position and its high "
            "watermark, per input topic and partition this worker owns.", ["topic", "partition"], registry=r))
        self.drift_active = latest(
            "streamproc_drift_active", "1 while a drift is active (alerted and not yet cleared), per model version, type, "
            "detector, feature (the signal for prediction drift) and severity.",
            ["model_id", "model_version", "type", "detector", "feature", "severity"])
        self.event_time_to_alert = Histogram(
            "streamproc_event_time_to_alert_seconds", "From the event time of the last event of an alert's window to "
            "the alert being published (includes how late the events reached Kafka).",
            buckets=(0.5, 1, 5, 30, 60, 300, 900, 3600, 6 * 3600, 86400, 7 * 86400), registry=r)
        self.alert_latency = Histogram(
            "streamproc_alert_latency_seconds", "From the oldest record of the batch that raised an alert reaching the "
            "input topic (its Kafka timestamp) to the alert acknowledged on the alerts topic; an upper bound on the "
            "latency from the event that closed the window.",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300), registry=r)
        self.ready = Gauge("streamproc_ready", "1 when the worker is connected and consuming, else 0.", registry=r)
        self.batch_seconds = Histogram(
            "streamproc_batch_duration_seconds", "Time to decode, process, publish and commit one batch.",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5), registry=r)
        self.checkpoint_seconds = Histogram(
            "streamproc_checkpoint_export_seconds", "Time the monitoring loop spent exporting the changed models' state "
            "for one checkpoint (checkpoints are paced so that this stays within 10% of its time).",
            buckets=(0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30), registry=r)
        self.batch_size = Histogram(
            "streamproc_batch_size_messages", "Messages per consumed batch.",
            buckets=(1, 10, 100, 500, 1000, 2500, 5000, 10000, 20000, 50000), registry=r)

    def set_statistics(self, model_id: str, version: str, rows) -> None:
        """``streamproc_statistic`` and its threshold from (feature, detector, value, threshold)
        rows (a closed window's, a stream detector's)."""
        statistic, threshold = self.statistic.set, self.statistic_threshold.set
        for feature, detector, value, limit in rows:
            key = (model_id, version, feature, detector)
            statistic(key, value)
            threshold(key, limit)

    def _latest_values(self) -> tuple:
        """The gauges of a model version's latest values (what goes with the model)."""
        return (self.psi, self.psi_threshold, self.statistic, self.statistic_threshold, self.error_rate,
                self.score_quantile, self.drift_active)

    def forget_window_statistics(self, model_id: str, version: str) -> None:
        """Drop a model version's statistics of its latest closed window (PSI, data quality, score
        quantiles): a new reference was adopted, and its windows, perhaps of other features,
        set their own. The stream detectors' statistics stay (they are set after every batch)."""
        for gauge in (self.psi, self.psi_threshold, self.score_quantile):
            gauge.remove_matching(model_id=model_id, model_version=version)
        for gauge in (self.statistic, self.statistic_threshold):
            for detector in WINDOW_DETECTORS:
                gauge.remove_matching(model_id=model_id, model_version=version, detector=detector)

    def start_model(self, model_id: str) -> None:
        """Create a model's alert and retrain-request series at 0, before its first alert.

        ``increase()`` and ``rate()`` only count increments between two scrapes, so a series
        created by its first alert, already at 1, counted nothing: the dashboards' alert panels
        missed a drift's alert (usually the only one, as drifts last). The eight alert series of
        a model are made only while the alert series use less than half of ``max_series``, so
        those that real alerts create beyond that still find room.
        """
        if (model_id,) in self.retrains.series or len(self.alerts.series) + len(ALERT_SERIES) > self.alerts.cap // 2:
            return
        for kind, severity in ALERT_SERIES:
            self.alerts.labels(model_id, kind, severity)
        self.retrains.labels(model_id)

    def forget_model(self, model_id: str) -> None:
        """Drop the latest-value series of a model this worker no longer holds (counters stay)."""
        for gauge in self._latest_values():
            gauge.remove_matching(model_id=model_id)

    def forget_version(self, model_id: str, version: str) -> None:
        """Drop every series of one retired model version, its counters too: versions come and
        go for as long as the worker runs, and each series held counts against ``max_series``
        (a version that comes back starts its counters from 0, which ``rate()`` takes as a reset)."""
        for metric in (*self._latest_values(), self.events, self.windows, self.late_events):
            metric.remove_matching(model_id=model_id, model_version=version)

    def render(self) -> bytes:
        return generate_latest(self.registry)
