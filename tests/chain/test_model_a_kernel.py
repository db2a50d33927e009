"""Model A on its cell's kernel: a Keras recurrent layer run by the chain under `packed` and
`padded` gives the layer's own outputs, final states and gradients, eagerly, in a graph and under
XLA; `model_a_fast_path` says when it runs and why not."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from chain import Chain

ATOL = 1e-5


def _model_of_a_layer():
    ipt = keras.Input((None, 4))
    return keras.Model(ipt, keras.layers.LSTM(5, return_sequences=True)(ipt))


LAYERS = {
    "gru": lambda: keras.layers.GRU(5, return_sequences=True),
    "gru-reset-before": lambda: keras.layers.GRU(5, return_sequences=True, reset_after=False),
    "lstm": lambda: keras.layers.LSTM(5, return_sequences=True),
    "rnn-relu": lambda: keras.layers.SimpleRNN(5, return_sequences=True, activation="relu"),
    "stacked": lambda: keras.layers.RNN(
        keras.layers.StackedRNNCells([keras.layers.GRUCell(4), keras.layers.LSTMCell(5)]), return_sequences=True
    ),
    "model-of-a-layer": _model_of_a_layer,
}
MODES = ["eager", "graph", "xla"]

# The default tier runs three layers, one mode each (the kernels themselves are checked in
# test_kernels.py); -m slow runs the grid.
DEFAULT_CASES = {("gru", "eager", "padded"), ("stacked", "graph", "packed"), ("lstm", "xla", "padded")}
DEFAULT_TIER = {
    "test_model_a_on_its_kernel_equals_the_layer": lambda p: (p["layer"], p["mode"], p["strategy"]) in DEFAULT_CASES,
}


def _pair(layer, strategy):
    """The same weights with model A on its kernel, and with everything run as it is."""
    keras.utils.set_random_seed(0)
    fast = Chain(LAYERS[layer](), keras.layers.GRUCell(3), output_size=2, state="carry", strategy=strategy, max_steps=3)
    fast.build((None, None, 4))
    plain = Chain(LAYERS[layer](), keras.layers.GRUCell(3), output_size=2, state="carry", strategy=strategy,
                  max_steps=3, fused=False)  # fmt: skip
    plain.build((None, None, 4))
    plain.set_weights(fast.get_weights())
    return fast, plain


def _run(net, mode, x, steps, a_in):
    def step(x, steps, a_in):
        with tf.GradientTape() as tape:
            tape.watch(x)
            out, states = net(x, steps, initial_state={"model_a": a_in}, return_state=True)
            flat = out.flat_values
            loss = tf.reduce_sum(flat * tf.sin(flat + 0.5))
        return flat, states["model_a"], tape.gradient(loss, [x, *net.trainable_weights])

    if mode != "eager":
        step = tf.function(step, jit_compile=mode == "xla")
    flat, finals, grads = step(tf.constant(x), tf.constant(steps), [tf.constant(s) for s in a_in])
    return flat.numpy(), [s.numpy() for s in finals], [tf.convert_to_tensor(g).numpy() for g in grads]


@pytest.mark.parametrize("strategy", ["padded", "packed"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("layer", LAYERS)
def test_model_a_on_its_kernel_equals_the_layer(layer, mode, strategy):
    if mode == "xla" and strategy == "packed":
        strategy = "padded"  # XLA does not compile packed
    fast, plain = _pair(layer, strategy)
    if mode == "xla":  # buffers sized by max_steps, as `fit` compiles them
        fast.compile(jit_compile=True)
        plain.compile(jit_compile=True)
    assert fast.model_a_fast_path.fused, fast.model_a_fast_path.reason
    assert not plain.model_a_fast_path.fused
    rng = np.random.default_rng(1)
    x = rng.normal(size=(3, 4, 4)).astype("float32")
    steps = rng.integers(0, 4, size=(3, 4)).astype("int32")
    sizes = [int(s) for s in tf.nest.flatten(fast.model_a.layers[-1].cell.state_size if isinstance(
        fast.model_a, keras.Model) else fast.model_a.cell.state_size)]  # fmt: skip
    a_in = [rng.normal(size=(3, s)).astype("float32") * 0.5 for s in sizes]
    got, want = _run(fast, mode, x, steps, a_in), _run(plain, mode, x, steps, a_in)
    np.testing.assert_allclose(got[0], want[0], atol=ATOL)
    assert len(got[1]) == len(want[1]) == len(sizes)
    for g, w in zip(got[1], want[1]):
        np.testing.assert_allclose(g, w, atol=ATOL)
    for g, w in zip(got[2], want[2]):
        np.testing.assert_allclose(g, w, atol=ATOL)


def test_the_kernel_starts_from_zero_states_by_default():
    fast, plain = _pair("lstm", "packed")
    x = np.random.default_rng(2).normal(size=(2, 5, 4)).astype("float32")
    steps = np.full((2, 5), 2, "int32")
    got, got_states = fast(x, steps, return_state=True)
    want, want_states = plain(x, steps, return_state=True)
    np.testing.assert_allclose(got.flat_values, want.flat_values, atol=ATOL)
    for g, w in zip(got_states["model_a"], want_states["model_a"]):
        np.testing.assert_allclose(g, w, atol=ATOL)


@pytest.mark.parametrize(
    ("make", "kwargs", "reason"),
    [
        (lambda: keras.layers.GRU(4, return_sequences=True), {"strategy": "loop"}, "strategy 'loop' calls model A as it is"),
        (lambda: keras.layers.GRU(4, return_sequences=True), {"fused": False}, "fused=False: model A runs as it is"),
        (lambda: keras.layers.GRU(4, return_sequences=True, go_backwards=True), {},
         "GRU with go_backwards=True runs as it is"),
        (lambda: keras.layers.LSTM(4, return_sequences=True, stateful=True), {},
         "LSTM with stateful=True runs as it is"),
        (lambda: keras.layers.GRU(4, return_sequences=True, dropout=0.5), {}, "GRU runs as it is: GRUCell uses dropout"),
        (lambda: keras.layers.SimpleRNN(4, return_sequences=True, activation="elu"), {},
         "SimpleRNN runs as it is: SimpleRNNCell: no fast path for activation 'elu'"),
        (lambda: keras.Sequential([keras.layers.Dense(4)]), {},
         "model A is not a Keras recurrent layer (or a model of one): it runs as it is"),
    ],
    ids=["loop", "fused-false", "backwards", "stateful", "dropout", "activation", "not-recurrent"],
)
def test_model_a_fast_path_says_why_it_does_not_run(make, kwargs, reason):
    path = Chain(make(), keras.layers.GRUCell(3), **kwargs).model_a_fast_path
    assert not path.fused
    assert path.reason.startswith(reason), path.reason


def test_model_a_fast_path_names_the_kernel():
    path = Chain(keras.layers.LSTM(4, return_sequences=True), keras.layers.GRUCell(3), strategy="padded").model_a_fast_path
    assert path == (True, "fast path: LSTM on the kernel of LSTMCell")
