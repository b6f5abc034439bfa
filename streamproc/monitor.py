"""The monitoring state of one model version: reference, current window, detectors, policy.

``ModelMonitor.update`` takes a ``PredictionBatch`` (columnar, in event order) and returns the
alerts and retrain requests it caused. Work is per feature per batch chunk (one numpy binning
call), never per feature per event. No I/O: state is plain data plus river detectors, and
pickles whole (see ``streamproc.engine``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from .config import MonitorConfig
from .decode import PredictionBatch
from .concept import ErrorMonitor
from .detectors import Change, StreamDetectors
from .outcomes import Match
from .policy import AlertPolicy, Finding, WindowInfo
from .profile import CATEGORICAL, ReferenceProfile, build_reference
from .quality import rate_jump
from .psi import effective_threshold, psi

MAX_REPORTED_UNKNOWN = 100


@dataclass
class Window:
    """A tumbling window of ``window_size`` events: bin counts per feature and for the prediction."""

    index: int
    counts: dict[str, np.ndarray]
    count: int = 0
    start: float = math.inf
    end: float = -math.inf

    def info(self) -> WindowInfo:
        return WindowInfo(self.index, self.start if self.count else 0.0, self.end if self.count else 0.0, self.count)


@dataclass
class StepResult:
    alerts: list[dict] = field(default_factory=list)
    retrains: list[dict] = field(default_factory=list)
    windows_closed: int = 0


SCORE_KEY = "prediction.score"
LABEL_KEY = "prediction.label"


class ModelMonitor:
    def __init__(self, model_id: str, model_version: str, cfg: MonitorConfig, reference: Optional[ReferenceProfile] = None):
        self.model_id = model_id
        self.model_version = model_version
        self.cfg = cfg
        self.policy = AlertPolicy(model_id, model_version, cfg)
        self.events = 0  # predictions applied, warmup included
        self.reference: Optional[ReferenceProfile] = None
        self.window: Optional[Window] = None
        self.detectors: Optional[StreamDetectors] = None
        self.errors: Optional[ErrorMonitor] = ErrorMonitor(cfg) if cfg.concept.enabled else None
        self.unknown_features: set[str] = set()
        self.latest: dict[tuple[str, str], tuple[float, float]] = {}  # (signal, name) -> (psi, warning threshold)
        self._warm = PredictionBatch(model_id, model_version)
        if reference is not None:
            self.set_reference(reference)

    # -- reference -------------------------------------------------------------------------
    def set_reference(self, reference: ReferenceProfile) -> None:
        """Adopt a reference and start a fresh window against it."""
        self.reference = reference
        self._warm = PredictionBatch(self.model_id, self.model_version)
        index = self.window.index + 1 if self.window else 0
        self.window = self._new_window(index)
        self._notify_caps = True
        self.detectors = None
        if reference.score is not None and (self.cfg.adwin.enabled or self.cfg.page_hinkley.enabled):
            self.detectors = StreamDetectors(reference.score.mean, reference.score.std, self.cfg.adwin,
                                             self.cfg.page_hinkley, self.cfg.score)

    def _cap_findings(self) -> list[Finding]:
        """Data-quality findings, once per reference, for the caps that bound memory."""
        ref = self.reference
        info = self.window.info()
        out = []
        if ref.dropped_features:
            # One alert for the cap; the dropped features are not then reported one by one as unknown.
            self.unknown_features.update(ref.dropped_features)
            out.append(Finding("data_quality", "feature_cap", "feature", None, float(len(ref.features) + len(ref.dropped_features)),
                               float(self.cfg.max_features), "warning", info))
        for name, p in ref.features.items():
            if p.kind == CATEGORICAL and p.distinct > len(p.categories):
                out.append(Finding("data_quality", "category_cap", "feature", name, float(p.distinct),
                                   float(len(p.categories)), "warning", info))
        return out

    def _profiles(self) -> dict:
        ref = self.reference
        profiles = dict(ref.features)
        if ref.score is not None:
            profiles[SCORE_KEY] = ref.score
        if ref.label is not None:
            profiles[LABEL_KEY] = ref.label
        return profiles

    def _new_window(self, index: int) -> Window:
        return Window(index, {name: np.zeros(p.n_bins, dtype=np.int64) for name, p in self._profiles().items()})

    @property
    def warming_up(self) -> bool:
        return self.reference is None

    # -- updates ---------------------------------------------------------------------------
    def update(self, batch: PredictionBatch) -> StepResult:
        result = StepResult()
        n = len(batch)
        pos = 0
        while pos < n:
            if self.reference is None:
                take = min(n - pos, self.cfg.warmup_size - len(self._warm))
                self._extend_warmup(batch.slice(pos, pos + take))
            else:
                take = min(n - pos, self.cfg.window_size - self.window.count)
                self._add(batch.slice(pos, pos + take), result)
            pos += take
            self.events += take
        return result

    def _extend_warmup(self, chunk: PredictionBatch) -> None:
        w = self._warm
        for name in ("event_ids", "ts", "features", "scores", "labels"):
            getattr(w, name).extend(getattr(chunk, name))
        if len(w) >= self.cfg.warmup_size:
            ref = build_reference(
                self.model_id, self.model_version, w.features, w.scores, w.labels,
                n_bins=self.cfg.psi.bins, max_categories=self.cfg.max_categories,
                ignore=self.cfg.ignore_features, max_features=self.cfg.max_features,
            )
            self.set_reference(ref)

    def _add(self, chunk: PredictionBatch, result: StepResult) -> None:
        """Bin one chunk (which never crosses a window boundary) into the window."""
        win = self.window
        rows = chunk.features
        for name, profile in self.reference.features.items():
            win.counts[name] += profile.bin_counts([r.get(name) for r in rows])
        scores = chunk.score_array()
        if SCORE_KEY in win.counts:
            win.counts[SCORE_KEY] += self.reference.score.bin_counts(scores)
        if LABEL_KEY in win.counts:
            win.counts[LABEL_KEY] += self.reference.label.bin_counts(chunk.labels)
        ts = chunk.ts_array()
        win.count += len(chunk)
        win.start = min(win.start, float(ts.min()))
        win.end = max(win.end, float(ts.max()))
        # Stream detectors and schema checks alert at once, not at the window's end.
        immediate = []
        if self._notify_caps:
            self._notify_caps = False
            immediate = self._cap_findings()
        immediate += self._unknown_features(rows)
        if self.detectors is not None:
            info = win.info()
            immediate += [self._stream_finding("prediction_drift", "prediction_score", ch, self.cfg.score, info, self.events)
                          for ch in self.detectors.update(scores)]
        if immediate:
            result.alerts.extend(self.policy.decide(immediate))
        if win.count >= self.cfg.window_size:
            self._close_window(result)

    @staticmethod
    def _stream_finding(kind: str, signal: str, ch: Change, sig_cfg, info: WindowInfo, base: int) -> Finding:
        threshold = sig_cfg.critical_effect if ch.critical else sig_cfg.min_effect
        return Finding(kind, ch.detector, signal, None, ch.effect, threshold, "critical" if ch.critical else "warning",
                       info, position=base + ch.position)

    def update_errors(self, matches: list[Match]) -> StepResult:
        """Apply outcomes joined to this version's predictions; concept-drift alerts if the error rises."""
        result = StepResult()
        if self.errors is None or not matches:
            return result
        changes, start = self.errors.update(matches)
        if changes:
            ts = [m.ts for m in matches]
            info = WindowInfo(start // self.cfg.window_size, min(ts), max(ts), len(matches))
            findings = [self._stream_finding("concept_drift", "error", ch, self.cfg.concept.signal, info, start)
                        for ch in changes]
            result.alerts.extend(self.policy.decide(findings))
        return result

    def _unknown_features(self, rows: list[dict]) -> list[Finding]:
        """A data-quality finding, once, for each feature the reference does not know."""
        if len(self.unknown_features) >= MAX_REPORTED_UNKNOWN or not rows:
            return []
        new = set().union(*rows) - self.reference.features.keys() - self.unknown_features - set(self.cfg.ignore_features)
        findings = []
        for name in sorted(new)[: MAX_REPORTED_UNKNOWN - len(self.unknown_features)]:
            self.unknown_features.add(name)
            findings.append(Finding("data_quality", "schema", "feature", name, 1.0, 0.0, "warning", self.window.info()))
        return findings

    def _quality(self, profile, counts: np.ndarray, count: int, info: WindowInfo) -> list[Finding]:
        """Missing-rate and (categorical) unseen-category-rate findings of one feature."""
        checks = [("missing_rate", profile.missing_rate, int(counts[-1]))]
        if profile.kind == CATEGORICAL:
            checks.append(("unseen_categories", profile.proportions[-2], int(counts[-2])))
        out = []
        for detector, ref_rate, hits in checks:
            rate, needed, severity = rate_jump(ref_rate, profile.count, hits, count, self.cfg.quality)
            out.append(Finding("data_quality", detector, "feature", profile.name, rate, needed, severity, info))
        return out

    def _close_window(self, result: StepResult) -> None:
        win = self.window
        info = win.info()
        findings = []
        psi_cfg = self.cfg.psi
        for name, profile in self._profiles().items():
            counts = win.counts[name]
            value = psi(profile.proportions, profile.count, counts, smoothing=psi_cfg.smoothing)
            warn = effective_threshold(psi_cfg.warning, profile.n_bins, profile.count, win.count, psi_cfg.alpha)
            crit = effective_threshold(psi_cfg.critical, profile.n_bins, profile.count, win.count, psi_cfg.alpha)
            severity = "critical" if value >= crit else "warning" if value >= warn else None
            if name == SCORE_KEY:
                kind, signal, feature = "prediction_drift", "prediction_score", None
            elif name == LABEL_KEY:
                kind, signal, feature = "prediction_drift", "prediction_label", None
            else:
                kind, signal, feature = "data_drift", "feature", name
            self.latest[(signal, name)] = (value, warn)
            findings.append(Finding(kind, "psi", signal, feature, value, crit if severity == "critical" else warn, severity, info))
            if feature is not None and self.cfg.quality.enabled:
                findings += self._quality(profile, counts, win.count, info)
        result.alerts.extend(self.policy.decide(findings))
        request = self.policy.window_closed(info)
        if request is not None:
            result.retrains.append(request)
        result.windows_closed += 1
        self.window = self._new_window(win.index + 1)
