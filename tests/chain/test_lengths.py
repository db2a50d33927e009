"""Predicting lengths: the length head, the stop head, and `generate`."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

import chain
from chain import STATES, Chain, LengthHead, Lengths, StopToken
from chain._train import stop_targets

from ..tiers import each_once
from .conftest import INPUT_SIZE, make_chain, shared

MAX = 4
CONSTANTS = (0, 2, MAX)  # constant lengths the length head is set to


def x_batch(batch=3, big_t=5, seed=1):
    return np.random.default_rng(seed).normal(size=(batch, big_t, INPUT_SIZE)).astype("float32")


def set_dense(layer, kernel=0.0, bias=None):
    w, b = layer.get_weights()
    layer.set_weights([np.full_like(w, kernel), b if bias is None else np.asarray(bias, b.dtype)])


def packed_chain(share=True, **kwargs):
    """`make_chain(strategy="packed", max_steps=MAX, **kwargs)`: `shared` with the other tests, or a
    chain of its own."""
    kwargs = {"strategy": "packed", "max_steps": MAX, **kwargs}
    return shared(make_chain, **kwargs) if share else make_chain(**kwargs)


def length_net(constant, state="carry", share=True, **kwargs):
    net = packed_chain(share, state=state, predict_lengths=True, **kwargs)
    set_dense(net.length_head, bias=np.eye(MAX + 1)[constant] * 10.0)
    return net


def stop_net(state="carry", empty_bias=-10.0, stop_bias=None, stop_kernel=0.0, share=True, **kwargs):
    net = packed_chain(share, state=state, stop="token", **kwargs)
    set_dense(net.empty_head, bias=[empty_bias])
    if stop_bias is not None:
        set_dense(net.stop_head, kernel=stop_kernel, bias=[stop_bias])
    return net


def assert_same(out, reference):
    np.testing.assert_array_equal(out.row_lengths(axis=2).numpy(), reference.row_lengths(axis=2).numpy())
    np.testing.assert_allclose(out.flat_values.numpy(), reference.flat_values.numpy(), atol=1e-5)


# ----------------------------------------------------------------------------- options


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"predict_lengths": True}, r"predict_lengths=True needs `max_steps`"),
        ({"stop": "token"}, r"stop='token' needs `max_steps`"),
        ({"stop": "norm", "max_steps": 3}, r"`stop` must be one of None, token; received 'norm'"),
        ({"predict_lengths": 1, "max_steps": 3}, r"`predict_lengths` must be True or False; received 1"),
        ({"predict_lengths": True, "stop": "token", "max_steps": 3}, "use one way to predict lengths"),
    ],
)
def test_bad_length_options(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Chain(keras.layers.GRU(3, return_sequences=True), keras.layers.GRUCell(3), **kwargs)


def test_generate_needs_a_length_or_stop_head():
    net = make_chain(strategy="packed")
    with pytest.raises(ValueError, match="`generate` without `steps` needs predicted lengths.*received lengths=None"):
        net.generate(x_batch())


@pytest.mark.parametrize("part", ["length", "stop"])
def test_predict_without_steps_runs_at_predicted_lengths(part):
    # `predict(x)` is the Keras way to score many samples in batches; with a lengths part it
    # must give what `generate(x)` gives, for arrays, `(x,)` and a dataset of x alone.
    net = length_net(2) if part == "length" else stop_net(stop_bias=10.0)
    x = x_batch(batch=6)
    want = net.generate(x)
    for given in (x, (x,), tf.data.Dataset.from_tensor_slices(x).batch(4)):
        out = net.predict(given, batch_size=4, verbose=0) if not isinstance(given, tf.data.Dataset) \
            else net.predict(given, verbose=0)
        assert out.shape.as_list() == [6, 5, None, 2]
        assert_same(out, want)


def test_predict_without_steps_needs_a_length_or_stop_head():
    net = make_chain(strategy="packed")
    with pytest.raises(ValueError, match=r"`Chain.predict` without `steps` needs predicted lengths.*"
                                         r"received x of shape \(3, 5, 4\) and lengths=None"):
        net.predict(x_batch(), verbose=0)


def test_stop_targets_mark_last_steps_and_empty_cells():
    last, empty = stop_targets(tf.constant([[2, 0], [1, 3]]))
    assert last.numpy().tolist() == [False, True, True, False, False, True]
    assert empty.numpy().tolist() == [[False, True], [False, False]]


# ----------------------------------------------------------------------------- length head


@pytest.mark.parametrize("state", STATES)
@pytest.mark.parametrize("constant", CONSTANTS)
def test_length_head_generate_equals_the_known_lengths_call(state, constant):
    net = length_net(constant, state=state)
    x = x_batch()
    out = net.generate(x)
    assert out.shape.as_list() == [3, 5, None, 2]
    assert_same(out, net(x, np.full((3, 5), constant, "int32")))


def test_length_head_follows_its_logits_per_cell():
    net = length_net(0)
    kernel, bias = net.length_head.get_weights()
    kernel[:] = 0.0
    kernel[0, 1], kernel[0, 3] = 50.0, -50.0  # IR channel 0's sign picks length 1 or 3
    net.length_head.set_weights([kernel, np.zeros_like(bias)])
    x = x_batch()
    expected = np.where(net.model_a(x).numpy()[..., 0] > 0, 1, 3)
    out = net.generate(x)
    np.testing.assert_array_equal(out.row_lengths(axis=2).numpy().reshape(3, 5), expected)
    assert_same(out, net(x, expected.astype("int32")))


def test_length_head_generate_in_tf_function():
    net = length_net(2, compiled=False)
    x = x_batch()
    fn = tf.function(lambda x: net.generate(x).flat_values,
                     input_signature=[tf.TensorSpec([None, None, INPUT_SIZE])])  # fmt: skip
    np.testing.assert_allclose(fn(x).numpy(), net(x, np.full((3, 5), 2)).flat_values.numpy(), atol=1e-5)
    assert fn(x_batch(batch=2, big_t=7)).shape == (2 * 7 * 2, 2)


def test_length_head_survives_keras_save_and_load(tmp_path):
    net = length_net(3)
    path = tmp_path / "m.keras"
    net.save(path)
    again = keras.models.load_model(path)
    assert again.predict_lengths and again.max_steps == MAX
    assert_same(again.generate(x_batch()), net.generate(x_batch()))


def test_length_head_learns_lengths_from_the_input():
    """Lengths set by x[..., 0]'s bin: a short fit gets most of them right."""
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, size=(64, 6, INPUT_SIZE)).astype("float32")
    steps = np.floor((x[..., 0] + 1) / 2 * (MAX + 1)).astype("int32")
    y = tf.RaggedTensor.from_uniform_row_length(
        tf.RaggedTensor.from_row_lengths(tf.zeros([int(steps.sum()), 2]), steps.reshape(-1)), 6
    )
    data = tf.data.Dataset.from_tensor_slices(((x, steps), y)).batch(16)
    net = make_chain(strategy="packed", max_steps=MAX, predict_lengths=True)
    net.compile(optimizer=keras.optimizers.Adam(3e-2), loss="mse")
    history = net.fit(data.repeat(4), epochs=8, verbose=0).history
    assert history["length_accuracy"][-1] > 0.6 > history["length_accuracy"][0]


