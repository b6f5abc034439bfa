"""A one-line progress report on stderr for long reads and sends.

Only drawn when enabled (the commands enable it when stderr is a terminal), at most twice a
second, and only once the work has lasted ``delay`` seconds, so short runs print nothing.
"""

from __future__ import annotations

import sys
import time
from typing import Callable, Optional, TextIO


class CountingLines:
    """The lines of a file opened in binary mode, decoded, counting the bytes read.

    ``tell()`` is not available on a text file being iterated (``csv`` iterates it), so readers
    that report progress by bytes read the file through this instead.
    """

    def __init__(self, binary_file, encoding: str = "utf-8"):
        self.file = binary_file
        self.encoding = encoding
        self.done = 0

    def __iter__(self):
        for n, line in enumerate(self.file, 1):
            self.done += len(line)
            text = self._decode(n, line)
            yield text.removeprefix("\ufeff") if n == 1 else text  # (a byte order mark, as spreadsheets write)

    def _decode(self, n: int, line: bytes) -> str:
        """Line ``n`` as text (a subclass may keep what it cannot decode; see ``produce``)."""
        return line.decode(self.encoding)


class Progress:
    """``\\r<label>: 42.0% (12,000 rows, 3,100/s)``, redrawn in place."""

    def __init__(self, label: str, total: float, enabled: bool, unit: str = "rows", delay: float = 0.5,
                 interval: float = 0.5, stream: Optional[TextIO] = None, clock: Callable[[], float] = time.monotonic):
        self.label = label
        self.total = max(total, 1)
        self.enabled = enabled
        self.unit = unit
        self.interval = interval
        self.stream = stream
        self.clock = clock
        self.started = clock()
        self.last = self.started - interval + delay  # the first line waits ``delay`` seconds
        self.shown = False

    def update(self, done: float, count: int, final: bool = False) -> None:
        """``done`` out of ``total`` (bytes, events...), ``count`` items so far."""
        if not self.enabled:
            return
        now = self.clock()
        if final and not self.shown:
            return  # it was quick: no bar at all
        if not final and now - self.last < self.interval:
            return
        self.last = now
        self.shown = True
        pct = 100.0 * min(done / self.total, 1.0)
        elapsed = now - self.started
        rate = f", {count / elapsed:,.0f}/s" if elapsed > 0 else ""
        stream = self.stream or sys.stderr
        stream.write(f"\r{self.label}: {pct:5.1f}% ({count:,} {self.unit}{rate})" + ("\n" if final else ""))
        stream.flush()
