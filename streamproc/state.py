"""The state topic: a compacted topic holding each model's monitoring state, per consumer group.

Record key: ``<group id>\\x1f<model id>``; value: the record ``MonitorEngine.export_dirty``
wrote (the model's monitors and outcome joiner, stamped with the input offsets they reflect).
A worker reads the records of its partitions' models when they are assigned, then writes the changed ones at each
checkpoint, before it commits the input offsets.

Values are pickles: anyone who can write to the state topic can run code in the worker, so
restrict writes to the worker's principal (Kafka ACLs).

Beside the models, for each input partition whose offsets started again, how many restarts
of them the group knows of (see ``streamproc.restarts``, ``RESTARTS``). Model ids cannot start
with ``\x00``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Callable, Optional

from aiokafka import TopicPartition
from aiokafka.errors import KafkaError

from . import kafka

log = logging.getLogger(__name__)
SEP = "\x1f"  # ids have no control characters (see streamproc.events.ID_PATTERN)
MAX_STATE_BYTES = kafka.COMPACTED_MESSAGE_BYTES  # the state topic's max.message.bytes, and the producer's request limit
MAX_RECORD_BYTES = kafka.MAX_COMPACTED_VALUE_BYTES  # a record's value may be this large
# A partition's restart count is a record of its own, keyed ``\x00restarts\x1f<topic>:<partition>\x1f<n>``
# (after the group's prefix), with an empty value: one record per count, the highest read
# wins. An empty value is what a worker from before the counts reads as a deleted model it
# never had (nothing), so going back to one stays possible. Beside it, when the group's
# committed offset of the log the count replaced is known, ``...\x1f<n>\x1f<offset>`` (also
# empty), which a worker of the counts' first version reads as the count of a partition it
# does not have.
RESTARTS = f"\x00restarts{SEP}"


def restart_records(counts: dict[str, int], lost: Optional[dict[tuple[str, int], set[int]]] = None) -> dict[str, bytes]:
    """The records (name -> value) of these partitions' restart counts, and of the committed
    offsets of the logs they replaced (``lost``, per (partition, count)) where known."""
    records = {f"{RESTARTS}{tp}{SEP}{n}": b"" for tp, n in counts.items()}
    for tp, n in counts.items():
        for offset in sorted((lost or {}).get((tp, n), ())):
            records[f"{RESTARTS}{tp}{SEP}{n}{SEP}{offset}"] = b""
    return records


def restart_count(name: str) -> Optional[tuple[str, int, Optional[int]]]:
    """(partition, count, the committed offset of the log it replaced or None) if ``name`` is a
    restart count's record (else None). One that is not readable (hand-written, damaged)
    counts as none known, with a warning."""
    if not name.startswith(RESTARTS):
        return None
    tp, *numbers = name[len(RESTARTS):].split(SEP)
    if tp and 1 <= len(numbers) <= 2 and all(n.isdigit() and n.isascii() for n in numbers):
        return tp, int(numbers[0]), int(numbers[1]) if len(numbers) == 2 else None
    log.warning("state topic: unreadable restart count %r; ignored", name[len(RESTARTS):])
    return tp or name[len(RESTARTS):], 0, None


class StateStore:
    def __init__(self, bootstrap: str, topic: str, group_id: str, options: dict | None = None):
        self.bootstrap = bootstrap
        self.options = options or {}
        self.topic = topic
        self.prefix = f"{group_id}{SEP}"
        self.bytes_written = 0
        self.max_record_bytes = MAX_RECORD_BYTES

    async def read(self, apply: Callable[[str, Optional[bytes]], None], timeout: float = 60.0) -> None:
        """Call ``apply(model id, value)`` for every record of this group, oldest first, up to
        the end of the topic (an empty value deletes). Records are handed over as they are
        fetched, so a worker restoring many models never holds all their bytes at once."""
        c = kafka.consumer(self.bootstrap, group_id=None, max_partition_fetch_bytes=MAX_STATE_BYTES,
                           fetch_max_bytes=4 * MAX_STATE_BYTES, **self.options)
        await c.start()
        try:
            await c.topics()
            parts = c.partitions_for_topic(self.topic) or {0}
            tps = [TopicPartition(self.topic, p) for p in sorted(parts)]
            c.assign(tps)
            await c.seek_to_beginning(*tps)
            deadline = time.monotonic() + timeout
            while True:
                batch = await c.getmany(timeout_ms=200)
                for msgs in batch.values():
                    for m in msgs:
                        key = (m.key or b"").decode(errors="replace")
                        if key.startswith(self.prefix):
                            apply(key[len(self.prefix):], m.value)
                done = True
                for tp in tps:
                    hw = c.highwater(tp)
                    if hw is None or await c.position(tp) < hw:
                        done = False
                if done:
                    return
                if time.monotonic() > deadline:
                    raise KafkaError(f"state topic {self.topic} not read to its end within {timeout:.0f} s")
        finally:
            await c.stop()

    async def send(self, producer, records: dict[str, bytes]) -> list:
        """Hand records to the producer; return their delivery futures (``save`` waits for them)."""
        futures = [await producer.send(self.topic, value, key=(self.prefix + name).encode())
                   for name, value in records.items()]
        self.bytes_written += sum(len(v) for v in records.values())
        return futures

    async def save(self, producer, records: dict[str, bytes]) -> None:
        """Write records and wait until the broker has them all."""
        futures = await self.send(producer, records)
        if futures:
            await asyncio.gather(*futures)