@pytest.mark.parametrize("part", ["length", "stop"])
def test_generate_and_predict_at_t_zero_give_the_empty_output_of_a_call(part):
    # Chains of their own: Keras' GRU (model A) cannot run T = 0 in a predict function that was
    # traced before for other batch sizes, as a shared chain's is.
    net = length_net(2, share=False) if part == "length" else stop_net(stop_bias=10.0, share=False)
    x = np.zeros((3, 0, INPUT_SIZE), "float32")
    want = net(x, np.zeros((3, 0), "int32"))
    given = {"model_b": [tf.fill([3, s], 0.5) for s in net.step_adapter().state_sizes]}
    out, states = net.generate(x, initial_state=given, return_state=True)
    for got in (out, net.predict(x, verbose=0), tf.function(net.generate)(x)):
        assert got.shape.as_list() == want.shape.as_list() == [3, 0, None, 2]
        assert got.flat_values.shape[0] == 0
    for got, kept in zip(states["model_b"], given["model_b"]):  # the states pass through
        np.testing.assert_array_equal(got.numpy(), kept.numpy())


def _binned_lengths(n=64, big_t=6, seed=0):
    """`x`, lengths set by x[..., 0]'s bin, and zero targets of those lengths."""
    x = np.random.default_rng(seed).uniform(-1, 1, size=(n, big_t, INPUT_SIZE)).astype("float32")
    steps = np.floor((x[..., 0] + 1) / 2 * (MAX + 1)).astype("int32")
    y = tf.RaggedTensor.from_uniform_row_length(
        tf.RaggedTensor.from_row_lengths(tf.zeros([int(steps.sum()), 2]), steps.reshape(-1)), big_t
    )
    return x, steps, y


