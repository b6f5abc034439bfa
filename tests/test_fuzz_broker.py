"""Hostile input through the real broker: hypothesis mixes malformed messages (see
tests/test_hostile.py) with good ones; one worker must stay up, dead-letter every bad
message with a reason, and count every good one."""

from __future__ import annotations

import base64
import itertools
import json
import random
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamproc.synth import ModelStream

from .conftest import WorkerProcess, unique_topics, wait_until
from .test_hostile import hostile
from .test_integration import TopicReader, produce

pytestmark = pytest.mark.integration

LIMIT = 16384  # dlq_payload_limit: a dead letter keeps this much of the payload
_models = itertools.count()


@pytest.fixture(scope="module")
def fuzz_worker(bootstrap, tmp_path_factory):
    topics = unique_topics()
    worker = WorkerProcess(bootstrap, topics, tmp_path_factory.mktemp("fuzz") / "worker.log",
                           ("--window-size", "100", "--warmup-size", "100"))
    worker.wait_ready()
    reader = TopicReader(bootstrap, topics["dead_letter"])
    yield bootstrap, topics, worker, reader
    reader.close()
    worker.stop()


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow, HealthCheck.data_too_large])
@given(bad=st.lists(hostile(), min_size=1, max_size=25), seed=st.integers(0, 2**16))
def test_hostile_messages_through_the_broker_are_dead_lettered_and_good_ones_counted(fuzz_worker, bad, seed):
    bootstrap, topics, worker, reader = fuzz_worker
    model = f"fuzz{next(_models)}"
    good = [json.dumps(e).encode() for e in ModelStream(model, n_numeric=3, seed=seed).events(60)]
    mixed = bad + good
    random.Random(seed).shuffle(mixed)
    before = len(reader.poll())
    produce(bootstrap, topics["predictions"], mixed)

    wait_until(lambda: len(reader.poll()) >= before + len(bad), 60, "every bad message dead-lettered")
    letters = reader.values()[before:]
    assert len(letters) == len(bad)
    assert all(x["error"] and x["source_topic"] == topics["predictions"] for x in letters)
    assert Counter(base64.b64decode(x["payload"]) for x in letters) == Counter(m[:LIMIT] for m in bad)
    assert Counter(x["payload_size"] for x in letters) == Counter(len(m) for m in bad)
    wait_until(lambda: any(m["model_id"] == model and m["events"] == len(good) for m in worker.status()["models"]),
               60, "every good message applied")
    assert worker.proc.poll() is None
