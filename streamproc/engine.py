"""All monitored model versions of one worker: routes decoded batches to their monitors.

Pure: no Kafka, no clocks beyond the policy's ``detected_at`` stamp. The worker feeds it
batches and publishes what it returns; tests feed it directly.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from typing import Optional

from .config import MonitorConfig, StreamprocConfig
from .decode import ModelKey, Outcome, PredictionBatch
from .monitor import ModelMonitor, StepResult
from .outcomes import OutcomeJoiner
from .profile import ReferenceProfile

STATE_FORMAT = 1


@dataclass
class EngineOutput:
    alerts: list[dict] = field(default_factory=list)
    retrains: list[dict] = field(default_factory=list)
    events: dict[ModelKey, int] = field(default_factory=dict)
    windows_closed: dict[ModelKey, int] = field(default_factory=dict)
    errors_updated: set[ModelKey] = field(default_factory=set)  # versions whose error signal moved


class MonitorEngine:
    def __init__(self, config: StreamprocConfig, references: Optional[dict[ModelKey, ReferenceProfile]] = None):
        self.config = config
        self.references = dict(references or {})
        self.monitors: dict[ModelKey, ModelMonitor] = {}
        self.joiners: dict[str, OutcomeJoiner] = {}
        self._configs: dict[str, MonitorConfig] = {}

    def config_for(self, model_id: str) -> MonitorConfig:
        cfg = self._configs.get(model_id)
        if cfg is None:
            cfg = self._configs[model_id] = self.config.for_model(model_id)
        return cfg

    def monitor(self, key: ModelKey) -> ModelMonitor:
        mon = self.monitors.get(key)
        if mon is None:
            cfg = self.config_for(key[0])
            mon = self.monitors[key] = ModelMonitor(key[0], key[1], cfg, self.references.get(key))
        return mon

    def set_reference(self, reference: ReferenceProfile) -> None:
        """A new reference for one model version (e.g. published to the references topic)."""
        key = (reference.model_id, reference.model_version)
        self.references[key] = reference
        if key in self.monitors:
            self.monitors[key].set_reference(reference)

    def process(self, batches: dict[ModelKey, PredictionBatch]) -> EngineOutput:
        out = EngineOutput()
        for key, batch in batches.items():
            joiner = self.joiners.get(key[0])
            if joiner is None and self.config_for(key[0]).concept.join == "always":
                joiner = self._joiner(key[0])
            if joiner is not None:
                joiner.add_predictions(key[1], batch.event_ids, batch.ts, batch.scores, batch.labels)
            result: StepResult = self.monitor(key).update(batch)
            out.alerts.extend(result.alerts)
            out.retrains.extend(result.retrains)
            out.events[key] = len(batch)
            if result.windows_closed:
                out.windows_closed[key] = result.windows_closed
        return out

    def process_outcomes(self, outcomes: list[Outcome]) -> EngineOutput:
        """Join outcomes to waiting predictions and watch each version's error for concept drift.

        With ``concept.join: auto`` joining for a model starts with its first outcome (before
        that no prediction waits, so models without outcomes cost no memory).
        """
        out = EngineOutput()
        by_model: dict[str, list] = {}
        for o in outcomes:
            by_model.setdefault(o.model_id, []).append((o.event_id, o.ts, o.label, o.value))
        for model_id, items in by_model.items():
            joiner = self.joiners.get(model_id) or self._joiner(model_id)
            if joiner is None:
                continue
            by_version: dict[str, list] = {}
            for m in joiner.match(items):
                by_version.setdefault(m.version, []).append(m)
            for version, matches in by_version.items():
                key = (model_id, version)
                result = self.monitor(key).update_errors(matches)
                out.alerts.extend(result.alerts)
                out.retrains.extend(result.retrains)
                out.errors_updated.add(key)
        return out

    def _joiner(self, model_id: str) -> Optional[OutcomeJoiner]:
        cfg = self.config_for(model_id).concept
        if not cfg.enabled:
            return None
        joiner = self.joiners[model_id] = OutcomeJoiner(cfg.ttl_seconds, cfg.max_pending)
        return joiner

    # -- persistence -----------------------------------------------------------------------
    def snapshot(self) -> bytes:
        """The whole monitoring state (references, windows, detectors, policy) as bytes."""
        return pickle.dumps({"format": STATE_FORMAT, "monitors": self.monitors, "references": self.references,
                             "joiners": self.joiners})

    def restore(self, data: bytes) -> None:
        state = pickle.loads(data)
        if state.get("format") != STATE_FORMAT:
            raise ValueError(f"unsupported state format {state.get('format')!r}")
        self.monitors = state["monitors"]
        self.references = state["references"]
        self.joiners = state["joiners"]
