"""The worker's garbage-collection policy: paused within a batch, restored after it."""

import gc
import subprocess
import sys
import threading

import pytest

from streamproc.gc_policy import GC_THRESHOLD, gc_paused


def test_collection_is_paused_within_a_batch_and_restored_after_it_even_on_error():
    assert gc.isenabled()
    with gc_paused():
        assert not gc.isenabled()
        with gc_paused():  # nested (the router's batch inside the worker's turn): still paused
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(ValueError):
        with gc_paused():
            raise ValueError("a bug in a batch")
    assert gc.isenabled()


def test_sections_of_two_threads_overlapping_resume_collection_only_when_the_last_ends():
    # The worker's router runs in a thread of its own (streamproc.loop_thread): its batch may
    # end while the monitor's is in progress, and must not turn collection back on under it.
    entered, leave = threading.Event(), threading.Event()
    seen = []

    def other():
        with gc_paused():
            entered.set()
            leave.wait(10)
        seen.append(gc.isenabled())

    with gc_paused():
        thread = threading.Thread(target=other)
        thread.start()
        assert entered.wait(10)
    assert not gc.isenabled()  # the other thread's section goes on
    leave.set()
    thread.join(10)
    assert seen == [True] and gc.isenabled()


def test_a_collector_disabled_before_stays_disabled():
    gc.disable()
    try:
        with gc_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_tuning_freezes_what_exists_and_raises_the_young_threshold():
    # In a process of its own: freezing pytest's heap would outlive the test.
    out = subprocess.run([sys.executable, "-c", "import gc; from streamproc.gc_policy import tune_gc; tune_gc(); "
                          "print(gc.get_threshold()[0], gc.get_freeze_count() > 0)"],
                         capture_output=True, text=True, check=True).stdout.split()
    assert out == [str(GC_THRESHOLD), "True"]