def test_compute_loss_is_the_output_loss_plus_the_length_term_and_reaches_the_head():
    net = make_chain(strategy="packed", max_steps=MAX, predict_lengths=True)
    x, steps, y = _binned_lengths(n=8)
    with tf.GradientTape() as tape:
        loss = net.compute_loss(x=(x, steps), y=y)
    grads = dict(zip([v.path for v in net.trainable_variables], tape.gradient(loss, net.trainable_variables)))
    output_term = chain.ragged_mse(y, net(x, steps))
    logits = net.length_head(net.model_a(x))
    length_term = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(steps, logits, from_logits=True))
    assert float(length_term) > 0.1  # a term that a loss without it would miss
    np.testing.assert_allclose(float(loss), float(output_term) + float(length_term), rtol=1e-5)
    head = [g for path, g in grads.items() if "length_head" in path]
    assert len(head) == 2 and all(float(tf.reduce_max(tf.abs(g))) > 0 for g in head)


def test_compute_loss_adds_the_stop_terms():
    net = make_chain(strategy="packed", max_steps=MAX, stop="token")
    x, steps, y = _binned_lengths(n=8)
    ir = net.model_a(x)
    b_flat = net.forward_parts(x, steps)[1]
    last, empty = stop_targets(steps)
    bce = lambda labels, logits: tf.reduce_mean(  # noqa: E731
        tf.nn.sigmoid_cross_entropy_with_logits(tf.cast(labels, tf.float32), logits))
    want = chain.ragged_mse(y, net(x, steps)) + bce(last, net.stop_head(b_flat)[:, 0]) + bce(empty, net.empty_head(ir)[..., 0])
    np.testing.assert_allclose(float(net.compute_loss(x=(x, steps), y=y, training=False)), float(want), rtol=1e-5)


@pytest.mark.slow  # a long fit; test_length_head_learns_lengths_from_the_input checks learning in `fit`
def test_a_length_head_learns_in_a_custom_loop_on_compute_loss():
    """The README's custom loop on `compute_loss`: the length head learns as in `fit`."""
    x, steps, y = _binned_lengths()
    net = make_chain(strategy="packed", max_steps=MAX, predict_lengths=True)
    optimizer = keras.optimizers.Adam(3e-2)
    optimizer.build(net.trainable_variables)  # its variables made here, the step is traced once
    data = tf.data.Dataset.from_tensor_slices(((x, steps), y)).batch(16)

    @tf.function
    def train_step(x, steps, y):
        with tf.GradientTape() as tape:
            loss = net.compute_loss(x=(x, steps), y=y)
        grads = tape.gradient(loss, net.trainable_variables)
        optimizer.apply_gradients(zip(grads, net.trainable_variables))
        return loss

    def accuracy():
        guess = np.argmax(net.length_head(net.model_a(x)).numpy(), -1)
        return np.mean(guess == steps)

    before = accuracy()
    for (xb, sb), yb in data.repeat(8):
        train_step(xb, sb, yb)
    assert accuracy() > 0.6 > before


def test_compute_loss_takes_y_pred_without_a_lengths_part_and_refuses_it_with_one():
    net = make_chain(strategy="packed", max_steps=MAX)
    x, steps, y = _binned_lengths(n=4)
    y_pred = net(x, steps) * 0.5
    want = chain.ragged_mse(y, y_pred)
    np.testing.assert_allclose(float(net.compute_loss(x=(x, steps), y=y, y_pred=y_pred)), float(want), rtol=1e-6)
    with pytest.raises(ValueError, match=r"`y_pred` holds no logits for the lengths part LengthHead\(\).*pass y_pred=None"):
        length_net(2).compute_loss(x=(x, steps), y=y, y_pred=y_pred)
    with pytest.raises(ValueError, match=r"`x` must be the inputs \(x, steps\), as fit takes them; received a ndarray of shape \(4, 6, 4\)"):
        net.compute_loss(x=x, y=y)
    with pytest.raises(ValueError, match=r"`y` must be the targets .*; received None"):
        net.compute_loss(x=(x, steps))


