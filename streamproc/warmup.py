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
categories, should the feature turn out categorical); only a NaN reads back as null (JSON has
no NaN, and both are missing values). A feature most events lack, or one of a producer
sending ever-new names, is kept as {row: value}, as the dicts kept it.

A worker bounds the memory of all its warm-ups (``worker.warmup_memory_mb``): over it, the
engine thins them (``Warmup.thin``), and a thinned warm-up keeps every n-th event.

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
import sys
from array import array
from collections import Counter
from itertools import chain, islice, repeat
from typing import Any, Iterable, Optional, Sequence

import numpy as np

from .columns import to_float_array
from .feature_table import row_getter
from .profile import CATEGORICAL, NUMERIC, Kind, infer_kind

_NUMBER_TYPES = frozenset({float, int, type(None)})  # what JSON numbers and null decode to
_TEXT_TYPES = frozenset({str, type(None)})
_EXACT = 2.0 ** 53  # integers below this size are exact as doubles
DENSE_FEATURES = 1024  # features kept as columns; any further ones (ever-new names) sparsely
CHUNK = 32  # rows converted to columns at a time (fewer wait as dicts)
_NAN = array("d", [math.nan])
# Thinning stops before more than this share of a categorical feature's kept values would be of
# categories kept fewer than RARE times (see ``Warmup.thinnable``).
MAX_RARE_SHARE = 0.05
RARE = 5
_SPARSE_ENTRY = 100  # bytes a {row: value} entry costs, about (the int, the slot, the dict's growth)


def _string_bytes(strings: Iterable[str]) -> int:
    """Bytes of distinct strings held once each in a dict (the string, and its entry), about."""
    return sum(sys.getsizeof(v) + 40 for v in strings)


def _canonical(values: Sequence, strings: dict) -> Sequence:
    """The values, each string as ``strings``' one object for it (added if new)."""
    if any(type(v) is str for v in values):
        return [strings.setdefault(v, v) if type(v) is str else v for v in values]
    return values


def _sparse_bytes(item: tuple[str, dict]) -> int:
    """Bytes of a sparse feature: its name, its dict, its entries (about)."""
    name, rows = item
    return sys.getsizeof(name) + 300 + _SPARSE_ENTRY * len(rows)


