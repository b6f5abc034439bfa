"""Configuration: monitoring parameters (per model, with defaults) and worker settings.

Everything is a pydantic model, so a bad value fails at start with the field named. The YAML
file is read with ``yaml.safe_load`` (no code execution). Precedence for worker settings:
command-line flag, then environment variable (``STREAMPROC_<FIELD>``), then the file's
``worker:`` section, then the default.

Example file::

    worker:
      window_size: 1000
    defaults:
      psi: {warning: 0.1, critical: 0.25}
    models:
      fraud:
        ignore_features: [request_id]
        reference_file: refs/fraud.json
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar, Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
LOG_LEVEL_ALIASES = {"WARN": "WARNING", "FATAL": "CRITICAL"}  # logging's own, which faust took too


class ConfigError(Exception):
    """A configuration problem, with a message that names the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


_SHARED: dict[tuple[type, str], "_Shared"] = {}


def shared(cls: type, data: str):
    """The one instance of monitoring settings ``cls`` with this JSON (created on first use).

    Every model version holds its settings, and a worker may hold 10,000 model versions, most
    with the same settings: sharing one instance per distinct content keeps that memory
    constant, also for state restored from the state topic (settings unpickle through here).
    Settings are never changed in place, so sharing is safe. Distinct contents are few (one
    per distinct override in the config file), so the table stays small.
    """
    key = (cls, data)
    obj = _SHARED.get(key)
    if obj is None:
        obj = _SHARED[key] = cls.model_validate_json(data)
    return obj


class _Shared(_Strict):
    """Monitoring settings: pickled as their JSON and unpickled to the shared instance."""

    # (warning bar, critical bar): fields whose critical bar may not be below the warning one
    # (every alert would be critical, and request retraining).
    ordered_bars: ClassVar[Optional[tuple[str, str]]] = None

    @model_validator(mode="after")
    def _bars_ordered(self):
        if self.ordered_bars is not None:
            low, high = self.ordered_bars
            if getattr(self, high) < getattr(self, low):
                raise ValueError(f"{high} must be >= {low}")
        return self

    def __reduce__(self):
        return (shared, (type(self), self.model_dump_json()))

    def interned(self):
        """The shared instance equal to this one."""
        return shared(type(self), self.model_dump_json())


class PSIConfig(_Shared):
    ordered_bars = ("warning", "critical")

    warning: float = Field(0.1, gt=0, description="PSI at or above which a warning is raised.")
    critical: float = Field(0.25, gt=0, description="PSI at or above which the alert is critical.")
    alpha: float = Field(1e-6, gt=0, lt=1, description="Per-test false-alarm rate used to raise thresholds on small samples.")
    bins: int = Field(10, ge=2, le=100, description="Quantile bins per numeric feature.")
    hysteresis: float = Field(0.8, gt=0, le=1, description="A window is calm when PSI is below warning * hysteresis.")
    clear_windows: int = Field(3, ge=1, description="Drift ends after this many calm windows in a row.")
    smoothing: float = Field(0.5, ge=0, description="Pseudo-count added to every bin.")


class QualityConfig(_Shared):
    """Data-quality alerts: a feature's missing rate, or its share of unseen categories, jumping."""

    ordered_bars = ("min_increase", "critical_increase")

    enabled: bool = True
    alpha: float = Field(1e-6, gt=0, lt=1, description="Per-test false-alarm rate of the rate comparison.")
    min_increase: float = Field(0.05, ge=0, le=1, description="Smallest rise of the rate (absolute) that alerts.")
    critical_increase: float = Field(0.2, ge=0, le=1, description="A rise at least this large is critical.")


class ADWINConfig(_Shared):
    enabled: bool = True
    delta: float = Field(0.002, gt=0, lt=1, description="river ADWIN confidence parameter.")


class SignalConfig(_Shared):
    """How stream-detector changes on a scalar signal become alerts.

    The effect of a change is the mean of the ``confirm`` values after it minus the baseline mean
    (the reference for the score, the first ``concept.warmup`` errors for the error signal),
    in baseline standard deviations.
    """

    ordered_bars = ("min_effect", "critical_effect")

    min_effect: float = Field(0.1, ge=0, description="Ignore changes smaller than this (baseline standard deviations).")
    critical_effect: float = Field(0.5, ge=0, description="Changes at least this large are critical.")
    confirm: int = Field(100, ge=1, le=100_000, description="Values after a detection that its effect is measured on.")


