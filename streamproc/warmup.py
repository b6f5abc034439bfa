"""A model version's warm-up: the events its reference will be built from, kept by column.

Until it has a reference, a model version keeps its first ``warmup_size`` events (2,000 by
default). Kept as decoded, a dict per event and a Python float per value, they took about
1,600 bytes an event with 20 numeric and 2 categorical features: 3.2 MB a model, some 32 GB
for 10,000 models warming up at once; and building the reference then read dicts long gone
from the CPU caches. Here events go into columns as they arrive (in runs of ``CHUNK`` or
more; fewer wait as dicts): a feature's numbers as C doubles, its other values as references
(one string object per distinct string). About 210 bytes an event of 22 features.

Nothing a reference depends on is lost (``build_reference`` gives the same reference from a
sample as from its rows; a test holds them equal): which features each event carried, and
every value as decoded, a number's type included (3 and 3.0 are the same number but different
categories, should the feature turn out categorical).

>>> sample = WarmupSample()
>>> sample.extend([{"x": 1.5, "c": "a"}, {"x": 2, "c": "b"}])
>>> sample.extend([{"x": None, "c": "a", "new": True}])
>>> len(sample), sample.floats("x").tolist(), sample.values("x"), sample.values("new")
(3, [1.5, 2.0, nan], [1.5, 2, None], [None, None, True])
>>> sample.kind("x"), sample.kind("c"), sample.present()
('numeric', 'categorical', {'x': 3, 'c': 3, 'new': 1})
"""

from __future__ import annotations

import math
from array import array
from collections import Counter
from itertools import chain, repeat
from operator import itemgetter
from typing import Any, Optional, Sequence

import numpy as np

from .columns import to_float_array
from .profile import NUMERIC, Kind, infer_kind

_NUMBER_TYPES = frozenset({float, int, type(None)})  # what JSON numbers and null decode to
_TEXT_TYPES = frozenset({str, type(None)})
_EXACT = 2.0 ** 53  # integers below this size are exact as doubles
DENSE_FEATURES = 1024  # features kept as columns; any further ones (ever-new names) sparsely
CHUNK = 32  # rows converted to columns at a time (fewer wait as dicts)
_NAN = array("d", [math.nan])


class _Column:
    """One feature's values, a row per event of the sample (absent: NaN, or None once the
    column holds objects). Rows of events before the feature first came, or since it last
    came, are filled in when it comes again (``fill``), so a feature seen once costs little."""

    __slots__ = ("numbers", "ints", "objects", "rows", "present")

    def __init__(self) -> None:
        self.numbers: Optional[array] = array("d")  # while every value is a JSON number or null
        self.ints: Optional[bytearray] = None  # 1 where a number was an int (None: no int yet)
        self.objects: Optional[list] = None  # the values as decoded, once some is not a plain number
        self.rows = 0  # rows held (the sample's rows, once filled in)
        self.present = 0  # events that carried the feature

    def fill(self, rows: int) -> None:
        """Absent values up to ``rows`` rows."""
        gap = rows - self.rows
        if gap > 0:
            if self.objects is None:
                self.numbers.extend(_NAN * gap)
                if self.ints is not None:
                    self.ints.extend(bytes(gap))
            else:
                self.objects.extend(repeat(None, gap))
            self.rows = rows

    def extend(self, values: Sequence[Any], strings: dict) -> None:
        n = len(values)
        types = set(map(type, values))
        if self.objects is None and types <= _NUMBER_TYPES:
            x = np.array(values, dtype=np.float64)  # null: NaN
            if int not in types:
                if self.ints is not None:
                    self.ints.extend(bytes(n))
                self.numbers.frombytes(x.tobytes())
                self.rows += n
                return
            if not (np.abs(x) >= _EXACT).any():  # (rounded: 2**53 + 1 reads 2**53)
                if self.ints is None:
                    self.ints = bytearray(len(self.numbers))
                self.ints.extend(map(isinstance, values, repeat(int)))
                self.numbers.frombytes(x.tobytes())
                self.rows += n
                return
        if self.objects is None:
            self.objects, self.numbers, self.ints = self.values(), None, None
        if types <= _TEXT_TYPES:  # one object per distinct string
            values = map(strings.setdefault, values, values)
        self.objects.extend(values)
        self.rows += n

    def values(self) -> list:
        """The values as decoded (None where absent)."""
        if self.objects is not None:
            return list(self.objects)
        out = [None if v != v else v for v in np.frombuffer(self.numbers, dtype=np.float64).tolist()] if self.numbers else []
        if self.ints is not None:
            out = [int(v) if is_int else v for v, is_int in zip(out, self.ints)]
        return out

    def floats(self) -> np.ndarray:
        """The values as float64, by the rules of ``columns.to_float_array``."""
        if self.objects is not None:
            return to_float_array(self.objects)
        return np.frombuffer(self.numbers, dtype=np.float64).copy() if self.numbers else np.empty(0)

    def kind(self) -> Kind:
        return NUMERIC if self.objects is None else infer_kind(self.objects)


