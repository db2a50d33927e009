"""Bad input: ValueError eagerly, InvalidArgumentError in graph mode, naming the argument."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from chain import Chain

from .conftest import make_chain

X = np.zeros((2, 3, 4), "float32")


@pytest.fixture(scope="module")
def net():
    return make_chain("gru", "carry", strategy="packed", max_steps=4)


@pytest.mark.parametrize(
    "x,steps,match",
    [
        (X, [[1, -1, 0], [0, 0, 0]], r"`steps` must be >= 0; received a value of -1 at \(batch=0, t=1\)"),
        (X, [[1, 1, 0], [0, 5, 0]], r"`steps` must be in \[0, 4\] \(max_steps\); received a value of 5 at \(batch=1, t=1\)"),
        (X, np.ones((3, 3), "int32"), r"`x` and `steps` must agree on \(batch, T\).*\(2, 3, 4\).*\(3, 3\)"),
        (X, np.ones((2, 2), "int32"), r"`x` and `steps` must agree on \(batch, T\)"),
        (X, np.ones(4, "int32"), r"`x` and `steps` must agree on \(batch, T\)"),
        (X, np.ones((2, 3), "float32"), r"`steps` must hold integers; received dtype float32"),
        (X, [[1.5, 1, 0], [0, 0, 0]], r"`steps` must hold integers; received dtype float(32|64)"),
        (X[0], np.ones((3,), "int32"), r"`x` must have rank 3 \(batch, T, input_size\); received shape \(3, 4\)"),
        (X, np.ones((2, 3, 1), "int32"), r"`steps` must have rank 2 \(batch, T\) or 1 \(T,\); received shape \(2, 3, 1\)"),
        (np.zeros((2, 3, 5), "float32"), np.ones((2, 3), "int32"), r"`x` must have input_size 4"),
    ],
)
def test_bad_input_raises_value_error_eagerly(net, x, steps, match):
    with pytest.raises(ValueError, match=match):
        net(x, steps)


def test_missing_steps_is_named(net):
    with pytest.raises(ValueError, match="`steps` is required"):
        net(X)


@pytest.mark.parametrize(
    "steps,match",
    [
        ([[1, -2, 0], [0, 0, 0]], r"`steps` must be >= 0; received a value of.*-2"),
        ([[1, 1, 0], [0, 7, 0]], r"`steps` must be in \[0, 4\] \(max_steps\); received a value of.*7"),
        (np.ones((3, 3)), r"`x` and `steps` must agree on \(batch, T\)"),
    ],
)
def test_bad_values_raise_invalid_argument_in_graph_mode(net, steps, match):
    @tf.function(input_signature=[tf.TensorSpec([None, None, 4]), tf.TensorSpec([None, None], tf.int32)])
    def run(x, steps):
        return net(x, steps).flat_values

    with pytest.raises(tf.errors.InvalidArgumentError, match=match):
        run(tf.constant(X), tf.constant(steps, tf.int32))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"state": "sometimes"}, r"`state` must be one of .*; received 'sometimes'"),
        ({"strategy": "magic"}, r"`strategy` must be one of .*; received 'magic'"),
        ({"output_size": 0}, r"`output_size` must be an integer >= 1 or None; received 0"),
        ({"max_steps": -1}, r"`max_steps` must be an integer in \[0, 2147483647\] or None; received -1"),
        ({"output_size": True}, r"`output_size` must be an integer >= 1 or None; received True"),
        ({"max_steps": True}, r"`max_steps` must be an integer in \[0, 2147483647\] or None; received True"),
        ({"max_steps": 2**31}, r"`max_steps` must be an integer in \[0, 2147483647\] or None; received 2147483648"),
        ({"compiled": "no"}, r"`compiled` must be True or False; received 'no'"),
    ],
)
def test_bad_options_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Chain(keras.layers.GRU(3, return_sequences=True), keras.layers.GRUCell(3), **kwargs)


def test_model_b_must_be_a_cell_or_a_model_with_states():
    with pytest.raises(ValueError, match=r"`model_b` must be a Keras RNN cell.*received Dense"):
        Chain(keras.layers.GRU(3, return_sequences=True), keras.layers.Dense(3))


def test_model_b_dropout_is_refused():
    with pytest.raises(ValueError, match=r"must not use dropout: received GRUCell with dropout=0.5"):
        Chain(keras.layers.GRU(3, return_sequences=True), keras.layers.GRUCell(3, dropout=0.5))


# ----------------------------------------------------------------------------- steps at the edges of int types


@pytest.mark.parametrize("value", [2**32, 2**32 + 1, 2**31, 2**40])
def test_int64_steps_are_checked_before_any_cast(net, value):
    steps = np.zeros((2, 3), np.int64)
    steps[1, 2] = value
    with pytest.raises(ValueError, match=rf"`steps` must be in \[0, 4\] \(max_steps\); received a value of {value} at \(batch=1, t=2\)"):
        net(np.zeros((2, 3, 4), "float32"), steps)


def test_int64_steps_without_max_steps_must_fit_int32():
    open_net = Chain(keras.layers.GRU(4, return_sequences=True), keras.layers.GRUCell(4))
    steps = np.zeros((1, 2), np.int64)
    steps[0, 1] = 2**32
    with pytest.raises(ValueError, match=r"`steps` must be in \[0, 2147483647\] \(int32\); received a value of 4294967296"):
        open_net(np.zeros((1, 2, 4), "float32"), steps)


def test_int64_steps_in_graph_mode_are_checked_before_the_cast(net):
    @tf.function(input_signature=[tf.TensorSpec([None, None, 4]), tf.TensorSpec([None, None], tf.int64)])
    def run(x, steps):
        return net(x, steps).flat_values

    with pytest.raises(tf.errors.InvalidArgumentError, match=r"must be in \[0, 4\] \(max_steps\).*4294967296"):
        run(tf.zeros([1, 2, 4]), tf.constant([[0, 2**32]], tf.int64))


def test_uint64_steps_beyond_int64_are_named_against_max_steps(net):
    steps = np.zeros((2, 3), np.uint64)
    steps[1, 2] = 2**63 + 5
    with pytest.raises(ValueError, match=r"`steps` must be in \[0, 4\] \(max_steps\); received a value of "
                                         r"9223372036854775813 at \(batch=1, t=2\)"):
        net(np.zeros((2, 3, 4), "float32"), steps)


def _uint64_run(net):
    @tf.function(input_signature=[tf.TensorSpec([None, None, 4]), tf.TensorSpec([None, None], tf.uint64)])
    def run(x, steps):
        return net(x, steps).flat_values

    return run


def test_uint64_steps_run_in_graph_mode(net):
    x = np.random.default_rng(1).normal(size=(2, 3, 4)).astype("float32")
    steps = np.array([[1, 0, 4], [2, 3, 0]])
    got = _uint64_run(net)(tf.constant(x), tf.constant(steps.astype(np.uint64)))
    np.testing.assert_allclose(got.numpy(), net(x, steps.astype("int32")).flat_values.numpy(), atol=1e-6)


def test_uint64_steps_beyond_int64_in_graph_mode_are_checked_before_the_cast(net):
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"must be in \[0, 4\] \(max_steps\).*9223372036854775813"):
        _uint64_run(net)(tf.zeros([1, 2, 4]), tf.constant(np.array([[0, 2**63 + 5]], np.uint64)))


def test_rank_one_steps_are_always_shared_by_the_batch_even_when_batch_equals_t(net):
    x = np.random.default_rng(0).normal(size=(3, 3, 4)).astype("float32")
    shared = net(x, np.array([0, 1, 2])).row_lengths(axis=2).numpy().reshape(-1)
    np.testing.assert_array_equal(shared, [0, 1, 2] * 3)
