"""All monitored model versions of one worker: routes decoded batches to their monitors.

Pure: no Kafka, no clocks beyond the policy's ``detected_at`` stamp. The worker feeds it
batches and publishes what it returns; tests feed it directly.
"""

from __future__ import annotations

import pickle
import zlib
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Optional

from .config import MonitorConfig, StreamprocConfig
from .decode import ModelKey, Outcome, PredictionBatch
from .feature_table import FeatureLayout, layout_for
from .model_decoder import ModelDecoder
from .monitor import ModelMonitor, StepResult
from .outcomes import OutcomeJoiner
from .profile import ReferenceProfile, narrow_reference, same_reference
from .restarts import PartitionRestarts
from .window import DEFER_EVENTS, DEFER_EVENTS_FEW, FEW_MODELS

STATE_FORMAT = 1
MIN_KEPT = 100  # thinning never leaves a warm-up fewer events than about this many
# A model's state is saved as one record (all its versions), and a record has a size limit (the
# worker's: 16 MiB). Warm-ups are most of a model's state while it has no reference (8 bytes a
# value: 2,000 events of 1,000 features are 16 MB), so those of one model id may hold at most
# this much; over it they are thinned (see ``_thin_warmups``).
MODEL_WARMUP_BYTES = 8 * 1024 * 1024
_DEFAULT_RETIRE = 30 * 86400.0  # a model's clock pauses the same whether retiring is on or off


@dataclass
class EngineOutput:
    alerts: list[dict] = field(default_factory=list)
    retrains: list[dict] = field(default_factory=list)
    events: dict[ModelKey, int] = field(default_factory=dict)
    windows_closed: dict[ModelKey, int] = field(default_factory=dict)
    errors_updated: set[ModelKey] = field(default_factory=set)  # versions whose error signal moved
    # Refused because the worker already holds ``max_models`` model versions (or joiners):
    # the caller dead-letters them.
    refused: list[PredictionBatch] = field(default_factory=list)
    refused_outcomes: list[Outcome] = field(default_factory=list)
    # Warm-ups thinned to stay within ``warmup_budget``: the stride each now keeps.
    thinned: dict[ModelKey, int] = field(default_factory=dict)
    # Warm-ups thinned to keep their model id's within ``MODEL_WARMUP_BYTES``: the same.
    thinned_large: dict[ModelKey, int] = field(default_factory=dict)
    # Waiting predictions dropped to keep all models' within ``waiting_budget``.
    waiting_dropped: int = 0
    # Per model id, its waiting predictions dropped in this step (too old, over max_pending or
    # over waiting_budget): counted as expired.
    expired: dict[str, int] = field(default_factory=dict)


def _forgotten(tp: str, partitions: Optional[set[str]]) -> bool:
    """Whether ``forget_positions(partitions)`` forgets the positions of ``tp`` (None: all)."""
    return partitions is None or tp in partitions


def _unapplied_positions(positions: list, obj) -> tuple[list[int], dict[str, int]]:
    """The indices of the records at these positions that ``obj`` (a monitor or a joiner, or
    None) has not applied (nor a record before them in the list), and its watermarks once they
    are. A position is ("topic:partition", offset), None (not checked: kept), or, read again
    below a restored state's routed position, ("topic:partition", offset, routed partition,
    routed offset): applied if the state was saved past that routed offset, whatever its
    source watermark says (a restart marker may have reset it since)."""
    fresh = dict(getattr(obj, "applied", None) or {}) if obj is not None else {}
    keep = []
    for i, position in enumerate(positions):
        if position is None:
            keep.append(i)
            continue
        if len(position) > 2 and fresh.get(position[2], 0) > position[3]:
            continue
        tp, off = position[0], position[1]
        if off >= fresh.get(tp, 0):
            keep.append(i)
            fresh[tp] = off + 1
    return keep, fresh


MAX_RETIRED_VERSIONS = 1000  # retired versions a model remembers (a version's retirements: see _retired)
# In a model's retired counts, the most retirements of a version forgotten (no version id has a
# control character): a version it does not remember starts above it, so that one forgotten
# does not come back with the ids of an earlier life.
_FORGOTTEN = "\x00"


