"""The reference case is the question's algorithm: at each t, the inner loop runs to the longest
run at that t, and it computes the Chain's result with the Chain's weights."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import bench._peers
from bench._peers import ReferenceFramework
from bench._reference import reference_values
from bench._tf_framework import build_chain
from bench._workloads import CELLS, Case, Sizes, make_workload

SIZES = Sizes(batch=3, timesteps=4, input_size=2, hidden=5, output_size=2)
# t = 0 needs 5 inner steps, t = 1 one, t = 2 none, t = 3 two: 8 calls of B, where a loop padded
# to the longest run of the batch makes 4 * 5 = 20.
STEPS = np.array([[5, 1, 0, 0], [2, 0, 0, 2], [0, 1, 0, 1]], np.int32)


def _workload():
    work = make_workload(SIZES, 5, "uniform", seed=1)
    work["steps"] = STEPS
    work["y_values"] = work["y_values"][: int(STEPS.sum())]
    return work


@pytest.mark.parametrize("phase", ["forward", "train"])
def test_each_outer_step_runs_only_to_its_own_longest_run(phase, monkeypatch):
    nets, calls = [], []
    make, call = bench._peers.build_chain, keras.layers.GRUCell.call
    monkeypatch.setattr(bench._peers, "build_chain", lambda *a, **k: nets.append(make(*a, **k)) or nets[-1])

    def counting(self, *args, **kwargs):
        calls.append(self)  # model A, a GRU layer, runs GRUCells too: only B's are counted below
        return call(self, *args, **kwargs)

    case = Case("reference", "carry", phase, 5, "uniform", "cpu")
    run = ReferenceFramework(threads=2).build(case, SIZES, _workload(), seed=0)
    monkeypatch.setattr(keras.layers.GRUCell, "call", counting)
    run()
    b_calls = sum(cell is nets[0].model_b for cell in calls)
    assert b_calls == sum(int(STEPS[:, t].max()) for t in range(STEPS.shape[1])) == 8


@pytest.mark.parametrize(
    ("cell", "state"),
    [*((cell, "carry") for cell in CELLS), ("lstm", "reset"), ("functional", "reset"), ("stacked", "init"), ("gru", "init")],
)
def test_reference_equals_the_chain(cell, state):
    net = build_chain(Case("packed", state, "forward", 5, "uniform", "cpu", cell, 5), SIZES, 0,
                      strategy="packed", compiled=False)
    x, steps = tf.constant(_workload()["x"]), tf.constant(STEPS)
    want = net(x, steps).flat_values
    got = reference_values(net, x, steps)
    assert got.shape == (int(STEPS.sum()), SIZES.output_size)
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5, atol=1e-5)


def test_reference_gradients_equal_the_chain():
    net = build_chain(Case("packed", "carry", "train", 5, "uniform", "cpu", "lstm", 5), SIZES, 0,
                      strategy="packed", compiled=False)
    x, steps = tf.constant(_workload()["x"]), tf.constant(STEPS)
    net(x, steps)
    grads = []
    for values in (lambda: net(x, steps, training=True).flat_values, lambda: reference_values(net, x, steps, True)):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.square(values()))
        grads.append(tape.gradient(loss, net.trainable_variables))
    for want, got in zip(*grads):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-4, atol=1e-5)


def test_an_outer_step_with_no_run_and_an_empty_batch_row():
    net = build_chain(Case("packed", "reset", "forward", 1, "uniform", "cpu", "rnn", 5), SIZES, 0,
                      strategy="packed", compiled=False)
    x, steps = tf.constant(_workload()["x"]), tf.zeros([3, 4], tf.int32)
    assert reference_values(net, x, steps).shape == (0, SIZES.output_size)


@pytest.mark.parametrize("cell", ["gru", "functional"])
def test_the_feedback_phase_trains_a_teacher_forced_chain(cell):
    from bench._tf_framework import step_program

    case = Case("packed", "carry", "train-feedback", 5, "uniform", "cpu", cell, 5)
    net = build_chain(case, SIZES, 0, strategy="packed", compiled=True)
    assert net.feedback
    work = _workload()
    step = step_program(net, work, case.phase, graph=True)
    losses = [step() for _ in range(30)]
    assert losses[-1] < losses[0]
    # the step fed the targets: its loss is that of the teacher-forced call
    x, steps, y = tf.constant(work["x"]), tf.constant(STEPS), tf.constant(work["y_values"])
    forced = float(tf.reduce_mean(tf.square(net(x, steps, targets=y).flat_values - y)))
    free = float(tf.reduce_mean(tf.square(net(x, steps).flat_values - y)))
    loss = step()  # the loss at the weights before this step's update
    assert np.isclose(loss, forced, rtol=1e-4) and not np.isclose(loss, free, rtol=1e-2)


# The default tier compares every cell kind against the reference once, the modes in turn
# (the GRU in carry mode, the question's); `-m slow` adds the other pairs.
DEFAULT_TIER = {
    "test_reference_equals_the_chain": lambda p: (p["cell"], p["state"]) in {
        ("gru", "carry"), ("lstm", "reset"), ("functional", "reset"), ("stacked", "init"), ("rnn", "carry")},
}
