"""streamproc.consumer_records: the lean records carry what aiokafka's carry, read from a real broker."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import ConsumerRecord

from streamproc import consumer_records, kafka
from streamproc.consumer_records import LeanRecord

pytestmark = pytest.mark.integration

FIELDS = [f.name for f in dataclasses.fields(ConsumerRecord)]


async def _produce(bootstrap: str, topic: str) -> None:
    await kafka.ensure_topics(bootstrap, [topic], 2)
    p = kafka.producer(bootstrap)
    await p.start()
    try:
        for i in range(50):
            await p.send(topic, b"v%d" % i if i % 7 else None, key=None if i % 3 == 0 and i % 7 else b"k%d" % i,
                         partition=i % 2, headers=[("h", b"%d" % i)] if i % 5 == 0 else None)
        await p.flush()
    finally:
        await p.stop()


async def _read(bootstrap: str, topic: str, lean: bool, **options) -> list:
    c = kafka.consumer(bootstrap, group_id=None, **options)
    if not lean:
        consumer_records.uninstall()
    await c.start()
    try:
        c.assign([TopicPartition(topic, 0), TopicPartition(topic, 1)])
        await c.seek_to_beginning()
        out = []
        while len(out) < 50:
            for msgs in (await c.getmany(timeout_ms=1000)).values():
                out += msgs
        return sorted(out, key=lambda r: (r.partition, r.offset))
    finally:
        await c.stop()
        consumer_records.install()


def test_lean_records_have_every_field_of_aiokafkas_with_the_same_values(bootstrap):
    topic = f"records-{uuid.uuid4().hex[:8]}"
    asyncio.run(_produce(bootstrap, topic))
    stock = asyncio.run(_read(bootstrap, topic, lean=False))
    lean = asyncio.run(_read(bootstrap, topic, lean=True))
    assert all(type(r) is ConsumerRecord for r in stock)
    assert all(type(r) is LeanRecord for r in lean)
    assert [f for f in LeanRecord.__struct_fields__] == FIELDS
    assert [[getattr(r, f) for f in FIELDS] for r in lean] == [[getattr(r, f) for f in FIELDS] for r in stock]
    # The cases the records were produced to cover are there: no key, no value, headers.
    assert any(r.key is None for r in lean) and any(r.value is None for r in lean) and any(r.headers for r in lean)


def test_a_consumer_with_deserializers_keeps_aiokafkas_records(bootstrap):
    topic = f"records-{uuid.uuid4().hex[:8]}"
    asyncio.run(_produce(bootstrap, topic))
    records = asyncio.run(_read(bootstrap, topic, lean=True, value_deserializer=lambda v: v and v.upper()))
    assert all(type(r) is ConsumerRecord for r in records)
    assert records[1].value.startswith(b"V")


def test_install_is_idempotent_and_uninstall_restores_aiokafkas_method():
    from aiokafka.consumer.fetcher import PartitionRecords

    consumer_records.uninstall()
    stock = PartitionRecords._consumer_record
    try:
        assert consumer_records.install() and consumer_records.install()
        assert PartitionRecords._consumer_record is not stock
        consumer_records.uninstall()
        assert PartitionRecords._consumer_record is stock
    finally:
        consumer_records.install()


def test_records_are_read_the_same_by_a_plain_aiokafka_consumer_once_installed(bootstrap):
    """Installing is process-wide: a consumer streamproc did not create (faust's) gets them too."""
    topic = f"records-{uuid.uuid4().hex[:8]}"
    asyncio.run(_produce(bootstrap, topic))
    consumer_records.install()

    async def read():
        c = AIOKafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest")
        await c.start()
        try:
            c.assign([TopicPartition(topic, 0)])
            await c.seek_to_beginning()
            return await c.getmany(timeout_ms=2000)
        finally:
            await c.stop()

    records = [r for msgs in asyncio.run(read()).values() for r in msgs]
    assert records and all(type(r) is LeanRecord for r in records)
