"""Every standard model B on the fast path: each kernel's backward step against autodiff of the
generic path, in carry and reset layouts, with and without `training=True`, and the edge cases."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from chain import STRATEGIES, Chain

from .conftest import MinimalCell
from ..tiers import each_once

ATOL = 1e-5


def _slice_model(cell_fn, units=5, ir=6):
    cell = cell_fn(units)
    ipt = keras.Input((ir,))
    states = [keras.Input((units,)) for _ in range(2 if isinstance(cell, keras.layers.LSTMCell) else 1)]
    out, new = cell(ipt, states if len(states) > 1 else [states[0]])
    return keras.Model([ipt, *states], [out, *new])


KINDS = {
    "gru": lambda: keras.layers.GRUCell(5),
    "gru-reset-before": lambda: keras.layers.GRUCell(5, reset_after=False),
    "gru-no-bias": lambda: keras.layers.GRUCell(5, use_bias=False),
    "lstm": lambda: keras.layers.LSTMCell(5),
    "lstm-no-bias": lambda: keras.layers.LSTMCell(5, use_bias=False),
    "rnn-tanh": lambda: keras.layers.SimpleRNNCell(5),
    "rnn-relu": lambda: keras.layers.SimpleRNNCell(5, activation="relu"),
    "rnn-linear": lambda: keras.layers.SimpleRNNCell(5, activation=None),
    "rnn-sigmoid-no-bias": lambda: keras.layers.SimpleRNNCell(5, activation="sigmoid", use_bias=False),
    "stacked": lambda: keras.layers.StackedRNNCells([keras.layers.GRUCell(4), keras.layers.LSTMCell(5)]),
    "stacked-3": lambda: keras.layers.StackedRNNCells(
        [keras.layers.SimpleRNNCell(3), keras.layers.GRUCell(4, reset_after=False), keras.layers.SimpleRNNCell(5)]
    ),
    "functional-rnn": lambda: _slice_model(keras.layers.SimpleRNNCell),
    "functional-lstm": lambda: _slice_model(keras.layers.LSTMCell),
}


# The default tier runs every model B once (carry/reset and with/without `training` in turn), each
# edge case once and each empty shape in both modes; `-m slow` runs the whole grid.
EDGE_KINDS, EDGE_SHAPES = ["lstm", "stacked", "functional-rnn"], [dict(big_t=1), dict(batch=1), dict(longest=0), "long"]
DEFAULT_TIER = {
    "test_fast_path_equals_autodiff_of_the_generic_path": each_once(
        {"kind": list(KINDS)}, {"state": ["carry", "reset"], "training": [True, None]}
    ),
    "test_edge_cases_on_the_fast_path": each_once({"shape": EDGE_SHAPES}, {"kind": EDGE_KINDS}),
    "test_no_step_at_all_gives_an_empty_output": each_once(
        {"shape": [(3, 4), (0, 4), (3, 0)], "graph": [False, True]}, {"strategy": list(STRATEGIES)}
    ),
}



def _pair(kind, state, strategy="packed"):
    """The same weights on the fast path, called through its graph functions, and on the generic
    path (autodiff), the reference, called eagerly (a fraction of the time of tracing it). Model A
    is a Dense layer: the kernels see IR alone, and a GRU's graph made most of each trace."""
    keras.utils.set_random_seed(0)
    fast = Chain(keras.layers.Dense(6), KINDS[kind](), output_size=2, state=state, strategy=strategy)
    fast.build((None, None, 4))
    generic = Chain(fast.model_a, fast.model_b, output_size=2, state=state, strategy=strategy, fused=False,
                    compiled=False)  # fmt: skip
    generic.build((None, None, 4))
    generic.set_weights(fast.get_weights())
    return fast, generic


def _data(batch=3, big_t=4, longest=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(batch, big_t, 4)).astype("float32")
    steps = rng.integers(0, longest + 1, size=(batch, big_t)).astype("int32")
    steps[0, 0] = 0
    steps[-1, -1] = longest
    return x, steps


def _value_and_grads(net, x, steps, training):
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        flat = net(x, steps, training=training).flat_values if training is not None else net(x, steps).flat_values
        loss = tf.reduce_sum(flat * tf.sin(flat + 0.5))
    sources = [x, *net.trainable_weights]
    grads = tape.gradient(loss, sources)  # None where nothing reaches a source (eagerly, with no step)
    return flat.numpy(), [np.zeros(s.shape) if g is None else tf.convert_to_tensor(g).numpy()
                          for g, s in zip(grads, sources)]  # fmt: skip


def _assert_same(got, want):
    np.testing.assert_allclose(got[0], want[0], atol=ATOL)
    for g, w in zip(got[1], want[1]):
        np.testing.assert_allclose(g, w, atol=ATOL)


@pytest.mark.parametrize("training", [True, None])
@pytest.mark.parametrize("state", ["carry", "reset"])
@pytest.mark.parametrize("kind", KINDS)
def test_fast_path_equals_autodiff_of_the_generic_path(kind, state, training):
    fast, generic = _pair(kind, state)
    assert fast.fast_path.fused, fast.fast_path.reason
    assert not generic.fast_path.fused
    x, steps = _data()
    _assert_same(_value_and_grads(fast, x, steps, training), _value_and_grads(generic, x, steps, training))


@pytest.mark.parametrize(
    "shape",
    EDGE_SHAPES,
    ids=["T=1", "one-sample", "no-steps", "one-long-run"],
)
@pytest.mark.parametrize("kind", EDGE_KINDS)
def test_edge_cases_on_the_fast_path(kind, shape):
    fast, generic = _pair(kind, "carry")
    if shape == "long":
        x, steps = _data(batch=2, big_t=3, longest=1)
        steps[1, 1] = 40
    else:
        x, steps = _data(**shape)
        if shape.get("longest") == 0:
            steps[:] = 0
    _assert_same(_value_and_grads(fast, x, steps, True), _value_and_grads(generic, x, steps, True))


