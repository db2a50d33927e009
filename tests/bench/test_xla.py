"""The `xla-*` cases: chain's loop and padded strategies compiled by XLA, for forward calls only."""

import numpy as np
import pytest
import tensorflow as tf

from bench._tf_framework import TensorFlowFramework
from bench._workloads import XLA_STRATEGIES, Case, Sizes, build_cases, make_workload

SIZES = Sizes(batch=3, timesteps=4, input_size=2, hidden=5, output_size=2)


def test_the_xla_cases_run_forward_calls_only():
    phases = ["forward", "train", "train-notraining", "train-feedback", "generate-greedy"]
    cases = build_cases([*XLA_STRATEGIES, "padded"], ["carry", "reset"], phases, [4], "uniform", "cpu")
    assert {(c.strategy, c.state) for c in cases if c.phase != "forward"} == {("padded", "carry"), ("padded", "reset")}
    assert {(c.strategy, c.state) for c in cases if c.phase == "forward"} == {
        (s, state) for s in (*XLA_STRATEGIES, "padded") for state in ("carry", "reset")}
    assert {Case(s, "reset", "forward", 4, "uniform", "cpu").module for s in XLA_STRATEGIES} == {"test_chain.py"}


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
