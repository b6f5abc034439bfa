"""An asyncio event loop in a thread of its own, for work that must not wait for the main loop.

The repartitioning worker's router (``streamproc.router``) runs here (``ROUTER_THREAD`` in
``streamproc.worker``): on the worker's own loop it could only forward between the monitor's
batches (50-80 ms each under load), and every hop of a routed event (its fetch, its
forwarding, the delivery of its envelope) waited for one, so alerts waited several batches.
On a loop of its own its clients talk to the broker while the monitor computes; Python code of
both still takes turns on the interpreter lock (``sys.getswitchinterval()``, 5 ms after each
wait for I/O), so the router waits a few switch intervals, not a batch.

Objects of one loop (aiokafka clients, locks, events) are used only from coroutines run on it:
``run`` submits one from the caller's loop and returns an awaitable of its result.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any, Awaitable, Callable, Coroutine


class LoopThread:
    """A running event loop in a daemon thread.

    >>> async def where():
    ...     return threading.current_thread().name
    >>> async def main():
    ...     thread = LoopThread("example")
    ...     try:
    ...         return await thread.run(where())
    ...     finally:
    ...         thread.close()
    >>> asyncio.run(main())
    'example'
    """

    def __init__(self, name: str):
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def run(self, coro: Coroutine) -> Awaitable[Any]:
        """Run ``coro`` on this loop; await the result from the caller's loop (cancelling that
        cancels the coroutine)."""
        return asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self.loop))

    def call(self, fn: Callable, *args) -> None:
        """Call ``fn(*args)`` on this loop, soon (nothing once it is closed)."""
        if not self.loop.is_closed():
            self.loop.call_soon_threadsafe(fn, *args)

    def close(self, timeout: float = 10.0) -> None:
        """Cancel the loop's tasks and wait for them (as ``asyncio.run`` does at its end), stop
        the loop, wait for the thread, close the loop."""
        if self.loop.is_closed():
            return
        try:
            asyncio.run_coroutine_threadsafe(_cancel_tasks(), self.loop).result(timeout)
        except Exception:  # (a task that will not finish: the loop is stopped anyway)
            pass
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout)
        if not self._thread.is_alive():
            self.loop.close()


async def _cancel_tasks() -> None:
    tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


class InlineLoop:
    """``LoopThread``'s interface on the caller's own loop: what the worker's router uses while
    its own thread is off (``streamproc.worker.ROUTER_THREAD``)."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()

    def run(self, coro: Coroutine) -> Awaitable[Any]:
        return asyncio.ensure_future(coro)

    def call(self, fn: Callable, *args) -> None:
        self.loop.call_soon(fn, *args)

    def close(self, timeout: float = 10.0) -> None:
        pass
