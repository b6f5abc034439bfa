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

Which struct a model id gets is learned from the batches decoded (``learn``): the layout of
its version with the most events in the batch, or plain dict features while that version is
warming up. The union is rebuilt when enough has changed, not on every change (a rebuild
costs about 1 µs per member), and forgets models not seen for a while, so it stays bounded.

>>> from streamproc.decode import decode_predictions
>>> from streamproc.feature_table import FeatureLayout
>>> layout = FeatureLayout(["x"], ["c"])
>>> known = ModelDecoder(rebuild_every=1)
>>> raw = [b'{"event_id": "e1", "model_id": "m", "ts": 1.0, "features": {"x": 1.5, "c": "a"}, "prediction": 0.5}']
>>> batches, _ = decode_predictions(raw, layouts=lambda key: layout, known=known)
>>> len(known), type(known.decode(raw[0]).features).__name__
(1, 'Features')
"""

from __future__ import annotations

from typing import Optional, Union

import msgspec

from .decode import ModelKey, PredictionBatch, _FastId, _WirePrediction, _WireValue
from .feature_table import FeatureLayout, FeatureTable

# A model id no event can use (ids may not hold control characters, so an event naming it is
# rejected all the same): a union needs two members for msgspec to require the tag.
_PLACEHOLDER = "\x00"
_MAX_WIRES = 4096  # features structs kept for layouts (distinct sets of feature names)


def _features_struct(layout: FeatureLayout) -> type:
    """A struct with one field per feature of ``layout`` (numeric, then the others, then the
    skipped ones, which may be absent), refusing any other feature."""
    names = layout.numeric + layout.other
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


class ModelDecoder:
    """The typed decoder of the model ids seen recently (``decode``), and what it learns from."""

    def __init__(self, rebuild_every: int = 16, forget_after: int = 4096, max_models: int = 20_000):
        self.rebuild_every = rebuild_every  # batches a pending change may wait for a rebuild
        self.forget_after = forget_after  # batches without a model's events before it is dropped
        self.max_models = max_models
        self.decode = None  # None until a model is known: then the union's decode
        self._wires: dict[tuple, type] = {}  # layout names -> features struct
        self._members: dict[str, list] = {}  # model id -> [features struct or None, event struct, last batch]
        self._batches = 0
        self._pending = 0
        self._built_at = 0
        self._swept = 0

    def __len__(self) -> int:
        return len(self._members)

    def wire(self, layout: FeatureLayout) -> type:
        """The features struct of a layout (shared by layouts with the same feature names)."""
        key = (layout.numeric, layout.other, layout.skipped)
        wire = self._wires.get(key)
        if wire is None:
            if len(self._wires) >= _MAX_WIRES:
                self._wires.clear()  # structs in use stay referenced by their members
            wire = self._wires[key] = _features_struct(layout)
        return wire

    def learn(self, batches: dict[ModelKey, PredictionBatch]) -> None:
        """Take note of a decoded batch's model versions (the caller's layouts decided which
        have a ``FeatureTable``); rebuild the union if enough has changed."""
        self._batches += 1
        best: dict[str, tuple[int, Optional[FeatureLayout]]] = {}
        for (model_id, _version), batch in batches.items():
            n = len(batch)
            if n > best.get(model_id, (0, None))[0]:
                best[model_id] = (n, batch.features.layout if isinstance(batch.features, FeatureTable) else None)
        for model_id, (_n, layout) in best.items():
            wire = self.wire(layout) if layout is not None else None
            member = self._members.get(model_id)
            if member is None or member[0] is not wire:
                self._members[model_id] = [wire, None, self._batches]
                self._pending += 1
            else:
                member[2] = self._batches
        if self._batches - self._swept >= self.forget_after:  # now and then: any model idle for long?
            self._swept = self._batches
            horizon = self._batches - self.forget_after
            self._pending += any(m[2] < horizon for m in self._members.values())
        if self._pending and (self._pending * 8 >= len(self._members)
                              or self._batches - self._built_at >= self.rebuild_every):
            self._rebuild()

    def _rebuild(self) -> None:
        horizon = self._batches - self.forget_after
        members = self._members
        if len(members) > self.max_models or any(m[2] < horizon for m in members.values()):
            recent = sorted(members.items(), key=lambda item: item[1][2], reverse=True)[:self.max_models]
            members = self._members = {k: m for k, m in recent if m[2] >= horizon}
        for model_id, member in members.items():
            if member[1] is None:
                member[1] = _member(model_id, member[0])
        types = [m[1] for m in members.values()]
        if types:
            types.append(_member(_PLACEHOLDER, None))
            self.decode = msgspec.json.Decoder(Union[tuple(types)]).decode
        else:
            self.decode = None
        self._pending = 0
        self._built_at = self._batches