class WarmupSample:
    """Feature rows kept by column (see the module's docstring); ``extend`` with chunks of
    rows (dicts, as decoded), then read back per feature."""

    __slots__ = ("count", "columns", "sparse", "_strings", "_pending")

    def __init__(self) -> None:
        self.count = 0  # rows in the columns
        # Rows not yet in columns: converting costs about 20 µs a chunk whatever its size, so
        # the small chunks of a busy worker's many models wait for CHUNK rows.
        self._pending: list[dict] = []
        self.columns: dict[str, _Column] = {}
        # Features past DENSE_FEATURES: feature -> {row: value}. Only a producer sending ever
        # new feature names gets here; kept as the dicts kept everything before.
        self.sparse: dict[str, dict[int, Any]] = {}
        self._strings: dict[str, str] = {}  # one object per distinct string (features' and labels')

    def __len__(self) -> int:
        return self.count + len(self._pending)

    def extend(self, rows: Sequence[dict]) -> None:
        if len(rows) >= CHUNK and not self._pending:
            self._add(rows)
            return
        self._pending.extend(rows)
        if len(self._pending) >= CHUNK:
            self._flush()

    def _flush(self) -> None:
        if self._pending:
            rows, self._pending = self._pending, []
            self._add(rows)

    def _add(self, rows: Sequence[dict]) -> None:
        n = len(rows)
        names: Optional[list] = list(rows[0])
        table = None
        if len(set(map(len, rows))) == 1:  # the usual chunk: every row has the first row's features
            try:
                table = list(zip(*map(_getter(names), rows))) if names else []
            except KeyError:
                pass
        seen = None
        if table is None:
            seen = Counter(chain.from_iterable(rows))
            names = list(seen)
            table = list(zip(*[tuple(map(row.get, names)) for row in rows]))
        start = self.count
        for name, values in zip(names, table):
            col = self.columns.get(name)
            if col is None and name not in self.sparse and len(self.columns) < DENSE_FEATURES:
                col = self.columns[name] = _Column()
            if col is None:
                target = self.sparse.setdefault(name, {})
                target.update((start + i, v) for i, v in enumerate(values) if seen is None or name in rows[i])
                continue
            col.fill(start)
            col.extend(values, self._strings)
            col.present += n if seen is None else seen[name]
        self.count += n

    def present(self) -> dict[str, int]:
        """How many events carried each feature (in the order features first came)."""
        self._flush()
        out = {name: col.present for name, col in self.columns.items()}
        out.update((name, len(rows)) for name, rows in self.sparse.items())
        return out

    def _column(self, name: str) -> _Column:
        self._flush()
        col = self.columns[name]
        col.fill(self.count)
        return col

    def values(self, name: str) -> list:
        """The feature's values, an item per event (None where absent)."""
        self._flush()
        if name in self.sparse:
            rows = self.sparse[name]
            return [rows.get(i) for i in range(self.count)]
        return self._column(name).values()

    def floats(self, name: str) -> np.ndarray:
        """The feature's values as float64 (``columns.to_float_array``'s rules; NaN where absent)."""
        self._flush()
        if name in self.sparse:
            return to_float_array(self.values(name))
        return self._column(name).floats()

    def kind(self, name: str) -> Kind:
        """``profile.infer_kind`` of the feature's values."""
        self._flush()
        if name in self.sparse:
            return infer_kind(self.values(name))
        return self._column(name).kind()


def _getter(names: Sequence[str]):
    """A row's values of ``names`` as a tuple (KeyError if one is absent)."""
    if len(names) == 1:
        name = names[0]
        return lambda row: (row[name],)
    return itemgetter(*names)


class Warmup:
    """What a model version without a reference keeps: its events' features (a
    ``WarmupSample``), prediction scores and labels; the events' ids and times are not needed."""

    __slots__ = ("features", "scores", "labels")

    def __init__(self) -> None:
        self.features = WarmupSample()
        self.scores = array("d")
        self.labels: list[Optional[str]] = []

    def __len__(self) -> int:
        return len(self.scores)

    @classmethod
    def of(cls, chunk) -> "Warmup":
        warmup = cls()
        warmup.extend(chunk)
        return warmup

    def extend(self, chunk) -> None:
        """Add a ``decode.PredictionBatch`` (its features dicts, or a ``FeatureTable``)."""
        features = chunk.features
        self.features.extend(features if isinstance(features, list) else features.rows())
        self.scores.extend(chunk.scores)
        strings = self.features._strings
        self.labels.extend(map(strings.setdefault, chunk.labels, chunk.labels))
