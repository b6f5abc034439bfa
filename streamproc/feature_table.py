"""Feature values decoded straight into columns, for model versions whose reference is known.

Keeping a batch's events as decoded dicts, with a Python float per numeric value, costs more
than decoding them: 20,000 events of 22 features are some 40 MB of objects, which have left
the CPU caches by the time the window sketches read them back (measured: msgspec decoding
1.7 µs/event slower when a batch's events are all kept than when each is dropped at once).
Once a model version has a reference, its features and their kinds are known, so decoding
copies each event's numeric values into one growing array of C doubles and its other values
into one tuple, and drops the dict while it is still in cache. Model versions still warming
up keep their dicts: the reference is built from them.

Numeric values convert by the rules of ``columns.to_float_array`` (numbers, booleans as 1/0,
numeric strings; null, absent and anything else NaN), so sketches do not depend on which path
an event took.

>>> layout = FeatureLayout(["x", "y"], ["c"])
>>> table = FeatureTable(layout)
>>> for row in ({"x": 1.0, "y": 2, "c": "a"}, {"x": None, "y": "3", "c": "b"}, {"x": 4.0, "c": "a", "new": 1}):
...     table.add(row)
>>> table.numeric_matrix(["x", "y"]).tolist()
[[1.0, nan, 4.0], [2.0, 3.0, nan]]
>>> table.columns(["c"])
[('a', 'b', 'a')]
>>> sorted(table.unknown_names()), len(table[1:])
(['new'], 2)
"""

from __future__ import annotations

import struct
from array import array
from bisect import bisect_left
from operator import itemgetter
from typing import Callable, Optional, Sequence

import numpy as np

from .columns import _as_float, to_float_array
from .identity_cache import IdentityCache


def row_getter(names: Sequence[str]) -> Callable[[dict], tuple]:
    """``itemgetter(*names)``, always returning a tuple (KeyError when a name is absent)."""
    if not names:
        return lambda row: ()
    if len(names) == 1:
        name = names[0]
        return lambda row: (row[name],)
    return itemgetter(*names)


class FeatureLayout:
    """Which features a model version's events are expected to carry, numeric ones first, and
    which they may carry besides without being irregular (``skipped``: features the monitor is
    told to ignore, or that its reference dropped). ``order``: all of the expected ones in the
    order events are likely to carry them (the reference's), for ``model_decoder``."""

    __slots__ = ("numeric", "other", "width", "known", "skipped", "get_numeric", "get_other", "pack_numeric",
                 "order", "in_order", "pick_numeric", "pick_other")

    def __init__(self, numeric: Sequence[str], other: Sequence[str], skipped: Sequence[str] = (),
                 order: Sequence[str] = ()):
        self.numeric = tuple(numeric)
        self.other = tuple(other)
        self.known = frozenset(self.numeric + self.other)
        self.skipped = frozenset(skipped) - self.known
        self.width = len(self.known)
        self.get_numeric = row_getter(self.numeric)
        self.get_other = row_getter(self.other)
        self.order = tuple(order) or self.numeric + self.other
        if sorted(self.order) != sorted(self.known):
            raise ValueError("order must hold each expected feature once")
        # Values in ``order`` to (numeric, other): slices when that is numeric then other.
        self.in_order = self.order == self.numeric + self.other
        where = {name: i for i, name in enumerate(self.order)}
        self.pick_numeric = row_getter([where[n] for n in self.numeric])
        self.pick_other = row_getter([where[n] for n in self.other])
        # Numbers to C doubles in one call (struct.error for anything else): about half the
        # time of array.extend, which converts value by value.
        self.pack_numeric = struct.Struct(f"{len(self.numeric)}d").pack


