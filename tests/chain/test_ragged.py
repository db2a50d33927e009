"""`to_padded` and `from_padded`."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from chain import from_padded, to_padded

from .conftest import make_chain


def test_padded_round_trip_keeps_values_and_zeroes_padding(data):
    x, steps = data
    out = make_chain("gru", "carry")(x, steps)
    dense, mask = to_padded(out)
    longest = steps.max()
    assert dense.shape == (3, 4, longest, 2) and mask.shape == (3, 4, longest)
    np.testing.assert_array_equal(mask.numpy().sum(-1), steps)
    assert np.all(dense.numpy()[~mask.numpy()] == 0)
    np.testing.assert_array_equal(dense.numpy()[mask.numpy()], out.flat_values.numpy())
    back = from_padded(dense, steps)
    np.testing.assert_array_equal(back.flat_values.numpy(), out.flat_values.numpy())
    assert back.shape.as_list() == [3, 4, None, 2]


def test_to_padded_pads_to_a_given_length(data):
    x, steps = data
    dense, mask = to_padded(make_chain("gru", "reset")(x, steps), longest_step=9)
    assert dense.shape[2] == 9 and not mask.numpy()[..., steps.max() :].any()


def test_to_padded_works_in_graph_mode(data):
    x, steps = data
    out = make_chain("gru", "reset")(x, steps)
    dense, _ = tf.function(lambda r: to_padded(r))(out)
    np.testing.assert_array_equal(dense.numpy(), to_padded(out)[0].numpy())


def test_to_padded_rejects_a_length_shorter_than_a_run(data):
    x, steps = data
    with pytest.raises(ValueError, match=r"`longest_step` must be at least the longest run \(3\); received 2"):
        to_padded(make_chain("gru", "reset")(x, steps), longest_step=2)
    with pytest.raises(ValueError, match=r"`longest_step` must be an integer >= 0 or None; received -1"):
        to_padded(make_chain("gru", "reset")(x, steps), longest_step=-1)


@pytest.mark.parametrize(
    "dense,steps,match",
    [
        (np.zeros((2, 3, 4)), np.ones((2, 3)), r"`dense` must have rank 4"),
        (np.zeros((2, 3, 4, 1)), np.ones((2, 2)), r"`steps` must have shape \(batch, T\) = \(2, 3\)"),
        (np.zeros((2, 3, 4, 1)), np.full((2, 3), 5), r"`steps` must be in \[0, 4\] \(L\); received values in \[5, 5\]"),
    ],
)
def test_from_padded_rejects_bad_input(dense, steps, match):
    with pytest.raises(ValueError, match=match):
        from_padded(dense, steps)


@pytest.mark.parametrize("value", [2**32 + 1, 2**31, 2**40])
def test_from_padded_checks_int64_steps_before_any_cast(value):
    steps = np.array([[1, value]], np.int64)  # int32 would wrap 2**32 + 1 to 1
    with pytest.raises(ValueError, match=rf"`steps` must be in \[0, 3\] \(L\); received values in \[1, {value}\]"):
        from_padded(np.ones((1, 2, 3, 1), "float32"), steps)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_from_padded_refuses_steps_that_are_not_integers(dtype):
    with pytest.raises(ValueError, match=rf"`steps` must hold integers; received dtype {dtype}"):
        from_padded(np.ones((1, 2, 3, 1), "float32"), np.array([[1.7, 3.0]], dtype))


@pytest.mark.parametrize("value", [2.5, "3", True])
def test_to_padded_refuses_a_longest_step_that_is_not_an_int(data, value):
    x, steps = data
    with pytest.raises(ValueError, match=rf"`longest_step` must be an integer >= 0 or None; received {value!r}"):
        to_padded(make_chain("gru", "reset")(x, steps), longest_step=value)
