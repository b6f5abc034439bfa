"""Crash recovery against the real broker: kill -9 a worker at several points and restart it;
its per-model counts and the set of alert ids it published must equal those of a worker that
ran the same input without interruption."""

from __future__ import annotations

import json
import signal

import pytest

from streamproc.synth import Drift, ModelStream

from .conftest import WorkerProcess, unique_topics, wait_until
from .test_integration import TopicReader, produce

pytestmark = pytest.mark.integration

N = 6000
CHUNKS = 4


def streams():
    return [
        ModelStream("crash-a", n_numeric=4, seed=61, drift=Drift(3500, ("x1",), 1.0)),
        ModelStream("crash-b", n_numeric=4, seed=62, drift=Drift(2500, ("c0",), new_category_rate=0.4)),
    ]


def own_outputs(inputs: dict, tag: str) -> dict:
    out = unique_topics()
    return {**out, "predictions": inputs["predictions"], "outcomes": inputs["outcomes"], "state": f"state-{tag}-{out['alerts'][-8:]}"}


def applied(worker: WorkerProcess) -> dict:
    return {m["model_id"]: m["events"] for m in worker.status().get("models", [])}


@pytest.mark.parametrize("route", ["repartition", "direct"])
def test_kill_9_at_several_points_loses_nothing_and_applies_nothing_twice(bootstrap, tmp_path, route):
    """On the direct route the restarted worker holds a model packed until its input reaches it
    (see streamproc.engine's ``import_record``): a model not replayed is not yet listed."""
    inputs = unique_topics()
    crashing_topics, steady_topics = own_outputs(inputs, "crash"), own_outputs(inputs, "steady")
    args = ("--window-size", "500", "--warmup-size", "1000", "--route", route)
    env = {"STREAMPROC_CHECKPOINT_SECONDS": "2"}
    steady = WorkerProcess(bootstrap, steady_topics, tmp_path / "steady.log", args, env, group_id="steady")
    crashing = WorkerProcess(bootstrap, crashing_topics, tmp_path / "crash0.log", args, env, group_id="crashing")
    workers = [steady, crashing]
    try:
        steady.wait_ready()
        crashing.wait_ready()
        events = [list(s.events(N)) for s in streams()]
        per_chunk = N // CHUNKS
        for k in range(CHUNKS):
            chunk = [json.dumps(e[i]).encode() for i in range(k * per_chunk, (k + 1) * per_chunk) for e in events]
            produce(bootstrap, inputs["predictions"], chunk)
            target = (k + 1) * per_chunk
            wait_until(lambda: applied(crashing) == {"crash-a": target, "crash-b": target}, 60,
                       f"the crashing worker to apply chunk {k}")
            if k < CHUNKS - 1:
                # Killed right after applying the chunk: usually before its next checkpoint, so
                # the restarted worker restores older state and replays part of the chunk.
                crashing.proc.send_signal(signal.SIGKILL)
                crashing.proc.wait(10)
                crashing.log.close()
                crashing = WorkerProcess(bootstrap, crashing_topics, tmp_path / f"crash{k + 1}.log", args, env,
                                         group_id="crashing")
                workers.append(crashing)
                crashing.wait_ready()
                # Nothing is applied twice: after the restart (and its replay) the counts are
                # exactly what was produced so far.
                def caught_up():
                    status = crashing.status()
                    counts = {m["model_id"]: m["events"] for m in status.get("models", [])}
                    return set(counts.values()) <= {target} and len(counts) + status.get("packed_models", 0) == 2
                wait_until(caught_up, 60, "the restarted worker to catch up")
                assert "restored the state" in crashing.log_text()
        wait_until(lambda: applied(steady) == {"crash-a": N, "crash-b": N}, 60, "the steady worker")
        steady_status = steady.status()
        assert applied(crashing) == {"crash-a": N, "crash-b": N}

        steady_reader = TopicReader(bootstrap, steady_topics["alerts"])
        expected = {a["alert_id"] for a in wait_until(
            lambda: len(steady_reader.poll()) >= steady_status["published"]["alerts"] and steady_reader.values(), 30,
            "the steady worker's alerts")}
        steady_reader.close()
        assert len(expected) >= 4, expected  # the stream has drift: alerts to compare
        crash_reader = TopicReader(bootstrap, crashing_topics["alerts"])
        got = wait_until(lambda: {a["alert_id"] for a in (crash_reader.poll() and crash_reader.values())} >= expected
                         and {a["alert_id"] for a in crash_reader.values()}, 30, "the crashing worker's alerts",
                         detail=lambda: (f"missing: {sorted(expected - {a['alert_id'] for a in crash_reader.values()})}; "
                                         f"not expected: {sorted({a['alert_id'] for a in crash_reader.values()} - expected)}"))
        crash_reader.close()
        assert got == expected  # duplicates on the topic are allowed; different ids are not
    finally:
        for w in workers:
            w.stop()


def test_sigterm_saves_state_commits_and_exits_promptly(bootstrap, tmp_path):
    """Graceful shutdown: with checkpoints otherwise an hour apart, SIGTERM alone must save the
    state and commit, so a successor starts where it stopped (no replay, no repeated alert)."""
    import time

    topics = unique_topics()
    group = f"term-{topics['alerts'][-8:]}"
    env = {"STREAMPROC_CHECKPOINT_SECONDS": "3600"}
    args = ("--window-size", "500", "--warmup-size", "1000")
    first = WorkerProcess(bootstrap, topics, tmp_path / "first.log", args, env=env, group_id=group)
    first.wait_ready()
    events = ModelStream("term", n_numeric=3, seed=71, drift=Drift(2000, ("x0",), 1.5)).events(3000)
    produce(bootstrap, topics["predictions"], [json.dumps(e).encode() for e in events])
    wait_until(lambda: applied(first) == {"term": 3000}, 60, "the events applied")
    published = first.status()["published"]["alerts"]
    assert published >= 1
    started = time.monotonic()
    first.proc.send_signal(signal.SIGTERM)
    assert first.proc.wait(30) == 0
    assert time.monotonic() - started < 30
    first.stop()

    second = WorkerProcess(bootstrap, topics, tmp_path / "second.log", args, env=env, group_id=group)
    try:
        second.wait_ready()
        assert applied(second) == {"term": 3000}  # restored, not replayed
        reader = TopicReader(bootstrap, topics["alerts"])
        wait_until(lambda: len(reader.poll()) >= published, 30, "the first worker's alerts")
        reader.close()
        assert second.status()["published"]["alerts"] == 0
        assert len(reader.messages) == published
    finally:
        second.stop()