class ErrorSignalConfig(SignalConfig):
    """``SignalConfig`` for the error signal: a rise of 0.3 baseline standard deviations in the
    error rate is critical (a class of its own, so that a partial section keeps this default)."""

    critical_effect: float = Field(0.3, ge=0, description="Changes at least this large are critical.")


class ConceptConfig(_Shared):
    """Concept drift: outcomes joined to predictions by event_id, error rate watched by ADWIN and Page-Hinkley."""

    enabled: bool = True
    join: Literal["auto", "always"] = Field(
        "auto", description="auto: keep predictions waiting only once the model has had an outcome (models "
        "without outcomes cost nothing); always: from the first prediction.")
    ttl_seconds: float = Field(7 * 86400, gt=0, description="Event time a prediction waits for its outcome.")
    max_pending: int = Field(100_000, ge=1, description="Predictions kept waiting per model; the oldest are dropped beyond this.")
    warmup: int = Field(500, ge=10, description="Labelled events that set the baseline error before detection starts.")
    positive_threshold: float = Field(0.5, description="A score at or above this predicts the positive class when the prediction has no label.")
    signal: ErrorSignalConfig = Field(default_factory=ErrorSignalConfig)


class PageHinkleyConfig(_Shared):
    """river's PageHinkley with its parameters scaled by the reference standard deviation.

    river's defaults (delta=0.005, threshold=50, alpha=0.9999) raise dozens of alarms on a
    stationary N(0, 1) stream: the fading factor keeps the cumulative sum near an equilibrium
    whose fluctuations exceed the threshold. With alpha = 1 and delta = 0.25 sigma,
    threshold = 40 sigma, a stationary stream of 1 M events raised none here, and a 0.5 sigma
    shift was found within about 100 events.
    """

    enabled: bool = True
    delta_sigma: float = Field(0.25, gt=0)
    threshold_sigma: float = Field(40.0, gt=0)
    alpha: float = Field(1.0, gt=0, le=1)
    min_instances: int = Field(100, ge=1)


class RetrainConfig(_Shared):
    enabled: bool = True
    on_critical: bool = Field(True, description="Request a retrain when any critical drift alert is raised.")
    min_critical_features: int = Field(1, ge=1, description="Critical data-drift alerts needed (in one window) when no prediction drift is critical.")
    cooldown_windows: int = Field(10, ge=0, description="At most one request per model version per this many windows (whole windows, also when they slide).")


class WindowConfig(_Shared):
    """How events are grouped into the windows that PSI and the data-quality checks compare.

    ``count``: tumbling windows of ``window_size`` events (the default). ``time``: tumbling
    windows of ``seconds`` of event time; an event later than ``allowed_lateness`` behind the
    newest event time seen is counted as late and added to the oldest open window that holds
    events (never dropped). ``slide`` > 1 makes the windows sliding: each window is ``slide`` panes (of
    ``window_size / slide`` events or ``seconds / slide`` seconds), evaluated every pane.
    """

    kind: Literal["count", "time"] = "count"
    seconds: float = Field(300.0, gt=0, description="Length of a time window, in seconds of event time.")
    allowed_lateness: float = Field(60.0, ge=0, description="Event time a time window stays open after its end.")
    slide: int = Field(1, ge=1, le=100, description="Panes per window; 1 means tumbling.")
    min_events: int = Field(100, ge=1, description="Time windows with fewer events are not evaluated.")


