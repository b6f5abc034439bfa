"""Alert and retrain policy: which findings become alerts, with which ids, and when to retrain.

Rules (per model version):

* A window statistic (PSI) at or above its warning threshold raises an alert for its
  (type, detector, signal, feature) key, unless that key is already in drift at the same or a
  higher severity; rising from warning to critical raises a new alert. The drift ends (and a
  later one alerts again) only after ``clear_windows`` windows in a row with the statistic
  below ``warning * hysteresis``, so a statistic hovering at the threshold does not flap.
* A stream detector change (ADWIN, Page-Hinkley) raises an alert unless the same key alerted
  less than ``cooldown_events`` events ago, or the key is in a drift at the same or a higher
  severity on the same side of the baseline. Like a PSI drift, a stream drift lasts until the
  signal is back: until ``stream_clear_windows`` level readings in a row (the mean of each
  ``window_size`` values of the signal, findings of detector ``LEVEL``, "warning" when away
  from the baseline: see ``StreamDetectors.away``) are not away on the drift's side. A change
  confirmed on the drift's side, even suppressed, keeps it going; one on the other side alerts
  only if critical (a swing past the baseline; a smaller one is the signal settling back).
  Without this, a detector that fires again and again in a drifted regime (Page-Hinkley on a
  noisy error) alerted, and asked for a retrain, each time.
* Alert ids are UUIDv5 of the model, version, key, window index, severity and (for stream
  detectors) the event position, so replaying the same input gives the same ids.
* When a window closes, a retrain request follows if, since the previous window closed, a
  critical prediction or concept drift alert was raised, or at least ``min_critical_features``
  critical data-drift alerts, and the last request for this version was at least
  ``cooldown_windows`` windows ago. Its id is UUIDv5 of the model, version and window index;
  its ``data_window`` is the window that closed.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Optional

from .config import MonitorConfig

ALERT_NAMESPACE = uuid.UUID("6f1c3a52-8d0e-4b7e-9a57-2f3d6c1b0e11")
SEVERITY_RANK = {None: 0, "warning": 1, "critical": 2}
LEVEL = "level"  # the detector of a stream signal's level readings (see ``AlertPolicy._admit_stream``)


@dataclass(frozen=True)
class WindowInfo:
    index: int
    start: float
    end: float
    count: int

    def to_dict(self) -> dict:
        return {"index": self.index, "start": self.start, "end": self.end, "count": self.count}


@dataclass(slots=True)
class Finding:
    """One detector result. ``severity`` None means no drift (still needed to end a drift).

    Not frozen: a closed window builds one per signal and check, and a frozen dataclass takes
    five times as long to build; nothing changes a finding after it is made.
    """

    type: str
    detector: str
    signal: str
    feature: Optional[str]
    statistic: float
    threshold: float
    severity: Optional[str]
    window: WindowInfo
    position: Optional[int] = None  # event position for stream detectors; None for window statistics

    @property
    def key(self) -> tuple:
        return (self.type, self.detector, self.signal, self.feature)


def alert_id(model_id: str, model_version: str, f: Finding, incarnation: int = 0) -> str:
    """The alert's id: the same finding of the same window gives the same id. ``incarnation``:
    how many times the version was retired before this monitor (0: never, and not in the id,
    so ids are as before); a version that comes back numbers its windows from 0 again."""
    parts = [model_id, model_version, *map(str, f.key), str(f.window.index), str(f.severity), str(f.position)]
    return _uuid(parts, incarnation)


def _uuid(parts: list[str], incarnation: int) -> str:
    """An alert's or retrain request's id from what identifies it (and, past 0, the incarnation)."""
    return str(uuid.uuid5(ALERT_NAMESPACE, "\x1f".join(parts + ([f"incarnation {incarnation}"] if incarnation else []))))


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


@dataclass
class PolicyState:
    active: dict[tuple, str] = field(default_factory=dict)  # key -> severity while in drift
    calm: dict[tuple, int] = field(default_factory=dict)  # key -> calm windows in a row while active
    last_stream_alert: dict[tuple, int] = field(default_factory=dict)  # key -> event position
    # key -> [severity, level readings not away the same way in a row, +1 or -1: the side of the
    # baseline the drift went to] while a stream detector's drift lasts
    stream_active: dict[tuple, list] = field(default_factory=dict)
    last_retrain_window: Optional[int] = None
    pending_critical: list[dict] = field(default_factory=list)  # critical alerts since the last window closed
    suppressed: int = 0


class AlertPolicy:
    """Turns the findings of one model version into alert and retrain-request events (dicts)."""

    incarnation = 0  # (policies saved before retired versions were counted restore without one)

    def __init__(self, model_id: str, model_version: str, cfg: MonitorConfig, state: Optional[PolicyState] = None,
                 incarnation: int = 0):
        self.model_id = model_id
        self.model_version = model_version
        self.cfg = cfg
        self.state = state or PolicyState()
        if incarnation:
            self.incarnation = incarnation  # see alert_id

    @property
    def cooldown_events(self) -> int:
        return self.cfg.window_size if self.cfg.cooldown_events is None else self.cfg.cooldown_events

    def _admit(self, f: Finding) -> bool:
        st = self.state
        key = f.key
        if f.position is not None:
            return self._admit_stream(f)
        active = st.active.get(key)
        if f.severity is None:
            if active is not None:
                calm = st.calm.get(key, 0) + 1 if f.statistic < f.threshold * self.cfg.psi.hysteresis else 0
                if calm >= self.cfg.psi.clear_windows:
                    del st.active[key]
                    st.calm.pop(key, None)
                else:
                    st.calm[key] = calm
            return False
        st.calm.pop(key, None)
        if SEVERITY_RANK[f.severity] <= SEVERITY_RANK[active]:
            st.suppressed += 1
            return False
        st.active[key] = f.severity
        return True

    def _admit_stream(self, f: Finding) -> bool:
        """Whether a stream detector's change alerts (see the module's doc); a level reading
        (detector ``LEVEL``) never does, and ends the drifts of its signal it finds over."""
        st = self.state
        key = f.key
        clear = self.cfg.stream_clear_windows
        if not hasattr(st, "stream_active"):  # (a state saved before stream drifts lasted)
            st.stream_active = {}
        side = 1 if f.statistic >= 0 else -1  # (a drift down and one up are two drifts)
        if f.detector == LEVEL:
            for k in [k for k in st.stream_active if k[0] == f.type and k[2] == f.signal]:
                drift = st.stream_active[k]
                drift[1] = 0 if f.severity is not None and drift[2] == side else drift[1] + 1
                if drift[1] >= clear:
                    del st.stream_active[k]
            return False
        if f.severity is None:
            return False
        active = st.stream_active.get(key)
        if active is not None and SEVERITY_RANK[f.severity] <= SEVERITY_RANK[active[0]] and (
                active[2] == side or f.severity != "critical"):
            # The same way: still in drift. The other way, unless critical (a swing past the
            # baseline): the signal settling back (a change's effect is the mean of only
            # ``confirm`` values).
            if active[2] == side:
                active[1] = 0
            st.suppressed += 1
            return False
        last = st.last_stream_alert.get(key)
        if last is not None and f.position - last < self.cooldown_events:
            st.suppressed += 1
            return False
        st.last_stream_alert[key] = f.position
        if clear:
            st.stream_active[key] = [f.severity, 0, side]
        return True

    def active_drifts(self) -> list[tuple[tuple, str]]:
        """Every drift that lasts now, ``((type, detector, signal, feature), severity)``: the
        window statistics' and the stream detectors' (those end on level readings, see above)."""
        drifts = list(self.state.active.items())
        drifts += [(key, drift[0]) for key, drift in getattr(self.state, "stream_active", {}).items()]
        return drifts

    def end_stream_drifts(self, kind: str) -> None:
        """Forget the stream drifts of this type (a new reference: a new baseline to drift from)."""
        active = getattr(self.state, "stream_active", None)
        if active:
            for key in [key for key in active if key[0] == kind]:
                del active[key]

    def decide(self, findings: list[Finding]) -> list[dict]:
        """The alerts for the findings of one step, in order (critical ones count toward a retrain)."""
        alerts = []
        for f in findings:
            if not self._admit(f):
                continue
            alerts.append(
                {
                    "schema_version": "1.0",
                    "alert_id": alert_id(self.model_id, self.model_version, f, self.incarnation),
                    "model_id": self.model_id,
                    "model_version": self.model_version,
                    "type": f.type,
                    "detector": f.detector,
                    "signal": f.signal,
                    "feature": f.feature,
                    "statistic": round(float(f.statistic), 6),
                    "threshold": round(float(f.threshold), 6),
                    "severity": f.severity,
                    "window": f.window.to_dict(),
                    "detected_at": _now(),
                }
            )
        self.state.pending_critical.extend(
            {"alert_id": a["alert_id"], "type": a["type"], "detector": a["detector"], "feature": a["feature"], "signal": a["signal"],
             "window": a["window"]["index"]}
            for a in alerts if a["severity"] == "critical"
        )
        return alerts

    def window_closed(self, window: WindowInfo) -> Optional[dict]:
        """The retrain request due when a window closes, if any.

        Deciding only at window boundaries (not per batch) makes the request independent of how
        the input was split into batches; its id depends only on the model version and window.
        """
        st = self.state
        # The critical alerts of this window and those before it; a stream detector's alert of a
        # later window (an event time window still open, its event in the same batch) waits for it.
        critical, later = [], []
        for a in st.pending_critical:
            (critical if a.get("window", -math.inf) <= window.index else later).append(a)
        st.pending_critical = later
        rc = self.cfg.retrain
        if not rc.enabled or not critical:
            return None
        data = [a for a in critical if a["type"] == "data_drift"]
        other = [a for a in critical if a["type"] in ("prediction_drift", "concept_drift")]
        if not ((rc.on_critical and other) or len(data) >= rc.min_critical_features):
            return None
        causes = ("data_drift", "prediction_drift", "concept_drift") if rc.on_critical else ("data_drift",)
        critical = [a for a in critical if a["type"] in causes]  # what caused it (data quality never does)
        # Windows are counted in panes, evaluated every pane: the cooldown is in whole windows.
        if (st.last_retrain_window is not None
                and window.index - st.last_retrain_window < rc.cooldown_windows * self.cfg.window.slide):
            return None
        st.last_retrain_window = window.index
        drifted = sorted({k[3] for k in st.active if k[0] == "data_drift" and k[3]})
        return {
            "schema_version": "1.0",
            "request_id": _uuid(["retrain", self.model_id, self.model_version, str(window.index)], self.incarnation),
            "model_id": self.model_id,
            "model_version": self.model_version,
            "alert_ids": [a["alert_id"] for a in critical],
            "drifted_features": drifted,
            "data_window": window.to_dict(),
            "reason": f"{len(critical)} critical drift alert(s): "
            + ", ".join(sorted({f"{a['type']}/{a['detector']}/{a['feature'] or a['signal']}" for a in critical})),
            "created_at": _now(),
        }