class _Column:
    """One feature's values from the sample's row ``start`` on (absent: NaN, or None once the
    column holds objects); rows before ``start`` and after those held are absent, and a gap is
    filled in only when the feature comes again."""

    __slots__ = ("start", "numbers", "ints", "objects", "absent", "rows", "present")

    def __init__(self, start: int) -> None:
        self.start = start  # the sample row of the first value held
        self.numbers: Optional[array] = array("d")  # while every value is a JSON number or null
        self.ints: Optional[bytearray] = None  # 1 where a number was an int (None: no int yet)
        self.objects: Optional[list] = None  # the values as decoded, once some is not a plain number
        # 1 where the row lacked the feature (None: every row held carried it); a NaN or None
        # alone cannot tell an absent value from a null one.
        self.absent: Optional[bytearray] = None
        self.rows = 0  # rows held
        self.present = 0  # events that carried the feature

    def extend(self, at: int, values: Sequence[Any], strings: dict, absent: Optional[list[bool]] = None) -> None:
        """Add the values of sample rows ``at`` on (absent values first up to ``at``);
        ``absent``: which of them the rows lacked (None: none)."""
        gap = at - self.start - self.rows
        if gap > 0:
            if self.objects is None:
                self.numbers.extend(_NAN * gap)
                if self.ints is not None:
                    self.ints.extend(bytes(gap))
            else:
                self.objects.extend(repeat(None, gap))
            self._flag_absent(b"\x01" * gap)
            self.rows += gap
        n = len(values)
        if absent is not None and any(absent):
            self._flag_absent(absent)
        elif self.absent is not None:
            self.absent.extend(bytes(n))
        types = set(map(type, values))
        if self.objects is None and types <= _NUMBER_TYPES:
            try:
                x = np.array(values, dtype=np.float64)  # null: NaN
            except OverflowError:  # an integer beyond any double: kept as an object
                x = None
            # Integers are kept as doubles only while exact (rounded, 2**53 + 1 reads 2**53).
            if x is not None and (int not in types or not (np.abs(x) >= _EXACT).any()):
                if int in types:
                    if self.ints is None:
                        self.ints = bytearray(len(self.numbers))
                    self.ints.extend(map(isinstance, values, repeat(int)))
                elif self.ints is not None:
                    self.ints.extend(bytes(n))
                self.numbers.frombytes(x.tobytes())
                self.rows += n
                return
        if self.objects is None:
            self.objects, self.numbers, self.ints = self._held(), None, None
        if types <= _TEXT_TYPES:  # one object per distinct string
            values = map(strings.setdefault, values, values)
        elif str in types:
            values = _canonical(values, strings)
        self.objects.extend(values)
        self.rows += n

    def __getstate__(self):
        # Without ``absent`` while None: as earlier versions saved a column, so they can read it.
        return None, {name: getattr(self, name) for name in self.__slots__ if name != "absent" or self.absent is not None}

    def __setstate__(self, state) -> None:
        self.absent = None
        self.start = 0  # (the first columnar version's columns had no start: they began at row 0)
        for name, value in state[1].items():
            setattr(self, name, value)
        if "absent" not in state[1] and self.present < self.rows:
            # Saved by an earlier version, which counted absences but did not flag them: they
            # are among the nulls (exact when no value was null; else nulls count as absent).
            held = self.objects if self.objects is not None else np.isnan(np.frombuffer(self.numbers, dtype=np.float64))
            self.absent = bytearray(v is None for v in held) if self.objects is not None else bytearray(held.view(np.uint8))
            self.present = self.rows - self.absent.count(1)

    def _flag_absent(self, flags) -> None:
        if self.absent is None:
            self.absent = bytearray(self.rows)
        self.absent.extend(flags)

    def thin(self, k: int) -> None:
        """Keep the values of the sample rows that are multiples of ``k``, renumbered (row r
        becomes r // k)."""
        first = (-self.start) % k
        kept = len(range(first, self.rows, k))
        if self.numbers is not None:
            self.numbers = self.numbers[first::k]
        if self.ints is not None:
            self.ints = self.ints[first::k]
        if self.objects is not None:
            self.objects = self.objects[first::k]
        self.present = kept
        if self.absent is not None:
            self.absent = self.absent[first::k]
            self.present -= self.absent.count(1)
        self.start = (self.start + first) // k
        self.rows = kept

    def nbytes(self) -> int:
        """Bytes the column holds, estimated: its buffers, or a pointer and a share of a boxed value per object."""
        flags = (len(self.ints) if self.ints is not None else 0) + (len(self.absent) if self.absent is not None else 0)
        if self.objects is not None:
            return 24 * len(self.objects) + flags
        return 8 * len(self.numbers) + flags

    def _held(self) -> list:
        if self.objects is not None:
            return list(self.objects)
        out = [None if v != v else v for v in np.frombuffer(self.numbers, dtype=np.float64).tolist()] if self.numbers else []
        if self.ints is not None:
            out = [int(v) if is_int else v for v, is_int in zip(out, self.ints)]
        return out

    def values(self, rows: int) -> list:
        """The values of the sample's ``rows`` rows as decoded (None where absent)."""
        after = rows - self.start - self.rows
        return [None] * self.start + self._held() + [None] * after

    def floats(self, rows: int) -> np.ndarray:
        """The values of the sample's ``rows`` rows as float64 (``columns.to_float_array``'s
        rules; NaN where absent)."""
        out = np.full(rows, np.nan)
        if self.rows:
            held = to_float_array(self.objects) if self.objects is not None else np.frombuffer(self.numbers, dtype=np.float64)
            out[self.start:self.start + self.rows] = held
        return out

    def kind(self) -> Kind:
        return NUMERIC if self.objects is None else infer_kind(self.objects)