# ----------------------------------------------------------------------------- stop head


@pytest.mark.parametrize("state", ["carry", "reset", "init"])
def test_stop_after_one_step_equals_steps_of_one(state):
    net = stop_net(state=state, stop_bias=10.0)
    x = x_batch()
    assert_same(net.generate(x), net(x, np.ones((3, 5), "int32")))


@pytest.mark.parametrize("state", ["carry", "reset"])
def test_a_stop_head_that_never_fires_stops_at_max_steps(state):
    net = stop_net(state=state, stop_bias=-10.0)
    x = x_batch()
    out = net.generate(x)
    assert out.row_lengths(axis=2).numpy().max() == MAX
    assert_same(out, net(x, np.full((3, 5), MAX, "int32")))


def test_the_empty_head_skips_cells():
    net = stop_net(empty_bias=10.0, stop_bias=-10.0)
    out = net.generate(x_batch())
    assert out.flat_values.shape[0] == 0
    assert out.shape.as_list() == [3, 5, None, 2]


@pytest.mark.parametrize("state", ["carry", "reset", "init"])
def test_stop_generation_matches_a_call_at_the_lengths_it_chose(state):
    """With a state-dependent stop head, lengths vary; the outputs are those of the same call."""
    net = stop_net(state=state)
    kernel, _ = net.stop_head.get_weights()
    net.stop_head.set_weights([np.random.default_rng(0).normal(size=kernel.shape).astype("float32") * 3,
                               np.zeros(1, "float32")])  # fmt: skip
    x = x_batch(batch=4, big_t=6)
    out = net.generate(x)
    lengths = out.row_lengths(axis=2).numpy().reshape(4, 6)
    assert len(np.unique(lengths)) > 1
    assert_same(out, net(x, lengths.astype("int32")))


def test_stop_generation_in_tf_function_and_after_save(tmp_path):
    net = stop_net(stop_bias=-0.5, stop_kernel=0.3, compiled=False)
    x = x_batch()
    eager = net.generate(x)
    fn = tf.function(lambda x: net.generate(x).flat_values,
                     input_signature=[tf.TensorSpec([None, None, INPUT_SIZE])])  # fmt: skip
    np.testing.assert_allclose(fn(x).numpy(), eager.flat_values.numpy(), atol=1e-5)
    path = tmp_path / "s.keras"
    net.save(path)
    again = keras.models.load_model(path)
    assert again.stop == "token"
    assert_same(again.generate(x), eager)


def test_stop_head_trains_with_fit():
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, size=(32, 5, INPUT_SIZE)).astype("float32")
    steps = np.full((32, 5), 2, "int32")
    y = tf.RaggedTensor.from_uniform_row_length(
        tf.RaggedTensor.from_row_lengths(tf.zeros([int(steps.sum()), 2]), steps.reshape(-1)), 5
    )
    data = tf.data.Dataset.from_tensor_slices(((x, steps), y)).batch(16)
    net = make_chain(strategy="packed", max_steps=MAX, stop="token")
    net.compile(optimizer=keras.optimizers.Adam(3e-2), loss="mse")
    history = net.fit(data.repeat(4), epochs=5, verbose=0).history
    assert history["stop_accuracy"][-1] > 0.95
    lengths = net.generate(x).row_lengths(axis=2).numpy()
    assert np.mean(lengths == 2) > 0.9


