"""The `xla-padded` case: chain's padded strategy compiled by XLA, for forward calls only."""

import numpy as np
import pytest
import tensorflow as tf

from bench._tf_framework import TensorFlowFramework
from bench._workloads import XLA_STRATEGY, Case, Sizes, build_cases, make_workload

SIZES = Sizes(batch=3, timesteps=4, input_size=2, hidden=5, output_size=2)


def test_the_xla_case_runs_forward_calls_only():
    phases = ["forward", "train", "train-notraining", "train-feedback", "generate-greedy"]
    cases = build_cases([XLA_STRATEGY, "padded"], ["carry", "reset"], phases, [4], "uniform", "cpu")
    assert {(c.state, c.phase) for c in cases if c.strategy == XLA_STRATEGY} == {("carry", "forward"), ("reset", "forward")}
    assert {c.phase for c in cases if c.strategy == "padded"} == set(phases)
    assert Case(XLA_STRATEGY, "reset", "forward", 4, "uniform", "cpu").module == "test_chain.py"


@pytest.mark.parametrize("state", ["carry", "reset"])
def test_the_xla_case_compiles_the_padded_forward_and_sums_what_the_graph_does(state, monkeypatch):
    compiled = []
    function = tf.function

    def recording(*args, **kwargs):
        compiled.append(kwargs.get("jit_compile"))
        return function(*args, **kwargs)

    work = make_workload(SIZES, 3, "uniform", seed=1)
    framework = TensorFlowFramework(threads=2)
    graph = framework.build(Case("padded", state, "forward", 3, "uniform", "cpu", "rnn", 5), SIZES, work, 0)
    monkeypatch.setattr(tf, "function", recording)
    xla = framework.build(Case(XLA_STRATEGY, state, "forward", 3, "uniform", "cpu", "rnn", 5), SIZES, work, 0)
    assert compiled == [True]
    np.testing.assert_allclose(xla(), graph(), rtol=1e-5)
