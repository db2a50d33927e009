"""Length statistics match each documented distribution, clipped to longest_step."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

import datagen
from datagen import _lengths

L = 8


def theoretical_pmf(name: str, longest: int) -> np.ndarray:
    """P(steps = n) for n in 0..L, from scipy's distributions with the documented parameters."""
    support = np.arange(longest + 1)
    law = {
        "uniform": stats.randint(0, longest + 1),
        "poisson": stats.poisson(longest / 2),
        "geometric": stats.geom(2 / (longest + 2), loc=-1),
        "zipf": stats.zipf(1.5, loc=-1),
    }[name]
    pmf = law.pmf(support)
    pmf[-1] = law.sf(longest - 1)  # the clip puts the tail's mass on L
    return pmf


@pytest.mark.parametrize("name", ["uniform", "poisson", "geometric", "zipf"])
@pytest.mark.parametrize("longest", [L, 30])
def test_mean_variance_and_tail_match_theory(name, longest):
    steps = datagen.generate(2048, task="echo", lengths=name, longest_step=longest, seed=1)["steps"].ravel()
    pmf = theoretical_pmf(name, longest)
    support = np.arange(longest + 1)
    mean = (support * pmf).sum()
    variance = ((support - mean) ** 2 * pmf).sum()
    n = steps.size
    assert steps.min() >= 0 and steps.max() <= longest
    assert abs(steps.mean() - mean) < 5 * np.sqrt(variance / n)
    assert steps.var() == pytest.approx(variance, rel=0.05)
    for value in (0, longest):
        p = pmf[value]
        assert abs(np.mean(steps == value) - p) < 5 * np.sqrt(p * (1 - p) / n) + 1e-9
    chi2 = ((np.bincount(steps, minlength=longest + 1) - n * pmf) ** 2 / (n * pmf)).sum()
    assert chi2 < stats.chi2(longest).ppf(0.9999)


def test_zipf_is_heavy_tailed_most_runs_short_a_few_very_long():
    steps = datagen.generate(512, lengths="zipf", longest_step=1000, task="echo")["steps"]
    assert np.median(steps) <= 1
    assert np.mean(steps >= 100) == pytest.approx(stats.zipf(1.5).sf(100), abs=0.01)
    assert np.mean(steps >= 100) > 0.05  # a Poisson or geometric of mean 1 would give ~0


def test_fixed_is_always_longest_step():
    assert np.all(datagen.generate(64, lengths="fixed", longest_step=5)["steps"] == 5)


def test_input_lengths_are_a_separable_function_of_x():
    data = datagen.generate(1024, lengths="input", longest_step=L, seed=2)
    x0, steps = data["x"][..., 0].astype(np.float64), data["steps"]
    np.testing.assert_array_equal(steps, np.clip(np.floor((x0 + 1) / 2 * (L + 1)), 0, L))
    width = 2 / (L + 1)
    position = (x0 + 1) / width - steps  # where inside its bin, in [0, 1)
    assert position.min() >= 0.2 - 1e-5 and position.max() <= 0.8 + 1e-5, "classes are separated by gaps"
    assert np.bincount(steps.ravel(), minlength=L + 1).min() > steps.size / (L + 1) * 0.85


@pytest.mark.parametrize("fraction", [0.0, 0.3, 1.0])
def test_zero_fraction_zeroes_extra_steps(fraction):
    steps = datagen.generate(1024, lengths="fixed", zero_fraction=fraction)["steps"]
    assert np.mean(steps == 0) == pytest.approx(fraction, abs=0.01)


def test_draw_lengths_refuses_input_law_without_x():
    with pytest.raises(ValueError, match="`lengths` must be one of fixed, uniform, poisson, geometric, zipf; "
                                         "received 'input'"):  # fmt: skip
        datagen.draw_lengths("input", np.random.default_rng(0), (2, 2), 4)


def test_draw_lengths_draws_the_steps_of_generate():
    """The public law is the one `generate` draws from: the same stream gives the same steps."""
    from datagen import _rng

    data = datagen.generate(8, timesteps=5, longest_step=6, lengths="zipf", seed=3)
    stream = _rng.block_stream(3, _rng.Purpose.LENGTHS, 0)
    steps = datagen.draw_lengths("zipf", stream, (_rng.BLOCK, 5), 6)[:8]
    np.testing.assert_array_equal(steps, data["steps"])


def test_manifest_parameters_are_documented():
    assert _lengths.parameters("poisson", 8) == {"name": "poisson", "clip": 8, "mean": 4.0}
    assert _lengths.parameters("geometric", 8)["p"] == pytest.approx(0.2)
    assert _lengths.parameters("zipf", 8)["exponent"] == 1.5
