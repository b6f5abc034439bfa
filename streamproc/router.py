"""Repartitioning by model: how several workers share the load without splitting a model's state.

Producers may key prediction and outcome messages by anything (or nothing), so one model's
events are spread over all partitions, and in a consumer group each worker sees only some of
them. Every worker therefore runs a router: a consumer (group ``<group>-router``) of the
predictions and outcomes topics that forwards each message, unchanged, to the routed topic
(``<group>-routed`` unless configured), to the partition of its model id. The monitoring
consumers (group ``<group>``) read the routed topic, so each model lives in exactly one
worker, and moves with its partition when workers join or leave.

Forwarding is batched: the messages of one fetch bound for one routed partition travel in
*envelopes* (header ``streamproc-envelope: 1``; value a msgpack array of
``[topic, partition, offset, kind, key, value, timestamp]`` entries, at most
``worker.routed_message_bytes`` each, encoded), so routing costs one produce per partition and
batch, not one per event. Envelopes are as large as the broker takes: aiokafka has one produce
request in flight per broker and one batch per partition in a request, so each envelope of a
partition costs a round trip (on a loop of its own, ``streamproc.loop_thread``, the router's
round trips overlap the monitor's batches; on the worker's loop they go out between them).
Each entry keeps where it came from; after a router crash the same source records may be
forwarded twice, and the worker applies a record only if its source offset is past what the
model's state has applied from that source partition, so duplicates change nothing.

Those per-source watermarks mean nothing once a source partition's offsets start again (its
data was lost, its topic recreated), and the models that hold them may be in any worker. So a
router tells them through the routed topic itself, in order with the records: before it
forwards a source partition's first records since it was assigned, and whenever it notices
that partition started again, it writes a *restart marker* (header ``streamproc-restart: 1``;
value a msgpack array ``[topic, partition, end]``) to every routed partition. A model that
reads one forgets its watermark of that source partition if it is past ``end``: past the
partition's end when the router first read it, from no committed offset (a log that holds
fewer records than the model applied is not the log it applied them from: a topic recreated,
its committed offsets gone with it), or at once (``end`` -1) for a restart the router
noticed. The router commits the new
log's beginning before it forwards any of its records, so a marker noticed twice (a router
that crashed between the two) has no records between its copies. A model restored from a
state saved after it read a marker (its saved routed position is past the marker's) does not
apply it again on the replay (see ``MonitorEngine.forget_source``), nor the records before it
(``ReplayedRecord``: below its saved routed position, a record is applied, whatever the source
watermarks, which the marker reset, say).

Ordering: one router merges its prediction partitions in timestamp order (see
``streamproc.ordering``), so with one worker the routed order is reproducible. With several,
a model whose events are spread over partitions read by different routers is windowed in
the order they reach the routed topic; key messages by model id for reproducible windows.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Callable, Optional

import msgspec
from aiokafka import ConsumerRebalanceListener
from aiokafka.partitioner import murmur2

from .consume import BatchedInput, within, commit, seek_committed
from .gc_policy import gc_paused
from .decode import route_keys

log = logging.getLogger(__name__)

ENVELOPE_HEADER = "streamproc-envelope"
RESTART_HEADER = "streamproc-restart"
RESTARTED = -1  # a marker's end when the router noticed the restart: any watermark is of the lost log
# An envelope's encoded size, at most: under Kafka's default message.max.bytes (1,048,588) with
# room for the record batch's own headers. An entry larger than this alone (an event is at most
# 256 KiB, decode.MAX_EVENT_BYTES) travels alone.
ENVELOPE_BYTES = 1_000_000
# The most msgpack adds to an entry besides its topic, key and value: the array's header, the
# topic's string header, partition, offset, kind, the key's and value's headers, timestamp.
_ENTRY_BYTES = 1 + 5 + 5 + 9 + (2 + len(b"prediction")) + 5 + 5 + 9
_ARRAY_BYTES = 5  # the envelope's own array header, at most
PREDICTION, OUTCOME = b"prediction", b"outcome"
MAX_CACHED_MODELS = 100_000  # model ids whose routed partition is remembered (computing one is murmur2 in Python)
_ENCODER = msgspec.msgpack.Encoder()


def model_partition(model_id: str, partitions: int) -> int:
    """The routed-topic partition of a model (Kafka's default murmur2 partitioning of the key).

    >>> model_partition("fraud", 4) == model_partition("fraud", 4)
    True
    """
    return (murmur2(model_id.encode()) & 0x7FFFFFFF) % partitions


class SourceRecord(msgspec.Struct, array_like=True, frozen=True, gc=False):
    """A routed record seen as the source record it forwards (for positions and dead letters):
    an envelope entry, decoded by msgspec straight into this (no Python step per record)."""

    topic: str
    partition: int
    offset: int
    kind: bytes
    key: Optional[bytes]
    value: Optional[bytes]
    timestamp: int


_DECODER = msgspec.msgpack.Decoder(list[SourceRecord])


class ReplayedRecord(SourceRecord, frozen=True, gc=False):
    """A source record read again below a restored state's routed position (``routed_segments``):
    a model whose state was saved at or past ``routed_offset`` of ``routed`` has applied it,
    whatever its source watermarks say (a restart marker may have reset them since)."""

    routed: str
    routed_offset: int


class RestartMarker(msgspec.Struct, array_like=True, frozen=True):
    """A source partition that may have started again: a watermark of it past ``end`` is of a
    lost log (``RESTARTED``: any). ``routed`` and ``offset``: where the marker was read (set by
    ``routed_segments``, not sent)."""

    topic: str
    partition: int
    end: int
    routed: str = ""
    offset: int = -1

    @property
    def source(self) -> str:
        return f"{self.topic}:{self.partition}"


_MARKER_DECODER = msgspec.msgpack.Decoder(RestartMarker)


def envelopes(entries: list[tuple], limit: int = ENVELOPE_BYTES) -> list[bytes]:
    """Pack ``(topic, partition, offset, kind, key, value, timestamp)`` entries into envelopes of at most
    ``limit`` bytes each, encoded (an entry larger than that alone goes alone).

    The size is bounded from the entries' lengths, not measured by encoding: per-entry headers
    are most of an envelope of small events (outcomes, say), so counting only the values let an
    envelope of them grow past the broker's limit.

    >>> [len(unwrap_envelope(e)) for e in envelopes([("t", 0, i, PREDICTION, None, b"x" * 10, 0) for i in range(5)], limit=150)]
    [2, 2, 1]
    """
    out, chunk, size = [], [], _ARRAY_BYTES
    overhead: dict[str, int] = {}  # per topic: what an entry adds besides its key and value
    for entry in entries:
        topic, key, value = entry[0], entry[4], entry[5]
        fixed = overhead.get(topic)
        if fixed is None:
            fixed = overhead[topic] = _ENTRY_BYTES + len(topic.encode())
        n = fixed + (len(key) if key else 0) + (len(value) if value else 0)
        if chunk and size + n > limit:
            out.append(_ENCODER.encode(chunk))
            chunk, size = [], _ARRAY_BYTES
        chunk.append(entry)
        size += n
    if chunk:
        out.append(_ENCODER.encode(chunk))
    return out


def unwrap_envelope(value: bytes) -> list[SourceRecord]:
    return _DECODER.decode(value)


def unwrap(msg) -> list[SourceRecord]:
    """The source records a routed message carries; a message that is not an envelope is
    taken as one prediction (so a producer may write to the routed topic directly)."""
    if msg.headers and any(name == ENVELOPE_HEADER for name, _ in msg.headers):
        return unwrap_envelope(msg.value)
    return [SourceRecord(msg.topic, msg.partition, msg.offset, PREDICTION, msg.key, msg.value, msg.timestamp)]


def restart_marker(msg) -> Optional[RestartMarker]:
    """The restart marker a routed message is, or None; one that cannot be read is None too
    (taken as a prediction, it is dead-lettered as one)."""
    if not msg.headers or not any(name == RESTART_HEADER for name, _ in msg.headers):
        return None
    try:
        m = _MARKER_DECODER.decode(msg.value)
    except (msgspec.DecodeError, TypeError):
        log.warning("%s[%d]@%d: a restart marker that cannot be read", msg.topic, msg.partition, msg.offset)
        return None
    return RestartMarker(m.topic, m.partition, m.end, f"{msg.topic}:{msg.partition}", msg.offset)


def routed_segments(msgs: list, below: Optional[dict] = None) -> list[tuple[list[SourceRecord], Optional[RestartMarker]]]:
    """The source records of routed messages (in their order), cut at the restart markers
    among them: (records, the marker read after them, or None for the last run). Those of
    messages below ``below`` ("topic:partition" of the routed topic -> offset: the restored
    states' routed positions, while the input replays up to them) are ``ReplayedRecord``s.

    >>> class M:
    ...     def __init__(self, offset, headers, value):
    ...         self.topic, self.partition, self.offset, self.headers, self.value = "r", 0, offset, headers, value
    ...         self.key, self.timestamp = None, 0
    >>> marker = M(1, [(RESTART_HEADER, b"1")], _ENCODER.encode(["p", 3, -1]))
    >>> [(len(records), m and (m.source, m.routed, m.offset)) for records, m in routed_segments([M(0, [], b"{}"), marker, M(2, [], b"{}")])]
    [(1, ('p:3', 'r:0', 1)), (1, None)]
    """
    out: list = []
    records: list = []
    for msg in msgs:
        headers = msg.headers
        if headers:
            marker = restart_marker(msg)
            if marker is not None:
                out.append((records, marker))
                records = []
                continue
        if below:
            routed = f"{msg.topic}:{msg.partition}"
            if msg.offset < below.get(routed, -1):
                records.extend(ReplayedRecord(r.topic, r.partition, r.offset, r.kind, r.key, r.value, r.timestamp,
                                              routed, msg.offset) for r in unwrap(msg))
                continue
        records.extend(unwrap(msg))
    out.append((records, None))
    return out


def position_tags(msgs: list, replayed: bool = True) -> list[tuple]:
    """Each record's position for the engine's watermark checks: ("topic:partition", offset),
    and for a ``ReplayedRecord`` also its routed partition and offset (``replayed``: whether
    there may be some)."""
    if not replayed:
        return [(f"{m.topic}:{m.partition}", m.offset) for m in msgs]
    return [(f"{m.topic}:{m.partition}", m.offset, m.routed, m.routed_offset) if type(m) is ReplayedRecord
            else (f"{m.topic}:{m.partition}", m.offset) for m in msgs]


class Router:
    """Forwards predictions and outcomes to the routed topic, partitioned by model id."""

    def __init__(self, consumer, producer, predictions: str, outcomes: str, routed: str, partitions: int,
                 dead_letter: Callable, max_buffered: int, max_idle_ms: int, envelope_bytes: int = ENVELOPE_BYTES):
        self.consumer = consumer
        self.producer = producer
        self.topics = {predictions: PREDICTION, outcomes: OUTCOME}
        self.routed = routed
        self.partitions = partitions
        self.envelope_bytes = envelope_bytes
        self.dead_letter = dead_letter  # (msg, reason) -> delivery future, from the worker
        self.input = BatchedInput(consumer, predictions, max_buffered, max_idle_ms, self._restarted)
        self._noticed: set = set()  # source partitions noticed to have started again, not yet marked
        self._marked: set = set()  # source partitions marked since they were assigned (see the module's doc)
        self.lock = asyncio.Lock()  # a batch in hand finishes before partitions are revoked
        self.forwarded = 0
        self.in_flight = False  # a batch consumed but not yet acknowledged by the broker
        self._partition_of: dict[str, int] = {}  # model id -> routed partition (murmur2 is pure Python)

    def listener(self) -> ConsumerRebalanceListener:
        router = self

        class _Listener(ConsumerRebalanceListener):
            async def on_partitions_revoked(self, revoked) -> None:
                async with router.lock:
                    positions = router.input.positions()
                    if positions:
                        try:
                            await commit(router.consumer, positions)
                        except Exception as exc:  # the next owner re-forwards; duplicates are skipped
                            log.warning("router commit on revocation failed: %s", exc)
                    router.input.drop(revoked)
                    router._noticed.difference_update(revoked)  # (the next owner notices them)
                    router._marked.difference_update(revoked)

            async def on_partitions_assigned(self, assigned) -> None:
                router.input.assigned(assigned)

        return _Listener()

    async def rewind(self) -> None:
        """Forward again from the committed offsets (after a batch that may not have been delivered)."""
        async with self.lock:
            assigned = self.consumer.assignment()
            self.input.drop(assigned)
            self._marked.difference_update(assigned)  # (marked again: a no-op for models that read them)
            await seek_committed(self.consumer, assigned)
            self.in_flight = False

    def _restarted(self, tps, lost=None, again=None) -> None:
        """Source partitions read again from their beginning (see ``BatchedInput``): marked
        before any of their new records is forwarded."""
        self._noticed.update(tps)

    async def _mark(self, records: dict) -> None:
        """Write the restart markers due (see the module's doc) to every routed partition, and
        commit the beginning of each new log noticed, before any of their records is forwarded."""
        assigned = self.consumer.assignment()
        noticed = self._noticed & assigned
        self._noticed.clear()
        due = {tp: RESTARTED for tp in noticed}
        first = [tp for tp, got in records.items() if got and tp not in self._marked and tp not in due]
        try:
            for tp in first:
                # Read from a committed offset, the log is the one the group read (one past its
                # end is noticed as a restart); from none, it may be a recreated topic's.
                if await within(self.consumer.committed(tp), f"the committed offset of {tp.topic}[{tp.partition}] not known") is None:
                    due[tp] = max(self.consumer.highwater(tp) or 0, records[tp][-1].offset + 1)
            if due:
                futures = [self.producer.send(self.routed, _ENCODER.encode([tp.topic, tp.partition, end]),
                                              partition=part, headers=[(RESTART_HEADER, b"1")])
                           for tp, end in due.items() for part in range(self.partitions)]
                await asyncio.gather(*await asyncio.gather(*futures))
            if noticed:
                positions = self.input.positions()
                starts = {}
                for tp in noticed:
                    got = records.get(tp)
                    start = got[0].offset if got else positions.get(tp)
                    if start is not None:
                        starts[tp] = start
                if starts:
                    await commit(self.consumer, starts)
        except BaseException:
            self._noticed |= noticed  # marked again after the rewind (if not noticed again then)
            raise
        self._marked.update(due)
        self._marked.update(first)
        for tp in noticed:
            log.info("%s[%d] started again: restart marker sent to the %d routed partitions", tp.topic, tp.partition,
                     self.partitions)

    def partition_of(self, model_id: str) -> int:
        """The routed partition of a model, remembered (``model_partition`` is murmur2 in Python)."""
        part = self._partition_of.get(model_id)
        if part is None:
            if len(self._partition_of) >= MAX_CACHED_MODELS:  # ids come from the data: a flood of new ones
                self._partition_of.clear()
            part = self._partition_of[model_id] = model_partition(model_id, self.partitions)
        return part

    def _forward(self, msgs) -> tuple[list, int]:
        """Send one batch to the routed topic and its unroutable messages to the dead-letter
        topic; return the delivery futures and how many were unroutable."""
        keys, rejected = route_keys([m.value for m in msgs])
        futures = [self.dead_letter(msgs[r.index], r.reason) for r in rejected]
        by_partition: dict[int, list] = {}
        part_of = self._partition_of
        for msg, key in zip(msgs, keys):
            if key is None:
                continue
            part = part_of.get(key)
            if part is None:
                part = self.partition_of(key)
            by_partition.setdefault(part, []).append(
                (msg.topic, msg.partition, msg.offset, self.topics[msg.topic], msg.key, msg.value, msg.timestamp))
        for part, entries in by_partition.items():
            for value in envelopes(entries, self.envelope_bytes):
                futures.append(self.producer.send(self.routed, value, partition=part, headers=[(ENVELOPE_HEADER, b"1")]))
        return futures, len(rejected)

    async def run_once(self, timeout_ms: int, max_records: int) -> int:
        """Forward one batch and commit it; return the number of messages handled."""
        generation = self.input.generation
        merged, others, records = await self.input.poll(timeout_ms, max_records)
        if self.input.generation != generation:
            # A rebalance while polling: what the poll released may be of the partitions after
            # it (the consumer resumed at the committed offsets), and the merge counts it as
            # handed out, so the next commit would pass it. Read again from the committed offsets.
            self.in_flight = True  # (until the rewind is done: the loop retries a failed one)
            await self.rewind()
            return 0
        msgs = merged + others
        if not msgs and not self._noticed and all(tp in self._marked for tp in records):
            return 0
        async with self.lock:
            if self.input.generation != generation:
                return 0  # polled before a rebalance: the merge forgot these; their owner reads them again
            self.in_flight = True
            await self._mark(records)
            if not msgs:
                self.in_flight = False
                return 0
            with gc_paused():
                futures, rejected = self._forward(msgs)
            await asyncio.gather(*await asyncio.gather(*futures))
            self.in_flight = False
            self.input.done(records)
            positions = self.input.positions()
            if positions:
                await commit(self.consumer, positions)
            self.forwarded += len(msgs) - rejected
        return len(msgs)
