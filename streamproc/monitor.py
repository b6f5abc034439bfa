"""The monitoring state of one model version: reference, current window, detectors, policy.

``ModelMonitor.update`` takes a ``PredictionBatch`` (columnar, in event order) and returns the
alerts and retrain requests it caused. Work is per feature per batch chunk (one numpy binning
call), never per feature per event. No I/O: state is plain data plus river detectors, and
pickles whole (see ``streamproc.engine``).
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

from .config import MonitorConfig
from .decode import PredictionBatch
from .concept import ErrorMonitor
from .detectors import Change, StreamDetectors
from .feature_table import FeatureTable
from .outcomes import Match
from .policy import LEVEL, AlertPolicy, Finding, WindowInfo
from .profile import CATEGORICAL, NUMERIC, FeatureProfile, ReferenceProfile, build_reference, sketch_quantiles
from .quality import rate_jumps
from .window import DEFER_EVENTS, LABEL_KEY, SCORE_KEY, Pane, merge_all
from .window_stats import layout_for
from .warmup import Warmup

MAX_REPORTED_UNKNOWN = 100


@dataclass
class StepResult:
    alerts: list[dict] = field(default_factory=list)
    retrains: list[dict] = field(default_factory=list)
    windows_closed: int = 0  # windows evaluated


QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
ERROR_SIGNAL = "error"  # the feature label of the error signal's statistics (concept drift)


def detector_statistics(det: StreamDetectors, ph_threshold: Optional[float] = None) -> list[tuple[str, float, float]]:
    """(detector, latest statistic, warning threshold) of a signal's stream detectors.

    Read off the detectors' state after a batch (no per-event work), in baseline standard
    deviations σ (the score's reference σ, or the error baseline's), like the alerts' effect:

    * ``adwin``: the mean of ADWIN's current adaptive window minus the baseline mean, its size
      for a two-sided signal (the score), signed for an increase-only one (the error); against
      ``min_effect``, the effect a confirmed change needs to alert. (ADWIN's own cut test is
      internal to river; after a change ADWIN drops the old part, so its mean is the recent one.)
    * ``page_hinkley``: the Page-Hinkley cumulative statistic river compares with its threshold
      (the larger of the increase and decrease tests for a two-sided signal), against that
      threshold (``page_hinkley.threshold_sigma``: ``ph_threshold``, else derived from river's).
    """
    out = []
    std = det.std
    if det.adwin is not None and det.adwin.width > 0:
        effect = (det.adwin.estimation - det.mean) / std
        out.append(("adwin", effect if det.direction == "up" else abs(effect), det.signal.min_effect))
    ph = det.ph
    if ph is not None:
        try:  # river's PageHinkley keeps the two cumulative sums and their extremes
            n, up, up_min, down, down_max = (ph._x_mean.n, ph._sum_increase, ph._min_increase, ph._sum_decrease,
                                             ph._max_decrease)
        except AttributeError:  # another river: no statistic rather than a failed batch
            n = 0
        if n > 0:
            value = up - up_min if ph.mode == "up" else max(up - up_min, down_max - down)
            out.append(("page_hinkley", value / std, ph.threshold / std if ph_threshold is None else ph_threshold))
    return out


class ModelMonitor:
    # The model's active clock when the worker last applied events of this version (None: not
    # since this was introduced): see ``MonitorEngine.retire_idle_versions``. A class default,
    # so states saved before it read as None.
    last_active: Optional[float] = None
    # (reference, its profiles by name): see ``_profiles``; derived, so not pickled.
    _profiles_of: Optional[tuple] = None

    def __init__(self, model_id: str, model_version: str, cfg: MonitorConfig, reference: Optional[ReferenceProfile] = None,
                 incarnation: int = 0):
        self.model_id = model_id
        self.model_version = model_version
        self.cfg = cfg
        # incarnation: how many times this version was retired before (its alerts' ids differ).
        self.policy = AlertPolicy(model_id, model_version, cfg, incarnation=incarnation)
        self.events = 0  # predictions applied, warmup included
        self.reference: Optional[ReferenceProfile] = None
        self.pane: Optional[Pane] = None  # the open pane (the newest, for time windows)
        self.open_panes: dict[int, Pane] = {}  # time windows: panes still open, by index
        self.closed: deque[Pane] = deque(maxlen=max(cfg.window.slide - 1, 0))  # sliding: the panes before
        self.watermark = -math.inf  # time windows: newest event time seen
        self.late_events = 0
        self.quantiles: dict[str, list[float]] = {}  # numeric signal -> QUANTILES of the last window
        self.detectors: Optional[StreamDetectors] = None
        self.errors: Optional[ErrorMonitor] = ErrorMonitor(cfg) if cfg.concept.enabled else None
        self.unknown_features: set[str] = set()
        self.latest: dict[tuple[str, str], tuple[float, float]] = {}  # (signal, name) -> (psi, warning threshold)
        # The latest closed window's quality-check hits, a row per reference feature (missing,
        # unseen; -1 for numeric), and its size: ``window_statistics`` derives rates from them.
        self.latest_quality_hits: Optional[np.ndarray] = None
        self.latest_window_count = 0
        self._warm: Optional[Warmup] = None  # the events the reference will be built from
        self.last_active: Optional[float] = None
        if reference is not None:
            self.set_reference(reference)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state.pop("_profiles_of", None)  # derived from the reference
        return state

    def __setstate__(self, state: dict) -> None:
        warm = state.get("_warm")
        if warm is not None and not isinstance(warm, Warmup):  # an earlier streamproc's: the events as decoded
            state["_warm"] = Warmup.of(warm) if len(warm) else None
        self.__dict__.update(state)

    # -- reference -------------------------------------------------------------------------
    def set_reference(self, reference: ReferenceProfile) -> None:
        """Adopt a reference and start a fresh window against it."""
        self.reference = reference
        self._warm = None
        index = self.pane.index + 1 if self.pane else 0
        self.open_panes = {}
        self.closed.clear()
        self.pane = self._new_pane(index) if self.cfg.window.kind == "count" else None
        self._notify_caps = True
        # The latest statistics were of the previous reference's windows (and features).
        self.latest_quality_hits = None
        self.latest.clear()
        self.quantiles.clear()
        self.detectors = None
        if reference.score is not None and (self.cfg.adwin.enabled or self.cfg.page_hinkley.enabled):
            self.detectors = StreamDetectors(reference.score.mean, reference.score.std, self.cfg.adwin,
                                             self.cfg.page_hinkley, self.cfg.score)
        policy = getattr(self, "policy", None)
        if policy is not None:  # a new baseline: a drift from the old one is not one from it
            policy.end_stream_drifts("prediction_drift")

    def _cap_findings(self, info: WindowInfo) -> list[Finding]:
        """Data-quality findings, once per reference, for the caps that bound memory."""
        ref = self.reference
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
        """The reference's profiles by name, the score's and label's included: the same dict
        while the reference is (panes defer small chunks of the same profiles, see ``Pane``)."""
        ref = self.reference
        cached = self._profiles_of
        if cached is not None and cached[0] is ref:
            return cached[1]
        profiles = dict(ref.features)
        if ref.score is not None:
            profiles[SCORE_KEY] = ref.score
        if ref.label is not None:
            profiles[LABEL_KEY] = ref.label
        self._profiles_of = (ref, profiles)
        return profiles

    def _new_pane(self, index: int) -> Pane:
        return Pane.empty(index, self._profiles())

    def _info_at(self, pids: Optional[np.ndarray], position: int, ts: np.ndarray, before: dict) -> WindowInfo:
        """The window the event at ``position`` of a chunk just applied went to (``pids``: each
        event's time pane, None for count windows; ``ts``: their times; ``before``: each pane's
        count, start and end before the chunk), as it stood at that event: its index is in alert
        ids, and none of it may depend on how the input was batched."""
        if pids is None:
            pane, seen = self.pane, ts[:position + 1]
        else:
            pane = self.open_panes[int(pids[position])]
            seen = ts[:position + 1][pids[:position + 1] == pids[position]]
        count, start, end = before.get(pane.index, (0, math.inf, -math.inf))
        if not count:
            start, end = math.inf, -math.inf
        return WindowInfo(pane.index, min(start, float(seen.min())), max(end, float(seen.max())), count + len(seen))

    @property
    def pane_size(self) -> int:
        return self.cfg.window_size // self.cfg.window.slide

    @property
    def warming_up(self) -> bool:
        return self.reference is None

    @property
    def warmup(self) -> Optional[Warmup]:
        """The warm-up in progress: the events kept to build the reference (None when none)."""
        return self._warm

    # -- updates ---------------------------------------------------------------------------
    def update(self, batch: PredictionBatch, defer: int = DEFER_EVENTS) -> StepResult:
        """Apply a batch of this model version's events, in order; ``defer``: how many events a
        pane may hold unsketched (``window.DEFER_EVENTS``, or ``DEFER_EVENTS_FEW`` in a worker of
        few models)."""
        result = StepResult()
        n = len(batch)
        pos = 0
        while pos < n:
            if self.reference is None:
                take = min(n - pos, self.cfg.warmup_size - (len(self._warm) if self._warm is not None else 0))
                self._extend_warmup(batch.slice(pos, pos + take))
            elif self.cfg.window.kind == "count":
                take = min(n - pos, self.pane_size - self.pane.count)
                # A model's few events a batch mostly fit in its pane: no slice to build then.
                self._add(batch if take == n else batch.slice(pos, pos + take), result, defer)
            else:
                take = n - pos
                self._add(batch if pos == 0 else batch.slice(pos, n), result, defer)
            pos += take
            self.events += take
        return result

    def _extend_warmup(self, chunk: PredictionBatch) -> None:
        w = self._warm
        if w is None:
            w = self._warm = Warmup()
        w.extend(chunk)
        if len(w) >= self.cfg.warmup_size:
            ref = build_reference(
                self.model_id, self.model_version, w.features, w.scores, w.labels,
                n_bins=self.cfg.psi.bins, max_categories=self.cfg.max_categories,
                ignore=self.cfg.ignore_features, max_features=self.cfg.max_features,
            )
            self.set_reference(ref)

    def _add(self, chunk: PredictionBatch, result: StepResult, defer: int = DEFER_EVENTS) -> None:
        """Sketch one chunk into its pane(s); run the stream detectors; close what is complete.

        Count windows: the chunk never crosses a pane boundary. Time windows: events go to the
        pane of their event time (late ones to the oldest open pane).
        """
        rows = chunk.features
        scores = chunk.score_array()
        ts = chunk.ts_array()
        profiles = self._profiles()
        pids = None
        panes = [self.pane] if self.cfg.window.kind == "count" else self.open_panes.values()
        before = {p.index: (p.count, p.start, p.end) for p in panes}
        if self.cfg.window.kind == "count":
            self.pane.add(profiles, rows, ts, scores, chunk.labels, defer)
        else:
            pids = self._add_by_time(profiles, chunk, rows, ts, scores, defer)

        def at(position: int) -> WindowInfo:
            return self._info_at(pids, position, ts, before)

        # Stream detectors and schema checks alert at once, not at the window's end.
        immediate = []
        if self._notify_caps:
            self._notify_caps = False
            immediate = self._cap_findings(at(0))
        immediate += self._unknown_features(rows, at)
        if self.detectors is not None:
            levels: list = []
            changes = self.detectors.update(scores, levels, self._level_block)
            if changes or levels:
                immediate += self._stream_findings("prediction_drift", "prediction_score", changes, levels,
                                                   self.detectors, self._level_block, self.cfg.score, at, self.events)
        if immediate:
            result.alerts.extend(self.policy.decide(immediate))
        if self.cfg.window.kind == "count":
            if self.pane.count >= self.pane_size:
                self._close_pane(self.pane, result)
                self.pane = self._new_pane(self.pane.index + 1)
        else:
            self._close_due_panes(result)

    def _add_by_time(self, profiles, chunk: PredictionBatch, rows, ts: np.ndarray, scores: np.ndarray,
                     defer: int = DEFER_EVENTS) -> np.ndarray:
        """Add a chunk to the panes of its events' times; return each event's pane.

        Event by event, as if each came alone: an event whose pane the events before it have
        closed (it ends ``allowed_lateness`` or more before the newest event time seen) is late,
        and goes to the oldest pane open then that holds events. So which pane an event joins
        does not depend on how the input is batched; panes are evaluated at a chunk's end.
        """
        pids, late = self._time_panes(ts)
        if late is not None:
            self.late_events += len(late)
        for pid in np.unique(pids).tolist():
            idx = np.flatnonzero(pids == pid)
            pane = self.open_panes.get(pid)
            if pane is None:
                pane = self.open_panes[pid] = self._new_pane(pid)
            if len(idx) == len(rows):
                pane.add(profiles, rows, ts, scores, chunk.labels, defer)
            else:
                part = chunk.take(idx.tolist())
                pane.add(profiles, part.features, ts[idx], scores[idx], part.labels, defer)
        self.watermark = max(self.watermark, float(ts.max()))
        self.pane = self.open_panes[max(self.open_panes)]
        return pids

    def _time_scale(self) -> float:
        """Panes per second of event time: pane ``p`` covers ``[p, p + 1) / scale``. One float
        for pane ids and for closing them (``seconds / slide`` rounded puts a time on a pane
        boundary into the pane before: ``ts * scale`` is exact for whole seconds)."""
        wc = self.cfg.window
        return wc.slide / wc.seconds

    def _time_panes(self, ts: np.ndarray) -> tuple[np.ndarray, Optional[np.ndarray]]:
        """(each event's pane, the positions of the late ones or None)."""
        wc = self.cfg.window
        scale = self._time_scale()
        pids = np.floor(ts * scale).astype(np.int64)
        before = np.maximum.accumulate(np.concatenate(([self.watermark], ts[:-1])))  # the watermark each event finds
        closed_below = (before - wc.allowed_lateness) * scale  # panes p with p + 1 <= this are closed
        late = pids + 1 <= closed_below
        if not late.any():
            return pids, None
        # The panes holding events, in order; a late event goes to the first one still open.
        # (The pane of the newest event time always is, unless a new reference dropped it.)
        held = sorted(self.open_panes)

        def hold(pid: int) -> None:  # (in order, each once)
            k = bisect_left(held, pid)
            if k == len(held) or held[k] != pid:
                held.insert(k, pid)

        in_time = np.flatnonzero(~late)
        _, first = np.unique(pids[in_time], return_index=True)
        late_at = np.flatnonzero(late)
        steps = sorted([(int(i), False) for i in in_time[first]] + [(int(i), True) for i in late_at])
        for i, is_late in steps:
            if not is_late:
                hold(int(pids[i]))
                continue
            k = bisect_left(held, math.floor(closed_below[i]))
            pids[i] = held[k] if k < len(held) else math.floor(before[i] * scale)
            hold(int(pids[i]))
        return pids, late_at

    def _close_due_panes(self, result: StepResult) -> None:
        """Close, oldest first, the time panes that end ``allowed_lateness`` or more before the watermark."""
        wc = self.cfg.window
        closed_below = (self.watermark - wc.allowed_lateness) * self._time_scale()
        for pid in sorted(self.open_panes):
            if pid + 1 > closed_below:
                break
            pane = self.open_panes.pop(pid)
            # Sliding windows over time hold only the panes of the last ``slide`` intervals.
            while self.closed and self.closed[0].index <= pid - wc.slide:
                self.closed.popleft()
            self._close_pane(pane, result)
        if self.open_panes:
            self.pane = self.open_panes[max(self.open_panes)]

    # State saved before these existed restores without them.
    error_window_start: Optional[float] = None  # time of the first labelled event of the open error window
    latest_quality_hits: Optional[np.ndarray] = None
    latest_window_count: int = 0

    # -- statistics, for metrics -----------------------------------------------------------
    def window_statistics(self) -> list[tuple[str, str, float, float]]:
        """(feature, detector, statistic, warning threshold) of the latest closed window: ``psi``
        per feature and for prediction.score / prediction.label, ``missing_rate`` and
        (categorical) ``unseen_categories`` per feature (the window's rate, and the rate the
        z-test and ``quality.min_increase`` need for a warning)."""
        out = [(name, "psi", value, threshold) for (_signal, name), (value, threshold) in self.latest.items()]
        hits = self.latest_quality_hits
        if hits is None or self.reference is None or len(hits) != len(self.reference.features):
            return out
        out += [(name, check, rate, needed) for name, _profile, check, rate, needed, _severity
                in self._quality_rates(list(self.reference.features.items()), hits.tolist(), self.latest_window_count)]
        return out

    def stream_statistics(self, signal: str = SCORE_KEY) -> list[tuple[str, str, float, float]]:
        """(feature, detector, statistic, warning threshold) of the stream detectors on the
        prediction score (``SCORE_KEY``) or the error (``ERROR_SIGNAL``); see
        ``detector_statistics``. Empty before they exist (warmup, no reference score, disabled)."""
        if signal == ERROR_SIGNAL:
            det = self.errors.detectors if self.errors is not None else None
        else:
            det = self.detectors
        if det is None:
            return []
        return [(signal, detector, value, threshold)
                for detector, value, threshold in detector_statistics(det, self.cfg.page_hinkley.threshold_sigma)]

    @property
    def _level_block(self) -> int:
        """Values per level reading of a stream signal (0: none; see ``streamproc.policy``)."""
        return self.cfg.window_size if self.cfg.stream_clear_windows else 0

    @staticmethod
    def _stream_findings(kind: str, signal: str, changes: list[Change], levels: list, det: StreamDetectors, block: int,
                         sig_cfg, info: Callable[[int], WindowInfo], base: int) -> list[Finding]:
        """Findings of a stream detector's changes and of the signal's level readings (detector
        ``LEVEL``, severity "warning" while the signal is away from its baseline, else None:
        they end a drift, never alert), in the order of their positions."""
        findings = [Finding(kind, ch.detector, signal, None, ch.effect,
                            sig_cfg.critical_effect if ch.critical else sig_cfg.min_effect,
                            "critical" if ch.critical else "warning", info(ch.position), position=base + ch.position)
                    for ch in changes]
        if levels:
            findings += [Finding(kind, LEVEL, signal, None, effect, sig_cfg.min_effect,
                                 "warning" if det.away(effect, block) else None, info(position), position=base + position)
                         for position, effect in levels]
            findings.sort(key=lambda f: f.position)  # (stable: at one position, a change before a level)
        return findings

    def update_errors(self, matches: list[Match]) -> StepResult:
        """Apply outcomes joined to this version's predictions; concept-drift alerts if the error rises."""
        result = StepResult()
        if self.errors is None or not matches:
            return result
        ts: list[float] = []
        levels: list = []
        changes, start = self.errors.update(matches, ts, levels, self._level_block)
        size = self.cfg.window_size
        if changes or levels:
            # The window of labelled events the change was found in (its index is in the alert's
            # id), from its first labelled event to the one of the change: not where this batch
            # of outcomes began and ended, so the alert is the same however they were batched.
            def info(position: int) -> WindowInfo:
                index = (start + position) // size
                first = index * size - start
                began = ts[first] if first >= 0 else self.error_window_start
                return WindowInfo(index, ts[position] if began is None else began, ts[position],
                                  (start + position) % size + 1)

            findings = self._stream_findings("concept_drift", "error", changes, levels, self.errors.detectors,
                                             self._level_block, self.cfg.concept.signal, info, start)
            result.alerts.extend(self.policy.decide(findings))
        if ts:
            first = (start + len(ts) - 1) // size * size - start
            if first >= 0:
                self.error_window_start = ts[first]
        return result

    def _unknown_features(self, rows: "list[dict] | FeatureTable", at) -> list[Finding]:
        """A data-quality finding, once, for each feature the reference does not know (in the
        window of the first event that carried it)."""
        if len(self.unknown_features) >= MAX_REPORTED_UNKNOWN or not len(rows):
            return []
        names = rows.unknown_names() if isinstance(rows, FeatureTable) else set().union(*rows)
        if not names:
            return []
        new = names - self.reference.features.keys() - self.unknown_features - set(self.cfg.ignore_features)
        if not new:
            return []
        first: dict[str, int] = {}
        carriers = (sorted(rows.irregular.items()) if isinstance(rows, FeatureTable) else enumerate(rows))
        for i, row in carriers:
            for name in new.intersection(row):
                first.setdefault(name, i)
            if len(first) == len(new):
                break
        findings = []
        for name in sorted(new)[: MAX_REPORTED_UNKNOWN - len(self.unknown_features)]:
            self.unknown_features.add(name)
            findings.append(Finding("data_quality", "schema", "feature", name, 1.0, 0.0, "warning",
                                    at(first[name])))
        return findings

    @staticmethod
    def _quality_checks(profile, missing: int, unseen: int) -> list[tuple[str, float, int]]:
        """(check, reference rate, hits in the window) of one feature's data-quality checks."""
        checks = [("missing_rate", profile.missing_rate, missing)]
        if profile.kind == CATEGORICAL:
            checks.append(("unseen_categories", profile.proportions[-2], unseen))
        return checks

    def _quality_rates(self, features: list[tuple[str, FeatureProfile]], hits: list[tuple[int, int]],
                       count: int) -> list[tuple[str, FeatureProfile, str, float, float, Optional[str]]]:
        """(feature, its profile, check, window rate, rate needed, severity or None) of every
        data-quality check of a window, in the order of ``features``: ``hits`` is (missing,
        unseen) per feature; all rates are tested at once (``quality.rate_jumps``)."""
        checks, ref_rates, ref_counts, n = [], [], [], []
        for (name, profile), (missing, unseen) in zip(features, hits):
            for check, ref_rate, k in self._quality_checks(profile, missing, unseen):
                checks.append((name, profile, check))
                ref_rates.append(ref_rate)
                ref_counts.append(profile.count)
                n.append(k)
        rates, needed, severities = rate_jumps(ref_rates, ref_counts, n, count, self.cfg.quality)
        return [(name, profile, check, rate, need, severity)
                for (name, profile, check), rate, need, severity in zip(checks, rates, needed, severities)]

    def _close_pane(self, pane: Pane, result: StepResult) -> None:
        """A pane is complete: evaluate the window it completes (if full), keep it for sliding."""
        panes = list(self.closed) + [pane]
        self.closed.append(pane)
        if len(panes) < self.cfg.window.slide and self.cfg.window.kind == "count":
            return  # the first sliding window is not full yet
        window = merge_all(panes) if len(panes) > 1 else pane
        if self.cfg.window.kind == "time" and window.count < self.cfg.window.min_events:
            return
        self._evaluate(window, result)

    def _evaluate(self, win: Pane, result: StepResult) -> None:
        info = win.info()
        findings = []
        psi_cfg = self.cfg.psi
        profiles = self._profiles()
        layout = layout_for(self.reference, profiles)
        values, bins = layout.evaluate([win.counts[name] for name in layout.names], psi_cfg.smoothing)
        spread = [name for name in (layout.names[j] for j in layout.numeric) if name in win.lo]
        # Quantiles of this window only: a signal without a finite value in it has none.
        self.quantiles = dict(zip(spread, sketch_quantiles(
            [profiles[n].fine_edges for n in spread], [win.counts[n] for n in spread], QUANTILES,
            [win.lo[n] for n in spread], [win.hi[n] for n in spread]))) if spread else {}
        # Thresholds raised for the window's size (psi.effective_threshold), every signal at once.
        noise = layout.noise(win.count, psi_cfg.alpha)
        # The configured threshold's own float where it wins (most signals): ``latest`` keeps
        # one per signal until the next window, for thousands of models.
        base = psi_cfg.warning
        warns = [base if w == base else w for w in np.maximum(base, noise).tolist()]
        crits = np.maximum(psi_cfg.critical, noise).tolist()
        # Data-quality checks of every feature signal (not the prediction's), all at once.
        checked = ([(j, name, profile) for j, (name, profile) in enumerate(profiles.items())
                    if name != SCORE_KEY and name != LABEL_KEY] if self.cfg.quality.enabled else [])
        hits = [(int(bins[j][-1]), int(bins[j][-2]) if profile.kind == CATEGORICAL else -1) for j, _n, profile in checked]
        quality: dict[str, list[Finding]] = {}
        for name, profile, check, rate, needed, severity in self._quality_rates(
                [(name, profile) for _j, name, profile in checked], hits, win.count):
            quality.setdefault(name, []).append(Finding("data_quality", check, "feature", profile.name, rate, needed,
                                                        severity, info))
        for name, value, warn, crit in zip(layout.names, values, warns, crits):
            severity = "critical" if value >= crit else "warning" if value >= warn else None
            if name == SCORE_KEY:
                kind, signal, feature = "prediction_drift", "prediction_score", None
            elif name == LABEL_KEY:
                kind, signal, feature = "prediction_drift", "prediction_label", None
            else:
                kind, signal, feature = "data_drift", "feature", name
            self.latest[(signal, name)] = (value, warn)
            findings.append(Finding(kind, "psi", signal, feature, value, crit if severity == "critical" else warn, severity, info))
            if feature is not None:
                findings += quality.get(name, ())
        self.latest_quality_hits = np.array(hits, dtype=np.int64) if hits else None
        self.latest_window_count = int(win.count)
        result.alerts.extend(self.policy.decide(findings))
        request = self.policy.window_closed(info)
        if request is not None:
            result.retrains.append(request)
        result.windows_closed += 1
