"""Fitting goals against datagen's known truth (slow: each fit takes minutes on 2 CPU cores).

Every dataset has datagen's default sizes (4096 samples, T 16, input 4, output 4,
longest_step 8) and `--noise 0.05`, so the noise floor is 0.0025. Run with `pytest -m slow`.
"""

from __future__ import annotations

import time

import keras
import numpy as np
import pytest
import tensorflow as tf

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


class _ResetEveryWindow(keras.callbacks.Callback):
    """Resets the chain's states before every window: no state crosses a window edge."""

    def on_train_batch_begin(self, batch, logs=None):
        self.model.reset_states()


def _windows_alone_mse(net, data_dir, window, batch_size):
    """Held-out masked MSE with every window of `window` steps started from zero states."""
    held = datagen.read(data_dir, split="heldout")
    cells = tf.RaggedTensor.from_row_lengths(held["y_values"], held["row_lengths"])
    y = tf.RaggedTensor.from_uniform_row_length(cells, held["steps"].shape[1])
    errors = []
    for start in range(0, held["x"].shape[0] - batch_size + 1, batch_size):
        rows = slice(start, start + batch_size)
        for w in range(0, held["x"].shape[1], window):
            net.reset_states()
            out = net(held["x"][rows, w : w + window], held["steps"][rows, w : w + window])
            errors.append(np.square(out.flat_values.numpy() - y[rows, w : w + window].flat_values.numpy()))
    return float(np.mean(np.concatenate(errors)))


def test_running_fits_in_windows_with_the_state_carried(tmp_path):
    """T = 32 in windows of 8, carry mode: the law spans the whole sequence, so the state must
    cross window edges; resetting it at each window is far worse."""
    data = tmp_path / "data"
    datagen.make(data, task="running", timesteps=32, noise=0.05)
    started = time.perf_counter()
    carry = fit_run(data, tmp_path / "carry", FitOptions(window=8, epochs=30), verbose=2)
    seconds = time.perf_counter() - started
    options = FitOptions(window=8, epochs=30)
    fit_run(data, tmp_path / "reset", options, verbose=2, callbacks=[_ResetEveryWindow()])
    net = keras.models.load_model(tmp_path / "reset" / "model.keras")
    reset_ratio = _windows_alone_mse(net, data, 8, options.batch_size) / carry["noise_floor"]
    print(f"carry: {carry['heldout_mse_over_noise_floor']:.3f}x the noise floor in {seconds:.0f} s; "
          f"reset at each window: {reset_ratio:.3f}x")  # fmt: skip
    assert carry["heldout_mse_over_noise_floor"] <= 1.5
    assert reset_ratio > 3 * carry["heldout_mse_over_noise_floor"]


AR_DATA = {
    "carry": ("ar", {}),
    # runs restart at every (b, t): long, fixed runs leave room between the floors
    "reset": ("ar-reset", {"longest_step": 16, "lengths": "fixed", "timesteps": 8}),
}


@pytest.mark.parametrize("state", ["carry", "reset"])
def test_ar_needs_feedback(tmp_path, state):
    """`ar`: each inner output follows the noisy one before. Fed back, the chain reaches the
    noise floor; without feedback it cannot come within 3x (the manifest's no-feedback floor)."""
    task, sizes = AR_DATA[state]
    data = tmp_path / "data"
    datagen.make(data, task=task, n_samples=2048, noise=0.05, **sizes)
    floor = datagen.read(data)["manifest"]["law"]["no_feedback_floor"] / 0.0025
    started = time.perf_counter()
    fed = fit_run(data, tmp_path / "fed", FitOptions(state=state, feedback=True, epochs=30, hidden=32), verbose=2)
    seconds = time.perf_counter() - started
    blind = fit_run(data, tmp_path / "blind", FitOptions(state=state, epochs=15, hidden=32), verbose=2)
    print(f"ar {state}: with feedback {fed['heldout_mse_over_noise_floor']:.3f}x the noise floor in "
          f"{seconds:.0f} s; without {blind['heldout_mse_over_noise_floor']:.3f}x (no-feedback floor {floor:.2f}x)")
    assert fed["heldout_mse_over_noise_floor"] <= 1.2
    assert blind["heldout_mse_over_noise_floor"] > 3
    assert seconds < TEN_MINUTES