@pytest.mark.parametrize("name, part", [("length_head", "LengthHead"), ("stop_token", "StopToken")])
def test_models_saved_with_the_old_flags_load_and_generate_the_same(name, part):
    """`.keras` files saved when length prediction was `predict_lengths=True` / `stop="token"`."""
    import pathlib

    import chain

    data = pathlib.Path(__file__).parent / "data"
    want = np.load(data / "saved_before_lengths_parts.npz")
    net = keras.saving.load_model(data / f"{name}.keras")
    assert type(net.lengths) is getattr(chain, part)
    out = net.generate(want["x"])
    np.testing.assert_array_equal(out.row_lengths(axis=2).numpy(), want[f"{name}_lengths"])
    np.testing.assert_allclose(out.flat_values.numpy(), want[f"{name}_values"], atol=1e-6)
    assert len(set(want[f"{name}_lengths"].ravel().tolist())) > 1  # the file's heads predict varied lengths


class ConstantLength(Lengths):
    """A part of the user's own: every `(b, t)` runs `n` steps; a head learns nothing."""

    metric = "constant_accuracy"
    tracker = "constant_tracker"

    def __init__(self, n):
        self.n = n

    def hits(self, parts, steps):
        return tf.cast(tf.equal(steps, self.n), tf.float32)

    def generate(self, generation):
        return generation.run_at(tf.fill(tf.shape(generation.ir)[:2], self.n))


def test_a_part_of_ones_own_composes_through_the_protocol():
    keras.utils.set_random_seed(0)
    net = Chain(keras.layers.GRU(4, return_sequences=True), keras.layers.GRUCell(4), output_size=2, max_steps=5,
                lengths=ConstantLength(2))  # fmt: skip
    x = np.random.default_rng(0).normal(size=(3, 4, 2)).astype("float32")
    out = net.generate(x)
    assert out.row_lengths(axis=2).numpy().ravel().tolist() == [2] * 12
    np.testing.assert_allclose(out.flat_values, net(x, np.full((3, 4), 2)).flat_values, atol=1e-6)
    steps = np.array([[2, 1, 2, 2]] * 3)
    y = tf.RaggedTensor.from_uniform_row_length(tf.RaggedTensor.from_row_lengths(
        np.zeros((int(steps.sum()), 2), "float32"), steps.reshape(-1)), 4)  # fmt: skip
    net.compile("adam")
    logs = net.evaluate((x, steps), y, verbose=0, return_dict=True)
    assert logs["constant_accuracy"] == pytest.approx(0.75)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"lengths": "head"}, r"`lengths` must be a length-prediction part .* received 'head'"),
        ({"lengths": LengthHead(), "stop": "token"}, r"use one way to predict lengths: received lengths=LengthHead\(\) and stop='token'"),
        ({"lengths": StopToken(), "max_steps": None}, r"lengths=StopToken\(\) needs `max_steps`"),
    ],
)
def test_bad_lengths_parts_are_refused(kwargs, message):
    kwargs = {"max_steps": 3, **kwargs}
    with pytest.raises(ValueError, match=message):
        Chain(keras.layers.GRU(4, return_sequences=True), keras.layers.GRUCell(4), **kwargs)


def test_lengths_parts_compose_and_round_trip(tmp_path):
    for part in (LengthHead(), StopToken()):
        keras.utils.set_random_seed(0)
        net = Chain(keras.layers.GRU(4, return_sequences=True), keras.layers.GRUCell(4), output_size=2,
                    max_steps=3, lengths=part)  # fmt: skip
        x = np.random.default_rng(1).normal(size=(3, 4, 2)).astype("float32")
        before = net.generate(x)
        path = tmp_path / f"{type(part).__name__}.keras"
        net.save(path)
        again = keras.saving.load_model(path)
        assert type(again.lengths) is type(part) and again.predict_lengths == isinstance(part, LengthHead)
        assert again.stop == ("token" if isinstance(part, StopToken) else None)
        np.testing.assert_allclose(again.generate(x).flat_values, before.flat_values, atol=1e-6)


# The default tier runs each constant length once, the modes in turn, and the stop token in
# carry and reset mode; `-m slow` runs every mode.
DEFAULT_TIER = {
    "test_length_head_generate_equals_the_known_lengths_call": each_once({"constant": CONSTANTS}, {"state": STATES}),
    "test_stop_after_one_step_equals_steps_of_one": lambda p: p["state"] != "init",
    "test_stop_generation_matches_a_call_at_the_lengths_it_chose": lambda p: p["state"] != "init",
}