class MonitorConfig(_Shared):
    """Monitoring parameters of one model (the ``defaults`` section, overridden per model)."""

    window_size: int = Field(1000, ge=10, description="Events per count window.")
    window: WindowConfig = Field(default_factory=WindowConfig)
    warmup_size: int = Field(2000, ge=10, description="Events that form the reference when no reference file is given.")
    ignore_features: list[str] = Field(default_factory=list)
    max_categories: int = Field(50, ge=1, description="Reference categories kept per feature; the rest count as unseen.")
    max_features: int = Field(500, ge=1, description="Features monitored per model version (the most frequent in the reference).")
    reference_file: Optional[Path] = Field(None, description="A reference profile JSON (streamproc reference build); used for the model version it was built for.")
    psi: PSIConfig = Field(default_factory=PSIConfig)
    adwin: ADWINConfig = Field(default_factory=ADWINConfig)
    page_hinkley: PageHinkleyConfig = Field(default_factory=PageHinkleyConfig)
    score: SignalConfig = Field(default_factory=SignalConfig, description="Stream detectors on the prediction score.")
    quality: QualityConfig = Field(default_factory=QualityConfig)
    concept: ConceptConfig = Field(default_factory=ConceptConfig)
    retrain: RetrainConfig = Field(default_factory=RetrainConfig)
    cooldown_events: Optional[int] = Field(None, ge=0, description="Minimum events between two stream-detector alerts of the same kind; default one window.")
    stream_clear_windows: int = Field(
        3, ge=0, le=1000, description="A stream-detector drift (ADWIN, Page-Hinkley) lasts until the mean of this many "
        "blocks of window_size values of its signal in a row is back near its baseline (within min_effect, and two "
        "standard errors of such a mean); while it lasts, its detections at the same or a lower severity on the same side "
        "raise no alert (and so no retrain request). 0: every detection past cooldown_events alerts.")
    retire_version_seconds: Optional[float] = Field(
        30 * 86400, ge=3600, description="A model version without events for this long while its model had traffic is "
        "retired: its monitor and metric series go, freeing its memory and its place in max_models. Time counts on the "
        "worker's clock, only while the model has traffic (a silence of the whole model longer than a seventh of this "
        "does not count). Events of it later start it afresh (from its published reference, or a new warm-up). "
        "null: never. A concept.ttl_seconds longer than this keeps versions that long (their predictions' outcomes).")

    @property
    def retire_after(self) -> Optional[float]:
        """``retire_version_seconds``, or the wait for outcomes if longer (a retired version's
        predictions would lose theirs); None: never."""
        if self.retire_version_seconds is None:
            return None
        return max(self.retire_version_seconds, self.concept.ttl_seconds if self.concept.enabled else 0.0)

    @model_validator(mode="after")
    def _panes_divide(self) -> "MonitorConfig":
        if self.window.kind == "count" and self.window_size % self.window.slide:
            raise ValueError(f"window_size ({self.window_size}) must be a multiple of window.slide ({self.window.slide})")
        return self


class TopicsConfig(_Strict):
    predictions: str = "predictions"
    outcomes: str = "outcomes"
    alerts: str = "drift-alerts"
    retrain: str = "retrain-requests"
    dead_letter: str = "streamproc-dlq"
    references: str = "model-references"
    state: str = "streamproc-state"
    routed: Optional[str] = Field(None, description="Internal topic of predictions and outcomes repartitioned by model id (default: <group id>-routed).")
    partitions: int = Field(4, ge=1, description="Partitions of topics the worker creates.")

    def routed_topic(self, group_id: str) -> str:
        return self.routed or f"{group_id}-routed"


class KafkaSecurity(_Strict):
    """TLS and SASL settings, passed to every Kafka client of the worker (and its faust app)."""

    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Optional[Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]] = None
    sasl_username: Optional[str] = None
    sasl_password: Optional[SecretStr] = Field(None, description="Prefer STREAMPROC_KAFKA_SASL_PASSWORD to the file.")
    ssl_cafile: Optional[Path] = None
    ssl_certfile: Optional[Path] = None
    ssl_keyfile: Optional[Path] = None
    ssl_check_hostname: bool = True

    @model_validator(mode="after")
    def _complete(self) -> "KafkaSecurity":
        if self.security_protocol.startswith("SASL"):
            missing = [n for n in ("sasl_mechanism", "sasl_username", "sasl_password") if getattr(self, n) is None]
            if missing:
                raise ValueError(f"{self.security_protocol} needs {', '.join(missing)}")
        for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
            path = getattr(self, name)
            if path is not None and not path.is_file():
                raise ValueError(f"{name}: no such file {path}")
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            raise ValueError("ssl_certfile and ssl_keyfile go together")
        return self