def test_tokens_reach_1_05_times_the_laws_cross_entropy_with_feedback(tmp_path):
    """`tokens` (carry, V = 12), 2048 samples: fed the token each run follows, the chain comes
    within 1.05x of the law's cross-entropy in 6 epochs; blind to it, it stays near the
    unigram's (about 1.17x)."""
    data = tmp_path / "data"
    datagen.make(data, task="tokens", n_samples=2048)
    options = {"state": "carry", "epochs": 6, "hidden": 32}
    started = time.perf_counter()
    fed = fit_run(data, tmp_path / "fed", FitOptions(feedback=True, **options), verbose=2)
    seconds = time.perf_counter() - started
    blind = fit_run(data, tmp_path / "blind", FitOptions(**options), verbose=2)
    print(f"tokens: with feedback {fed['heldout_cross_entropy_over_floor']:.4f}x the law's cross-entropy "
          f"({fed['cross_entropy_floor']:.4f} nats per token) in {seconds:.0f} s; without "
          f"{blind['heldout_cross_entropy_over_floor']:.4f}x")  # fmt: skip
    assert fed["cross_entropy_floor"] == datagen.info(data)["manifest"]["law"]["cross_entropy_floor"]["heldout"]
    assert fed["heldout_cross_entropy_over_floor"] <= 1.05
    assert blind["heldout_cross_entropy_over_floor"] > 1.1
    assert seconds < TEN_MINUTES


def test_tokens_reset_reach_1_05_times_the_laws_cross_entropy_with_feedback(tmp_path):
    """`tokens-reset` (every run on its own), 2048 samples, reset mode: within 1.05x of the law."""
    data = tmp_path / "data"
    datagen.make(data, task="tokens-reset", n_samples=2048)
    started = time.perf_counter()
    fed = fit_run(data, tmp_path / "fed", FitOptions(state="reset", feedback=True, epochs=6, hidden=32), verbose=2)
    seconds = time.perf_counter() - started
    print(f"tokens-reset: {fed['heldout_cross_entropy_over_floor']:.4f}x the law's cross-entropy in {seconds:.0f} s")
    assert fed["heldout_cross_entropy_over_floor"] <= 1.05
    assert seconds < TEN_MINUTES


def test_beam_search_finds_the_laws_most_likely_run_where_greedy_misses(tmp_path):
    """`tokens` (carry), 65536 samples: after a fit within 1.01x of the law, a beam of 4 decodes
    at least 90% of the held-out runs of two tokens or more to the law's most likely run, given
    the runs before them; greedy decoding, about as often as the law's own greedy walk (~73%)."""
    import chain
    from chain_app.generate import generate_run

    data = tmp_path / "data"
    datagen.make(data, task="tokens", n_samples=65536, workers=2)
    options = FitOptions(state="carry", feedback=True, hidden=128, epochs=5, lr=3e-3, batch_size=64)
    fitted = fit_run(data, tmp_path / "run", options, verbose=2)
    beam = generate_run(tmp_path / "run", decoder=chain.Beam(4), out=tmp_path / "beam.json")["summary"]
    greedy = generate_run(tmp_path / "run", out=tmp_path / "greedy.json")["summary"]
    print(f"tokens: {fitted['heldout_cross_entropy_over_floor']:.4f}x the floor; runs matching the law's most "
          f"likely run: beam 4 {beam['long_best_match_rate']:.3f}, greedy {greedy['long_best_match_rate']:.3f} "
          f"(the law's greedy walk {greedy['law_greedy_long_match_rate']:.3f})")  # fmt: skip
    assert fitted["heldout_cross_entropy_over_floor"] <= 1.01
    assert beam["long_best_match_rate"] >= 0.9
    assert beam["long_best_match_rate"] > greedy["long_best_match_rate"] + 0.1
