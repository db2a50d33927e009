"""The `xla-*` cases: chain's loop and padded strategies compiled by XLA, for forward calls, and
for padded train steps too."""

import numpy as np
import pytest
import tensorflow as tf

from bench._tf_framework import TensorFlowFramework, build_chain
from bench._workloads import XLA_STRATEGIES, Case, Sizes, build_cases, make_workload, padded_targets

SIZES = Sizes(batch=3, timesteps=4, input_size=2, hidden=5, output_size=2)


def test_the_xla_cases_run_forward_calls_and_padded_train_steps():
    phases = ["forward", "train", "train-notraining", "train-feedback", "generate-greedy"]
    cases = build_cases([*XLA_STRATEGIES, "padded"], ["carry", "reset"], phases, [4], "uniform", "cpu")
    assert {(c.strategy, c.phase) for c in cases if c.strategy.startswith("xla")} == {
        ("xla-loop", "forward"), ("xla-padded", "forward"), ("xla-padded", "train")}
    assert {(c.strategy, c.state) for c in cases if c.phase == "forward"} == {
        (s, state) for s in (*XLA_STRATEGIES, "padded") for state in ("carry", "reset")}
    assert {Case(s, "reset", "forward", 4, "uniform", "cpu").module for s in XLA_STRATEGIES} == {"test_chain.py"}


def test_padded_targets_hold_each_real_step_in_b_t_k_order_and_zeros_after():
    work = make_workload(SIZES, 3, "uniform", seed=2)
    y = padded_targets(work, 3)
    steps = work["steps"]
    assert y.shape == (*steps.shape, 3, SIZES.output_size)
    real = np.arange(3)[None, None, :] < steps[..., None]
    np.testing.assert_array_equal(y[real], work["y_values"])
    assert not y[~real].any()


@pytest.mark.parametrize("state", ["carry", "reset"])
def test_an_xla_train_step_minimises_the_mean_squared_error_of_the_chain_of_its_seed(state):
    work = make_workload(SIZES, 3, "uniform", seed=1)
    case = Case("xla-padded", state, "train", 3, "uniform", "cpu", "gru", 5)
    net = build_chain(case, SIZES, 0, strategy="padded", compiled=True)
    net.build((None, None, SIZES.input_size))
    first = np.mean(np.square(net(work["x"], work["steps"], training=True).flat_values.numpy() - work["y_values"]))
    run = TensorFlowFramework(threads=2).build(case, SIZES, work, 0)
    losses = [run() for _ in range(4)]
    assert losses[0] == pytest.approx(first, rel=1e-5)  # the loss before the first update
    assert losses[3] < losses[0]


@pytest.mark.parametrize("strategy", XLA_STRATEGIES)
@pytest.mark.parametrize("state", ["carry", "reset"])
def test_an_xla_case_compiles_its_strategys_forward_and_sums_what_the_graph_does(strategy, state, monkeypatch):
    compiled = []
    function = tf.function

    def recording(*args, **kwargs):
        compiled.append(kwargs.get("jit_compile"))
        return function(*args, **kwargs)

    work = make_workload(SIZES, 3, "uniform", seed=1)
    framework = TensorFlowFramework(threads=2)
    plain = strategy.removeprefix("xla-")
    graph = framework.build(Case(plain, state, "forward", 3, "uniform", "cpu", "rnn", 5), SIZES, work, 0)
    monkeypatch.setattr(tf, "function", recording)
    xla = framework.build(Case(strategy, state, "forward", 3, "uniform", "cpu", "rnn", 5), SIZES, work, 0)
    assert compiled == [True]
    np.testing.assert_allclose(xla(), graph(), rtol=1e-5)


# The train step under XLA is checked against the chain in tests/chain/test_xla.py; `-m slow` runs
# bench's in both modes.
DEFAULT_TIER = {
    "test_an_xla_train_step_minimises_the_mean_squared_error_of_the_chain_of_its_seed": lambda p: False,
}