class MonitorEngine:
    def __init__(self, config: StreamprocConfig, references: Optional[dict[ModelKey, ReferenceProfile]] = None):
        self.config = config
        self._configs: dict[str, MonitorConfig] = {}
        self.references = {key: self._narrowed(ref) for key, ref in (references or {}).items()}
        self.monitors: dict[ModelKey, ModelMonitor] = {}
        self.joiners: dict[str, OutcomeJoiner] = {}
        # Per model id, its retired versions and how many times each was retired: one that comes
        # back numbers its windows from 0 again, and its alerts' ids must not be its first life's
        # (receivers de-duplicate by them). Saved with the model.
        self._retired: dict[str, dict[str, int]] = {}
        # Persistence: what changed since the last export, and, after an import, the input
        # position up to which some restored state is already ahead (events before it are
        # checked against each state's own watermark and skipped if already applied).
        self.dirty_monitors: set[ModelKey] = set()
        self.dirty_models: set[str] = set()  # model ids whose joiner (or anything) changed
        self.replay_until: dict[str, int] = {}
        # Per input partition, its known restarts (offsets started again): a position saved
        # under fewer is of a lost log (see streamproc.restarts). Facts about the input, not
        # about models: kept when the models are dropped.
        self.restarts = PartitionRestarts()
        self._replay_marks: dict[tuple[str, int], int] = {}  # (partition, restarts) -> highest position imported
        # Input that may repeat records (repartitioned input, see streamproc.router): every
        # record is checked against its model's per-source watermark, which advances as
        # records are applied, so a record forwarded twice is applied once.
        self.dedupe = False
        # A bound on memory against floods of model ids: model versions (and outcome joiners)
        # beyond this many are refused, not created.
        self.max_models: Optional[int] = None
        # A bound on the memory of warm-ups (bytes, estimated; None: none): see ``_thin_warmups``.
        # Their memory is tracked either way (``warmup_bytes``).
        self.warmup_budget: Optional[int] = None
        self.warmup_bytes = 0  # held by all warm-ups, as last estimated
        # A bound on the predictions waiting for their outcomes in all joiners (None: none): see
        # ``_bound_waiting``.
        self.waiting_budget: Optional[int] = None
        # Per model id, the bytes of each of its warming versions (by model: one model's are
        # capped together, see _cap_model_warmups).
        self._warm_bytes: dict[str, dict[ModelKey, int]] = {}
        # Per model id over MODEL_WARMUP_BYTES: (its warming versions, events before thinning again).
        self._model_thin_after: dict[str, tuple[frozenset, int]] = {}
        # Per model id: [seconds it has had traffic (its active clock), the worker's clock at its
        # last batch]; saved with the model (see _tick, retire_idle_versions).
        self._clocks: dict[str, list[float]] = {}
        # The model ids given input since they were loaded. The others are as their record on the
        # state topic says, and may belong to another worker (the direct route loads every
        # model): what no input asked for (retiring, cutting waiting predictions) leaves them be,
        # so that they are never saved over their owner's record.
        self._fed: set[str] = set()
        # Records imported ``lazy``: kept as their bytes until the model's first input (see
        # ``import_record``). A worker on the direct route loads every model's record, most of
        # them other workers': packed, one costs a fifth of its objects.
        self.dormant: dict[str, bytes] = {}
        self._dormant_refs: dict[str, set[ModelKey]] = {}  # references set while their model was packed
        self._dormant_forget: dict[str, list] = {}  # partitions forget_positions forgot (uncounted) while their model was packed
        self._sweep_above = 0  # after a sweep that could not meet the budget: when to try again
        # Decodes the events of the busiest models by their layouts (``decode_predictions``'s
        # ``known``, with ``feature_layout``): faster, the same result. Learns from what
        # ``process`` accepts.
        self.decoder = ModelDecoder()

    def config_for(self, model_id: str) -> MonitorConfig:
        cfg = self._configs.get(model_id)
        if cfg is None:
            cfg = self._configs[model_id] = self.config.for_model(model_id).interned()
        return cfg

    def monitor(self, key: ModelKey) -> ModelMonitor:
        mon = self.monitors.get(key)
        if mon is None:
            cfg = self.config_for(key[0])
            retired = self._retired.get(key[0])
            incarnation = (retired.pop(key[1], None) or retired.get(_FORGOTTEN, 0)) if retired else 0
            if incarnation:  # a retired version back (a rollback): its model's record changes
                self.dirty_models.add(key[0])
                if not retired:
                    del self._retired[key[0]]
            mon = self.monitors[key] = ModelMonitor(key[0], key[1], cfg, self.references.get(key), incarnation)
        return mon

    def _narrowed(self, reference: ReferenceProfile) -> ReferenceProfile:
        """The reference without the features its model's settings ignore or cap (see
        ``profile.narrow_reference``)."""
        cfg = self.config_for(reference.model_id)
        return narrow_reference(reference, cfg.ignore_features, cfg.max_features)

    def set_reference(self, reference: ReferenceProfile) -> None:
        """A new reference for one model version (e.g. published to the references topic),
        without the features its model's settings ignore or cap."""
        reference = self._narrowed(reference)
        key = (reference.model_id, reference.model_version)
        self.references[key] = reference
        if key in self.monitors:
            self.monitors[key].set_reference(reference)
            self.dirty_monitors.add(key)
            self._track_warmup(key, None)
        elif key[0] in self.dormant:  # applied when it is unpacked, as it would have been had it not been packed
            self._dormant_refs.setdefault(key[0], set()).add(key)

    def feature_layout(self, key: ModelKey) -> Optional[FeatureLayout]:
        """How to decode the features of a model version (for ``decode_predictions``): its
        reference's layout, None while it has none (its events are kept whole to build one)."""
        if self.dormant and key[0] in self.dormant:
            self.thaw(key[0])
        mon = self.monitors.get(key)
        if mon is None or mon.reference is None:
            return None
        return layout_for(mon.reference, mon.cfg.ignore_features)

    def process(self, batches: dict[ModelKey, PredictionBatch], now: Optional[float] = None) -> EngineOutput:
        """Apply each model version's batch; ``now`` (the worker's clock) advances their models'
        active clocks and stamps the versions seen, for ``retire_idle_versions``."""
        out = EngineOutput()
        joined = False
        defer = DEFER_EVENTS_FEW if len(self.monitors) <= FEW_MODELS else DEFER_EVENTS  # (see window.DEFER_EVENTS_FEW)
        for key, batch in batches.items():
            if self.dormant and key[0] in self.dormant:
                self.thaw(key[0])
            if key not in self.monitors and self.max_models is not None and len(self.monitors) >= self.max_models:
                out.refused.append(batch)
                continue
            fresh = None
            if (self.replay_until or self.dedupe) and batch.positions:
                batch, fresh = self._unapplied(batch, self.monitors.get(key))
                if not len(batch):
                    continue
            self.dirty_monitors.add(key)
            joiner = self.joiners.get(key[0])
            if joiner is None and self.config_for(key[0]).concept.join == "always":
                joiner = self._joiner(key[0])
            if joiner is not None:
                self.dirty_models.add(key[0])
                expired = joiner.expired
                joiner.add_predictions(key[1], batch.event_ids, batch.ts, batch.scores, batch.labels)
                if joiner.expired > expired:
                    out.expired[key[0]] = out.expired.get(key[0], 0) + joiner.expired - expired
                joined = True
            mon = self.monitor(key)
            self._fed.add(key[0])
            if now is not None:
                mon.last_active = self._tick(key[0], now)
            result: StepResult = mon.update(batch, defer)
            if self.dedupe and fresh is not None:
                mon.applied = fresh
            out.alerts.extend(result.alerts)
            out.retrains.extend(result.retrains)
            out.events[key] = len(batch)
            if result.windows_closed:
                out.windows_closed[key] = result.windows_closed
            self._track_warmup(key, mon)
            versions = self._warm_bytes.get(key[0])
            if versions is not None:
                self._cap_model_warmups(key[0], versions, out)
        if self.warmup_budget is not None and self.warmup_bytes > max(self.warmup_budget, self._sweep_above):
            out.thinned = self._thin_warmups()
        if joined and self.waiting_budget is not None:
            out.waiting_dropped = self._bound_waiting(out.expired)
        refused = {(b.model_id, b.model_version) for b in out.refused}
        self.decoder.learn({key: b for key, b in batches.items() if key not in refused} if refused else batches)
        return out

    # -- warm-up memory --------------------------------------------------------------------
    def _track_warmup(self, key: ModelKey, mon: Optional[ModelMonitor]) -> None:
        warm = mon.warmup if mon is not None else None
        size = warm.nbytes() if warm is not None else 0
        versions = self._warm_bytes.get(key[0])
        before = versions.pop(key, 0) if versions is not None else 0
        self.warmup_bytes += size - before
        if size:
            if versions is None:
                versions = self._warm_bytes[key[0]] = {}
            versions[key] = size
        elif versions is not None and not versions:
            del self._warm_bytes[key[0]]
            self._model_thin_after.pop(key[0], None)
        if size < before and self._sweep_above:  # what was freed (a warm-up ended, say) lowers the mark
            self._sweep_above = max(self._sweep_above - (before - size), 0)

    def _retrack_warmups(self) -> None:
        """Reckon warm-up memory afresh, from the monitors held (after they were replaced)."""
        self._warm_bytes.clear()
        self._model_thin_after.clear()
        self.warmup_bytes = self._sweep_above = 0
        for key, mon in self.monitors.items():
            self._track_warmup(key, mon)

    def _thin_warmups(self) -> dict[ModelKey, int]:
        """Bring the warm-ups back within ``warmup_budget``: each warming model version may hold
        an equal share of it, and one over its share keeps every other event (of those kept so
        far and from now on), then every 4th, ... until it is within it, or until it would keep
        fewer than ``MIN_KEPT`` of its ``warmup_size`` events, or until a categorical feature
        would miss its rare categories (``Warmup.thinnable``: a reference without them would
        see them as unseen in every window).

        Whenever it happens, a warm-up thinned to every n-th event holds its events 0, n, 2n, ...:
        which events a reference is built from depends only on the final stride.

        A first deployment starts every model at once: 10,000 models each keeping 2,000 events
        of 20 features would hold 3.7 GB. Thinned, each reference is built from fewer events
        spread over the same warm-up; PSI thresholds account for the reference's size, so this
        costs sensitivity, not false alarms. Returns the versions thinned and their strides.
        """
        share = self.warmup_budget // max(sum(map(len, self._warm_bytes.values())), 1)
        # Only the warm-ups this worker feeds: the others (see _fed) are as their owner saved them.
        thinned = self._thin([item for model_id, versions in self._warm_bytes.items() if model_id in self._fed
                              for item in versions.items()], share)
        # Over the budget still (every warm-up as thin as it gets): the next sweep waits until
        # warm-ups have grown by an eighth of it, not every batch.
        self._sweep_above = self.warmup_bytes + self.warmup_budget // 8 if self.warmup_bytes > self.warmup_budget else 0
        return thinned

    def _cap_model_warmups(self, model_id: str, versions: dict[ModelKey, int], out: EngineOutput) -> None:
        """Keep one model id's warm-ups within ``MODEL_WARMUP_BYTES``, each version to an equal
        share. If they are as thin as they get and still over it, look again only once they
        have taken an eighth more events, not every batch: a look converts the rows waiting
        as dicts and counts every kept category (their bytes are no guide: waiting rows cost
        ten times their columns)."""
        if sum(versions.values()) <= MODEL_WARMUP_BYTES:
            if self._model_thin_after:
                self._model_thin_after.pop(model_id, None)
            return
        seen = sum(len(self.monitors[key].warmup) for key in versions)
        after = self._model_thin_after.get(model_id)
        if after is not None and after[0] == versions.keys() and seen < after[1]:
            return  # (the same versions warming up, not yet an eighth more events)
        out.thinned_large.update(self._thin(list(versions.items()), MODEL_WARMUP_BYTES // len(versions)))
        if sum(self._warm_bytes.get(model_id, {}).values()) > MODEL_WARMUP_BYTES:
            self._model_thin_after[model_id] = (frozenset(versions), seen + max(seen // 8, 1))
        else:
            self._model_thin_after.pop(model_id, None)

    def _thin(self, sizes: list[tuple[ModelKey, int]], share: int) -> dict[ModelKey, int]:
        """Thin each warm-up of ``sizes`` (key, bytes) over ``share`` bytes as ``_thin_warmups``
        describes (also used to keep one model id's warm-ups within ``MODEL_WARMUP_BYTES``, each
        version to an equal share); the strides of those thinned."""
        thinned = {}
        for key, size in sizes:
            if size <= share:
                continue
            mon = self.monitors.get(key)
            warm = mon.warmup if mon is not None else None
            if warm is None:
                self._track_warmup(key, None)
                continue
            max_stride = max(1, mon.cfg.warmup_size // MIN_KEPT)
            if warm.stride * 2 > max_stride and not warm.features.waiting:
                continue  # as small as it gets
            warm.features.flush()  # rows waiting as dicts are the costliest per event
            stride = warm.stride
            while warm.stride * 2 <= max_stride and warm.nbytes() > share and warm.thinnable():
                warm.thin(warm.stride * 2)
            if warm.stride != stride:
                thinned[key] = warm.stride
            self._track_warmup(key, mon)
        self.dirty_monitors.update(thinned)
        return thinned

    def process_outcomes(self, outcomes: list[Outcome]) -> EngineOutput:
        """Join outcomes to waiting predictions and watch each version's error for concept drift.

        With ``concept.join: auto`` joining for a model starts with its first outcome (before
        that no prediction waits, so models without outcomes cost no memory).
        """
        out = EngineOutput()
        by_model: dict[str, list] = {}
        by_outcome: dict[str, list[Outcome]] = {}
        for o in outcomes:
            by_model.setdefault(o.model_id, []).append((o.event_id, o.ts, o.label, o.value))
            by_outcome.setdefault(o.model_id, []).append(o)
        monitored: Optional[set[str]] = None
        for model_id, items in by_model.items():
            if self.dormant and model_id in self.dormant:
                self.thaw(model_id)
            joiner = self.joiners.get(model_id)
            if joiner is None:
                if monitored is None:
                    monitored = {key[0] for key in self.monitors}
                # A model this worker monitors always gets its joiner; only ids of no monitored
                # model are bounded (their outcomes took max_models places, and then monitored
                # models' were refused). So joiners stay within twice max_models.
                if (model_id not in monitored and self.max_models is not None
                        and len(self.joiners) >= self.max_models):
                    out.refused_outcomes.extend(by_outcome[model_id])
                    continue
                joiner = self._joiner(model_id)
            if joiner is None:
                continue
            if self.replay_until or self.dedupe:
                keep, fresh = _unapplied_positions([o.position for o in by_outcome[model_id]], joiner)
                if not keep:
                    continue
                if len(keep) < len(items):
                    items = [items[i] for i in keep]
                if self.dedupe:
                    joiner.applied = fresh
            self.dirty_models.add(model_id)
            self._fed.add(model_id)
            by_version: dict[str, list] = {}
            for m in joiner.match(items):
                by_version.setdefault(m.version, []).append(m)
            for version, matches in by_version.items():
                key = (model_id, version)
                mon = self.monitors.get(key)
                if mon is None:
                    continue  # a version retired since its predictions were joined (see retire_idle_versions)
                self.dirty_monitors.add(key)
                result = mon.update_errors(matches)
                out.alerts.extend(result.alerts)
                out.retrains.extend(result.retrains)
                out.errors_updated.add(key)
        return out

    def _bound_waiting(self, expired: dict[str, int]) -> int:
        """Keep the predictions waiting for outcomes in all models within ``waiting_budget``
        (each model's ``concept.max_pending`` bounds only its own); return how many were dropped
        (and add each model's to ``expired``).

        Over it, the models holding the most are cut to one level, so that three quarters of
        the budget stays (the oldest dropped first, as ``max_pending`` drops them): a model
        with little waiting keeps it all, and the next cut is a quarter of the budget away (a
        cut rebuilds the cut models' dicts). Their outcomes, when they come, find nothing and
        count as unmatched; the dropped predictions count as expired.
        """
        joiners = {model_id: j for model_id, j in self.joiners.items() if model_id in self._fed}
        if sum(len(j.pending) for j in joiners.values()) <= self.waiting_budget:
            return 0
        sizes = sorted(len(j.pending) for j in joiners.values())
        room, level = self.waiting_budget * 3 // 4, 0
        for i, size in enumerate(sizes):
            if size * (len(sizes) - i) > room:
                level = room // (len(sizes) - i)
                break
            room -= size
        dropped = 0
        for model_id, joiner in joiners.items():
            n = joiner.trim(level)
            if n:
                dropped += n
                expired[model_id] = expired.get(model_id, 0) + n
                self.dirty_models.add(model_id)
        return dropped

    def _joiner(self, model_id: str) -> Optional[OutcomeJoiner]:
        cfg = self.config_for(model_id).concept
        if not cfg.enabled:
            return None
        joiner = self.joiners[model_id] = OutcomeJoiner(cfg.ttl_seconds, cfg.max_pending)
        return joiner

    # -- persistence -----------------------------------------------------------------------
    @staticmethod
    def _unapplied(batch: PredictionBatch, mon: Optional[ModelMonitor]) -> tuple[PredictionBatch, dict[str, int]]:
        """The records past the monitor's watermark (and not repeated within the batch), and the
        watermark once they are applied."""
        keep, fresh = _unapplied_positions(batch.positions, mon)
        return (batch if len(keep) == len(batch) else batch.take(keep)), fresh

    def forget_positions(self, partitions: Optional[set[str]] = None, count: bool = False,
                         lost: Optional[dict[str, int]] = None, again: Iterable[str] = (),
                         models: Optional[Callable[[str], bool]] = None) -> Optional[set[str]]:
        """Forget the input positions applied from these ``topic:partition``s (None: from all)
        by the models ``models`` selects (None: every model); return the partitions forgotten.

        For partitions read again from their beginning because the broker lost their data:
        their offsets start again from 0, and records below the old watermarks are new.
        ``count``: they are partitions of the input whose positions the saved records stamp
        (``export_dirty``'s watermark): count their restart (see streamproc.restarts, which
        says what ``lost`` and ``again`` are); a restart counted already is not, and the
        positions applied since stand.
        """
        # Packed models are left packed (most are other workers', which this worker must not
        # save): their watermarks are forgotten when they are unpacked, by their records'
        # restart counts when counted (which outlive a crash), else as noted here.
        if count and partitions is not None:
            partitions = self.restarts.bump(partitions, lost, again)
            if not partitions:
                return partitions
        else:
            for model_id in self.dormant:
                if models is None or models(model_id):
                    self._dormant_forget.setdefault(model_id, []).append(partitions)
        if models is None:
            self._forget_positions(self.monitors.items(), self.joiners.items(), partitions)
            self.replay_until = {tp: off for tp, off in self.replay_until.items() if not _forgotten(tp, partitions)}
        else:  # (the other models' replays go on: replay_until stays)
            self._forget_positions([(key, mon) for key, mon in self.monitors.items() if models(key[0])],
                                   [(model_id, j) for model_id, j in self.joiners.items() if models(model_id)], partitions)
        return partitions

    def forget_source(self, source: str, end: int, routed: str, offset: int, models: Callable[[str], bool]) -> set[str]:
        """A router's restart marker (see ``streamproc.router``), read at ``offset`` of the routed
        partition ``routed``: the models ``models`` selects forget their watermark of the source
        partition ``source`` ("topic:partition") if it is past ``end`` (-1: any), the partition's
        offsets having started again. Not those whose state was saved past the marker (restored
        from a checkpoint whose routed position is past ``offset``): they read it then, and the
        new log's records they applied since must stay applied. Returns the models that forgot.

        >>> from types import SimpleNamespace as NS
        >>> e = MonitorEngine.__new__(MonitorEngine)
        >>> e.dormant, e.dirty_monitors, e.dirty_models, e.joiners = {}, set(), set(), {}
        >>> e.monitors = {("a", "1"): NS(applied={"p:0": 900}), ("b", "1"): NS(applied={"p:0": 40, "r:0": 12})}
        >>> sorted(e.forget_source("p:0", -1, "r:0", 10, lambda m: True)), e.monitors[("b", "1")].applied
        (['a'], {'p:0': 40, 'r:0': 12})
        >>> sorted(e.forget_source("p:0", 50, "r:0", 20, lambda m: True)), e.monitors[("b", "1")].applied
        ([], {'p:0': 40, 'r:0': 12})
        """
        for model_id in [model_id for model_id in self.dormant if models(model_id)]:
            self.thaw(model_id)  # (only the direct route packs models; it has no markers)
        forgot: set[str] = set()

        def forget(model_id: str, obj) -> bool:
            applied = getattr(obj, "applied", None)
            if not applied or applied.get(source, -1) <= end or applied.get(routed, 0) > offset or not models(model_id):
                return False
            obj.applied = {tp: off for tp, off in applied.items() if tp != source}
            forgot.add(model_id)
            return True

        self.dirty_monitors.update(key for key, mon in self.monitors.items() if forget(key[0], mon))
        self.dirty_models.update(model_id for model_id, joiner in self.joiners.items() if forget(model_id, joiner))
        return forgot

    def _forget_positions(self, monitors, joiners, partitions: Optional[set[str]], lost_only: bool = False) -> None:
        """``forget_positions`` for these (key, monitor) and (model id, joiner) pairs, marking
        those that had a watermark to forget as changed. ``lost_only``: forget, instead, each
        one's positions of lost logs (applied before their partition's latest restart)."""
        def forgot(obj) -> bool:
            applied = getattr(obj, "applied", None)
            if not applied:
                return False
            drop = self.restarts.stale(obj) if lost_only else {tp for tp in applied if _forgotten(tp, partitions)}
            if not drop:
                return False
            obj.applied = {tp: off for tp, off in applied.items() if tp not in drop}
            return True

        self.dirty_monitors.update(key for key, mon in monitors if forgot(mon))
        self.dirty_models.update(model_id for model_id, joiner in joiners if forgot(joiner))

    def end_replay(self, positions: dict[str, int], sources: Optional[set[str]] = None) -> None:
        """Stop checking watermarks once the input has passed every restored one. ``sources``:
        the only "topic:partition"s input can come from (None: any). A record stamps every
        partition its saving worker read, and with several workers on the direct route most
        of those are other workers': waiting for them, the replay never ended."""
        if self.replay_until:
            self.replay_until = {tp: off for tp, off in self.replay_until.items()
                                 if positions.get(tp, 0) < off and (sources is None or tp in sources)}

    def export_dirty(self, watermark: dict[str, int]) -> dict[str, bytes]:
        """State records for the models that changed since the last export.

        One record per model id holds all its versions' monitors and its outcome joiner, so a
        record is a consistent unit (an outcome updates both), stamped with the input position
        it reflects (``watermark``: next offset per "topic:partition").
        """
        return dict(self.dirty_records(watermark))

    def dirty_records(self, watermark: dict[str, int]) -> Iterator[tuple[str, bytes]]:
        """``export_dirty`` one model at a time, so a caller can yield to other work between
        models (pickling thousands of models takes seconds), or apply batches between them
        (``MonitorWorker.checkpoint``: then it updates ``watermark`` in place, and each model is
        saved, and no longer marked as changed, as it is when its turn comes). If the iteration
        is abandoned or fails, every model it was to export stays marked as changed."""
        models = {k[0] for k in self.dirty_monitors} | self.dirty_models

        def by_model() -> dict[str, dict]:  # one pass over the monitors, not one per model
            versions: dict[str, dict] = {model_id: {} for model_id in models}
            for (model_id, version), mon in self.monitors.items():
                if model_id in versions:
                    versions[model_id][version] = mon
            return versions

        versions, counted = by_model(), len(self.monitors)
        self.dirty_monitors.clear()
        self.dirty_models.clear()
        try:
            for model_id in models:
                if len(self.monitors) != counted:
                    # A version created while the caller applied a batch between two models (see
                    # MonitorWorker.checkpoint); none is removed meanwhile (that abandons the export).
                    versions, counted = by_model(), len(self.monitors)
                monitors = versions[model_id]
                joiner = self.joiners.get(model_id)
                for obj in [*monitors.values(), joiner]:
                    if obj is not None:
                        # Never lower a watermark: a state restored ahead of the input (it skips
                        # what it has applied) still reflects everything up to its own mark.
                        applied = getattr(obj, "applied", {})
                        obj.applied = {tp: max(off, applied.get(tp, 0)) for tp, off in {**applied, **watermark}.items()}
                        self.restarts.stamp(obj, watermark)
                state = {"format": STATE_FORMAT, "monitors": monitors, "joiner": joiner, "clock": self._clocks.get(model_id)}
                if self._retired.get(model_id):
                    state["retired"] = dict(self._retired[model_id])
                # Saved as it is now: changes since the export began are in (see the versions above).
                self.dirty_models.discard(model_id)
                self.dirty_monitors.difference_update((model_id, version) for version in monitors)
                yield model_id, zlib.compress(pickle.dumps(state, protocol=4), 1)
        except BaseException:
            self.dirty_models.update(models)
            raise

    def import_state(self, records: dict[str, bytes]) -> int:
        """Restore records written by ``export_dirty`` (the latest per model); return how many.

        A restored monitor keeps the settings it was created with (its windows and detectors
        were built from them); a new reference or version takes the current ones.
        """
        for model_id, data in records.items():
            self.import_record(model_id, data)
        return len(records)

    def import_record(self, model_id: str, data: bytes, replaces: Iterable[ModelKey] = (),
                      lazy: bool = False) -> list[ModelKey]:
        """Restore one model's record; ``replaces``: the versions an earlier record of the same
        model restored (a later record of a model replaces the earlier one whole). Returns the
        versions restored.

        ``lazy``: keep the record as it is (``dormant``), its watermarks noted for the replay,
        until the model's first input (``thaw``): the same result, for less memory while the
        model is not this worker's.
        """
        state = pickle.loads(zlib.decompress(data))
        if state.get("format") != STATE_FORMAT:
            raise ValueError(f"state of {model_id!r}: unsupported format {state.get('format')!r}")
        self.forget(model_id, replaces)
        for obj in [*state["monitors"].values(), state["joiner"]]:
            for tp, off in getattr(obj, "applied", {}).items() if obj is not None else ():
                self.replay_until[tp] = max(self.replay_until.get(tp, 0), off)
                mark = (tp, self.restarts.count_of(obj, tp))
                self._replay_marks[mark] = max(self._replay_marks.get(mark, 0), off)
        if lazy:
            self.dormant[model_id] = data
            return [(model_id, version) for version in state["monitors"]]
        return self._install(model_id, state)

    def thaw(self, model_id: str) -> None:
        """Restore a ``dormant`` model's record (its watermarks are already in ``replay_until``)."""
        keys = self._install(model_id, pickle.loads(zlib.decompress(self.dormant.pop(model_id))))
        for key in self._dormant_refs.pop(model_id, ()):
            # (One warming when packed has just adopted it in _install: not twice, a window on.)
            if key in self.monitors and self.monitors[key].reference is not self.references[key]:
                self.set_reference(self.references[key])
        monitors = [(key, self.monitors[key]) for key in keys]
        joiners = [(model_id, self.joiners[model_id])] if model_id in self.joiners else []
        for partitions in self._dormant_forget.pop(model_id, ()):
            self._forget_positions(monitors, joiners, partitions)
        if self.restarts:  # (models restored in full forget theirs in settle_restarts)
            self._forget_positions(monitors, joiners, None, lost_only=True)

    def _install(self, model_id: str, state: dict) -> list[ModelKey]:
        if state.get("clock") is not None:  # (records saved before clocks existed have none)
            self._clocks[model_id] = list(state["clock"])
        if state.get("retired"):
            self._retired[model_id] = dict(state["retired"])
        keys = []
        for version, mon in state["monitors"].items():
            key = (model_id, version)
            self.monitors[key] = mon
            keys.append(key)
            known = self.references.get(key)
            if known is not None and (mon.reference is None or not same_reference(mon.reference, known)):
                # Warming up when saved, or on another reference, but one is known now (published
                # while no worker held the model, or while another did, or a reference_file added
                # since): it wins, as it would have had the model been here.
                mon.set_reference(known)
                self.dirty_monitors.add(key)
            self._track_warmup(key, mon)
        if state["joiner"] is not None:
            self.joiners[model_id] = state["joiner"]
        return keys

    def settle_restarts(self) -> None:
        """After a load, once every restart count on the state topic is read: forget the
        positions of lost logs in the models restored in full (packed ones forget theirs when
        unpacked), and let the replay wait only for positions of current logs."""
        marks, self._replay_marks = self._replay_marks, {}
        if not self.restarts:
            return
        counts = self.restarts.counts
        for tp in {tp for tp, n in marks if n < counts.get(tp, 0)}:
            current = [off for (t, n), off in marks.items() if t == tp and n >= counts[tp]]
            if current:
                self.replay_until[tp] = max(current)
            else:
                self.replay_until.pop(tp, None)
        self._forget_positions(self.monitors.items(), self.joiners.items(), None, lost_only=True)

    def _tick(self, model_id: str, now: float) -> float:
        """Advance a model's active clock to the worker's ``now``; return it.

        Only time while the model has traffic counts: a gap between its batches longer than a
        seventh of its ``retire_after`` (about four days, by default) is a silence of the whole
        model (a periodic scoring job, a worker that was down) and adds nothing.
        """
        clock = self._clocks.get(model_id)
        if clock is None:
            clock = self._clocks[model_id] = [0.0, now]
        elif now != clock[1]:
            # (A step back, the clock set right or another worker's clock ahead, adds nothing.)
            if 0 < now - clock[1] <= (self.config_for(model_id).retire_after or _DEFAULT_RETIRE) / 7:
                clock[0] += now - clock[1]
            clock[1] = now
        return clock[0]

    def retire_idle_versions(self) -> list[ModelKey]:
        """Drop the versions that have had no events for ``retire_after`` seconds of their
        model's active clock (``_tick``): their model had traffic all that time, from other
        versions. Return their keys.

        A model's versions are compared on its own clock, which stands still while the model
        is silent, so a worker down for days, a model scored once a week or once a month, or
        one with no traffic at all retires nothing (a shorter outage counts as traffic time);
        event times are not used (a producer's clock could retire live versions). A retired
        version's joined outcomes go with it (versions are kept at least
        ``concept.ttl_seconds``); its model is saved at the next checkpoint without it. A version with no stamp (state saved before stamps
        existed) counts as seen at the first look.
        """
        retired = []
        for key, mon in self.monitors.items():
            clock = self._clocks.get(key[0])
            if clock is None or key[0] not in self._fed:
                continue  # no input of it since it was loaded (see _fed)
            if mon.last_active is None:
                mon.last_active = clock[0]
                continue
            # The current settings (an operational choice), not those the monitor was created with.
            horizon = self.config_for(key[0]).retire_after
            if horizon is not None and clock[0] - mon.last_active > horizon:
                retired.append(key)
        for key in retired:
            mon = self.monitors.pop(key)
            counts = self._retired.setdefault(key[0], {})
            counts[key[1]] = mon.policy.incarnation + 1
            if len(counts) - (_FORGOTTEN in counts) > MAX_RETIRED_VERSIONS:  # the longest retired forgotten first
                oldest = next(version for version in counts if version != _FORGOTTEN)
                counts[_FORGOTTEN] = max(counts.get(_FORGOTTEN, 0), counts.pop(oldest))
            self._track_warmup(key, None)
            self.dirty_monitors.discard(key)
            self.dirty_models.add(key[0])
        return retired

    def forget(self, model_id: str, versions: Iterable[ModelKey]) -> None:
        """Drop a model's outcome joiner and active clock, and the given versions' monitors."""
        for key in versions:
            self.monitors.pop(key, None)
            self._track_warmup(key, None)
        self.joiners.pop(model_id, None)
        self._clocks.pop(model_id, None)
        self._retired.pop(model_id, None)
        self._fed.discard(model_id)
        self.dormant.pop(model_id, None)
        self._dormant_refs.pop(model_id, None)
        self._dormant_forget.pop(model_id, None)

    def drop_all(self) -> None:
        """Forget every model (its partitions moved to another worker; the state topic has it)."""
        self.monitors.clear()
        self.joiners.clear()
        self.dormant.clear()
        self._dormant_refs.clear()
        self._dormant_forget.clear()
        self._clocks.clear()
        self._retired.clear()
        self._fed.clear()
        self.dirty_monitors.clear()
        self.dirty_models.clear()
        self.replay_until = {}
        self._replay_marks = {}
        self._retrack_warmups()

    def snapshot(self) -> bytes:
        """The whole monitoring state (references, windows, detectors, policy) as bytes."""
        for model_id in list(self.dormant):
            self.thaw(model_id)
        return pickle.dumps({"format": STATE_FORMAT, "monitors": self.monitors, "references": self.references,
                             "joiners": self.joiners, "clocks": self._clocks, "retired": self._retired})

    def restore(self, data: bytes) -> None:
        state = pickle.loads(data)
        if state.get("format") != STATE_FORMAT:
            raise ValueError(f"unsupported state format {state.get('format')!r}")
        self.monitors = state["monitors"]
        self.references = state["references"]
        self.joiners = state["joiners"]
        self._clocks = state.get("clocks", {})
        self._retired = state.get("retired", {})
        self._fed = set()
        self.dormant, self._dormant_refs, self._dormant_forget = {}, {}, {}
        self._retrack_warmups()

