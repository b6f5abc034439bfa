"""Feature rows (one dict per event) turned into columns, once per chunk.

The hot path gets its events as dicts (one per event, as decoded); binning wants one array
per feature. The conversions here make one C-level pass per row for all requested features
(``operator.itemgetter``), never a Python step per (event, feature).
"""

from __future__ import annotations

from itertools import chain
from operator import itemgetter
from typing import Any, Sequence

import numpy as np


def _as_float(v: Any) -> float:
    if v is None:
        return np.nan
    try:
        return float(v)  # numbers, booleans (1.0 / 0.0) and numeric strings
    except (TypeError, ValueError, OverflowError):
        return np.nan


def to_float_array(values: Sequence[Any]) -> np.ndarray:
    """Values of a numeric feature as float64.

    Numbers are themselves, booleans 1.0/0.0, strings that spell a number that number; null
    and anything else is NaN (missing). numpy's conversion follows the same rules, so the fast
    path and the per-value fallback agree.
    """
    try:
        return np.array(values, dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        return np.array([_as_float(v) for v in values], dtype=np.float64)


def row_table(rows: list[dict], names: list[str]) -> list[tuple]:
    """One tuple per row of the values of ``names`` (two or more; None where a row lacks one):
    a C-level pass per row, or a slower one when some row lacks a name."""
    get = itemgetter(*names)
    try:
        return list(map(get, rows))
    except KeyError:
        return [tuple(map(r.get, names)) for r in rows]


def raw_columns(rows: list[dict], names: list[str]) -> list[Sequence]:
    """The values of ``names`` in ``rows``, one sequence per name (None where a row lacks it).

    >>> raw_columns([{"a": 1, "b": "x"}, {"a": 2}], ["a", "b"])
    [(1, 2), ('x', None)]
    """
    if not rows or not names:
        return [() for _ in names]
    if len(names) == 1:
        name = names[0]
        return [[r.get(name) for r in rows]]
    return list(zip(*row_table(rows, names)))


def numeric_columns(rows: list[dict], names: list[str]) -> np.ndarray:
    """Numeric features as a float64 array of shape (len(names), len(rows)), by the rules of
    ``to_float_array`` (missing, null and non-numbers are NaN).

    >>> numeric_columns([{"a": 1, "b": None}, {"a": "2.5", "b": "x"}, {"b": True}], ["a", "b"])
    array([[1. , 2.5, nan],
           [nan, nan, 1. ]])
    """
    if not rows:
        return np.empty((len(names), 0), dtype=np.float64)
    if len(names) == 1:
        return to_float_array(raw_columns(rows, names)[0]).reshape(1, -1)
    table = row_table(rows, names)
    try:  # every value a number (or a numeric string): one flat pass, no nested sequences to inspect
        flat = np.fromiter(chain.from_iterable(table), dtype=np.float64, count=len(rows) * len(names))
        return np.ascontiguousarray(flat.reshape(len(rows), len(names)).T)
    except (TypeError, ValueError, OverflowError):  # null, or a value that is not a number: column by column
        return np.stack([to_float_array(column) for column in zip(*table)])
