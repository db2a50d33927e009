"""Model builders and data shared by the chain tests."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from chain import Chain

IR_SIZE = 6
INPUT_SIZE = 4


class MinimalCell(keras.layers.Layer):
    """A custom cell with only `state_size` and `call`: h' = tanh(x W + h U)."""

    def __init__(self, units: int, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.state_size = units

    def build(self, input_shape):
        self.w = self.add_weight(shape=(input_shape[-1], self.units), name="w")
        self.u = self.add_weight(shape=(self.units, self.units), name="u")

    def call(self, inputs, states):
        h = tf.tanh(inputs @ self.w + states[0] @ self.u)
        return h, [h]


def functional_b() -> keras.Model:
    inp = keras.Input((IR_SIZE,))
    h = keras.Input((5,))
    new_h = keras.layers.Dense(5, activation="tanh")(keras.layers.Concatenate()([inp, h]))
    return keras.Model([inp, h], [keras.layers.Dense(3)(new_h), new_h])


B_KINDS = {
    "gru": lambda: keras.layers.GRUCell(5),
    "lstm": lambda: keras.layers.LSTMCell(5),
    "simple": lambda: keras.layers.SimpleRNNCell(5),
    "stacked": lambda: keras.layers.StackedRNNCells(
        [keras.layers.GRUCell(4), keras.layers.LSTMCell(5)]
    ),
    "functional": functional_b,
    "custom": lambda: MinimalCell(5),
}


def make_chain(kind="gru", state="carry", strategy="loop", output_size=2, seed=0, model_a=None, **kwargs):
    """A Chain with a causal GRU as model A (or `model_a`), built for INPUT_SIZE inputs."""
    keras.utils.set_random_seed(seed)
    net = Chain(
        model_a or keras.layers.GRU(IR_SIZE, return_sequences=True),
        B_KINDS[kind](),
        output_size=output_size,
        state=state,
        strategy=strategy,
        **kwargs,
    )
    net.build((None, None, INPUT_SIZE))
    return net


_SHARED: dict = {}


def shared(make, *args, **kwargs):
    """`make(*args, **kwargs)`, a chain, made once per session and arguments and set back to its
    first weights at each later use: the tests that set a chain's weights and call it share it, and
    the graphs it traced. A chain that a test trains, compiles or keeps states in is its own."""
    key = (make, args, tuple(sorted(kwargs.items())))
    if key not in _SHARED:
        net = make(*args, **kwargs)
        _SHARED[key] = net, net.get_weights()
    net, weights = _SHARED[key]
    net.set_weights(weights)
    return net


def clone_with(net: Chain, **changes) -> Chain:
    """Same sublayers and weights, other options (e.g. another strategy)."""
    config = {
        "output_size": net.output_size,
        "state": net.state,
        "strategy": net.strategy,
        "compiled": net.graph_calls,
        "max_steps": net.max_steps,
        **changes,
    }
    other = Chain(net.model_a, net.model_b, **config)
    other.build((None, None, INPUT_SIZE))
    other.set_weights(net.get_weights())
    return other


def batch(seed=0, batch_size=3, big_t=4, longest=3):
    """x `(batch, T, INPUT_SIZE)` and steps with zeros, one all-zero sample when batch > 2."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(batch_size, big_t, INPUT_SIZE)).astype("float32")
    steps = rng.integers(0, longest + 1, size=(batch_size, big_t)).astype("int32")
    steps[0, 0] = 0
    if batch_size > 2:
        steps[1] = 0
    steps[-1, -1] = longest
    return x, steps


def ragged_dataset(n=24, big_t=5, longest=4, out=2, seed=0, batch_size=8, scale=1.0):
    """((x, steps), y) batches like `datagen.load`, with y a smooth function of x."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, size=(n, big_t, INPUT_SIZE)).astype("float32")
    steps = rng.integers(0, longest + 1, size=(n, big_t)).astype("int32")
    steps[0, 0] = 0
    rows = np.repeat(np.arange(n * big_t), steps.reshape(-1))
    k = np.concatenate([np.arange(s) for s in steps.reshape(-1)]).astype("float32")
    base = x.reshape(-1, INPUT_SIZE)[rows, :out]
    values = (scale * np.sin(base + 0.5 * k[:, None])).astype("float32")
    cells = tf.RaggedTensor.from_row_lengths(values, steps.reshape(-1))
    y = tf.RaggedTensor.from_uniform_row_length(cells, big_t)
    data = tf.data.Dataset.from_tensor_slices(((x, steps), y)).batch(batch_size)
    return data, (x, steps, y)


@pytest.fixture
def data():
    return batch()


@pytest.fixture(scope="session")
def _adam_chain():
    net = make_chain(strategy="packed")
    net.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    return net, net.get_weights()


@pytest.fixture
def adam_chain(_adam_chain):
    """`make_chain(strategy="packed")` compiled with Adam(1e-3) and the mean squared error, as a
    fresh one: its first weights, the optimizer's state at zero. Tests of `fit` itself and of
    training callbacks share it, and so the functions Keras traced for it."""
    net, weights = _adam_chain
    net.set_weights(weights)
    for variable in net.optimizer.variables:
        variable.assign(tf.zeros_like(variable))
    net.optimizer.learning_rate = 1e-3
    return net
