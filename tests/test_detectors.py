"""Unit tests of ``streamproc.detectors.StreamDetectors`` (river ADWIN and Page-Hinkley, scaled).

(The brief called this class ``ScoreDetectors``; the module now names it ``StreamDetectors``
and measures each change's effect on the ``confirm`` values after the detection.)
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from streamproc.config import ADWINConfig, PageHinkleyConfig, SignalConfig
from streamproc.detectors import StreamDetectors

MEAN, STD = 0.5, 0.1


def detectors(**kw) -> StreamDetectors:
    return StreamDetectors(MEAN, STD, kw.pop("adwin", ADWINConfig()), kw.pop("page_hinkley", PageHinkleyConfig()),
                           kw.pop("signal", None), **kw)


@pytest.mark.parametrize("seed", [0, 1])
def test_stationary_stream_raises_nothing(seed):
    rng = np.random.default_rng(seed)
    det = detectors()
    values = rng.normal(MEAN, STD, 200_000)
    changes = []
    for chunk in np.array_split(values, 40):
        changes += det.update(chunk)
    assert changes == []
    assert det.pending == {}
    assert det.adwin.width > 10_000  # ADWIN kept a long window: it never cut


@pytest.mark.parametrize("seed, direction", [(0, 1), (1, 1), (2, -1), (3, -1)])
def test_half_sigma_shift_found_by_page_hinkley_within_1000_values(seed, direction):
    rng = np.random.default_rng(seed)
    det = detectors()
    assert det.update(rng.normal(MEAN, STD, 5000)) == []
    changes = det.update(rng.normal(MEAN + direction * 0.5 * STD, STD, 1000))
    found = {c.detector for c in changes}
    assert "page_hinkley" in found, changes
    ph = next(c for c in changes if c.detector == "page_hinkley")
    # Position: where the change was confirmed, ``confirm`` (100) values after the detection.
    assert SignalConfig().confirm <= ph.position < 1000
    # The effect is measured on values after the shift: about half a standard deviation.
    assert ph.effect * direction == pytest.approx(0.5, abs=0.3)
    assert ph.recent_mean == pytest.approx(MEAN + ph.effect * STD)
    assert ph.critical == (abs(ph.effect) >= SignalConfig().critical_effect)
    for c in changes:
        assert c.detector in ("adwin", "page_hinkley")
        assert 0 <= c.position < 1000
        assert abs(c.effect) >= SignalConfig().min_effect


def test_large_shift_found_by_both_and_is_critical():
    rng = np.random.default_rng(5)
    det = detectors()
    det.update(rng.normal(MEAN, STD, 3000))
    changes = det.update(rng.normal(MEAN + 3 * STD, STD, 2000))
    assert {c.detector for c in changes} == {"adwin", "page_hinkley"}
    for c in changes:
        assert c.effect == pytest.approx(3.0, abs=0.4)
        assert c.critical is True


def test_effect_is_the_mean_of_the_confirm_values_after_detection():
    det = StreamDetectors(0.0, 1.0, ADWINConfig(enabled=False), PageHinkleyConfig(min_instances=10),
                          SignalConfig(confirm=5, min_effect=0.1, critical_effect=50.0))
    assert det.update(np.zeros(200)) == []
    changes = det.update(np.full(300, 10.0))
    assert len(changes) == 1
    (c,) = changes
    assert c.detector == "page_hinkley"
    assert c.recent_mean == 10.0 and c.effect == 10.0
    assert c.critical is False  # below the (raised) critical_effect
    # Detected once the cumulative sum passed 40 sigma (about 5 values of +10), confirmed 5 later.
    assert 5 <= c.position < 20


def test_changes_below_min_effect_are_ignored():
    # Detector fires on a big jump, but by the time the confirm values arrive the signal is back.
    det = StreamDetectors(0.0, 1.0, ADWINConfig(enabled=False), PageHinkleyConfig(min_instances=10),
                          SignalConfig(confirm=50, min_effect=0.5))
    det.update(np.zeros(200))
    changes = det.update(np.concatenate([np.full(6, 10.0), np.zeros(500)]))
    assert changes == []
    assert det.ignored >= 1


def test_direction_up_ignores_decreases():
    rng = np.random.default_rng(4)
    det = detectors(direction="up")
    det.update(rng.normal(MEAN, STD, 3000))
    assert det.update(rng.normal(MEAN - 2 * STD, STD, 2000)) == []
    up = detectors(direction="up")
    up.update(rng.normal(MEAN, STD, 3000))
    changes = up.update(rng.normal(MEAN + 2 * STD, STD, 2000))
    assert changes and all(c.effect > 1.0 for c in changes)


def test_disabled_detectors():
    rng = np.random.default_rng(6)
    det = detectors(adwin=ADWINConfig(enabled=False), page_hinkley=PageHinkleyConfig(enabled=False))
    assert det.adwin is None and det.ph is None
    det.update(rng.normal(MEAN, STD, 1000))
    assert det.update(rng.normal(MEAN + 5 * STD, STD, 1000)) == []

    only_ph = detectors(adwin=ADWINConfig(enabled=False))
    only_ph.update(rng.normal(MEAN, STD, 1000))
    assert {c.detector for c in only_ph.update(rng.normal(MEAN + 5 * STD, STD, 1000))} == {"page_hinkley"}


def test_non_finite_values_are_skipped():
    rng = np.random.default_rng(8)
    det = detectors()
    values = rng.normal(MEAN, STD, 2000)
    values[::10] = np.nan
    values[5::50] = np.inf
    values[7::50] = -np.inf
    assert det.update(values) == []
    assert det.adwin.width == int(np.isfinite(values).sum())
    # NaN never reached Page-Hinkley's sums: it still finds a shift afterwards.
    assert "page_hinkley" in {c.detector for c in det.update(rng.normal(MEAN + STD, STD, 1000))}


def test_parameters_scale_with_baseline_std():
    det = StreamDetectors(10.0, 4.0, ADWINConfig(), PageHinkleyConfig(delta_sigma=0.25, threshold_sigma=40.0))
    assert det.ph.delta == pytest.approx(1.0)
    assert det.ph.threshold == pytest.approx(160.0)
    # A zero, NaN, infinite or negative std falls back to 1.
    for bad in (0.0, math.nan, -1.0, math.inf):
        assert StreamDetectors(0.0, bad, ADWINConfig(), PageHinkleyConfig()).std == 1.0


def test_batch_updates_equal_one_update():
    rng = np.random.default_rng(9)
    values = np.concatenate([rng.normal(MEAN, STD, 3000), rng.normal(MEAN + STD, STD, 3000)])
    one = detectors().update(values)
    split = detectors()
    changes, offset = [], 0
    for chunk in np.array_split(values, 17):
        for c in split.update(chunk):
            changes.append((c.detector, c.position + offset, c.effect, c.critical))
        offset += len(chunk)
    assert changes == [(c.detector, c.position, c.effect, c.critical) for c in one]
    assert len(one) >= 1


def test_a_block_mean_is_away_only_past_min_effect_and_two_standard_errors():
    from streamproc.config import SignalConfig

    det = StreamDetectors(0.0, 1.0, ADWINConfig(), PageHinkleyConfig(), SignalConfig(min_effect=0.0))
    assert det.away(0.5, 100) and not det.away(0.15, 100)  # 2 / sqrt(100) = 0.2: noise of a mean of 100
    levels: list = []
    det.update(np.array([0.3] * 250 + [np.nan] + [0.1] * 250), levels, 100)
    assert [(p, round(e, 6)) for p, e in levels] == [(99, 0.3), (199, 0.3), (300, 0.2), (400, 0.1), (500, 0.1)]


def test_a_glitch_does_not_keep_a_block_mean_away():
    """An absolute error of 1e6 among errors of about 1 enters its block's mean clipped: the
    block reads near the baseline, so the glitch alone does not keep a drift going."""
    from streamproc.detectors import LEVEL_CLIP_SIGMA

    rng = np.random.default_rng(3)
    det = StreamDetectors(1.0, 0.5, ADWINConfig(), PageHinkleyConfig(), direction="up")
    values = rng.normal(1.0, 0.5, 3000)
    values[[10, 1500, 2999]] = [1e6, 1e9, 1e6]
    levels: list = []
    det.update(values, levels, 1000)
    assert len(levels) == 3
    assert not any(det.away(effect, 1000) for _, effect in levels)
    assert max(effect for _, effect in levels) < 2 * LEVEL_CLIP_SIGMA / 1000 + 0.1
    # A real shift still reads away: clipping bounds a value, not the drift.
    shifted: list = []
    det.update(rng.normal(1.0 + 0.5 * 30, 0.5, 1000), shifted, 1000)
    assert shifted and det.away(shifted[0][1], 1000) and shifted[0][1] == pytest.approx(LEVEL_CLIP_SIGMA)


def test_a_few_values_at_a_time_skip_the_non_finite_ones_as_one_call_does():
    """A model's few values a batch take a cheaper finiteness check (their sum); fed in small
    chunks, the detectors see exactly the finite values, as when fed at once."""
    rng = np.random.default_rng(8)
    values = rng.normal(MEAN, STD, 2000)
    values[::10] = np.nan
    values[5::50] = np.inf
    values[7::50] = -np.inf
    values[[301, 302]] = 1e308  # finite, though their sum is not
    whole, chunked = detectors(), detectors()
    whole.update(values)
    for i in range(0, len(values), 7):
        chunked.update(values[i:i + 7])
    assert chunked.adwin.width == whole.adwin.width == int(np.isfinite(values).sum())
    assert chunked.ph._x_mean.n == whole.ph._x_mean.n > 0  # (Page-Hinkley restarts its mean at a drift)
