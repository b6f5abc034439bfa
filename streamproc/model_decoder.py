"""One msgspec decoder for the prediction events of the models a worker has seen, typed by
their feature layouts.

The general decoder builds a dict for every event's features, and ``FeatureTable.add`` then
looks each feature up in it: together about 1.2 µs of a 750-byte event's 2.1 µs of decoding
(``benchmarks/core.py``). Once a model version has a reference, its feature names are known,
so its events can be decoded into a msgspec struct with one field per feature, whose values
come out as one tuple in the layout's order, with no dict built or searched. A tagged union
of such structs, one member per model id (the tag being ``model_id``), lets msgspec pick the
model's struct while it decodes, in one pass.

The typed decoder only ever speeds up what the general one would decode to the same values:

- its members' fields have the general decoder's types, so each value is the same object;
- a model's features struct forbids unknown fields and requires every feature of the layout
  (skipped ones optional), so only events whose features are exactly what
  ``FeatureTable.add`` stores as a regular row decode with it;
- anything it refuses (an unknown model, another set of features, a malformed event) is
  decoded again by the general decoder, which alone decides what is rejected and why
  (``decode.decode_predictions``);
- an event of one version decoded with the struct of another version's layout is decoded
  again too.

Which struct a model id gets is learned from the batches the engine accepted
(``MonitorEngine.process`` calls ``learn``): the layout of its version with the most events in
the batch, or plain dict features while that version is warming up. The union is rebuilt
when enough has changed, not on every change (a rebuild costs about 1 µs per member), holds
the ``max_members`` busiest model ids, and forgets models not seen for a while. A struct's
fields follow the reference's feature order, the order events most likely carry them in
(msgspec matches each key fastest when it is the field after the previous one).

>>> from streamproc.decode import decode_predictions
>>> from streamproc.feature_table import FeatureLayout
>>> layout = FeatureLayout(["x"], ["c"])
>>> known = ModelDecoder(rebuild_every=1)
>>> raw = [b'{"event_id": "e1", "model_id": "m", "ts": 1.0, "features": {"x": 1.5, "c": "a"}, "prediction": 0.5}']
>>> batches, _ = decode_predictions(raw, layouts=lambda key: layout, known=known)
>>> known.learn(batches)
>>> len(known), type(known.decode(raw[0]).features).__name__
(1, 'Features')
"""

from __future__ import annotations

import heapq
from typing import Optional, Union

import msgspec

from .decode import ModelKey, PredictionBatch, _FastId, _WirePrediction, _WireValue
from .feature_table import FeatureLayout, FeatureTable

# A model id no event can use (ids may not hold control characters, so an event naming it is
# rejected all the same): a union needs two members for msgspec to require the tag.
_PLACEHOLDER = "\x00"


def _features_struct(layout: FeatureLayout) -> type:
    """A struct with one field per feature of ``layout`` (in its ``order``, then the skipped
    ones, which may be absent), refusing any other feature."""
    names = layout.order
    skipped = tuple(sorted(layout.skipped))
    fields = [(f"f{i}", _WireValue) for i in range(len(names))]
    fields += [(f"f{len(names) + i}", Union[_WireValue, msgspec.UnsetType], msgspec.UNSET) for i in range(len(skipped))]
    rename = {f"f{i}": name for i, name in enumerate(names + skipped)}
    return msgspec.defstruct("Features", fields, forbid_unknown_fields=True, gc=False, rename=rename)


def _member(model_id: str, features: Optional[type]) -> type:
    """The event struct of one model id, tagged by it; ``features`` None: a dict of features."""
    return msgspec.defstruct(
        "Prediction",
        [("event_id", _FastId), ("ts", Union[str, float]),
         ("features", features if features is not None else dict[str, _WireValue]),
         ("prediction", Union[float, str, _WirePrediction]), ("model_version", Optional[_FastId], None)],
        tag_field="model_id", tag=model_id, gc=False, namespace={"model_id": model_id},
    )


def _key(layout: Optional[FeatureLayout]) -> Optional[tuple]:
    """What makes two layouts decode alike (None: dict features)."""
    return None if layout is None else (layout.order, layout.skipped)


class _Seen:
    """A model id seen lately: the layout of its busiest version, its member struct while it
    is one, when it was last seen and how many events it had (halved now and then)."""

    __slots__ = ("key", "layout", "wire", "member", "last", "events")

    def __init__(self, layout: Optional[FeatureLayout]):
        self.key, self.layout = _key(layout), layout
        self.wire = self.member = None
        self.last = self.events = 0