class WorkerSettings(_Strict):
    bootstrap: str = Field("127.0.0.1:9092", description="Kafka bootstrap servers, host:port[,host:port].")
    group_id: str = "streamproc"
    route: Literal["repartition", "direct"] = Field(
        "repartition", description="repartition: route events through an internal topic keyed by model id, so several "
        "workers can share the load whatever keys producers use; direct: consume predictions and outcomes as they are "
        "(one worker, or producers that key by model id).")
    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(9464, ge=0, le=65535)
    window_size: Optional[int] = Field(None, ge=10)
    warmup_size: Optional[int] = Field(None, ge=10)
    max_batch: int = Field(20_000, ge=1, description="Most messages handled per batch (larger batches spread each "
                           "model's per-batch work over more events; under live load batches stay small).")
    max_series: int = Field(10_000, ge=1, description="Series per labelled metric on /metrics; further label combinations are dropped and counted.")
    max_models: int = Field(10_000, ge=1, description="Model versions one worker monitors; events of further ones are dead-lettered (a bound on memory).")
    warmup_memory_mb: int = Field(256, ge=0, description="Memory the warm-ups of models without a reference may hold "
                                  "(estimated; 0: no bound). Over it, each warming model version keeps a fair share: every "
                                  "other event, then every fourth, ... (never fewer than about 100 of them, so a warmup_size "
                                  "under 200 is never thinned, nor so few that a categorical feature's rare categories "
                                  "would be lost), and its reference is built from those.")
    max_waiting_predictions: int = Field(1_000_000, ge=0, description="Predictions waiting for their outcomes in all "
                                         "of a worker's models together (0: no bound; about 250 bytes each). Each model "
                                         "keeps at most concept.max_pending; over this, the models holding the most are cut "
                                         "to one level, oldest dropped first, leaving three quarters of it.")
    poll_timeout_ms: int = Field(200, ge=1)
    max_partition_fetch_bytes: int = Field(4 * 1_048_576, ge=1_048_576, description="Bytes one fetch may bring per "
                                           "partition (at least the largest message, 1 MiB): enough for a full batch "
                                           "from a few partitions, so batches are not cut short by the fetch.")
    fetch_max_wait_ms: int = Field(100, ge=1, le=30_000, description="Longest the broker may hold a fetch waiting for data "
                                   "(Kafka answers as soon as data arrives; some brokers, Tansu among them, wait this long).")
    routed_fetch_max_wait_ms: int = Field(10, ge=1, le=30_000, description="The same for reading the routed topic "
                                          "(route: repartition), which the workers' own routers write while there is input: "
                                          "a worker that has caught up with them asks again this soon.")
    routed_message_bytes: int = Field(1_000_000, ge=300_000, le=16 * 1_048_576 - 65_536, description="Largest message a router "
                                      "writes to the routed topic (route: repartition), encoded: an envelope of many events, so "
                                      "fewer round trips. Keep it under the broker's message.max.bytes (Kafka's default "
                                      "1,048,588); it must hold the largest event (256 KiB) with its key.")
    max_idle_ms: int = Field(1000, ge=0, description="A caught-up prediction partition silent this long stops holding back the others' events (see streamproc.ordering).")
    dlq_payload_limit: int = Field(16384, ge=0, description="Bytes of a bad message kept in its dead letter.")
    max_future_seconds: Optional[float] = Field(86_400.0, gt=0, description="A prediction whose ts is further than this "
                                                "ahead of the worker's clock is dead-lettered (null: none is): one event "
                                                "in the far future, such as epoch milliseconds read as seconds, would move "
                                                "its model's event-time clock past every later event (time windows, "
                                                "outcomes waiting).")
    checkpoint_seconds: float = Field(5.0, gt=0, description="How often monitoring state is saved and input offsets committed "
                                      "(less often when saving would take over 10% of the worker's time).")
    topics: TopicsConfig = Field(default_factory=TopicsConfig)
    kafka: KafkaSecurity = Field(default_factory=KafkaSecurity)
    log_level: str = Field("INFO", description="debug, info, warning, error or critical (any case).")

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        level = LOG_LEVEL_ALIASES.get(value.upper(), value.upper())
        if level not in LOG_LEVELS:
            raise ValueError(f"{value!r} is not a log level ({', '.join(level.lower() for level in LOG_LEVELS)})")
        return level


class StreamprocConfig(_Strict):
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    defaults: MonitorConfig = Field(default_factory=MonitorConfig)
    models: dict[str, Optional[dict[str, Any]]] = Field(default_factory=dict, description="Per model id: overrides of defaults.")

    def for_model(self, model_id: Optional[str]) -> MonitorConfig:
        """The defaults, with the model's overrides (nested sections merge), and worker overrides."""
        base = self.defaults.model_dump()
        overridden = []
        for key in ("window_size", "warmup_size"):
            if getattr(self.worker, key) is not None:
                base[key] = getattr(self.worker, key)
                overridden.append(f"worker.{key} {getattr(self.worker, key)}")
        merged = _deep_merge(base, (self.models.get(model_id) if model_id is not None else None) or {})
        where = f"models.{model_id}" if model_id in self.models else "defaults"
        try:
            cfg = MonitorConfig.model_validate(merged)
        except ValidationError as exc:
            if overridden:  # (a flag or variable, not the file, may be what is wrong)
                where += f" with {', '.join(overridden)}"
            raise ConfigError(f"invalid configuration: {_describe(exc, where)}") from None
        future = self.worker.max_future_seconds
        if cfg.concept.enabled and future is not None and cfg.concept.ttl_seconds < future:
            # A prediction may be dated that far ahead: its model's joiner would take that as
            # the time, and drop every prediction waiting for an outcome as too old.
            raise ConfigError(f"invalid configuration: {where}.concept.ttl_seconds ({cfg.concept.ttl_seconds:g}) is "
                              f"shorter than worker.max_future_seconds ({future:g}): one prediction dated that far "
                              "ahead would expire every prediction waiting for its outcome; lower "
                              "worker.max_future_seconds (STREAMPROC_MAX_FUTURE_SECONDS) to the ttl or less")
        return cfg


