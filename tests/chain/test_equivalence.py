"""Every strategy, state mode and kind of model B equals the per-sample reference loop.

Outputs and gradients (with respect to every weight and to `x`) are compared at atol 1e-5, in
eager mode, through the compiled eager path, and inside a user's `tf.function`.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from chain import STATES, STRATEGIES

from .conftest import B_KINDS, IR_SIZE, batch, clone_with, make_chain
from .reference import reference_flat
from ..tiers import each_once

ATOL = 1e-5


def _probe_loss(flat: tf.Tensor) -> tf.Tensor:
    """A loss that weighs every output element differently, so gradients are specific."""
    weights = tf.sin(tf.cast(tf.range(tf.size(flat)), flat.dtype) + 0.5)
    return tf.reduce_sum(tf.reshape(flat, [-1]) * weights)


def _value_and_grads(net, x, fn):
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        flat = fn(x)
        loss = _probe_loss(flat)
    return flat, _gradients(tape, loss, [x, *net.trainable_weights])


def _gradients(tape, loss, sources):
    """Gradients, with zeros for sources that the loss does not reach."""
    grads = tape.gradient(loss, sources)
    return [tf.zeros(s.shape) if g is None else g for g, s in zip(grads, sources)]


def _assert_same(got, want):
    got_flat, got_grads = got
    want_flat, want_grads = want
    np.testing.assert_allclose(got_flat.numpy(), want_flat.numpy(), atol=ATOL)
    assert len(got_grads) == len(want_grads)
    for g, w in zip(got_grads, want_grads):
        assert g is not None and w is not None
        np.testing.assert_allclose(tf.convert_to_tensor(g).numpy(), tf.convert_to_tensor(w).numpy(), atol=ATOL)


def _graph_fn(net):
    signature = [
        tf.TensorSpec([None, None, None], tf.float32),
        tf.TensorSpec([None, None], tf.int32),
    ]

    @tf.function(input_signature=signature)
    def run(x, steps):
        with tf.GradientTape() as tape:
            tape.watch(x)
            flat = net(x, steps).flat_values
            loss = _probe_loss(flat)
        return flat, _gradients(tape, loss, [x, *net.trainable_weights])

    return run


@pytest.mark.parametrize("kind", list(B_KINDS))
@pytest.mark.parametrize("state", STATES)
def test_every_strategy_matches_reference_eagerly(kind, state, data):
    x, steps = data
    base = make_chain(kind, state, strategy="loop", compiled=False)
    want = _value_and_grads(base, x, lambda x: reference_flat(base, x, steps))
    assert want[0].shape[0] == steps.sum()
    for strategy in STRATEGIES:
        net = clone_with(base, strategy=strategy, compiled=False)
        # training=True selects the training paths, such as the packed scans of standard cells.
        call = lambda x: net(x, steps, training=True).flat_values  # noqa: E731
        _assert_same(_value_and_grads(net, x, call), want)


GRAPH_CASES = [(kind, "carry") for kind in ("lstm", "stacked", "functional", "custom")] + [
    ("lstm", "reset"),
    ("lstm", "init"),
]


def _dense_a():
    """Model A of the graph tests: a Dense layer, whose graph traces in a fraction of a GRU's time.
    Their subject is model B's loop in each strategy; a recurrent model A runs in the eager tests
    here and in most other tests."""
    return keras.layers.Dense(IR_SIZE)


@pytest.mark.parametrize("kind,state", GRAPH_CASES)
def test_every_strategy_matches_reference_in_tf_function(kind, state, data):
    x, steps = data
    base = make_chain(kind, state, strategy="loop", model_a=_dense_a())
    want = _value_and_grads(base, x, lambda x: reference_flat(base, x, steps))
    for strategy in STRATEGIES:
        net = clone_with(base, strategy=strategy)
        _assert_same(_graph_fn(net)(tf.constant(x), tf.constant(steps)), want)


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("state", STATES)
def test_compiled_eager_path_matches_reference(strategy, state, data):
    x, steps = data
    net = make_chain("gru", state, strategy=strategy, compiled=True, model_a=_dense_a())
    want = _value_and_grads(net, x, lambda x: reference_flat(net, x, steps))
    for training in (False, True):
        call = lambda x: net(x, steps, training=training).flat_values  # noqa: E731
        _assert_same(_value_and_grads(net, x, call), want)


CASES = {
    "T=1": batch(seed=1, big_t=1),
    "batch=1": batch(seed=2, batch_size=1),
    "all zero": (batch(seed=3)[0], np.zeros((3, 4), "int32")),
    "long runs": batch(seed=4, longest=7),
}

# The default tier runs every model B once, every strategy's compiled path once and every edge
# case on every strategy once (kinds and modes in turn); `-m slow` runs the whole grid.
DEFAULT_TIER = {
    "test_every_strategy_matches_reference_eagerly": each_once({"kind": list(B_KINDS)}, {"state": list(STATES)}),
    "test_every_strategy_matches_reference_in_tf_function": lambda p: (p["kind"], p["state"]) in {
        ("lstm", "carry"), ("custom", "carry"), ("lstm", "reset")},
    "test_compiled_eager_path_matches_reference": each_once({"strategy": list(STRATEGIES)}, {"state": list(STATES)}),
    "test_edge_cases_match_reference": each_once(
        {"case": list(CASES), "strategy": list(STRATEGIES)}, {"kind": ["lstm", "gru"], "state": ["carry", "reset"]}
    ),
}



@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("state", ["carry", "reset"])
@pytest.mark.parametrize("kind", ["lstm", "gru"])  # the GRU's packed scan has its own backward pass
def test_edge_cases_match_reference(kind, case, strategy, state):
    x, steps = CASES[case]
    net = make_chain(kind, state, strategy=strategy, compiled=False)
    want = _value_and_grads(net, x, lambda x: reference_flat(net, x, steps))
    got = _value_and_grads(net, x, lambda x: net(x, steps, training=True).flat_values)
    _assert_same(got, want)
    out = net(x, steps)
    assert out.shape.as_list() == [x.shape[0], x.shape[1], None, 2]
    assert out.ragged_rank == 2
    np.testing.assert_array_equal(out.values.row_lengths().numpy(), steps.reshape(-1))


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_shared_steps_broadcast_over_batch(strategy, data):
    x, _ = data
    shared = np.array([2, 0, 3, 1], "int32")
    net = make_chain("gru", "carry", strategy=strategy)
    got = net(x, shared)
    want = net(x, np.broadcast_to(shared, x.shape[:2]))
    np.testing.assert_allclose(got.flat_values.numpy(), want.flat_values.numpy(), atol=ATOL)
    np.testing.assert_array_equal(got.values.row_lengths().numpy(), np.tile(shared, 3))


def test_graph_function_does_not_retrace_for_new_steps_patterns():
    net = make_chain("gru", "carry", strategy="packed")
    signature = [
        tf.TensorSpec([None, None, 4], tf.float32),
        tf.TensorSpec([None, None], tf.int32),
    ]
    traces = []

    @tf.function(input_signature=signature)
    def run(x, steps):
        traces.append(1)
        return net(x, steps).flat_values

    for seed, (b, t, longest) in enumerate([(3, 4, 3), (5, 2, 9), (1, 7, 1)]):
        x, steps = batch(seed=seed, batch_size=b, big_t=t, longest=longest)
        assert run(x, steps).shape[0] == steps.sum()
    assert len(traces) == 1
