"""The worker's garbage-collection policy: paused within a batch, restored after it."""

import gc
import subprocess
import sys

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