class FeatureTable:
    """The feature rows of one model version's events, laid out by a ``FeatureLayout``.

    A row with exactly the layout's features is stored as its values only; any other row (a
    feature absent, or one the layout lacks) is also kept whole, so nothing it said is lost.
    """

    __slots__ = ("layout", "_numbers", "others", "irregular", "_keys")

    def __init__(self, layout: FeatureLayout, numbers=None, others: Optional[list] = None,
                 irregular: Optional[dict] = None):
        self.layout = layout
        self._numbers = array("d") if numbers is None else numbers  # row-major; an (n, k) array once read
        self.others: list[tuple] = [] if others is None else others
        self.irregular: dict[int, dict] = {} if irregular is None else irregular  # row -> the row as decoded
        self._keys: Optional[list[int]] = None

    def add(self, row: dict) -> None:
        """Append one event's features (the decoder's per-event step: two C-level lookups and
        a copy into the array)."""
        lay = self.layout
        try:
            if len(row) != lay.width:
                extra = row.keys() - lay.known  # only skipped features besides all known ones?
                if len(row) - len(extra) != lay.width or not extra <= lay.skipped:
                    raise KeyError
            nums = lay.get_numeric(row)
            other = lay.get_other(row)
        except KeyError:
            self._add_irregular(row)
            return
        try:
            packed = lay.pack_numeric(*nums)
        except struct.error:  # null, a string or a huge integer among them: value by value
            packed = lay.pack_numeric(*map(_as_float, nums))
        self._numbers.frombytes(packed)
        self.others.append(other)

    def add_values(self, values: tuple) -> None:
        """Append a regular row given as its values in the layout's ``order`` (then any skipped
        ones), as ``model_decoder`` decodes it: what ``add`` stores for it."""
        lay = self.layout
        if lay.in_order:
            k = len(lay.numeric)
            nums, other = values[:k], values[k:lay.width]
        else:
            nums, other = lay.pick_numeric(values), lay.pick_other(values)
        try:
            packed = lay.pack_numeric(*nums)
        except struct.error:
            packed = lay.pack_numeric(*map(_as_float, nums))
        self._numbers.frombytes(packed)
        self.others.append(other)

    def _add_irregular(self, row: dict) -> None:
        self._numbers.frombytes(to_float_array(tuple(map(row.get, self.layout.numeric))).tobytes())
        self.irregular[len(self.others)] = row
        self.others.append(tuple(map(row.get, self.layout.other)))

    def __len__(self) -> int:
        return len(self.others)

    @property
    def numbers(self) -> np.ndarray:
        """The numeric values, shape (rows, numeric features)."""
        if isinstance(self._numbers, array):
            k = len(self.layout.numeric)
            flat = np.frombuffer(self._numbers, dtype=np.float64) if len(self._numbers) else np.empty(0)
            self._numbers = flat.reshape(len(self.others), k)
        return self._numbers

    def __getitem__(self, where: slice) -> "FeatureTable":
        start, stop, step = where.indices(len(self))
        if step != 1:
            raise ValueError("only contiguous slices")
        irregular = {}
        if self.irregular:  # its keys ascend (rows are added, sliced and taken in order)
            keys = list(self.irregular) if len(self.irregular) < 64 else self._irregular_keys()
            for i in keys[bisect_left(keys, start):bisect_left(keys, stop)]:
                irregular[i - start] = self.irregular[i]
        return FeatureTable(self.layout, self.numbers[start:stop], self.others[start:stop], irregular)

    def _irregular_keys(self) -> list[int]:
        """The irregular rows' indices, ascending; kept once the table is complete (slicing a
        batch into panes would otherwise scan them all per pane)."""
        if self._keys is None or len(self._keys) != len(self.irregular):
            self._keys = list(self.irregular)
        return self._keys

    def take(self, indices: list[int]) -> "FeatureTable":
        """The rows at ``indices``, in that order."""
        irregular = self.irregular
        return FeatureTable(self.layout, self.numbers[np.asarray(indices, dtype=np.intp)],
                            [self.others[i] for i in indices],
                            {j: irregular[i] for j, i in enumerate(indices) if i in irregular} if irregular else {})

    def numeric_matrix(self, names: Sequence[str]) -> np.ndarray:
        """Numeric features as float64 of shape (len(names), rows), like ``columns.numeric_columns``."""
        lay = self.layout
        if tuple(names) == lay.numeric:
            return np.ascontiguousarray(self.numbers.T)
        index = {name: j for j, name in enumerate(lay.numeric)}
        out = np.full((len(names), len(self)), np.nan)
        for j, name in enumerate(names):
            if name in index:
                out[j] = self.numbers[:, index[name]]
            else:
                column = self.columns([name])[0]
                out[j] = [_as_float(v) for v in column]
        return out

    def columns(self, names: Sequence[str]) -> list[Sequence]:
        """The values of ``names``, one sequence per name (None where a row lacks one), like
        ``columns.raw_columns``; numeric features of the layout read back as floats."""
        if tuple(names) == self.layout.other and self.others:
            return list(zip(*self.others))
        index = {name: j for j, name in enumerate(self.layout.other)}
        numeric = {name: j for j, name in enumerate(self.layout.numeric)}
        out: list[Sequence] = []
        for name in names:
            if name in index:
                j = index[name]
                out.append([o[j] for o in self.others])
            elif name in numeric:
                out.append(self.numbers[:, numeric[name]].tolist())
            else:
                out.append([self.irregular[i].get(name) if i in self.irregular else None for i in range(len(self))])
        return out

    def unknown_names(self) -> set[str]:
        """Features some row carried that the layout does not have."""
        known = self.layout.known
        return {name for row in self.irregular.values() for name in row if name not in known}

    def rows(self) -> list[dict]:
        """The rows as dicts (numeric features of the layout as floats)."""
        lay = self.layout
        numbers = self.numbers.tolist()
        out = []
        for i, (nums, other) in enumerate(zip(numbers, self.others)):
            row = self.irregular.get(i)
            if row is None:
                row = dict(zip(lay.numeric, nums))
                row.update(zip(lay.other, other))
            out.append(row)
        return out


_LAYOUTS = IdentityCache(4096)  # the model versions decoded most recently


def layout_for(reference, ignored: Sequence[str] = ()) -> FeatureLayout:
    """The layout of a ``ReferenceProfile``'s features (numeric, then the rest, each in the
    reference's order; the ``ignored`` features and those it dropped skipped), cached per
    reference (see ``streamproc.identity_cache``: bounded, and the reference held weakly)."""
    ignored = tuple(ignored)

    def build() -> FeatureLayout:
        from .profile import NUMERIC

        features = reference.features
        return FeatureLayout([n for n, p in features.items() if p.kind == NUMERIC],
                             [n for n, p in features.items() if p.kind != NUMERIC],
                             ignored + tuple(reference.dropped_features), order=tuple(features))

    return _LAYOUTS.get((reference,), build, ignored)