class ModelDecoder:
    """The typed decoder of the busiest model ids seen recently (``decode``), and what it
    learns from.

    A member costs about 4 KB (two struct types) and 40 µs to create, so the union holds at
    most ``max_members`` model ids: those with the most events lately (counts halve every
    ``forget_after`` batches; a member keeps its place against an equal count). The others
    decode as before, which for a model with a few events per batch costs little more.
    """

    def __init__(self, rebuild_every: int = 16, forget_after: int = 4096, max_members: int = 1000):
        self.rebuild_every = rebuild_every  # batches a pending change may wait for a rebuild
        self.forget_after = forget_after  # batches without a model's events before it is forgotten
        self.max_members = max_members
        self.decode = None  # None while no model is known: then the union's decode
        self._wires: dict[tuple, type] = {}  # layout key -> features struct, of the members' layouts
        self._seen: dict[str, _Seen] = {}
        self._members = 0
        self._batches = 0
        self._pending = 0  # changes the union does not reflect yet
        self._built_at = 0
        self._swept = 0

    def __len__(self) -> int:
        """How many model ids the union decodes."""
        return self._members

    def wire(self, layout: FeatureLayout) -> Optional[type]:
        """The features struct the union decodes ``layout``'s features into (None: none does)."""
        return self._wires.get(_key(layout))

    def learn(self, batches: dict[ModelKey, PredictionBatch]) -> None:
        """Take note of the model versions of a batch (the caller's layouts decided which have
        a ``FeatureTable``); rebuild the union if enough has changed."""
        self._batches += 1
        best: dict[str, list] = {}  # model id -> [events, events of its busiest version, its layout]
        for (model_id, _version), batch in batches.items():
            n = len(batch)
            b = best.get(model_id)
            if b is None:
                b = best[model_id] = [0, 0, None]
            b[0] += n
            if n > b[1]:
                b[1], b[2] = n, batch.features.layout if isinstance(batch.features, FeatureTable) else None
        seen = self._seen
        for model_id, (n, _, layout) in best.items():
            s = seen.get(model_id)
            if s is None:
                s = seen[model_id] = _Seen(layout)
                self._pending += self._members < self.max_members  # else: at the next choice
            elif s.layout is not layout and (key := _key(layout)) != s.key:
                s.key, s.layout = key, layout
                if s.member is not None:
                    self._pending += 1
                    s.wire = s.member = None
            s.last = self._batches
            s.events += n
        if self._batches - self._swept >= self.forget_after:  # now and then: counts decay, idle models go
            self._swept = self._batches
            horizon = self._batches - self.forget_after
            for model_id in [m for m, s in seen.items() if s.last < horizon]:
                self._pending += seen.pop(model_id).member is not None
            for s in seen.values():
                s.events //= 2
        due = self._batches - self._built_at >= self.rebuild_every
        if self._pending and (self._pending * 8 >= self._members or due) or due and len(seen) > self._members:
            self._rebuild()

    def _rebuild(self) -> None:
        seen = self._seen
        self._built_at = self._batches
        if len(seen) > self.max_members:
            chosen = heapq.nlargest(self.max_members, seen.items(), key=lambda item: (item[1].events, item[1].member is not None))
            if not self._pending and all(s.member is not None for _, s in chosen):
                return  # the same members
            keep = {model_id for model_id, _ in chosen}
            for model_id, s in seen.items():
                if s.member is not None and model_id not in keep:
                    s.wire = s.member = None  # no longer a member: its structs go
        else:
            chosen = list(seen.items())
        wires: dict[tuple, type] = {}
        types = []
        for model_id, s in chosen:
            if s.member is None:
                try:
                    if s.key is not None:
                        s.wire = wires.get(s.key) or self._wires.get(s.key) or _features_struct(s.layout)
                    s.member = _member(model_id, s.wire)
                except Exception:  # a name msgspec refuses (e.g. a lone surrogate in ignore_features)
                    s.wire = s.member = None
                    continue
            if s.wire is not None:
                wires[s.key] = s.wire
            types.append(s.member)
        self._wires = wires
        self._members = len(types)
        self.decode = msgspec.json.Decoder(Union[tuple(types + [_PLACEHOLDER_MEMBER])]).decode if types else None
        self._pending = 0


_PLACEHOLDER_MEMBER = _member(_PLACEHOLDER, None)
