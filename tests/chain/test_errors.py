"""Bad input: ValueError eagerly, InvalidArgumentError in graph mode, naming the argument."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from chain import Chain

from .conftest import MinimalCell, make_chain

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


def _lstm_slice(structure):
    ipt, h, c = keras.Input((3,)), keras.Input((3,)), keras.Input((3,))
    out, new = keras.layers.LSTMCell(3)(ipt, [h, c])
    return keras.Model([ipt, h, c], structure(out, new))


@pytest.mark.parametrize(
    "structure,match",
    [
        (lambda out, new: {"out": out, "states": new}, r"it returned a dict, not a list"),
        (lambda out, new: [[out], new], r"its first output must be one tensor; received \[\[\(None, 3\)\], \[\(None, 3\), \(None, 3\)\]\]"),
    ],
)
def test_a_model_b_whose_outputs_cannot_be_read_as_output_and_new_states_is_named(structure, match):
    with pytest.raises(ValueError, match=r"a model B must return `\[outputs, \*new_states\]` \(the \(output, new_states\) "
                                         r"contract of a cell, states nested or flat\): " + match):
        Chain(keras.layers.GRU(3, return_sequences=True), _lstm_slice(structure))


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


# ----------------------------------------------------------------------------- x, steps and targets of the wrong kind


@pytest.mark.parametrize(
    "x,dtype",
    [
        (np.full((2, 3, 4), "a"), "str32"),
        (tf.fill((2, 3, 4), "a"), "string"),
        (np.array([[[1.0, "a", None, 2]] * 3] * 2, dtype=object), "object"),
        (np.zeros((2, 3, 4), "complex64") + 1j, "complex64"),
        (tf.complex(tf.zeros((2, 3, 4)), tf.ones((2, 3, 4))), "complex64"),
    ],
)
def test_x_of_strings_objects_or_complex_numbers_is_named(net, x, dtype):
    message = rf"`x` must hold real numbers \(floats, or integers taken as float32\); received dtype {dtype}"
    with pytest.raises(ValueError, match=message):
        net(x, np.ones((2, 3), "int32"))
    with pytest.raises(ValueError, match=message):
        net.generate(x, np.ones((2, 3), "int32"))


def test_integer_x_is_still_taken_as_float32(net):
    steps = np.ones((2, 3), "int32")
    ints = np.arange(24).reshape(2, 3, 4) % 3
    np.testing.assert_array_equal(net(ints, steps).flat_values.numpy(), net(ints.astype("float32"), steps).flat_values.numpy())


def test_ragged_steps_lists_are_named(net):
    message = r"`steps` must be a rectangular \(batch, T\) or \(T,\) array of integers; received a ragged list: \[\[1, 2\], \[3\]\]"
    with pytest.raises(ValueError, match=message):
        net(X[:, :2], [[1, 2], [3]])
    with pytest.raises(ValueError, match=message):
        net((X[:, :2], [[1, 2], [3]]))


class _HalfStateCell(keras.layers.Layer):
    """A cell whose new state is float16, whatever the policy."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.state_size = 3

    def build(self, input_shape):
        self.w = self.add_weight(shape=(input_shape[-1], 3), name="w")

    def call(self, inputs, states):
        h = tf.tanh(inputs @ self.w)
        return h, [tf.cast(h, "float16")]


def _half_state_model():
    ipt, h = keras.Input((3,)), keras.Input((3,))
    out = keras.layers.Dense(3)(keras.layers.Concatenate()([ipt, h]))
    return keras.Model([ipt, h], [out, keras.layers.Activation("tanh", dtype="float16")(out)], name="half")


@pytest.mark.parametrize("model_b,which", [(_HalfStateCell, r"_HalfStateCell '__half_state_cell'"),
                                           (_half_state_model, r"Functional 'half'")])  # fmt: skip
def test_a_model_b_with_a_float16_state_under_float32_is_named(model_b, which):
    net = Chain(keras.layers.GRU(3, return_sequences=True), model_b())
    with pytest.raises(ValueError, match=r"`model_b` must return new states of dtype float32, the chain's compute dtype, as it "
                                         rf"feeds them back in; received new states of dtypes \['float16'\] from {which}"):
        net(np.zeros((2, 3, 4), "float32"), [1, 1, 1])


