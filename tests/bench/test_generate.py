"""The generation phases: the per-sample baselines decode what the chain decodes (greedy and beam
search), on the same weights, and the sampler draws from the nucleus the chain's sampler keeps."""

import chain
import numpy as np
import pytest
import tensorflow as tf

from bench._peers import PerSampleFramework
from bench._per_sample import PICKS, PerSampleBeam, PerSampleGenerator, nucleus_sample
from bench._tf_framework import TensorFlowFramework, build_chain
from bench._workloads import BASELINE, BEAM_PHASE, BEAM_WIDTH, CELLS, Case, Sizes, make_workload
from .conftest import assert_draws_follow_the_cut_softmax

SIZES = Sizes(batch=3, timesteps=4, input_size=2, hidden=5, output_size=6)  # V = 6 tokens
WORKLOAD = make_workload(SIZES, 4, "uniform", seed=1)


def _case(strategy, state="carry", phase="generate-greedy", cell="gru"):
    return Case(strategy, state, phase, 4, "uniform", "cpu", cell, SIZES.hidden)


@pytest.mark.parametrize("strategy", ["packed", "loop"])
@pytest.mark.parametrize("state", ["carry", "reset", "init"])
@pytest.mark.parametrize("cell", CELLS)
def test_the_baseline_generates_the_chains_greedy_tokens(cell, state, strategy):
    net = build_chain(_case(strategy, state, cell=cell), SIZES, 0, strategy=strategy, compiled=True)
    x, steps = WORKLOAD["x"], WORKLOAD["steps"]
    want = net.generate(x, steps).flat_values.numpy()
    got = PerSampleGenerator(net, PICKS["generate-greedy"]).generate(x, steps).numpy()
    assert len(set(want.tolist())) > 1  # the tokens fed back vary, so feeding the wrong one would show
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("state", ["carry", "reset", "init"])
@pytest.mark.parametrize("cell", CELLS)
def test_the_beam_baseline_finds_the_chains_beams(cell, state):
    net = build_chain(_case("packed", state, BEAM_PHASE, cell), SIZES, 0, strategy="packed", compiled=True)
    x, steps = WORKLOAD["x"], WORKLOAD["steps"]
    beams = net.generate(x, steps, decoder=chain.Beam(BEAM_WIDTH))
    assert beams.shape.as_list() == [SIZES.batch, BEAM_WIDTH, SIZES.timesteps, None]
    got = PerSampleBeam(net, BEAM_WIDTH).generate(x, steps)
    np.testing.assert_array_equal(got, beams.flat_values.numpy())  # every beam, best first
    # the beams are distinct outputs, so their order and their parents are checked too
    assert (beams[:, 0].flat_values.numpy() != beams[:, 1].flat_values.numpy()).any()


@pytest.mark.parametrize("phase", ["generate-greedy", BEAM_PHASE])
def test_the_baseline_case_and_the_chain_case_build_the_same_weights(phase):
    """The bench's two cases, built apart from the same seed, decode the same tokens."""
    chain_case = _case("eager-packed", phase=phase)  # called eagerly: no user function to trace
    chain_run = TensorFlowFramework(2).build(chain_case, SIZES, WORKLOAD, seed=3)
    baseline_run = PerSampleFramework(2).build(_case(BASELINE, phase=phase), SIZES, WORKLOAD, seed=3)
    assert chain_run() == baseline_run() > 0  # the sum of the tokens each returns


@pytest.mark.parametrize(("temperature", "top_p"), [(1.0, 0.9), (2.0, 0.6)])
def test_nucleus_sampling_draws_from_the_cut_softmax(temperature, top_p):
    logits = np.array([1.0, 0.0, -1.0, 2.0, 0.5, -3.0], "float32")
    n = 100_000
    drawn = nucleus_sample(tf.constant(np.tile(logits, (n, 1))), tf.constant([5, 1], tf.int64), temperature, top_p)
    assert_draws_follow_the_cut_softmax(drawn.numpy(), logits, temperature, top_p)


def test_the_baseline_draws_again_at_each_step_and_alike_from_one_seed():
    net = build_chain(_case(BASELINE, phase="generate-sampling"), SIZES, 0, strategy="loop", compiled=False)
    net.build(WORKLOAD["x"].shape)
    x, steps = WORKLOAD["x"], WORKLOAD["steps"]
    generator = PerSampleGenerator(net, PICKS["generate-sampling"], seed=0)
    first, again = generator.generate(x, steps).numpy(), generator.generate(x, steps).numpy()
    other = PerSampleGenerator(net, PICKS["generate-sampling"], seed=1).generate(x, steps).numpy()
    np.testing.assert_array_equal(first, again)
    assert (first != other).any() and len(set(first.tolist())) > 2


# The default tier checks every cell kind once, the modes and strategies in turn; `-m slow` adds
# the other pairs.
DEFAULT_TIER = {
    "test_the_baseline_generates_the_chains_greedy_tokens": lambda p: (p["cell"], p["state"], p["strategy"]) in {
        ("gru", "carry", "packed"), ("lstm", "reset", "packed"), ("rnn", "init", "loop"),
        ("stacked", "carry", "loop"), ("functional", "reset", "packed")},
    "test_the_beam_baseline_finds_the_chains_beams": lambda p: (p["cell"], p["state"]) in {
        ("gru", "carry"), ("lstm", "reset"), ("stacked", "init")},
}
