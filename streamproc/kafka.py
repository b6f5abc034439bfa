"""Kafka plumbing shared by the worker, the CLI and the demo: clients and topic creation."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Iterable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from . import batch_crc, consumer_records

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 1_048_576
# The compacted topics' (references, state) max.message.bytes, as ensure_topics creates them,
# and their producers' request limit; a record's value may be this large less room for its
# key and the record batch's headers.
COMPACTED_MESSAGE_BYTES = 16 * 1024 * 1024
MAX_COMPACTED_VALUE_BYTES = COMPACTED_MESSAGE_BYTES - 64 * 1024


def client_options(security=None) -> dict:
    """aiokafka keyword arguments for a ``KafkaSecurity`` (None: plaintext)."""
    if security is None or security.security_protocol == "PLAINTEXT":
        return {}
    opts: dict = {"security_protocol": security.security_protocol}
    if security.security_protocol in ("SSL", "SASL_SSL"):
        from aiokafka.helpers import create_ssl_context

        ctx = create_ssl_context(
            cafile=str(security.ssl_cafile) if security.ssl_cafile else None,
            certfile=str(security.ssl_certfile) if security.ssl_certfile else None,
            keyfile=str(security.ssl_keyfile) if security.ssl_keyfile else None,
        )
        ctx.check_hostname = security.ssl_check_hostname
        opts["ssl_context"] = ctx
    if security.security_protocol.startswith("SASL"):
        opts["sasl_mechanism"] = security.sasl_mechanism
        opts["sasl_plain_username"] = security.sasl_username
        opts["sasl_plain_password"] = security.sasl_password.get_secret_value()
    return opts


async def ensure_topics(bootstrap: str, topics: Iterable[str], partitions: int, timeout: float = 30.0,
                        compacted: Iterable[str] = (), options: dict | None = None) -> None:
    """Create the topics that do not exist yet (retrying while the broker comes up).

    Topics in ``compacted`` (references, state) get ``cleanup.policy=compact``, a single
    partition and room for 16 MiB records.
    """
    compacted = set(compacted)
    wanted = list(dict.fromkeys(topics))
    deadline = time.monotonic() + timeout
    while True:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000, **(options or {}))
        try:
            await admin.start()
            existing = set(await admin.list_topics())
            missing = [t for t in wanted if t not in existing]
            if missing:
                try:
                    await admin.create_topics([
                        NewTopic(t, 1, 1, topic_configs={"cleanup.policy": "compact", "max.message.bytes": str(COMPACTED_MESSAGE_BYTES)})
                        if t in compacted
                        else NewTopic(t, partitions, 1)
                        for t in missing
                    ])
                except TopicAlreadyExistsError:
                    pass
                log.info("created topics %s", ", ".join(missing))
            return
        except KafkaError as exc:
            if time.monotonic() > deadline:
                raise
            log.warning("broker not reachable for topic creation (%s); retrying", type(exc).__name__)
            await asyncio.sleep(1.0)
        finally:
            await admin.close()


def producer(bootstrap: str, **kwargs) -> AIOKafkaProducer:
    opts = dict(bootstrap_servers=bootstrap, acks="all", linger_ms=5, max_request_size=MAX_MESSAGE_BYTES)
    opts.update(kwargs)
    return AIOKafkaProducer(**opts)


# Partition i of every topic to the same member (when the topics have as many partitions):
# producers that key predictions and outcomes by model id put a model's in partition i of
# each, and its state must live in one worker. aiokafka's default (round robin over all the
# topics' partitions) split them (with three workers and four partitions, the predictions of
# partition 1 and its outcomes went to different workers, each saving its own copy of the
# model). Round robin stays second: Kafka's coordinator picks a strategy every member supports,
# so a group with workers of an earlier streamproc keeps round robin until they are replaced
# (Tansu refuses such a mixed group with InconsistentGroupProtocolError: stop them first there).
COPARTITIONED = (RangePartitionAssignor, RoundRobinPartitionAssignor)


def consumer(bootstrap: str, *topics: str, **kwargs) -> AIOKafkaConsumer:
    consumer_records.install()  # cheaper records than aiokafka's (see streamproc.consumer_records)
    # Batch CRCs checked in hardware (streamproc.batch_crc) instead of by aiokafka's own check.
    opts = dict(bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest",
                check_crcs=not batch_crc.install())
    opts.update(kwargs)
    return AIOKafkaConsumer(*topics, **opts)


def reference_key(model_id: str, model_version: str) -> bytes:
    """The compaction key of a reference profile on the references topic: the ids joined by a
    character they cannot hold (``events.ID_PATTERN``), as state records are. With "/" between
    them, model "team/fraud" version "v1" and model "team" version "fraud/v1" shared a key,
    and compaction would have kept one of their references. (Workers read the ids from the
    profile, not the key: records keyed the old way are still applied, in order.)

    >>> reference_key("team/fraud", "v1") != reference_key("team", "fraud/v1")
    True
    """
    return f"{model_id}\x1f{model_version}".encode()


async def publish_reference(bootstrap: str, topic: str, profile_dict: dict, options: dict | None = None) -> int:
    """Publish a reference profile to the (compacted) references topic; return its size in bytes.

    A reference may be as large as the topic's records (16 MiB): hundreds of features with
    long category names pass Kafka's default 1 MB. A larger one is refused before sending,
    with what to change.
    """
    return (await publish_references(bootstrap, topic, [profile_dict], options))[0]


async def publish_references(bootstrap: str, topic: str, profile_dicts: list[dict], options: dict | None = None) -> list[int]:
    """Publish reference profiles with one producer (``publish_reference``'s checks, all made
    before anything is sent); return their sizes in bytes."""
    import orjson

    values = [orjson.dumps(d, option=orjson.OPT_SERIALIZE_NUMPY) for d in profile_dicts]
    for d, value in zip(profile_dicts, values):
        if len(value) > MAX_COMPACTED_VALUE_BYTES:
            raise ValueError(
                f"the reference of {d['model_id']}/{d['model_version']} is {len(value):,} bytes, over the "
                f"references topic's limit of {MAX_COMPACTED_VALUE_BYTES:,}: build it with fewer features or a lower "
                "--max-categories")
    await ensure_topics(bootstrap, [topic], 1, compacted=[topic], options=options)
    p = producer(bootstrap, max_request_size=COMPACTED_MESSAGE_BYTES, **(options or {}))
    await p.start()
    try:
        sent = [await p.send(topic, value, key=reference_key(d["model_id"], d["model_version"]))
                for d, value in zip(profile_dicts, values)]
        for delivery in sent:
            await delivery  # raises what send_and_wait would
    finally:
        await p.stop()
    return [len(v) for v in values]
