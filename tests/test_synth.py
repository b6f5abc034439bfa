"""``streamproc.synth``: the synthetic streams are what its docstring says."""

from __future__ import annotations

import math

from streamproc.synth import Drift, ModelStream


def test_the_score_is_the_documented_function_of_the_events_own_features():
    # After c0's drift the score still used the category it replaced: events carrying "zz" were
    # scored as if they carried "a".
    stream = ModelStream("fraud", n_numeric=8, n_categorical=2, seed=11, drift=Drift(1000, ("x0", "c0"), 1.0, 0.3))
    events = list(stream.events(2000))
    assert sum(e["features"]["c0"] == "zz" for e in events) > 200
    for e in events:
        f = e["features"]
        score = 1 / (1 + math.exp(-(1.2 * f["x0"] - 0.8 * f["x1"] + 0.5 * (f["c0"] == "a") - 0.3)))
        assert abs(e["prediction"]["score"] - score) < 1e-4, e
        assert e["prediction"]["label"] == ("1" if e["prediction"]["score"] >= 0.5 else "0")