def test_fast_path_is_inspectable_and_explicit():
    a = keras.layers.GRU(4, return_sequences=True)
    assert Chain(a, keras.layers.LSTMCell(4)).fast_path.reason == "fast path: LSTMCell"
    assert "generic path: MinimalCell has no registered kernel (registered: GRUCell, LSTMCell, SimpleRNNCell, StackedRNNCells" in Chain(a, MinimalCell(4)).fast_path.reason
    assert not Chain(a, keras.layers.GRUCell(4), strategy="loop").fast_path.fused
    assert Chain(a, keras.layers.GRUCell(4), strategy="padded").fast_path.fused
    assert not Chain(a, keras.layers.GRUCell(4), fused=False).fast_path.fused
    with pytest.raises(ValueError, match=r"fused=True, but model B has no fast path: MinimalCell has no registered kernel"):
        Chain(a, MinimalCell(4), fused=True)
    with pytest.raises(ValueError, match=r"fused=True, but model B has no fast path: LSTMCell with non-default activations"):
        Chain(a, keras.layers.LSTMCell(4, activation="relu"), fused=True)
    with pytest.raises(ValueError, match=r"`fused` must be one of auto, True, False; received 'yes'"):
        Chain(a, keras.layers.GRUCell(4), fused="yes")
    for value in (1, 0, np.bool_(True)):  # equal to a bool, but not one: refused, not taken as True or False
        with pytest.raises(ValueError, match=rf"`fused` must be one of auto, True, False; received {value!r}"):
            Chain(a, keras.layers.GRUCell(4), fused=value)


def test_a_simple_rnn_activation_without_a_kernel_is_named_with_the_ones_that_have_one():
    a = keras.layers.GRU(4, return_sequences=True)
    net = Chain(a, keras.layers.SimpleRNNCell(4, activation="elu"))
    assert net.fast_path.reason == (
        "generic path: SimpleRNNCell: no fast path for activation 'elu' (the fast path takes tanh, relu, "
        "sigmoid or linear)"
    )
    with pytest.raises(ValueError, match=r"fused=True, but model B has no fast path: SimpleRNNCell: no fast path "
                                         r"for activation 'elu' \(the fast path takes tanh, relu, sigmoid or linear\)"):
        Chain(a, keras.layers.SimpleRNNCell(4, activation="elu"), fused=True)


def test_a_functional_model_that_computes_more_than_its_cell_stays_generic():
    ipt, s = keras.Input((6,)), keras.Input((5,))
    out, new = keras.layers.SimpleRNNCell(5)(ipt, [s])
    model_b = keras.Model([ipt, s], [out * 2.0, new[0]])
    net = Chain(keras.layers.GRU(6, return_sequences=True), model_b)
    assert not net.fast_path.fused
    assert "computes more than the cell" in net.fast_path.reason


# ----------------------------------------------------------------------------- empty batches and steps


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("graph", [False, True])
@pytest.mark.parametrize("shape", [(3, 4), (0, 4), (3, 0)], ids=["all-zero", "no-sample", "T=0"])
def test_no_step_at_all_gives_an_empty_output(strategy, graph, shape):
    net = Chain(keras.layers.GRU(6, return_sequences=True), keras.layers.LSTMCell(5), output_size=2,
                strategy=strategy)  # fmt: skip
    x = tf.zeros([*shape, 4])
    steps = tf.zeros(shape, tf.int32)
    net(tf.zeros([1, 1, 4]), [[1]])

    def run(x, steps):
        return net(x, steps).flat_values

    run = tf.function(run) if graph and shape[1] else run
    with tf.GradientTape() as tape:
        flat = run(x, steps)
        loss = tf.reduce_sum(flat)
    assert tuple(flat.shape) == (0, 2)
    grads = tape.gradient(loss, net.trainable_weights)
    assert all(g is None or float(tf.reduce_sum(tf.abs(tf.convert_to_tensor(g)))) == 0.0 for g in grads)
    out = net(x, steps)
    assert out.shape.as_list()[:2] == list(shape)


@pytest.mark.parametrize(("activation", "bounded"), [("relu", False), ("linear", False), ("tanh", True), ("sigmoid", True)])
def test_padded_masks_the_steps_past_a_run_only_where_the_cell_may_not_keep_them_finite(activation, bounded):
    """`padded` runs every run to the longest; a cell that grows without bound (relu, linear) is
    masked there, or its dropped steps would overflow and turn the gradient into NaN."""
    cell = keras.layers.SimpleRNNCell(4, activation=activation)
    net = Chain(keras.layers.Dense(4), cell, output_size=1, state="reset", strategy="padded")
    net.build((None, None, 4))
    for layer, kernel in ((net.model_a, np.eye(4)), (cell, np.eye(4))):
        layer.kernel.assign(kernel.astype("float32"))
        layer.bias.assign(np.zeros(4, "float32"))
    cell.recurrent_kernel.assign(40.0 * np.eye(4, dtype="float32"))  # x40 a step: inf within 30 steps
    x = np.stack([np.ones(4), np.zeros(4)])[None].astype("float32")  # the long run's input keeps it at 0
    steps = np.array([[1, 60]], dtype="int32")  # the first run's 59 dropped steps would overflow
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(net(x, steps).flat_values[:1])  # the short run's one output
    grads = tape.gradient(loss, net.trainable_variables)
    assert net.step_adapter().bounded is bounded
    assert all(np.all(np.isfinite(g.numpy())) for g in grads)