def _resolve_paths(raw: dict, base: Path) -> None:
    """``reference_file`` paths in the file are relative to the file's directory."""
    sections = [raw.get("defaults")] + list((raw.get("models") or {}).values() if isinstance(raw.get("models"), dict) else [])
    for section in sections:
        if isinstance(section, dict) and isinstance(section.get("reference_file"), str):
            ref = Path(section["reference_file"])
            section["reference_file"] = str(ref if ref.is_absolute() else base / ref)


def _deep_merge(base: dict, override: dict) -> dict:
    out = dict(base)
    for k, v in override.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _describe(exc: ValidationError, prefix: str = "") -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in ([prefix] if prefix else []) + list(err["loc"]))
        parts.append(f"{loc}: {err['msg']}" if loc else err["msg"])
    return "; ".join(parts)


ENV_PREFIX = "STREAMPROC_"


def load_config(path: Optional[str | Path] = None, overrides: Optional[dict[str, Any]] = None, environ: Optional[dict] = None) -> StreamprocConfig:
    """Read the YAML file (if any), apply environment and flag overrides, validate.

    Raises ``ConfigError`` naming the offending field.
    """
    environ = os.environ if environ is None else environ
    raw: dict[str, Any] = {}
    if path:
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise ConfigError(f"config file {path}: {exc.strerror}") from None
        try:
            raw = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path}: not valid YAML: {exc}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"config file {path}: the top level must be a mapping")
        _resolve_paths(raw, Path(path).parent)
    for section in ("worker", "defaults", "models"):
        if raw.get(section) is not None and not isinstance(raw[section], dict):
            raise ConfigError(f"invalid configuration: {section}: must be a mapping")
    worker = dict(raw.get("worker") or {})
    if worker.get("topics") is not None and not isinstance(worker["topics"], dict):
        raise ConfigError("invalid configuration: worker.topics: must be a mapping")
    for name in WorkerSettings.model_fields:
        if name in ("topics", "kafka"):
            continue
        env_value = environ.get(ENV_PREFIX + name.upper())
        if env_value not in (None, ""):
            worker[name] = env_value
    topics = dict(worker.get("topics") or {})
    for name in TopicsConfig.model_fields:
        env_value = environ.get(f"{ENV_PREFIX}TOPIC_{name.upper()}")
        if env_value not in (None, ""):
            topics[name] = env_value
    if topics:
        worker["topics"] = topics
    if worker.get("kafka") is not None and not isinstance(worker["kafka"], dict):
        raise ConfigError("invalid configuration: worker.kafka: must be a mapping")
    security = dict(worker.get("kafka") or {})
    for name in KafkaSecurity.model_fields:
        env_value = environ.get(f"{ENV_PREFIX}KAFKA_{name.upper()}")
        if env_value not in (None, ""):
            security[name] = env_value
    if security:
        worker["kafka"] = security
    for name, value in (overrides or {}).items():
        if value is not None:
            worker[name] = value
    raw["worker"] = worker
    try:
        config = StreamprocConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"invalid configuration: {_describe(exc)}") from None
    if config.defaults.reference_file is not None:
        raise ConfigError("invalid configuration: defaults.reference_file: a reference is of one model version; "
                          "set reference_file under models.<model id>")
    for model_id, overrides in config.models.items():
        if overrides is not None and not isinstance(overrides, dict):
            raise ConfigError(f"invalid configuration: models.{model_id}: must be a mapping")
        config.for_model(model_id)  # raises naming models.<id>.<field>
    config.for_model(None)  # the settings of every model not named: defaults with the worker's overrides
    return config
