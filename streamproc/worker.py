"""The batched hot path: consume predictions and outcomes, update the engine, publish, commit.

Why not a faust agent: a faust agent that only counted events ran at about 7.7 k events/s
here, while aiokafka ``getmany()`` with decoding ran at 150-180 k/s. So predictions are
consumed in batches with aiokafka, decoded with msgspec, grouped per model version, and
applied to the engine a batch at a time; faust (``streamproc.app``) runs this loop as a
service and serves the HTTP views.

Delivery: alerts, retrain requests and dead letters of a batch are acknowledged by the broker
before the batch's offsets are committed, so nothing is lost on a crash (at-least-once output;
replays give identical alert ids, see ``streamproc.policy``).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import math
import time
from collections import defaultdict
from datetime import datetime, timezone
from typing import Optional

import orjson
from aiokafka import ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

from . import kafka
from .config import ConfigError, StreamprocConfig
from .consume import (COMMIT_TIMEOUT, BatchedInput, caught_up, commit, confirm_membership, fetched_since, lags,
                      seek_committed)
from .decode import ModelKey, decode_outcomes, decode_predictions
from .engine import MODEL_WARMUP_BYTES, MonitorEngine
from .gc_policy import gc_paused, tune_gc
from .loop_thread import InlineLoop, LoopThread
from .metrics import Metrics, dead_letter_reason
from .monitor import ERROR_SIGNAL, QUANTILES
from .window import SCORE_KEY
from .profile import ReferenceProfile
from .reference_file import load_reference
from .router import OUTCOME, Router, model_partition, position_tags, routed_segments
from .state import MAX_STATE_BYTES, StateStore, restart_count, restart_records

log = logging.getLogger(__name__)
# Records held per partition by the partition merge before that partition's fetching pauses
# (about 20 MB of 1 KB events; a partition far ahead of the others waits for them).
MERGE_BUFFER = 20_000
PROBE_SECONDS = 2.0  # how often the broker is asked for metadata (readiness)
# A lag of 0 counts as "nothing waiting" (progress, for streamproc_input_stalled_seconds) only if
# every partition had a fetch answered within this long.
FETCH_STALE_SECONDS = 60.0
# The router on a loop of its own, in a thread (streamproc.loop_thread): faster, and lower alert
# latency. (Off for a session: the kill -9 test's alert ids differed from an uninterrupted
# worker's in 2 of 4 full test runs. The cause was the merge's, not the thread's: a topic's first
# records released in arrival order; see streamproc.ordering and benchmarks/HISTORY.md.)
ROUTER_THREAD = True
RETIRE_SWEEP_SECONDS = 60.0  # how often idle model versions are looked for (see _retire_idle_versions)


def dead_letter(msg, reason: str, limit: int) -> dict:
    value = msg.value or b""
    return {
        "schema_version": "1.0",
        "error": reason,
        "source_topic": msg.topic,
        "source_partition": msg.partition,
        "source_offset": msg.offset,
        "key": base64.b64encode(msg.key).decode() if msg.key is not None else None,
        "payload": base64.b64encode(value[:limit]).decode(),
        "payload_size": len(value),
        "truncated": len(value) > limit,
        "failed_at": datetime.now(timezone.utc).isoformat(),
    }


def configured_references(config: StreamprocConfig) -> dict:
    """The reference files named in the config, loaded now so a bad one fails at start."""
    refs = {}
    for model_id in config.models:
        path = config.for_model(model_id).reference_file
        if path is None:
            continue
        field = f"models.{model_id}.reference_file"
        try:
            ref = load_reference(path)
        except ValueError as exc:
            raise ConfigError(f"{field}: {exc}") from None
        if ref.model_id != model_id:
            raise ConfigError(f"{field}: {path} is a reference of model {ref.model_id!r}, not {model_id!r}")
        refs[(model_id, ref.model_version)] = ref
    return refs


class _Rebalance(ConsumerRebalanceListener):
    """Hand models over when partitions move between workers.

    On revocation the batch in hand finishes, every changed model is saved and the input
    offsets committed, and the worker forgets all its models; on assignment it loads, from the
    state topic, the models of the partitions it now owns (on the direct route every model,
    packed: see ``_load_models``).
    """

    def __init__(self, worker: "MonitorWorker"):
        self.worker = worker

    async def on_partitions_revoked(self, revoked) -> None:
        await self.worker._revoked(revoked)

    async def on_partitions_assigned(self, assigned) -> None:
        await self.worker._assigned(assigned)


def _running_loop() -> Optional[asyncio.AbstractEventLoop]:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def quiet_kafka_task_errors(loop: asyncio.AbstractEventLoop) -> None:
    """Log a Kafka error of a background task nobody awaits as one warning line, not a traceback.

    aiokafka runs some requests (offset commits) as tasks of its own; when the worker gives up
    waiting for one (the broker is away, see ``streamproc.consume.commit``), the task may still
    fail later with a ``KafkaError`` that nothing retrieves. That is an outage, handled and
    reported already, not a bug; anything else keeps asyncio's default report.
    """
    def handler(loop, context):
        exc = context.get("exception")
        if isinstance(exc, KafkaError):
            log.warning("a background Kafka request failed: %s: %s", type(exc).__name__, exc)
            return
        loop.default_exception_handler(context)

    loop.set_exception_handler(handler)


class CheckpointPacer:
    """When the next periodic checkpoint may start: every ``interval`` seconds, but never so
    often that exporting state takes more than ``max_share`` of the worker's time.

    Exporting is pickling every model that changed since the last checkpoint, in the loop's
    thread: about 0.4 ms per model (10,000 changed models: 4 s, ``benchmarks/memory.py``). At a
    fixed 5 s a worker whose 10,000 models all see events would spend 4 of every 5 s saving;
    paced, a checkpoint whose export took ``d`` seconds is followed by the next no sooner than
    ``d / max_share`` seconds after it began. Nothing is lost meanwhile (offsets are committed
    with the state); a crash replays more input.

    >>> pacer = CheckpointPacer(interval=5.0, max_share=0.1, now=0.0)
    >>> pacer.due(4.9), pacer.due(5.0)
    (False, True)
    >>> pacer.started(5.0); pacer.finished(work=2.0)
    >>> pacer.due(24.9), pacer.due(25.0)
    (False, True)
    """

    def __init__(self, interval: float, max_share: float = 0.1, now: Optional[float] = None):
        self.interval = interval
        self.max_share = max_share
        self._start = time.monotonic() if now is None else now
        self.next_at = self._start + interval

    def due(self, now: float) -> bool:
        return now >= self.next_at

    def started(self, now: float) -> None:
        self._start = now
        self.next_at = now + self.interval

    def finished(self, work: float) -> None:
        """The checkpoint begun at the last ``started`` took ``work`` seconds of the loop's time
        (the wait is capped at ``MAX_PACED_SECONDS``, which bounds what a crash replays)."""
        self.next_at = self._start + max(self.interval, min(work / self.max_share, MAX_PACED_SECONDS))


CHECKPOINT_MAX_SHARE = 0.1
MAX_PACED_SECONDS = 120.0
# The loop's time a periodic checkpoint's export may take after a batch; the rest waits for the
# next batches (see ``MonitorWorker.checkpoint``). Exporting 200 models of 22 features in one go
# took 120-230 ms, which every event in flight waited for.
CHECKPOINT_SLICE_SECONDS = 0.02


class _Export:
    """A checkpoint being exported: the engine's iterator of state records, the watermark it
    stamps them with (kept current as batches are applied between slices), the input offsets
    to commit once they are saved (those of its start), the records so far, the loop's time
    spent."""

    __slots__ = ("models", "watermark", "offsets", "records", "work", "whole")

    def __init__(self, models, watermark: dict, offsets: dict, whole: bool = False):
        self.models, self.watermark, self.offsets = models, watermark, offsets
        self.records: dict[str, bytes] = {}
        self.work = 0.0
        self.whole = whole  # in one go, not in slices (the one before was abandoned)


class MonitorWorker:
    """One consumer-group member running the monitoring loop."""

    _export: Optional[_Export] = None  # a checkpoint being exported, a slice after each batch (see checkpoint)
    _abandoned = False  # the last export was abandoned: the next one goes in one go

    def __init__(self, config: StreamprocConfig, metrics: Optional[Metrics] = None):
        self.config = config
        self.settings = config.worker
        self.metrics = metrics or Metrics(max_series=config.worker.max_series)
        self.engine = MonitorEngine(config, configured_references(config))
        self.consumer = None
        self.ref_consumer = None
        self.producer = None
        self.repartition = config.worker.route == "repartition"
        self.engine.dedupe = self.repartition  # routed input may repeat records (see streamproc.router)
        self.engine.max_models = config.worker.max_models
        self.engine.warmup_budget = config.worker.warmup_memory_mb * 2**20 or None
        self.engine.waiting_budget = config.worker.max_waiting_predictions or None
        self.input: Optional[BatchedInput] = None
        self.router: Optional[Router] = None
        self.router_consumer = None
        self.router_producer = None
        self.router_thread: Optional[LoopThread] = None  # the router's own loop (see streamproc.loop_thread)
        self._router_stop: Optional[asyncio.Event] = None  # (an event of the router's loop)
        self._router_lags: dict = {}  # the router consumer's lag per partition, measured on its loop
        self._router_gauging = False  # a refresh of _router_lags is on its way
        self.router_dead_letters = 0  # dead letters the router sent (its loop's count; ``published`` is the monitor's)
        self._worker_loop: Optional[asyncio.AbstractEventLoop] = None
        self.routed_partitions = 0
        self.lock = asyncio.Lock()  # one batch (or hand-over) at a time
        self.state: Optional[StateStore] = None
        self.pacer = CheckpointPacer(config.worker.checkpoint_seconds, CHECKPOINT_MAX_SHARE)
        self.ready = False
        self.failed = False
        self.on_failure = None  # called when the loop dies of an unexpected error
        self.published = {"alerts": 0, "retrain_requests": 0, "dead_letters": 0}
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self.broker_reachable = True
        self._last_probe = time.monotonic()
        self.state_sizes: dict[str, int] = {}  # bytes of the latest saved record, per model held
        self._last_gauges = 0.0
        self._lag_series: set[tuple[str, str]] = set()  # (topic, partition) of the lag gauge's series
        self._progress: dict[str, float] = {}  # consumer -> when it last made progress or had nothing waiting
        self._watch("monitor")
        self._last_retire_sweep = time.monotonic()  # the first sweep a while after the start
        self._must_rewind = False  # the models of the assigned partitions still need loading
        self._saving = None  # a checkpoint on its way: (state delivery futures, offsets, records, restart counts)
        # Versions retired since the last checkpoint saved their models, with the number of
        # checkpoints started before: a rewind reloads them, and their retiring again is the same one.
        self._retired_unsaved: dict[ModelKey, int] = {}
        self._checkpoints_started = 0
        self._replaying = False  # the batch in hand has records below restored routed positions (see routed_segments)
        self._routed_prefix = f"{config.worker.topics.routed_topic(config.worker.group_id)}:"  # routed "topic:partition"s
        self._restarted: list = []  # input partitions read again from their beginning, to forget (see _apply_restarts)
        self._in_flight = False  # a batch is applied to the state but its output not yet acknowledged
        self._unexported: set[str] = set()  # models loaded whose latest-value series are not exported yet
        self._stream_drifting: set = set()  # model versions exported with a stream drift lasting
        self._too_large: set[str] = set()  # models whose state is over the record limit (see _state_too_large)

    # -- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        s = self.settings
        t = s.topics
        self._worker_loop = asyncio.get_running_loop()
        quiet_kafka_task_errors(self._worker_loop)
        opts = kafka.client_options(s.kafka)
        routed = t.routed_topic(s.group_id)
        await self._ensure_topics()
        self.producer = kafka.producer(s.bootstrap, max_request_size=MAX_STATE_BYTES, **opts)
        await self.producer.start()
        # Models' state is loaded when partitions are assigned (see _Rebalance).
        self.state = StateStore(s.bootstrap, t.state, s.group_id, opts)
        # Every worker reads every reference (a small compacted topic, like a global table),
        # all of it before the first prediction, so no version warms up when a reference exists.
        self.ref_consumer = kafka.consumer(s.bootstrap, group_id=None, max_partition_fetch_bytes=kafka.COMPACTED_MESSAGE_BYTES,
                                           **opts)
        await self.ref_consumer.start()
        await self.ref_consumer.topics()  # fetches metadata, so the partitions are known
        parts = self.ref_consumer.partitions_for_topic(t.references) or {0}
        self.ref_consumer.assign([TopicPartition(t.references, p) for p in sorted(parts)])
        await self.ref_consumer.seek_to_beginning()
        await self._read_references(until_caught_up=True)
        consumer_opts = dict(max_poll_records=s.max_batch, session_timeout_ms=10_000, heartbeat_interval_ms=1_000,
                             max_partition_fetch_bytes=s.max_partition_fetch_bytes, fetch_max_wait_ms=s.fetch_max_wait_ms,
                             **opts)
        if self.repartition:
            # The routed topic is written by the routers, batch after batch: on a broker that holds
            # a fetch its whole wait, a monitor that has caught up would sit out fetch_max_wait_ms
            # with their next envelopes already there (about a fifth of the time in throughput.py).
            self.consumer = kafka.consumer(s.bootstrap, group_id=s.group_id,
                                           **{**consumer_opts, "fetch_max_wait_ms": s.routed_fetch_max_wait_ms})
            self.routed_partitions = len(self.ref_consumer.partitions_for_topic(routed) or ()) or t.partitions
            # A model lives in one partition. A routed partition read again from its beginning
            # brings source records whose offsets may have restarted too: all watermarks go.
            self.input = BatchedInput(self.consumer, None, 0, s.max_idle_ms, lambda tps, *_: self._input_restarted(tps, every=True))
            self.consumer.subscribe([routed], listener=_Rebalance(self))
            self.router_thread = LoopThread("streamproc-router") if ROUTER_THREAD else InlineLoop()
            await self.router_thread.run(self._open_router(consumer_opts))
            self._watch("router")
        else:
            self.consumer = kafka.consumer(s.bootstrap, group_id=s.group_id, partition_assignment_strategy=kafka.COPARTITIONED,
                                           **consumer_opts)
            self.input = BatchedInput(self.consumer, t.predictions, MERGE_BUFFER, s.max_idle_ms, self._input_restarted)
            self.consumer.subscribe([t.predictions, t.outcomes], listener=_Rebalance(self))
        # Started together: each waits for its group to form (several seconds on a fresh broker).
        await asyncio.gather(self.consumer.start(), *([self.router_thread.run(self.router_consumer.start())]
                                                      if self.router_thread is not None else []))
        tune_gc()
        log.info("worker consuming %s from %s as group %s", routed if self.repartition else f"{t.predictions} and {t.outcomes}",
                 s.bootstrap, s.group_id)

    async def _open_router(self, consumer_opts: dict) -> None:
        """The router's clients, made on the router's loop (a thread's with ``ROUTER_THREAD``, see
        ``streamproc.loop_thread``); on a thread, with a producer of its own (a client belongs to
        one loop), else the worker's (one client and connection less)."""
        s, t = self.settings, self.settings.topics
        self._router_stop = asyncio.Event()
        if isinstance(self.router_thread, InlineLoop):
            self.router_producer = self.producer
        else:
            quiet_kafka_task_errors(asyncio.get_running_loop())
            self.router_producer = kafka.producer(s.bootstrap, max_request_size=MAX_STATE_BYTES, **kafka.client_options(s.kafka))
            await self.router_producer.start()
        self.router_consumer = kafka.consumer(s.bootstrap, group_id=f"{s.group_id}-router", **consumer_opts)
        self.router = Router(self.router_consumer, self.router_producer, t.predictions, t.outcomes,
                             t.routed_topic(s.group_id), self.routed_partitions,
                             self._router_dead_letter, MERGE_BUFFER,
                             s.max_idle_ms, envelope_bytes=s.routed_message_bytes)
        self.router_consumer.subscribe([t.predictions, t.outcomes], listener=self.router.listener())

    async def _ensure_topics(self) -> None:
        s, t = self.settings, self.settings.topics
        await kafka.ensure_topics(s.bootstrap, [t.predictions, t.outcomes, t.alerts, t.retrain, t.dead_letter, t.references,
                                                t.state] + ([t.routed_topic(s.group_id)] if self.repartition else []),
                                  t.partitions, compacted=[t.references, t.state], options=kafka.client_options(s.kafka))

    async def _revoked(self, revoked) -> None:
        if not revoked:
            return
        async with self.lock:
            self._apply_restarts()
            if self._may_checkpoint():
                try:
                    await asyncio.wait_for(self.checkpoint(), 2 * COMMIT_TIMEOUT)
                except Exception as exc:  # the next owner replays from the last checkpoint
                    log.warning("checkpoint on revocation failed (%s: %s)", type(exc).__name__, exc)
            self.input.drop(revoked)
            # A restart of these noticed meanwhile (a poll runs outside the lock), or counted and
            # not saved (that checkpoint failed), is the next owner's to notice and count: saved
            # later from here, a count would come after that owner's positions.
            names = {f"{tp.topic}:{tp.partition}" for tp in revoked}
            self._restarted = [(None if parts is None else parts - names, *rest) for parts, *rest in self._restarted
                               if parts is None or parts - names]
            self.engine.restarts.disown(names)
            self._forget_models()
            log.info("partitions revoked: %s", ", ".join(sorted(f"{tp.topic}[{tp.partition}]" for tp in revoked)))

    async def _assigned(self, assigned) -> None:
        self.input.assigned(assigned)
        self.input.hold(assigned)  # nothing handed out before the models are loaded (see _load_models)
        async with self.lock:
            if self.engine.monitors or self.engine.joiners or self.engine.dormant:
                self._restored(assigned)
                return  # nothing was revoked: the models in memory are current
            try:
                restored = await self._load_models(assigned)
            except Exception as exc:  # retried by the loop (see _rewind) before anything is processed
                log.warning("could not load the models of the assigned partitions (%s); will retry", exc)
                # What was read so far may be older records of some models: never saved over newer ones.
                self._forget_models()
                self._must_rewind = True
                return
            self._apply_restarts()
            log.info("partitions assigned: %s; restored the state of %d model(s)",
                     ", ".join(sorted(f"{tp.topic}[{tp.partition}]" for tp in assigned)) or "none", restored)

    async def _load_models(self, assigned) -> int:
        """Load, from the state topic, the models of the partitions this worker owns (on the
        direct route, where a model's partition is the producers' choice, every model: packed
        until its first input, see ``MonitorEngine.import_record``)."""
        if not assigned:
            # A standby (more workers than partitions) holds nothing: what it loaded now would be
            # stale by the time it is given partitions (nothing is revoked from it then).
            return 0
        direct = not self.repartition  # (repartitioned, the restart counts are not this input's)
        await self._ensure_topics()  # a broker that restarted without storage lost them
        owned = {tp.partition for tp in assigned}
        versions: dict[str, list] = {}  # model id -> the versions its latest record restored

        def restore(model_id: str, record: Optional[bytes]) -> None:
            # Record by record, as read: a later record of a model replaces the earlier one.
            restarts = restart_count(model_id)  # (partition, count, committed offset of the log it replaced)
            if restarts is not None:
                if direct:
                    self.engine.restarts.note(*restarts)
                return
            if self.repartition and model_partition(model_id, self.routed_partitions) not in owned:
                return
            if record:
                versions[model_id] = self.engine.import_record(model_id, record, versions.get(model_id, ()),
                                                               lazy=not self.repartition)
                self.state_sizes[model_id] = len(record)
            elif model_id in versions:
                self.engine.forget(model_id, versions.pop(model_id))
                self.state_sizes.pop(model_id, None)

        await self.state.read(restore)
        self.engine.settle_restarts()
        self._restored(assigned)
        # Their latest statistics and active drifts went with the models before (_forget_models):
        # exported again once each is unpacked (see _update_gauges).
        self._unexported.update(versions)
        for model_id in versions:  # (a restored model's first batch may alert: its alert series start at 0 before)
            self.metrics.start_model(model_id)
        return len(versions)

    def _restored(self, assigned) -> None:
        """The models of these partitions are loaded: the input may hand their records out, once
        checked against the positions the models had read them up to (``BatchedInput.restored``;
        repartitioned, their routed positions: a routed topic recreated with its committed
        offsets is noticed so, and its models forget the positions of its lost log, which would
        otherwise hide the new log's records and restart markers)."""
        names = {f"{tp.topic}:{tp.partition}": tp for tp in assigned}
        self.input.restored(assigned, {names[tp]: off for tp, off in self.engine.replay_until.items() if tp in names})

    def _input_restarted(self, tps, lost: Optional[dict] = None, again=(), every: bool = False) -> None:
        """Partitions of the monitoring consumer were read again from their beginning (see
        ``BatchedInput``): the offsets the models applied from them no longer mean anything
        (forgotten under the lock, see ``_apply_restarts``; when ``every``, routed partitions:
        every watermark of the models they hold), and a checkpoint on its way commits nothing
        for them (its offsets are of the lost log). ``lost`` and ``again``: see
        ``BatchedInput.on_restart``. (A restart of a router's source partition comes as a
        marker through the routed topic: see ``streamproc.router``.)"""
        # Counted (see streamproc.restarts) when they are what the saved positions stamp.
        if every:
            # Not the models of the other routed partitions: their watermarks still skip what a
            # router forwards again (a router that crashed between forwarding and committing).
            self._restarted.append((None, False, None, (), {tp.partition for tp in tps}))
        else:
            name = "{0.topic}:{0.partition}".format
            self._restarted.append(({name(tp) for tp in tps}, True, {name(tp): off for tp, off in (lost or {}).items()},
                                    {name(tp) for tp in again}, None))
        if self._saving is not None:
            futures, offsets, records, restarts = self._saving
            self._saving = (futures, {tp: off for tp, off in offsets.items() if tp not in tps}, records, restarts)
        if self._export is not None:  # (abandoned under the lock; meanwhile a forced one may finish it)
            self._export.offsets = {tp: off for tp, off in self._export.offsets.items() if tp not in tps}

    def _apply_restarts(self) -> None:
        """Forget the offsets applied from restarted input partitions. Called under the lock
        before models are used or saved: a poll runs outside it, and may notice a restart while
        ``_assigned`` is loading models; forgotten then, the models loaded after would keep them."""
        if self._restarted:
            self._abandon_export()  # (its records so far stamp positions forgotten now)
        while self._restarted:
            partitions, count, lost, again, routed = self._restarted.pop(0)
            held = None if routed is None else (lambda model_id: model_partition(model_id, self.routed_partitions) in routed)
            forgotten = self.engine.forget_positions(partitions, count=count, lost=lost, again=again, models=held)
            for tp in sorted(partitions - forgotten if partitions is not None and forgotten is not None else ()):
                log.warning("%s: this restart was counted before, by a worker that stopped before committing the new "
                            "log (committed offset %d); the positions the models saved since stand", tp, lost[tp])

    def _forget_models(self) -> None:
        """Forget every model held (partitions moved, or back to the last checkpoint)."""
        self._abandon_export()
        for model_id in {key[0] for key in self.engine.monitors} | set(self.engine.joiners):
            self.metrics.forget_model(model_id)
        self._unexported.clear()
        self._stream_drifting.clear()
        self.engine.drop_all()
        self.state_sizes.clear()
        self._too_large.clear()
        self.metrics.state_unsaved.set(0)

    async def _rewind(self) -> None:
        """Go back to the last checkpoint, as a restart would: after a batch whose output may not
        have reached the broker, the state is ahead of what was published."""
        async with self.lock:
            try:  # a checkpoint on its way reflects only acknowledged output: let it land
                await self._settle_checkpoint(wait=True)
            except Exception as exc:
                log.warning("checkpoint before the rewind failed (%s: %s)", type(exc).__name__, exc)
            assigned = self.consumer.assignment()
            self.input.drop(assigned)
            self.input.hold(assigned)
            self._forget_models()
            await seek_committed(self.consumer, assigned)
            restored = await self._load_models(assigned)
            self._apply_restarts()
            self._in_flight = False
            self._must_rewind = False
            log.warning("rewound to the last checkpoint: %d model(s) restored; replaying from the committed offsets",
                        restored)

    async def _read_references(self, until_caught_up: bool = False, timeout: float = 30.0) -> int:
        """Apply reference profiles from the references topic; return how many."""
        c = self.ref_consumer
        applied = 0
        deadline = time.monotonic() + timeout
        while True:
            records = await c.getmany(timeout_ms=200 if until_caught_up else 0)
            futures = []
            for msgs in records.values():
                for msg in msgs:
                    try:
                        profile = ReferenceProfile.from_dict(orjson.loads(msg.value))
                        self.engine.set_reference(profile)
                    except Exception as exc:  # any malformed profile: dead-letter it, keep going (the topic
                        # is read from its beginning at every start: one that stopped the worker would stop it for good)
                        futures.append(self._dead_letter(msg, f"invalid reference profile: {type(exc).__name__}: {exc}"))
                        continue
                    key = (profile.model_id, profile.model_version)
                    self.metrics.forget_window_statistics(*key)
                    if key in self.engine.monitors:  # (a new reference ends the score's stream drifts)
                        self._export_drifts(key, self.engine.monitors[key])
                    applied += 1
                    log.info("reference for %s/%s from %s", profile.model_id, profile.model_version, msg.topic)
            if futures:
                await asyncio.gather(*await asyncio.gather(*futures))
            if not until_caught_up:
                return applied
            assigned = c.assignment()
            done = await caught_up(c, assigned) == set(assigned)
            if done or time.monotonic() > deadline:
                if not done:
                    log.warning("references topic not read to its end within %.0f s; continuing", timeout)
                return applied

    def start_loop(self) -> list[asyncio.Task]:
        self._tasks = [asyncio.create_task(self._loop(self.run_once, lambda: self._in_flight, self._rewind, "monitoring"),
                                           name="streamproc-monitor")]
        if self.router is not None:
            self._tasks.append(asyncio.ensure_future(self.router_thread.run(
                self._loop(self._route_once, lambda: self.router.in_flight, self.router.rewind, "routing",
                           self._router_stop))))
        return self._tasks

    def _watch(self, consumer: str) -> None:
        """Export how long ``consumer`` has had input waiting without making progress (read at
        each scrape, so it grows while the consumer's loop is stuck)."""
        self._progress[consumer] = time.monotonic()
        self.metrics.stalled.labels(consumer).set_function(lambda: time.monotonic() - self._progress[consumer])

    async def _route_once(self) -> int:
        s = self.settings
        n = await self.router.run_once(s.poll_timeout_ms, s.max_batch)
        if n:
            self._progress["router"] = time.monotonic()
        return n

    async def _gauge_router(self) -> None:
        """On the router's loop (asked by ``_update_gauges``, also while the router backs off):
        its consumer's lags, read by the next gauge pass."""
        try:
            self._router_lags = await self._lags("router", self.router_consumer)
        except Exception:  # (revoked meanwhile, a consumer being stopped): the next pass asks again
            log.debug("router lags not read", exc_info=True)
        finally:
            self._router_gauging = False

    async def stop(self, timeout: float = 20.0) -> None:
        """Finish the batch in hand, save the state, commit, and close the clients."""
        self._stop.set()
        if self._router_stop is not None:
            self.router_thread.call(self._router_stop.set)  # (nothing once the loop is closed: a second stop)
        finished = True
        if self._tasks:
            done, pending = await asyncio.wait([asyncio.shield(t) for t in self._tasks], timeout=timeout)
            for task in self._tasks:
                if not task.done():
                    task.cancel()
                    finished = False
        if finished and not self.failed and self.consumer is not None and self.state is not None:
            if not self._may_checkpoint():
                log.warning("final checkpoint skipped: the state holds a batch whose output was not delivered, or "
                            "models not fully loaded; the next start replays from the last checkpoint")
            else:
                try:
                    async with self.lock:
                        self._apply_restarts()
                        await asyncio.wait_for(self.checkpoint(), timeout)
                except Exception as exc:  # a dead broker: the next start replays from the last checkpoint
                    log.warning("final checkpoint failed (%s: %s)", type(exc).__name__, exc)
        self.ready = False
        self.metrics.ready.set(0)
        try:
            own = self.router_producer if self.router_producer is not self.producer else None
            for client in (self.router_consumer, own, self.consumer, self.ref_consumer, self.producer):
                if client is not None:
                    try:
                        if client in (self.router_consumer, own):
                            if not self.router_thread.loop.is_closed():
                                await self.router_thread.run(client.stop())
                        else:
                            await client.stop()
                    except Exception:  # closing a client on a dead broker must not block shutdown
                        log.warning("error while closing a Kafka client", exc_info=True)
        finally:
            if self.router_thread is not None:
                self.router_thread.close()

    def _may_checkpoint(self) -> bool:
        """Whether the models may be saved now, outside the loop (a revocation, a stop): not
        when they hold a batch whose output the broker did not acknowledge (they are ahead of
        it: the loop rewinds), nor when they are not the state to go on from (a load that failed
        part-way, to be redone)."""
        return not self.failed and not self._in_flight and not self._must_rewind

    async def _loop(self, step, in_flight, rewind, what: str, stop: Optional[asyncio.Event] = None) -> None:
        """Run ``step`` until ``stop`` (the worker's, or the router's on its loop) is set."""
        stop = stop or self._stop
        backoff = 0.5
        rewinding = False
        while not stop.is_set() and not self.failed:
            try:
                if rewinding:
                    await rewind()
                    rewinding = False
                await step()
                backoff = 0.5
            except KafkaError as exc:
                self._set_ready(False)
                if in_flight():
                    # The batch was consumed (and, when monitoring, applied to the state) but
                    # its output may not have reached the broker: going on would lose it. Go
                    # back to the last checkpoint once the broker answers, and replay (the
                    # same alert ids; forwarded duplicates are skipped).
                    log.error("could not deliver the output of a %s batch (%s); will rewind", what, exc)
                    rewinding = True
                log.warning("Kafka error while %s (%s); retrying in %.1f s", what, exc, backoff)
                try:
                    await asyncio.wait_for(stop.wait(), backoff)
                except asyncio.TimeoutError:
                    pass
                backoff = min(backoff * 2, 30.0)
            except Exception:
                # A bug, not bad input (bad input is dead-lettered): stop rather than spin or
                # sit "ready" doing nothing; the batch is uncommitted and will be read again.
                log.exception("%s loop failed; stopping the worker", what)
                self._fail()
                return

    def _set_ready(self, ready: bool) -> None:
        self.ready = ready
        self.metrics.ready.set(1 if ready else 0)

    async def _check_broker(self) -> None:
        """Every few seconds, ask the broker for metadata: the consumer alone keeps returning
        empty batches while the broker is gone. When it comes back, make sure the topics exist
        (a broker without persistent storage comes back empty)."""
        now = time.monotonic()
        if now - self._last_probe < PROBE_SECONDS:
            return
        self._last_probe = now
        try:
            await asyncio.wait_for(self.producer.client.fetch_all_metadata(), PROBE_SECONDS)
        except (KafkaError, OSError, asyncio.TimeoutError) as exc:
            if self.broker_reachable:
                log.warning("broker not reachable (%s); not ready", type(exc).__name__)
            self.broker_reachable = False
            return
        if not self.broker_reachable:
            await self._ensure_topics()
            self.input.recheck_ends()  # the broker may have come back without its data
            if self.router is not None:
                self.router_thread.call(self.router.input.recheck_ends)
            log.info("broker reachable again")
        self.broker_reachable = True

    def _fail(self) -> None:
        """A loop died of a bug: stop everything, and call ``on_failure`` on the worker's loop
        (the router's loop may run in a thread of its own, ``ROUTER_THREAD``)."""
        self.failed = True
        self.ready = False
        self.metrics.ready.set(0)
        if self.on_failure is not None:
            if self._worker_loop is None or self._worker_loop is _running_loop():
                self.on_failure()
            else:
                self._worker_loop.call_soon_threadsafe(self.on_failure)

    # -- one batch -------------------------------------------------------------------------
    async def run_once(self) -> int:
        """Consume, process and commit one batch; return the number of messages handled."""
        s = self.settings
        await self._read_references()
        await self._check_broker()
        if self._must_rewind:
            await self._rewind()
        generation = self.input.generation
        predictions, outcomes, records = await self.input.poll(s.poll_timeout_ms, s.max_batch)
        segments = [(predictions, outcomes, None)]
        if self.repartition:  # forwarded predictions and outcomes, and restart markers between them
            # Records below a restored state's routed position are marked (see ReplayedRecord).
            replay = self.engine.replay_until
            below = {name: off for name, off in replay.items() if name.startswith(self._routed_prefix)} if replay else None
            self._replaying = bool(below)
            segments = [([r for r in rs if r.kind != OUTCOME], [r for r in rs if r.kind == OUTCOME], marker)
                        for rs, marker in routed_segments(outcomes, below)]
            if len(segments) == 1:
                predictions, outcomes = segments[0][0], segments[0][1]
            else:
                predictions = [r for segment in segments for r in segment[0]]
                outcomes = [r for segment in segments for r in segment[1]]
        async with self.lock:
            self._apply_restarts()
            self._retire_idle_versions()
            # Under the lock: the models of newly assigned partitions are loaded (see _assigned),
            # so "ready" never means "still restoring state".
            # Nor "reading from positions not yet checked against the partitions' ends".
            self._set_ready(self.broker_reachable and bool(self.consumer.assignment()) and not self._must_rewind
                            and self.input.ends_checked and (self.router is None or self.router.input.ends_checked))
            if self.input.generation != generation or self._must_rewind:
                return 0  # polled before a rebalance (or its models are not loaded): read again later
            if not predictions and not outcomes and len(segments) == 1:
                if (self.engine.dirty_monitors or self.engine.dirty_models or self.engine.restarts.unsaved
                        or self._saving is not None or self._export is not None):
                    await self.checkpoint(force=False)
                await self._update_gauges()
                return 0
            started = time.perf_counter()
            self._in_flight = True
            alerts_before = self.published["alerts"]
            for preds, outs, marker in segments:
                if preds or outs:
                    await self._apply(preds, outs)
                if marker is not None:
                    self._forget_source(marker)
                    await asyncio.sleep(0)  # (heartbeats: many markers come together after a restart)
            self._in_flight = False
            if self.published["alerts"] > alerts_before:
                oldest = min((r.timestamp for r in predictions + outcomes if r.timestamp and r.timestamp > 0), default=None)
                if oldest is not None:
                    self.metrics.alert_latency.observe(max(0.0, time.time() - oldest / 1000))
            self.input.done(records)
            self._end_replay()
            await self.checkpoint(force=False, budget=CHECKPOINT_SLICE_SECONDS)
        n = len(predictions) + len(outcomes)
        self._progress["monitor"] = time.monotonic()
        await self._update_gauges()
        self.metrics.batch_seconds.observe(time.perf_counter() - started)
        self.metrics.batch_size.observe(n)
        return n

    def _forget_source(self, marker) -> None:
        """A router's restart marker (see ``streamproc.router``), read from a routed partition:
        the models of that partition forget what they applied from the source partition, if it
        started again (``MonitorEngine.forget_source``)."""
        part = int(marker.routed.rsplit(":", 1)[1])
        partitions = self.routed_partitions  # (not the router's cache: it belongs to the router's loop)
        forgotten = self.engine.forget_source(marker.source, marker.end, marker.routed, marker.offset,
                                              lambda model_id: model_partition(model_id, partitions) == part)
        if forgotten:
            self._abandon_export()  # (its records so far stamp positions these models forgot)
            log.warning("%s started again (%s): %d model(s) of routed partition %d forgot the offsets they had applied "
                        "from it", marker.source, "noticed by its router" if marker.end < 0 else
                        f"its end was {marker.end} when its router first read it", len(forgotten), part)

    def _end_replay(self) -> None:
        """Let the engine stop checking restored watermarks once the input has passed them
        (``MonitorEngine.end_replay``); on the direct route, only this worker's partitions count,
        an idle one from where the group resumed it. (Repartitioned, the watermarks checked are of
        the routers' sources, not of this input.)"""
        if not self.engine.replay_until:
            return
        positions = {f"{tp.topic}:{tp.partition}": off
                     for tp, off in {**self.input.resumed_at(), **self.input.positions()}.items()}
        sources = None if self.repartition else {f"{tp.topic}:{tp.partition}" for tp in self.consumer.assignment()}
        self.engine.end_replay(positions, sources)

    def _retire_idle_versions(self) -> None:
        """Now and then, retire the model versions idle for ``retire_version_seconds`` while
        their model had traffic (``MonitorEngine.retire_idle_versions``)."""
        now = time.monotonic()
        if now - self._last_retire_sweep < RETIRE_SWEEP_SECONDS:
            return
        self._last_retire_sweep = now
        retired = self.engine.retire_idle_versions()
        if retired:
            self._abandon_export()  # (it would save the retired versions of models not exported yet)
        self._stream_drifting.difference_update(retired)
        for model_id, version in retired:
            self.metrics.forget_version(model_id, version)
            if (model_id, version) in self._retired_unsaved:
                continue  # retired before a rewind to a checkpoint that still had it: said and counted then
            self._retired_unsaved[(model_id, version)] = self._checkpoints_started
            self.metrics.versions_retired.inc()
            log.info("retired model version %s/%s: no events for %.0f h while its model had traffic", model_id, version,
                     self.engine.config_for(model_id).retire_after / 3600)
        if retired:
            self.metrics.models.set(len(self.engine.monitors))

    async def _apply(self, predictions: list, outcomes: list) -> None:
        """Apply a batch and wait until the broker has acknowledged all it published. ``published``
        (in ``/status``) counts acknowledged output: a batch whose output failed is replayed after a
        rewind (see ``_rewind``), and would otherwise be counted twice."""
        published = dict(self.published)
        try:
            with gc_paused():
                sends = self._process_predictions(predictions) + self._process_outcomes(outcomes)
            if sends:
                # send() enqueues and returns a delivery future: wait until all are acknowledged.
                await asyncio.gather(*await asyncio.gather(*sends))
        except BaseException:
            self.published = published
            raise

    async def _update_gauges(self) -> None:
        """Gauges that cost a pass over partitions or models: at most once a second."""
        now = time.monotonic()
        if now - self._last_gauges < 1.0:
            return
        self._last_gauges = now
        m = self.metrics
        owned = set()
        monitor = await self._lags("monitor", self.consumer) if self.consumer is not None else {}
        if self.router is not None and not self._router_gauging:
            self._router_gauging = True  # (read on the router's loop, for the next pass: see _gauge_router)
            self.router_thread.call(lambda: asyncio.ensure_future(self._gauge_router()))
        for tp, lag in {**monitor, **self._router_lags}.items():
            m.lag.labels(tp.topic, tp.partition).set(lag)
            owned.add((tp.topic, str(tp.partition)))
        # A partition that moved to another worker: its last lag would stay (and look stuck).
        for topic, partition in self._lag_series - owned:
            m.lag.remove_matching(topic=topic, partition=partition)
        self._lag_series = owned
        m.features.set(sum(len(mon.reference.features) for mon in self.engine.monitors.values() if mon.reference))
        m.models.set(len(self.engine.monitors))
        m.warmup_bytes.set(self.engine.warmup_bytes)
        m.state_bytes_total.set(sum(self.state_sizes.values()))  # also after a load or a hand-over
        if self._unexported:
            # A restored model's latest-value series (otherwise set when one of its windows closes,
            # outcomes come or an alert is published), once it is unpacked. One pass over the monitors.
            ready = {model_id for model_id in self._unexported if model_id not in self.engine.dormant}
            self._unexported -= ready
            for key, mon in self.engine.monitors.items():
                if key[0] in ready:
                    self._export_window(key, mon)
                    if mon.detectors is not None:
                        m.set_statistics(key[0], key[1], mon.stream_statistics(SCORE_KEY))
                    if mon.errors is not None:
                        self._export_errors(key, mon)
                    self._export_drifts(key, mon)

    async def _lags(self, name: str, consumer) -> dict:
        """``consumer``'s lag per partition (on its own loop); a lag of nothing counts as
        progress of ``name``, if a fetch said so lately."""
        out = await lags(consumer)
        if not any(out.values()) and fetched_since(consumer, 1000 * (time.time() - FETCH_STALE_SECONDS)):
            self._progress[name] = time.monotonic()
        return out

    def _export_window(self, key: ModelKey, mon) -> None:
        """The statistics of a model version's latest closed window: PSI, data quality, score quantiles."""
        m = self.metrics
        for (_signal, name), (value, threshold) in mon.latest.items():
            m.psi.set((key[0], key[1], name), value)
            m.psi_threshold.set((key[0], key[1], name), threshold)
        m.set_statistics(key[0], key[1], mon.window_statistics())
        score_qs = mon.quantiles.get(SCORE_KEY)
        if score_qs is None and mon.reference is not None and mon.reference.score is not None:
            score_qs = [math.nan] * len(QUANTILES)  # no finite score in the window
        for q, v in zip(QUANTILES, score_qs or ()):
            m.score_quantile.set((key[0], key[1], str(q)), v)

    def _export_errors(self, key: ModelKey, mon) -> None:
        """A model version's error rate and its detectors' statistics."""
        errors = mon.errors
        if errors.rolling:
            self.metrics.error_rate.labels(*key).set(errors.rolling_error)
        if errors.detectors is not None:
            self.metrics.set_statistics(key[0], key[1], mon.stream_statistics(ERROR_SIGNAL))

    def _export_drifts(self, key: ModelKey, mon) -> None:
        """A model version's active drifts (``streamproc_drift_active``), as its policy holds them."""
        m = self.metrics
        m.drift_active.remove_matching(model_id=key[0], model_version=key[1])
        for (kind, detector, signal, feature), severity in mon.policy.active_drifts():
            m.drift_active.labels(key[0], key[1], kind, detector, feature or signal, severity).set(1)
        if getattr(mon.policy.state, "stream_active", None):
            self._stream_drifting.add(key)
        else:
            self._stream_drifting.discard(key)

    async def checkpoint(self, force: bool = True, budget: Optional[float] = None) -> None:
        """Save the changed models' state, then commit the input offsets it reflects.

        In that order: after a crash the worker restores the saved state and resumes at the
        committed offsets; a state saved after the last commit skips what it already applied.
        Unless ``force``d (a stop, a revocation), the broker's acknowledgement of the state is
        not waited for: the offsets are committed by a later call once it has arrived (see
        ``_settle_checkpoint``), so the next batches are processed meanwhile. One checkpoint
        is on its way at a time.

        With a ``budget`` (seconds of the loop's time; after a batch), the export stops when it
        is spent and goes on at the next call, so batches are applied between its slices: the
        models exported later are stamped with the positions of that time (their state reflects
        those batches too), and the offsets committed are those of the export's start, which
        every record of it is at or past. What would make a record exported earlier wrong (a
        restart, a retired version, models dropped or rewound) abandons the export instead
        (``_abandon_export``): its models are saved by the next one, in one go (so that exports
        longer than what abandons them still end). A forced checkpoint (a stop,
        a revocation) finishes an export on its way, then saves what changed since, so that it
        commits the current offsets, as it would have without one.
        """
        await self._settle_checkpoint(wait=force)
        if self._saving is not None:
            return  # the previous one is still on its way
        name = "{0.topic}:{0.partition}".format
        export = self._export
        resumed = export is not None
        if export is None:
            if not force and not self.pacer.due(time.monotonic()):
                return
            self.pacer.started(time.monotonic())
            # A restart noticed by a poll since the lock was taken: counted before any offset of the
            # new log is, so that the count goes with them (no await between the two).
            self._apply_restarts()
            offsets = self.input.positions()
            watermark = {name(tp): off for tp, off in offsets.items()}
            export = self._export = _Export(self.engine.dirty_records(watermark), watermark, offsets, self._abandoned)
            self._abandoned = False
        else:
            export.watermark.update({name(tp): off for tp, off in self.input.positions().items()})
        records = export.records
        began = sliced = time.perf_counter()
        try:
            for model_id, record in export.models:
                if len(record) > self.state.max_record_bytes:
                    self._state_too_large(model_id, len(record))
                else:
                    if model_id in self._too_large:
                        self._too_large.discard(model_id)
                        self.metrics.state_unsaved.set(len(self._too_large))
                    records[model_id] = record
                    if len(records) % 100 == 0:
                        export.work += time.perf_counter() - began
                        await asyncio.sleep(0)  # heartbeats and HTTP views run between models
                        began = time.perf_counter()
                if budget is not None and not force and not export.whole and time.perf_counter() - sliced >= budget:
                    export.work += time.perf_counter() - began
                    return  # the rest after the next batch
            export.work += time.perf_counter() - began
            self._export = None
            # The restart counts go with the checkpoint whose offsets are the first of the new
            # logs committed: its offsets are committed only once all its records are acknowledged.
            restarts = dict(self.engine.restarts.unsaved)
            if records or restarts:
                # A worker evicted from its group (stalled past the session timeout, say) must not
                # save: its partitions' new owner may have saved newer state of the same models,
                # which this older state would replace on the compacted topic.
                await confirm_membership(self.consumer)
            futures = await self.state.send(self.producer, records)
            futures += await self.state.send(self.producer, restart_records(restarts, self.engine.restarts.lost))
        except Exception:
            # Not saved: these models must go into the next checkpoint.
            self._export = None
            self.engine.dirty_models.update(records)
            raise
        self.pacer.finished(export.work)
        self.metrics.checkpoint_seconds.observe(export.work)
        self._checkpoints_started += 1
        self._saving = (futures, export.offsets, records, restarts)
        if force:
            await self._settle_checkpoint(wait=True)
            if resumed:  # it saved the models as of batches ago: what changed since, and the current offsets
                await self.checkpoint(force=True)

    def _abandon_export(self) -> None:
        """Drop the checkpoint being exported (see ``checkpoint``): its models stay marked as
        changed, and the next checkpoint, due at once, saves them in one go."""
        export, self._export = self._export, None
        if export is not None:
            self._abandoned = True
            export.models.close()  # (the engine marks every model it was to export as changed)
            self.engine.dirty_models.update(export.records)
            self.pacer.next_at = time.monotonic()

    def _state_too_large(self, model_id: str, size: int) -> None:
        """A model's state record is over the state topic's limit: it is not saved (the others
        are, and the offsets are committed, rather than none ever again). After a restart the
        model resumes from its last saved state, without what it applied since."""
        self.metrics.state_too_large.inc()
        if model_id not in self._too_large:  # said once, until it fits again
            self._too_large.add(model_id)
            self.metrics.state_unsaved.set(len(self._too_large))
            log.error("state of model %s is %d bytes, over the state topic's limit (%d): not saved; after a restart "
                      "it resumes from its last saved state (fewer versions or features would fit)",
                      model_id, size, self.state.max_record_bytes)

    async def _settle_checkpoint(self, wait: bool) -> None:
        """Finish the checkpoint on its way, if any: once its state is acknowledged (at once
        when ``wait``, else only if it already is), commit its offsets."""
        if self._saving is None:
            return
        futures, offsets, records, restarts = self._saving
        if not wait and not all(f.done() for f in futures):
            return
        self._saving = None
        try:
            if futures:
                await asyncio.gather(*futures)
            if offsets:
                await commit(self.consumer, offsets)
        except Exception:
            # Not saved (or not committed): these models must go into the next checkpoint.
            self.engine.dirty_models.update(records)
            raise
        self.engine.restarts.saved(restarts)
        self.metrics.checkpoints.inc()
        # This checkpoint saved the models of the versions retired before it started (those it
        # saved: one over the record limit was not).
        started = self._checkpoints_started
        self._retired_unsaved = {key: n for key, n in self._retired_unsaved.items() if n >= started or key[0] not in records}
        self.metrics.state_bytes.set(sum(len(v) for v in records.values()))
        self.state_sizes.update((m, len(v)) for m, v in records.items())
        self.metrics.state_bytes_total.set(sum(self.state_sizes.values()))

    def _send(self, topic: str, key: Optional[str], event: dict, producer=None):
        return (producer or self.producer).send(topic, orjson.dumps(event), key=key.encode() if key is not None else None)

    def _router_dead_letter(self, msg, reason: str):
        """``_dead_letter`` for the router: through its own producer, counted apart (a monitor
        batch that fails puts ``published`` back as it was)."""
        self.router_dead_letters += 1
        return self._dead_letter(msg, reason, self.router_producer, count=False)

    def _dead_letter(self, msg, reason: str, producer=None, count: bool = True):
        s = self.settings
        self.metrics.dead_letters.labels(msg.topic, dead_letter_reason(reason)).inc()
        # The reason can quote the message: only at debug level.
        log.info("dead-lettered %s[%d]@%d (%s)", msg.topic, msg.partition, msg.offset, dead_letter_reason(reason))
        log.debug("dead letter %s[%d]@%d: %s", msg.topic, msg.partition, msg.offset, reason[:200])
        if count:
            self.published["dead_letters"] += 1
        return self._send(s.topics.dead_letter, None, dead_letter(msg, reason, s.dlq_payload_limit), producer)

    def _dead_letters(self, msgs, rejected) -> list:
        return [self._dead_letter(msgs[r.index], r.reason) for r in rejected]

    def _process_predictions(self, msgs) -> list:
        if not msgs:
            return []
        # Each event's position is its index in msgs; ("topic:partition", offset) only where the
        # engine checks them (replaying after a restore, or deduplicating repartitioned input).
        future = self.settings.max_future_seconds
        batches, rejected = decode_predictions([m.value for m in msgs], range(len(msgs)),
                                               layouts=self.engine.feature_layout, known=self.engine.decoder,
                                               not_after=math.inf if future is None else time.time() + future)
        tags = None
        if self.engine.replay_until or self.engine.dedupe:
            tags = position_tags(msgs, self._replaying)
            for batch in batches.values():
                batch.positions = [tags[i] for i in batch.positions]
        futures = self._dead_letters(msgs, rejected)
        # (Decoding thawed the batch's packed models: their counts so far are their history.)
        late_before = {key: mon.late_events for key in batches if (mon := self.engine.monitors.get(key)) is not None}
        out = self.engine.process(batches, now=time.time())
        if out.refused:
            at = msgs if tags is None else dict(zip(tags, msgs))  # a batch's positions: indices, or tags
            for batch in out.refused:
                reason = (f"too many models: {batch.model_id}/{batch.model_version} would exceed "
                          f"max_models ({self.settings.max_models})")
                futures += [self._dead_letter(at[pos], reason) for pos in batch.positions]
        m = self.metrics
        for (model_id, version), count in out.events.items():
            m.events.labels(model_id, version).inc(count)
            m.start_model(model_id)
        for key, closed in out.windows_closed.items():
            mon = self.engine.monitors[key]
            m.windows.labels(*key).inc(closed)
            self._export_window(key, mon)
        for key in batches:  # the late events of this batch (not the model's history)
            mon = self.engine.monitors.get(key)
            if mon is not None and mon.late_events > late_before.get(key, 0):
                m.late_events.labels(*key).inc(mon.late_events - late_before.get(key, 0))
            elif key in out.windows_closed:
                m.late_events.labels(*key)  # the series, at 0 until there are some (as dashboards expect)
        for model_id, n in out.expired.items():  # (outcomes count the other join results)
            m.joins.labels(model_id, "expired").inc(n)
        for key in out.events:  # the score's stream detectors ran on this batch's events
            mon = self.engine.monitors.get(key)
            if mon is not None and mon.detectors is not None:
                self.metrics.set_statistics(key[0], key[1], mon.stream_statistics(SCORE_KEY))
        m.models.set(len(self.engine.monitors))
        if out.thinned:
            m.warmups_thinned.inc(len(out.thinned))
            strides = sorted(set(out.thinned.values()))
            log.warning("warm-ups over worker.warmup_memory_mb (%d MB): %d model versions thinned, now keeping every "
                        "%s-th event (e.g. %s/%s)", self.settings.warmup_memory_mb, len(out.thinned),
                        "/".join(map(str, strides)), *next(iter(out.thinned)))
        if out.waiting_dropped:
            log.warning("predictions waiting for outcomes over worker.max_waiting_predictions (%d): dropped the %d "
                        "oldest of the models holding the most", self.settings.max_waiting_predictions, out.waiting_dropped)
        if out.thinned_large:
            m.warmups_thinned.inc(len(out.thinned_large))
            for (model_id, version), stride in out.thinned_large.items():
                log.warning("warm-ups of model %s over %d MiB (many features): %s now keeps every %d-th event, so the "
                            "model's state fits a record", model_id, MODEL_WARMUP_BYTES >> 20, version, stride)
        return futures + self._publish(out)

    def _process_outcomes(self, msgs) -> list:
        if not msgs:
            return []
        tags = position_tags(msgs, self._replaying)
        outcomes, rejected = decode_outcomes([m.value for m in msgs], tags)
        futures = self._dead_letters(msgs, rejected)
        counts: dict[str, int] = defaultdict(int)
        for o in outcomes:
            counts[o.model_id] += 1
        for model_id, c in counts.items():
            self.metrics.outcomes.labels(model_id).inc(c)
        # The joins this worker makes (a joiner's counts are its model's history, on whichever
        # worker held it: exported whole, a model moving back and forth was counted twice).
        joins_before = {}
        for model_id in counts:
            if model_id in self.engine.dormant:
                self.engine.thaw(model_id)
            joiner = self.engine.joiners.get(model_id)
            if joiner is not None:
                joins_before[model_id] = (joiner.matched, joiner.unmatched, joiner.expired)
        out = self.engine.process_outcomes(outcomes)
        if out.refused_outcomes:
            at = dict(zip(tags, msgs))
            futures += [self._dead_letter(at[o.position], f"too many models: outcome of {o.model_id} would exceed "
                                          f"max_models ({self.settings.max_models})") for o in out.refused_outcomes]
        for model_id in counts:
            joiner = self.engine.joiners.get(model_id)
            if joiner is not None:
                before = joins_before.get(model_id, (0, 0, 0))
                for result, was in zip(("matched", "unmatched", "expired"), before):
                    series = self.metrics.joins.labels(model_id, result)  # (at 0 until it has some)
                    if getattr(joiner, result) > was:
                        series.inc(getattr(joiner, result) - was)
        for key in out.errors_updated:
            self._export_errors(key, self.engine.monitors[key])
        return futures + self._publish(out)


    def _publish(self, out) -> list:
        """Send the alerts and retrain requests of one engine step; count them."""
        t, m = self.settings.topics, self.metrics
        # (a stream drift may end on any batch of the model's events: those of a drifting model too)
        changed = set(out.windows_closed) | set(out.errors_updated) | {(a["model_id"], a["model_version"]) for a in out.alerts}
        for key in changed | (self._stream_drifting & set(out.events)):
            mon = self.engine.monitors.get(key)
            if mon is not None:
                self._export_drifts(key, mon)
            else:
                self._stream_drifting.discard(key)
        futures = []
        now = time.time()
        for a in out.alerts:
            m.alerts.labels(a["model_id"], a["type"], a["severity"]).inc()
            end = a["window"]["end"]
            if isinstance(end, (int, float)):
                m.event_time_to_alert.observe(max(0.0, now - end))
            log.warning("alert %s %s/%s %s %s %s=%.4f", a["alert_id"], a["model_id"], a["model_version"],
                        a["type"], a["detector"], a["feature"] or a["signal"], a["statistic"])
            futures.append(self._send(t.alerts, a["model_id"], a))
        for r in out.retrains:
            m.retrains.labels(r["model_id"]).inc()
            futures.append(self._send(t.retrain, r["model_id"], r))
        self.published["alerts"] += len(out.alerts)
        self.published["retrain_requests"] += len(out.retrains)
        return futures

    # -- views -----------------------------------------------------------------------------
    def status(self) -> dict:
        models = []
        for (model_id, version), mon in sorted(self.engine.monitors.items()):
            models.append({
                "model_id": model_id,
                "model_version": version,
                "events": mon.events,
                "warming_up": mon.warming_up,
                "warmup": ({"events": len(mon.warmup), "kept": mon.warmup.kept, "stride": mon.warmup.stride}
                           if mon.warmup is not None else None),
                "reference": mon.reference.source if mon.reference else None,
                "window": ({"kind": mon.cfg.window.kind, "index": mon.pane.index, "fill": mon.pane.count,
                            "size": mon.pane_size if mon.cfg.window.kind == "count" else None}
                           if mon.pane else None),
                "late_events": mon.late_events,
                "quantiles": {name: dict(zip(("p05", "p25", "p50", "p75", "p95"), (round(v, 6) for v in qs)))
                              for name, qs in sorted(mon.quantiles.items())},
                "latest_psi": {name: round(v, 6) for (_s, name), (v, _t) in sorted(mon.latest.items())},
                "active_drift": [
                    {"type": k[0], "detector": k[1], "signal": k[2], "feature": k[3], "severity": sev}
                    for k, sev in mon.policy.active_drifts()
                ],
            })
        assigned = self.consumer.assignment() if self.consumer is not None else set()
        published = {**self.published, "dead_letters": self.published["dead_letters"] + self.router_dead_letters}
        return {"ready": self.ready, "published": published,
                "partitions": sorted(f"{tp.topic}[{tp.partition}]" for tp in assigned), "models": models,
                "packed_models": len(self.engine.dormant)}