class WarmupSample:
    """Feature rows kept by column (see the module's docstring); ``extend`` with chunks of
    rows (dicts, as decoded), then read back per feature."""

    __slots__ = ("count", "columns", "sparse", "_strings", "_pending", "_extra")

    def __init__(self) -> None:
        self.count = 0  # rows in the columns
        # Rows not yet in columns: converting costs about 20 µs a chunk whatever its size, so
        # the small chunks of a busy worker's many models wait for CHUNK rows.
        self._pending: list[dict] = []
        self.columns: dict[str, _Column] = {}
        # Features kept as {row: value}: those a chunk that had them mostly lacked when they
        # first came (optional ones; a producer sending ever-new names), and any past
        # DENSE_FEATURES. They cost what the dicts cost.
        self.sparse: dict[str, dict[int, Any]] = {}
        self._strings: dict[str, str] = {}  # one object per distinct string (features', labels')
        self._extra = 0  # bytes of the strings and the sparse features, estimated (see ``nbytes``)

    def __getstate__(self):
        # Without the estimate (derived), as earlier versions saved a sample, so they can read it.
        return None, {name: getattr(self, name) for name in self.__slots__ if name != "_extra"}

    def __setstate__(self, state) -> None:
        for name, value in state[1].items():
            setattr(self, name, value)
        self._recount()

    def _recount(self) -> None:
        self._extra = _string_bytes(self._strings) + sum(map(_sparse_bytes, self.sparse.items()))

    def intern(self, values: Sequence) -> Sequence:
        """The values, each string as the sample's one object for it (counted if new)."""
        before = len(self._strings)
        out = _canonical(values, self._strings)
        self._count_strings(before)
        return out

    def _count_strings(self, before: int) -> None:
        added = len(self._strings) - before
        if added:
            self._extra += _string_bytes(islice(reversed(self._strings), added))

    def __len__(self) -> int:
        return self.count + len(self._pending)

    @property
    def waiting(self) -> int:
        """Rows waiting as dicts."""
        return len(self._pending)

    def extend(self, rows: Sequence[dict], chunk: int = 0) -> None:
        """Add rows; fewer than ``chunk`` (default ``CHUNK``) wait as dicts for more."""
        chunk = chunk or CHUNK
        if len(rows) >= chunk and not self._pending:
            self._add(rows)
            return
        self._pending.extend(rows)
        if len(self._pending) >= chunk:
            self.flush()

    def flush(self) -> None:
        """Convert the rows waiting as dicts to columns."""
        if self._pending:
            rows, self._pending = self._pending, []
            self._add(rows)

    def _dense(self, name: str, share: int, n: int) -> bool:
        """Whether ``name`` is (or becomes) a column: present in ``share`` of ``n`` rows."""
        if name in self.columns:
            return True
        return name not in self.sparse and 2 * share >= n and len(self.columns) < DENSE_FEATURES

    def _add(self, rows: Sequence[dict]) -> None:
        n = len(rows)
        start = self.count
        strings_before = len(self._strings)
        names = list(rows[0]) if n else []
        table = None
        if len(set(map(len, rows))) <= 1:  # the usual chunk: every row has the first row's features
            try:
                table = list(zip(*map(row_getter(names), rows)))
            except KeyError:
                pass
        if table is not None:
            for name, values in zip(names, table):
                if self._dense(name, n, n):
                    col = self._column(name, start)
                    col.extend(start, values, self._strings)
                    col.present += n
                else:
                    self._sparse(name).update(zip(range(start, start + n), _canonical(values, self._strings)))
                    self._extra += _SPARSE_ENTRY * n
        else:
            seen = Counter(chain.from_iterable(rows))
            for name in [name for name, share in seen.items() if self._dense(name, share, n)]:
                col = self._column(name, start)
                col.extend(start, [row.get(name) for row in rows], self._strings, [name not in row for row in rows])
                col.present += seen[name]
            rare = {name: self._sparse(name) for name in seen if name not in self.columns}
            if rare:
                for i, row in enumerate(rows, start):
                    for name, value in row.items():
                        target = rare.get(name)
                        if target is not None:
                            target[i] = self._strings.setdefault(value, value) if type(value) is str else value
                self._extra += _SPARSE_ENTRY * sum(seen[name] for name in rare)
        self._count_strings(strings_before)
        self.count += n

    def _sparse(self, name: str) -> dict:
        rows = self.sparse.get(name)
        if rows is None:
            rows = self.sparse[name] = {}
            self._extra += _sparse_bytes((name, rows))
        return rows

    def _column(self, name: str, start: int) -> _Column:
        col = self.columns.get(name)
        if col is None:
            col = self.columns[name] = _Column(start)
        return col

    def thin(self, k: int, strings_used: Iterable = ()) -> None:
        """Keep every ``k``-th row (rows 0, k, 2k, ...), renumbered: the sample of a warm-up
        that must take less memory (see ``Warmup.thin``). Strings no longer held are let go,
        but for those in ``strings_used`` (held elsewhere, as the warm-up's labels)."""
        self.flush()
        if k <= 1:
            return
        for col in self.columns.values():
            col.thin(k)
        self.columns = {name: col for name, col in self.columns.items() if col.present}
        sparse = {name: {r // k: v for r, v in rows.items() if r % k == 0} for name, rows in self.sparse.items()}
        self.sparse = {name: rows for name, rows in sparse.items() if rows}
        self.count = len(range(0, self.count, k))
        held = chain(strings_used, *(col.objects for col in self.columns.values() if col.objects is not None),
                     *(rows.values() for rows in self.sparse.values()))
        self._strings = {v: v for v in held if type(v) is str}
        self._recount()

    def categorical_columns(self) -> list[list]:
        """The values of each categorical feature, kept as a column or sparsely, one per row of
        the sample (None where absent): row ``r`` at index ``r``, as ``thin`` counts rows."""
        self.flush()
        return [self.values(name) for name in [*self.columns, *self.sparse] if self.kind(name) == CATEGORICAL]

    def nbytes(self) -> int:
        """Bytes held, estimated: columns, strings (each distinct one once, by its size), sparse
        features (their names, dicts and entries) and the rows waiting as dicts (the dict and a
        boxed value per entry; their strings are not looked at)."""
        pending = sum(map(sys.getsizeof, self._pending)) + 32 * sum(map(len, self._pending))
        return pending + sum(col.nbytes() for col in self.columns.values()) + self._extra

    def present(self) -> dict[str, int]:
        """How many events carried each feature (in the order features first came)."""
        self.flush()
        out = {name: col.present for name, col in self.columns.items()}
        out.update((name, len(rows)) for name, rows in self.sparse.items())
        return out

    def values(self, name: str) -> list:
        """The feature's values, an item per event (None where absent)."""
        self.flush()
        if name in self.sparse:
            rows = self.sparse[name]
            return [rows.get(i) for i in range(self.count)]
        return self.columns[name].values(self.count)

    def floats(self, name: str) -> np.ndarray:
        """The feature's values as float64 (``columns.to_float_array``'s rules; NaN where absent)."""
        self.flush()
        if name in self.sparse:
            return to_float_array(self.values(name))
        return self.columns[name].floats(self.count)

    def kind(self, name: str) -> Kind:
        """``profile.infer_kind`` of the feature's values."""
        self.flush()
        if name in self.sparse:
            return infer_kind(self.values(name))
        return self.columns[name].kind()


class Warmup:
    """What a model version without a reference keeps: its events' features (a
    ``WarmupSample``), prediction scores and labels; the events' ids and times are not needed.

    ``len`` is the events the warm-up has taken. Normally it keeps them all; under memory
    pressure (``thin``) it keeps every ``stride``-th (events 0, stride, 2*stride, ...), spread
    evenly over the warm-up, and the reference is built from those.
    """

    __slots__ = ("features", "scores", "labels", "seen", "stride")

    def __init__(self) -> None:
        self.features = WarmupSample()
        self.scores = array("d")
        self.labels: list[Optional[str]] = []
        self.seen = 0  # events taken
        self.stride = 1  # every stride-th event is kept

    def __getstate__(self):
        # Unthinned (seen == kept), without the two fields earlier versions lack: they can read it.
        slots = {name: getattr(self, name) for name in self.__slots__}
        if self.stride == 1:
            del slots["seen"], slots["stride"]
        return None, slots

    def __setstate__(self, state) -> None:
        _, slots = state if isinstance(state, tuple) else (None, state)
        self.seen, self.stride = len(slots["scores"]), 1  # unthinned, or saved before thinning existed
        for name, value in slots.items():
            setattr(self, name, value)

    def __len__(self) -> int:
        return self.seen

    @property
    def kept(self) -> int:
        """Events kept (``len`` unless thinned)."""
        return len(self.scores)

    @classmethod
    def of(cls, chunk) -> "Warmup":
        warmup = cls()
        warmup.extend(chunk)
        return warmup

    def extend(self, chunk) -> None:
        """Add a ``decode.PredictionBatch`` (its features dicts, or a ``FeatureTable``)."""
        n = len(chunk)
        first = (-self.seen) % self.stride
        self.seen += n
        if self.stride > 1:
            if first >= n:
                return
            chunk = chunk.take(list(range(first, n, self.stride)))
        features = chunk.features
        # Thinned, rows come stride times slower: they wait for as many events, not rows (a
        # row waiting as a dict costs ten times one in columns).
        self.features.extend(features if isinstance(features, list) else features.rows(), max(1, CHUNK // self.stride))
        self.scores.extend(chunk.scores)
        self.labels.extend(self.features.intern(chunk.labels))

    def thinnable(self, k: int = 2) -> bool:
        """Whether keeping every ``k``-th kept event would still count every category of each
        categorical feature, and of the predicted label, often enough.

        A reference holds a bin per category: one its sample lacks is counted as unseen in
        every window, and one it holds a couple of times gets a proportion that is mostly
        noise, which PSI's chi-square correction does not cover (it needs a few events in
        each bin). A feature with a long tail of rare categories then raises false alarms. So
        among the values that would be kept, those of categories kept fewer than ``RARE``
        times may be at most ``MAX_RARE_SHARE`` (the share of categories kept once is
        Good-Turing's estimate of the probability of one not kept at all).

        >>> warm = Warmup()
        >>> warm.labels = ["a", "b"] * 50
        >>> warm.thinnable(2), (setattr(warm, "labels", [f"l{i % 40}" for i in range(100)]) or warm.thinnable(2))
        (True, False)
        """
        for values in [*self.features.categorical_columns(), self.labels]:
            kept = [v for v in values[::k] if v is not None]
            rare = sum(c for c in Counter(kept).values() if c < RARE)
            if rare > MAX_RARE_SHARE * len(kept):
                return False
        return True

    def thin(self, stride: int) -> None:
        """Keep only every ``stride``-th event from now on, and of those kept so far (``stride``
        a multiple of the current one)."""
        if stride % self.stride:
            raise ValueError(f"stride {stride} is not a multiple of {self.stride}")
        k = stride // self.stride
        if k > 1:
            self.scores = self.scores[::k]
            self.labels = self.labels[::k]
            self.features.thin(k, self.labels)
            self.stride = stride

    def nbytes(self) -> int:
        """Bytes held, estimated (``WarmupSample.nbytes``, and the scores and labels)."""
        return self.features.nbytes() + 16 * len(self.scores)
