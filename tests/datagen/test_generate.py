"""Determinism, seeds, streams and validation of ``datagen.generate``."""

from __future__ import annotations

import numpy as np
import pytest

import datagen

ARRAYS = ("x", "steps", "y_values", "y_clean_values")
REAL_TASKS = [task for task in datagen.TASKS if task not in datagen.TOKEN_TASKS]  # tokens: test_tokens.py


def assert_same(left, right):
    for key in ARRAYS:
        np.testing.assert_array_equal(left[key], right[key], err_msg=key)


@pytest.mark.parametrize("task", REAL_TASKS)
def test_shapes_dtypes_and_row_order(task):
    data = datagen.generate(10, task=task, timesteps=5, input_size=3, output_size=3, longest_step=4)
    assert data["x"].shape == (10, 5, 3) and data["x"].dtype == np.float32
    assert data["steps"].shape == (10, 5) and data["steps"].dtype == np.int32
    rows = int(data["steps"].sum())
    assert data["y_values"].shape == (rows, 3) and data["y_values"].dtype == np.float32
    assert data["y_clean_values"].shape == (rows, 3) and data["y_clean_values"].dtype == np.float32


@pytest.mark.parametrize("start,n", [(0, 7), (1000, 100), (1024, 1), (3000, 2100)])
def test_a_range_equals_the_slice_of_a_bigger_generation(start, n):
    whole = datagen.generate(start + n, task="teacher", seed=4)
    part = datagen.generate(n, task="teacher", seed=4, start=start)
    offsets = np.concatenate([[0], np.cumsum(whole["steps"].sum(axis=1))])
    expected = {
        "x": whole["x"][start:], "steps": whole["steps"][start:],
        "y_values": whole["y_values"][offsets[start]:], "y_clean_values": whole["y_clean_values"][offsets[start]:],
    }  # fmt: skip
    assert_same(part, expected)


def test_changing_noise_changes_only_y():
    low = datagen.generate(300, noise=0.05, seed=9)
    high = datagen.generate(300, noise=0.2, seed=9)
    for key in ("x", "steps", "y_clean_values"):
        np.testing.assert_array_equal(low[key], high[key])
    assert not np.array_equal(low["y_values"], high["y_values"])


def test_changing_zero_fraction_keeps_x():
    plain = datagen.generate(200, zero_fraction=0.0, seed=2)
    sparse = datagen.generate(200, zero_fraction=0.5, seed=2)
    np.testing.assert_array_equal(plain["x"], sparse["x"])
    assert np.all(sparse["steps"][sparse["steps"] > 0] == plain["steps"][sparse["steps"] > 0])


@pytest.mark.parametrize("task", datagen.TASKS)
def test_a_different_seed_gives_different_data(task):
    first = datagen.generate(64, task=task, seed=0)
    second = datagen.generate(64, task=task, seed=1)
    assert not np.array_equal(first["x"], second["x"])
    assert not np.array_equal(first["steps"], second["steps"])
    assert_same(first, datagen.generate(64, task=task, seed=0))


def test_teacher_weights_depend_on_the_seed_and_come_in_keras_order():
    truth = datagen.generate(1, return_truth=True, teacher_hidden=5, input_size=3, output_size=2)["truth"]
    weights = datagen.teacher_weights(truth)
    assert [w.shape for w in weights["model_a"]] == [(3, 15), (5, 15), (2, 15)]
    assert [w.shape for w in weights["model_b"]] == [(5, 15), (5, 15), (2, 15)]
    assert [w.shape for w in weights["head"]] == [(5, 2), (2,)]
    other = datagen.generate(1, return_truth=True, seed=1)["truth"]
    assert not np.array_equal(datagen.generate(1, return_truth=True)["truth"]["a_kernel"], other["a_kernel"])


def test_teacher_weights_refuse_a_truth_without_them():
    truth = datagen.generate(1, task="running", return_truth=True)["truth"]
    with pytest.raises(datagen.DatasetError, match="no teacher weights.*only task 'teacher'"):
        datagen.teacher_weights(truth)


def test_x_is_uniform_on_minus_one_one():
    x = datagen.generate(512)["x"]
    assert x.min() >= -1 and x.max() < 1
    assert x.mean() == pytest.approx(0, abs=0.01) and x.var() == pytest.approx(1 / 3, rel=0.02)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"n_samples": 0}, r"`n_samples` must be an integer >= 1; received 0"),
        ({"n_samples": 2.5}, r"`n_samples` must be an integer >= 1; received 2.5"),
        ({"timesteps": -1}, r"`timesteps` must be an integer >= 1; received -1"),
        ({"input_size": 0}, r"`input_size` must be an integer >= 1; received 0"),
        ({"output_size": -3}, r"`output_size` must be an integer >= 1; received -3"),
        ({"longest_step": 0}, r"`longest_step` must be an integer in \[1, 2147483647\]; received 0"),
        ({"teacher_hidden": 0}, r"`teacher_hidden` must be an integer >= 1; received 0"),
        ({"task": "nope"}, r"`task` must be one of echo, running, bursts, teacher, ar, ar-reset, tokens, tokens-reset; "
                           r"received 'nope'"),
        ({"lengths": "beta"}, r"`lengths` must be one of .*; received 'beta'"),
        ({"zero_fraction": 1.5}, r"`zero_fraction` must be a number in \[0, 1\]; received 1.5"),
        ({"zero_fraction": "a"}, r"`zero_fraction` must be a number in \[0, 1\]; received 'a'"),
        ({"noise": -0.1}, r"`noise` must be a number in \[0, 1e\+18\]; received -0.1"),
        ({"noise": float("inf")}, r"`noise` must be a number in \[0, 1e\+18\]; received inf"),
        ({"seed": -1}, r"`seed` must be an integer in \[0, \d+\]; received -1"),
        ({"seed": True}, r"`seed` must be an integer in \[0, \d+\]; received True"),
        ({"start": -5}, r"`start` must be an integer >= 0; received -5"),
        ({"task": "echo", "output_size": 3}, r"`output_size` must equal `input_size` for task 'echo'; "
                                             r"received output_size=3, input_size=4"),  # fmt: skip
    ],
)
def test_invalid_arguments_raise_a_value_error_naming_them(kwargs, match):
    arguments = {"n_samples": 4, **kwargs}
    with pytest.raises(ValueError, match=match) as caught:
        datagen.generate(arguments.pop("n_samples"), **arguments)
    assert isinstance(caught.value, datagen.ParameterError)


def test_generate_returns_arrays_the_caller_may_change():
    data = datagen.generate(4, task="echo")
    for value in (data["x"], data["steps"], data["y_values"], data["y_clean_values"]):
        assert value.flags.writeable and value.flags.owndata
    data["x"] += 1.0
    assert not np.array_equal(data["x"], datagen.generate(4, task="echo")["x"])