def test_a_stop_token_with_max_steps_zero_is_named():
    with pytest.raises(ValueError, match=r"stop='token' runs each \(b, t\) until its stop logit fires, at most `max_steps` "
                                         r"steps, so it needs max_steps >= 1; received max_steps=0"):
        Chain(keras.layers.GRU(3, return_sequences=True), keras.layers.GRUCell(3), max_steps=0, stop="token")


@pytest.mark.parametrize("padded", [False, True])
def test_targets_of_another_width_are_named_as_given(padded):
    net = make_chain(strategy="packed", output_size=2)
    steps = np.ones((2, 3), "int32")
    y = np.zeros((2, 3, 1, 3), "float32") if padded else tf.RaggedTensor.from_uniform_row_length(
        tf.RaggedTensor.from_row_lengths(tf.zeros([6, 3]), steps.reshape(-1)), 3)  # fmt: skip
    shape = r"\(2, 3, 1, 3\)" if padded else r"\(2, 3, None, 3\)"
    with pytest.raises(ValueError, match=r"`y` must have 2 channels in its last dimension, the chain's output size; "
                                         rf"received y of shape {shape}"):
        net.compute_loss(x=(X, steps), y=y)
    feedback = make_chain(strategy="packed", output_size=2, feedback=True)
    feedback.compile("sgd")
    with pytest.raises(ValueError, match=rf"`y` must have 2 channels .*received y of shape \(None, (3|None), (1|None), 3\)"):
        feedback.fit((X, steps), y, verbose=0)
    with pytest.raises(ValueError, match=rf"`targets` must have 2 channels .*received targets of shape {shape}"):
        feedback(X, steps, targets=y)


# ----------------------------------------------------------------------------- model B against the IR size


def _slice_b(width):
    ipt, h = keras.Input((width,)), keras.Input((4,))
    out, new = keras.layers.SimpleRNNCell(4)(ipt, [h])
    return keras.Model([ipt, h], [out, new], name="slice_b")


def _built(cell, width=5):
    cell.build((None, width))
    return cell


@pytest.mark.parametrize("strategy", ["loop", "padded", "packed"])
@pytest.mark.parametrize("model_b,which", [(lambda: _slice_b(5), r"Functional 'slice_b'"),
                                           (lambda: _built(keras.layers.GRUCell(4, name="built")), r"GRUCell 'built'")])  # fmt: skip
def test_a_model_b_built_for_another_input_size_than_ir_is_named(strategy, model_b, which):
    net = Chain(keras.layers.GRU(4, return_sequences=True), model_b(), output_size=2, strategy=strategy)
    with pytest.raises(ValueError, match=r"`model_b` is fed IR rows, inputs of size ir_size = 4 \(model A's output size\); "
                                         rf"received a model B \({which}\) whose input has size 5"):
        net(np.zeros((2, 3, 3), "float32"), [1, 1, 1])


def test_a_cell_that_fails_on_the_ir_size_is_named_with_the_keras_reason():
    net = Chain(keras.layers.GRU(4, return_sequences=True), _built(MinimalCell(4, name="mine")), output_size=2)
    with pytest.raises(ValueError, match=r"`model_b` \(MinimalCell 'mine'\) failed when fed IR rows, inputs of size ir_size = 4 "
                                         r"\(model A's output size\) and states of sizes \[4\]: Dimensions must be equal"):
        net(np.zeros((2, 3, 3), "float32"), [1, 1, 1])


@pytest.mark.parametrize("layer,cell", [(lambda: keras.layers.SimpleRNN(4), "SimpleRNNCell"),
                                        (lambda: keras.layers.GRU(4, return_sequences=True), "GRUCell"),
                                        (lambda: keras.layers.RNN(keras.layers.LSTMCell(4)), "LSTMCell")])  # fmt: skip
def test_a_recurrent_layer_as_model_b_asks_for_its_cell(layer, cell):
    with pytest.raises(ValueError, match=r"`model_b` must be a Keras RNN cell, .* received the recurrent layer .* Pass its cell, "
                                         rf"e.g. `keras.layers.{cell}\(units\)`"):
        Chain(keras.layers.GRU(4, return_sequences=True), layer())
