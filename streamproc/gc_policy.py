"""When the garbage collector runs in a worker: not in the middle of a batch.

CPython's cyclic collector runs every 700 container allocations and walks every young object;
decoding a batch allocates tens of thousands of containers that all stay alive until the batch
is done, so with the defaults collections run every few hundred events and examine the same
live objects again and again (measured: about 7 % of a worker's time with 200 models).
Reference counting still frees almost everything; only cyclic garbage waits for a collection.
"""

from __future__ import annotations

import gc
import threading
from contextlib import contextmanager

GC_THRESHOLD = 10_000  # allocations between young-generation collections (CPython's default: 700)


_pause = threading.Lock()
_paused = 0  # sections in progress, over all threads (the collector is the process's)
_was_enabled = False  # whether collection was on when the first of them began


@contextmanager
def gc_paused():
    """No garbage collection while a batch is decoded and applied (a section without awaits):
    its objects all live until it is done, so a collection then would examine every one of
    them for nothing (generation-1 collections took about 12 ms each). The next allocation
    afterwards collects as usual. Sections of several threads (the worker's router runs in a
    thread, ``streamproc.loop_thread``) may overlap: collection resumes when the last ends."""
    global _paused, _was_enabled
    with _pause:
        if not _paused:
            _was_enabled = gc.isenabled()
            gc.disable()
        _paused += 1
    try:
        yield
    finally:
        with _pause:
            _paused -= 1
            if not _paused and _was_enabled:
                gc.enable()


def tune_gc() -> None:
    """Keep the cyclic garbage collector off the hot path.

    Decoding a batch allocates tens of thousands of containers (an event, its features), so
    collections run every few hundred events, and each full one walks everything the process
    holds (faust, aiokafka, the models). Once started: move what exists to a permanent
    generation (never scanned again), and collect the young generation every 10,000
    allocations rather than 700. Memory is reclaimed by reference counting as before; only
    cyclic garbage waits longer.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_THRESHOLD, *gc.get_threshold()[1:])
