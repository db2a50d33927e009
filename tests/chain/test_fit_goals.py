"""Fitting goals against datagen's known truth (slow: each fit takes minutes on 2 CPU cores).

Every dataset has datagen's default sizes (4096 samples, T 16, input 4, output 4,
longest_step 8) and `--noise 0.05`, so the noise floor is 0.0025. Run with `pytest -m slow`.
"""

from __future__ import annotations

import time

import pytest

import datagen
from chain import FitOptions, fit_run

pytestmark = pytest.mark.slow
TEN_MINUTES = 600.0


def fit(tmp_path, task, lengths="uniform", **options):
    data = tmp_path / "data"
    datagen.make(data, task=task, lengths=lengths, noise=0.05)
    started = time.perf_counter()
    report = fit_run(data, tmp_path / "run", FitOptions(**options), verbose=2)
    return report, time.perf_counter() - started


def test_teacher_reaches_1_2_times_the_noise_floor_with_the_defaults(tmp_path):
    report, seconds = fit(tmp_path, "teacher")
    assert report["noise_floor"] == pytest.approx(0.0025)
    assert report["heldout_mse_over_noise_floor"] <= 1.2
    assert seconds < TEN_MINUTES


@pytest.mark.parametrize("task, epochs", [("echo", 40), ("bursts", 30)])
def test_echo_and_bursts_reach_1_5_times_the_noise_floor(tmp_path, task, epochs):
    report, seconds = fit(tmp_path, task, state="reset", epochs=epochs)
    assert report["heldout_mse_over_noise_floor"] <= 1.5
    assert seconds < TEN_MINUTES


def test_running_needs_carry_mode(tmp_path):
    carry, seconds = fit(tmp_path / "carry", "running", state="carry", epochs=30)
    reset, _ = fit(tmp_path / "reset", "running", state="reset", epochs=10)
    assert carry["heldout_mse_over_noise_floor"] <= 1.5
    assert reset["heldout_mse_over_noise_floor"] > 5
    assert seconds < TEN_MINUTES


def test_length_head_learns_input_lengths(tmp_path):
    report, seconds = fit(tmp_path, "teacher", lengths="input", predict_lengths=True, epochs=15)
    assert report["length_accuracy"] >= 0.95
    assert seconds < TEN_MINUTES
