"""Each task's clean targets equal its documented law, computed here independently, sample by sample."""

from __future__ import annotations

import math

import numpy as np
import pytest

import datagen


def per_step(data):
    """Yields (b, t, k, c, row) for every real inner step, in storage order."""
    row = 0
    for b, lengths in enumerate(data["steps"]):
        c = 0
        for t, n in enumerate(lengths):
            for k in range(n):
                yield b, t, k, c, row
                row += 1
                c += 1


def test_echo_repeats_past_inputs_and_zero_fills_before_the_start():
    data = datagen.generate(24, task="echo", noise=0.0, seed=3)
    for b, t, k, _, row in per_step(data):
        expected = data["x"][b, t - k] if t - k >= 0 else np.zeros(4)
        np.testing.assert_array_equal(data["y_clean_values"][row], expected)
    assert any(t - k < 0 for _, t, k, _, _ in per_step(data)), "the zero-fill case was exercised"


def test_running_follows_the_count_of_earlier_inner_steps():
    data = datagen.generate(24, task="running", longest_step=6, output_size=3, seed=5)
    tau = 3.0 * 4.0 ** (np.arange(3) / 2)
    peak = 4 ** (-1 / 3) - 4 ** (-4 / 3)
    amplitude = np.array([1.8, -1.8, 1.8]) / peak
    for _, _, _, c, row in per_step(data):
        expected = amplitude * (np.exp(-(c + 1) / (4 * tau)) - np.exp(-(c + 1) / tau))
        np.testing.assert_allclose(data["y_clean_values"][row], expected, rtol=1e-5, atol=1e-6)
    assert np.abs(data["y_clean_values"]).max() <= 1.8 + 1e-5


def test_bursts_are_damped_oscillations_set_by_the_outer_input():
    data = datagen.generate(16, task="bursts", input_size=3, output_size=2, seed=2)
    u = np.array([[math.sqrt(1 / 3)] * 3] + [
        [math.sqrt(2 / 3) * math.cos(math.pi * j * (i + 0.5) / 3) for i in range(3)] for j in (1, 2)
    ])
    for b, t, k, _, row in per_step(data):
        f = np.tanh(2 * (u @ data["x"][b, t]))
        amplitude, frequency, decay = 1 + 0.5 * f[0], 0.9 + 0.6 * f[1], 0.3 + 0.2 * f[2]
        expected = [amplitude * math.exp(-decay * k) * math.cos(frequency * k + math.pi * d / 2) for d in range(2)]
        np.testing.assert_allclose(data["y_clean_values"][row], expected, rtol=1e-5, atol=1e-6)


def test_bursts_with_one_input_vary_only_in_amplitude():
    truth = datagen.generate(4, task="bursts", input_size=1, return_truth=True)["truth"]
    np.testing.assert_allclose(truth["projection"], [[1.0], [0.0], [0.0]])


@pytest.mark.parametrize("task", [task for task in datagen.TASKS if task not in datagen.TOKEN_TASKS])
@pytest.mark.parametrize("noise", [0.0, 0.05, 0.3])
def test_noise_has_the_requested_standard_deviation(task, noise):
    data = datagen.generate(512, task=task, noise=noise, seed=11)
    residual = data["y_values"].astype(np.float64) - data["y_clean_values"]
    assert abs(residual.mean()) < 0.01 * max(noise, 0.01)
    assert residual.std() == pytest.approx(noise, rel=0.01, abs=1e-7)


def test_teacher_targets_vary_with_the_input_at_a_moderate_scale():
    data = datagen.generate(2048, task="teacher", noise=0.0)
    variance = data["y_clean_values"].var(axis=0)
    assert np.all((variance > 0.05) & (variance < 2.0)), variance
    other = datagen.generate(2048, task="teacher", noise=0.0, seed=1)
    assert not np.allclose(data["y_clean_values"][:100], other["y_clean_values"][:100], atol=0.05)


def test_running_needs_carried_state_bayes_error_of_a_reset_model():
    """A reset-mode model knows x[<=t], t and k but not the earlier lengths. With uniform lengths
    x is independent of the lengths, so its best prediction is E[y | t, k]; the Bayes error is
    the within-(t, k) variance of the clean targets, pooled over all real inner steps."""
    data = datagen.generate(16384, task="running", noise=0.0, seed=7)
    index = datagen._tasks.ragged_index(data["steps"])
    clean = data["y_clean_values"].astype(np.float64)
    group = index.t * 1000 + index.k
    total = 0.0
    for key in np.unique(group):
        members = clean[group == key]
        total += ((members - members.mean(axis=0)) ** 2).sum()
    bayes = total / clean.size
    noise_floor = 0.05**2
    assert bayes > 5 * noise_floor * 1.6, bayes
    assert np.abs(clean).max() <= 2.0


def _ar_coefficients(truth, x):
    a = 0.8 + 0.19 / (1 + np.exp(-2 * (x @ truth["a_kernel"] + truth["a_bias"])))
    return a, 0.1 * np.tanh(x @ truth["c_kernel"] + truth["c_bias"])


@pytest.mark.parametrize("task", ["ar", "ar-reset"])
def test_ar_steps_follow_the_noisy_step_before(task):
    """The oracle that sees the previous observed output reaches the noise floor; y[-1] = 0 at a
    sample's first step (ar) or at every (b, t)'s (ar-reset), across outer steps with no step too."""
    data = datagen.generate(64, task=task, noise=0.05, seed=5, return_truth=True)
    y, clean = data["y_values"].astype(np.float64), data["y_clean_values"].astype(np.float64)
    previous, oracle, crossed = None, [], 0
    for b, t, k, c, row in per_step(data):
        starts = c == 0 if task == "ar" else k == 0
        if task == "ar" and k == 0 and c > 0:
            crossed += 1
        prev = np.zeros(y.shape[1]) if starts else y[row - 1]
        a, cc = _ar_coefficients(data["truth"], data["x"][b, t].astype(np.float64))
        oracle.append(a * prev + cc)
    oracle = np.array(oracle)
    np.testing.assert_allclose(clean, oracle, atol=1e-5)
    assert np.mean((y - oracle) ** 2) == pytest.approx(0.0025, rel=0.05)
    if task == "ar":
        assert crossed > 0  # the previous output crossed outer-step edges


@pytest.mark.parametrize("task, kwargs", [
    ("ar", {}), pytest.param("ar-reset", {"longest_step": 16, "lengths": "fixed"}, marks=pytest.mark.slow)])
def test_ar_without_feedback_is_at_least_four_times_the_noise_floor(tmp_path, task, kwargs):
    """The best predictor that does not see earlier outputs (the conditional mean given x)
    scores the manifest's `no_feedback_floor`, which is >= 4x the noise floor."""
    datagen.make(tmp_path / "d", task=task, n_samples=512, noise=0.05, seed=2, **kwargs)
    data = datagen.read(tmp_path / "d")
    floor = data["manifest"]["law"]["no_feedback_floor"]
    assert floor >= 4 * data["manifest"]["noise_floor"]
    truth = data["manifest"]["truth"]["parameters"]
    truth = {key: np.asarray(value) for key, value in truth.items()}
    mean, predictions = None, []
    for b, t, k, c, row in per_step(data):
        starts = c == 0 if task == "ar" else k == 0
        a, cc = _ar_coefficients(truth, data["x"][b, t].astype(np.float64))
        mean = cc if starts else a * mean + cc
        predictions.append(mean)
    mse = np.mean((data["y_values"] - np.array(predictions)) ** 2)
    assert mse == pytest.approx(floor, rel=0.1)
