"""CRC-32C of fetched record batches, checked in hardware instead of by aiokafka's table loop.

A Kafka record batch (v2) carries a CRC-32C of its bytes from its attributes on, which a
consumer checks to catch corruption on the wire or on the broker's disk. aiokafka checks it
with a byte-at-a-time software loop: 0.53 ns a byte, about 0.4 µs of every 750-byte event a
worker reads, and the repartition route reads each event twice. google-crc32c computes the
same value with the CPU's CRC instructions, about ten times faster.

``install()`` makes aiokafka's fetcher wrap each partition's fetched bytes in
``CheckedRecords``, which checks every batch as aiokafka's ``PartitionRecords`` takes it, so
the consumer's own check can be off (``kafka.consumer`` turns it off when ``install()``
returns True). A batch whose CRC does not match raises aiokafka's ``CorruptRecordException``
where aiokafka's check raises it: while the records are taken, before any of that batch's
records is returned; aiokafka then fetches them again. Batches of the older formats (magic 0
and 1, CRC-32 per message) are checked by aiokafka's own code, as before.
"""

from __future__ import annotations

from typing import Any, Optional

_LOG_OVERHEAD = 12  # base offset (int64) and batch length (int32): the batch length counts what follows
_MAGIC = 16  # after the partition leader epoch (int32)
_CRC = 17  # uint32, big-endian, of the bytes from the attributes on
_ATTRIBUTES = 21

_memory_records: Any = None  # aiokafka's MemoryRecords, which CheckedRecords wraps
_crc32c: Any = None


class CheckedRecords:
    """aiokafka's ``MemoryRecords`` over one partition's fetched bytes, each batch's CRC
    checked as it is taken (``next_batch``)."""

    __slots__ = ("_records", "_data", "_pos")

    def __init__(self, data: bytes):
        self._records = _memory_records(data)
        self._data = data  # (bytes: aiokafka's MemoryRecords takes nothing else)
        self._pos = 0

    def size_in_bytes(self) -> int:
        return self._records.size_in_bytes()

    def has_next(self) -> bool:
        return self._records.has_next()

    def next_batch(self) -> Any:
        batch = self._records.next_batch()
        if batch is None:
            return None
        data, start = self._data, self._pos
        end = start + _LOG_OVERHEAD + int.from_bytes(data[start + 8:start + _LOG_OVERHEAD], "big", signed=True)
        self._pos = end
        if data[start + _MAGIC] >= 2:
            ok = _crc32c(data[start + _ATTRIBUTES:end]) == int.from_bytes(data[start + _CRC:start + _ATTRIBUTES], "big")
        else:
            ok = batch.validate_crc()
        if not ok:
            from aiokafka.errors import CorruptRecordException

            offset = int.from_bytes(data[start:start + 8], "big", signed=True)
            raise CorruptRecordException(f"Invalid CRC - the record batch at offset {offset}")
        return batch


def hardware_crc32c() -> Optional[Any]:
    """google-crc32c's ``value`` when it is installed with its C extension, else None (its
    pure-Python fallback is far slower than aiokafka's loop)."""
    try:
        import google_crc32c
    except ImportError:
        return None
    return google_crc32c.value if getattr(google_crc32c, "implementation", None) == "c" else None


def install() -> bool:
    """Make aiokafka's fetcher check batch CRCs with ``CheckedRecords`` (idempotent, process
    wide); False, with nothing changed, without a hardware CRC-32C or on an aiokafka whose
    fetcher does not build ``MemoryRecords`` by that name."""
    global _memory_records, _crc32c
    crc = hardware_crc32c()
    if crc is None:
        return False
    try:
        from aiokafka.consumer import fetcher
    except ImportError:
        return False
    current = getattr(fetcher, "MemoryRecords", None)
    if current is None:
        return False
    if current is not CheckedRecords:
        _memory_records, _crc32c = current, crc
        fetcher.MemoryRecords = CheckedRecords
    return True


def uninstall() -> None:
    """Back to aiokafka's own ``MemoryRecords`` (for tests and comparisons); consumers made
    while installed still have their own check off."""
    global _memory_records
    from aiokafka.consumer import fetcher

    if _memory_records is not None and fetcher.MemoryRecords is CheckedRecords:
        fetcher.MemoryRecords = _memory_records
        _memory_records = None


def installed() -> bool:
    from aiokafka.consumer import fetcher

    return getattr(fetcher, "MemoryRecords", None) is CheckedRecords
