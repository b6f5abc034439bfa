"""Bounded caches of what is derived from objects that never change (a reference, its edges).

Several hot-path structures (a reference's decoding layout, its window-evaluation layout, the
sketch edges of its features) are pure functions of objects that are never modified once
built, so they are computed once per object and looked up by the object's identity. The cache
is bounded (least recently used first out), so idle models cost nothing, and holds its objects
weakly, so a model that is gone is not kept alive by it; a dead object's id may be reused by a
new one, which the identity check catches.

>>> import numpy as np
>>> cache = IdentityCache(2)
>>> a, b = np.zeros(1), np.ones(1)
>>> first = cache.get((a, b), lambda: "derived")
>>> cache.get((a, b), lambda: "built again") is first, cache.get((a,), lambda: "other")
(True, 'other')
"""

from __future__ import annotations

import weakref
from collections import OrderedDict
from typing import Callable, Hashable, Sequence, TypeVar

V = TypeVar("V")


class IdentityCache:
    """Values keyed by the identity of some objects (plus an optional hashable ``extra``)."""

    def __init__(self, size: int):
        self.size = size
        self._entries: "OrderedDict[tuple, tuple[tuple, object]]" = OrderedDict()

    def get(self, owners: Sequence[object], build: Callable[[], V], extra: Hashable = None) -> V:
        """The value for these objects (and ``extra``), built by ``build()`` when not cached."""
        key = (tuple(map(id, owners)), extra)
        hit = self._entries.get(key)
        if hit is not None and all(ref() is owner for ref, owner in zip(hit[0], owners)):
            self._entries.move_to_end(key)
            return hit[1]
        value = build()
        self._entries[key] = (tuple(map(weakref.ref, owners)), value)
        if len(self._entries) > self.size:
            self._entries.popitem(last=False)
        return value

    def __len__(self) -> int:
        return len(self._entries)
