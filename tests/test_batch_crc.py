"""streamproc.batch_crc: fetched record batches are checked as aiokafka checks them, in hardware."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import CorruptRecordException
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from aiokafka.record.legacy_records import LegacyRecordBatchBuilder
from aiokafka.record.memory_records import MemoryRecords
from hypothesis import given, settings
from hypothesis import strategies as st

from streamproc import batch_crc, kafka
from streamproc.batch_crc import CheckedRecords

assert batch_crc.install(), "google-crc32c with its C extension is a dependency"


def _v2(values: list[bytes], base: int = 0) -> bytes:
    b = DefaultRecordBatchBuilder(magic=2, compression_type=0, is_transactional=0, producer_id=-1,
                                  producer_epoch=-1, base_sequence=-1, batch_size=10**8)
    for i, v in enumerate(values):
        b.append(i, timestamp=1_700_000_000_000 + i, key=b"k%d" % i, value=v, headers=[("h", b"x")])  # offset deltas
    out = b.build()
    out[:8] = base.to_bytes(8, "big")
    return bytes(out)


def _v1(values: list[bytes], base: int = 0) -> bytes:
    b = LegacyRecordBatchBuilder(1, 0, 10**8)
    for i, v in enumerate(values):
        b.append(base + i, timestamp=1_700_000_000_000 + i, key=None, value=v)
    return bytes(b.build())


def _drain(records) -> list[tuple]:
    out = []
    while records.has_next():
        batch = records.next_batch()
        out += [(r.offset, r.key, r.value) for r in batch]
    return out


def _aiokafka_verdict(data: bytes) -> bool:
    """Whether aiokafka's own check passes every batch of ``data``."""
    records = MemoryRecords(data)
    while records.has_next():
        if not records.next_batch().validate_crc():
            return False
    return True


def _as_aiokafka_takes(data: bytes) -> list[tuple]:
    """The records aiokafka's ``PartitionRecords`` takes from ``data`` with its own check on."""
    out = []
    records = MemoryRecords(data)
    while records.has_next():
        batch = records.next_batch()
        if not batch.validate_crc():
            raise CorruptRecordException("Invalid CRC")
        out += [(r.offset, r.key, r.value) for r in batch]
    return out


def _outcome(take, data: bytes):
    try:
        return "records", take(data)
    except Exception as exc:  # what is raised, by type: the message names the batch differently
        return "raised", type(exc)


# Batches of the current format only: aiokafka 0.14's C code misreads a batch of the older
# format that is not the first in its buffer (its own check fails it, or reading it raises
# SystemError), with or without streamproc. The older format alone: test_each_format_is_checked.
DATA = _v2([b"a" * 700, b"b" * 10], 0) + _v2([b"legacy"], 2) + _v2([b"c" * 300], 3)


def test_good_batches_give_the_records_aiokafka_gives():
    checked = CheckedRecords(DATA)
    assert checked.size_in_bytes() == len(DATA)
    assert _drain(checked) == _drain(MemoryRecords(DATA))
    assert [offset for offset, _, _ in _drain(CheckedRecords(DATA))] == [0, 1, 2, 3]
    legacy = _v1([b"old", b"format"], 5)
    assert _drain(CheckedRecords(legacy)) == _drain(MemoryRecords(legacy)) == [(5, None, b"old"), (6, None, b"format")]


def test_a_trailing_partial_batch_is_left_as_aiokafka_leaves_it():
    cut = DATA + _v2([b"d" * 500], 4)[:-100]  # a fetch may end inside a batch
    assert _drain(CheckedRecords(cut)) == _drain(MemoryRecords(cut)) == _drain(MemoryRecords(DATA))
    assert CheckedRecords(b"").has_next() is False


@settings(max_examples=400, deadline=None)
@given(position=st.integers(min_value=0, max_value=len(DATA) - 1), flip=st.integers(min_value=1, max_value=255))
def test_a_corrupted_byte_is_refused_exactly_where_aiokafka_refuses_it(position, flip):
    """Any byte of the three batches flipped: the hardware check takes the same
    records as aiokafka with its own check, or raises the same error, before any record of the
    batch that fails is taken."""
    data = bytearray(DATA)
    data[position] ^= flip
    data = bytes(data)
    expected = _outcome(_as_aiokafka_takes, data)
    assert _outcome(lambda d: _drain(CheckedRecords(d)), data) == expected
    if expected[0] == "records" and not _aiokafka_verdict(data):
        raise AssertionError("unreachable: a failed check raises")


def test_each_format_is_checked():
    for build in (_v2, _v1):
        data = bytearray(build([b"value" * 20]))
        data[-3] ^= 0x10  # inside the value
        assert not _aiokafka_verdict(bytes(data))
        with pytest.raises(CorruptRecordException):
            CheckedRecords(bytes(data)).next_batch()


def test_install_is_idempotent_and_undone_by_uninstall():
    from aiokafka.consumer import fetcher

    assert batch_crc.install() and batch_crc.install() and batch_crc.installed()
    batch_crc.uninstall()
    try:
        assert fetcher.MemoryRecords is MemoryRecords and not batch_crc.installed()
    finally:
        assert batch_crc.install()
    assert fetcher.MemoryRecords is CheckedRecords


@pytest.mark.integration
def test_a_consumer_reads_through_the_hardware_check_with_aiokafkas_off(bootstrap, monkeypatch):
    """On the real broker: kafka.consumer turns aiokafka's check off, and every fetched batch
    goes through CheckedRecords."""
    topic = f"crc-{uuid.uuid4().hex[:8]}"
    seen = []
    real = CheckedRecords.next_batch

    def counting(self):
        batch = real(self)
        if batch is not None:
            seen.append(batch.base_offset)
        return batch

    monkeypatch.setattr(CheckedRecords, "next_batch", counting)

    async def run() -> tuple[list, bool]:
        await kafka.ensure_topics(bootstrap, [topic], 1)
        p = kafka.producer(bootstrap)
        await p.start()
        try:
            for i in range(30):
                await p.send(topic, b"%d" % i + b"x" * 700)
            await p.flush()
        finally:
            await p.stop()
        c = kafka.consumer(bootstrap, group_id=None)
        await c.start()
        try:
            c.assign([TopicPartition(topic, 0)])
            await c.seek_to_beginning()
            out = []
            while len(out) < 30:
                for msgs in (await c.getmany(timeout_ms=1000)).values():
                    out += msgs
            return out, c._fetcher._check_crcs
        finally:
            await c.stop()

    out, aiokafka_checks = asyncio.run(run())
    assert [m.value for m in out] == [b"%d" % i + b"x" * 700 for i in range(30)]
    assert aiokafka_checks is False
    assert seen and seen[0] == 0
