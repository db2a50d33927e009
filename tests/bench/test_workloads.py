"""Sweep definitions: length laws, case lists, serialisation and the FLOP count."""

import numpy as np
import pytest

from bench._workloads import (
    CELLS,
    QUICK_SIZES,
    Case,
    Sizes,
    Sweep,
    build_cases,
    make_steps,
    make_workload,
    real_flops,
)


@pytest.mark.parametrize("lengths", ["uniform", "zipf"])
@pytest.mark.parametrize("longest", [1, 4, 64])
def test_steps_stay_in_range_and_reach_longest(lengths, longest):
    steps = make_steps(64, 32, longest, lengths, np.random.default_rng(0))
    assert steps.dtype == np.int32 and steps.shape == (64, 32)
    assert steps.min() >= 0 and steps.max() == longest and steps[0, 0] == longest


def test_zipf_has_a_heavy_tail_and_many_empty_steps():
    rng = np.random.default_rng(0)
    uniform = make_steps(256, 32, 64, "uniform", rng)
    zipf = make_steps(256, 32, 64, "zipf", rng)
    assert zipf.mean() < 0.4 * uniform.mean()
    assert 0.3 < np.mean(zipf == 0) < 0.45  # P(Z = 1) = 1 / zeta(1.5) = 0.383
    assert np.mean(zipf >= 16) > 0.05  # the tail is not negligible


def test_unknown_length_law_is_rejected():
    with pytest.raises(ValueError, match="`lengths` must be one of"):
        make_steps(2, 2, 4, "gauss", np.random.default_rng(0))


def test_workload_is_deterministic_and_targets_match_steps():
    a = make_workload(QUICK_SIZES, 4, "uniform", seed=3)
    b = make_workload(QUICK_SIZES, 4, "uniform", seed=3)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert a["x"].shape == (16, 8, 8) and a["x"].dtype == np.float32
    assert a["y_values"].shape == (a["steps"].sum(), 8)
    assert not np.array_equal(a["x"], make_workload(QUICK_SIZES, 4, "uniform", seed=4)["x"])


def test_build_cases_limits_reference_and_peers():
    cases = build_cases(
        ["packed", "reference", "torch-packed", "jax"], ["carry", "init"], ["train"], [4, 16], "zipf", "cpu",
        reference_max_step=8,
    )
    ids = {c.id for c in cases}
    assert "reference-carry-train-L4-zipf-cpu-gru-H64" in ids
    assert "reference-carry-train-L16-zipf-cpu-gru-H64" not in ids
    assert not any(c.strategy in ("torch-packed", "jax") and c.state == "init" for c in cases)
    assert len(cases) == 4 + 2 + 2 + 2
    assert {c.module for c in cases} == {"test_chain.py", "test_reference.py", "test_torch.py", "test_jax.py"}


def test_build_cases_crosses_cells_and_hidden_sizes():
    cases = build_cases(
        ["packed", "reference", "torch-packed"], ["carry"], ["train", "train-notraining"], [4], "uniform", "cpu",
        cells=["lstm", "stacked"], hidden=[16, 256],
    )
    assert {(c.cell, c.hidden) for c in cases} == {("lstm", 16), ("lstm", 256), ("stacked", 16), ("stacked", 256)}
    # the flag can be left out only where there is one: chain's strategies
    assert {c.strategy for c in cases if c.phase == "train-notraining"} == {"packed"}
    assert len(cases) == 4 * (2 + 1 + 1)
    assert "packed-carry-train-notraining-L4-uniform-cpu-lstm-H256" in {c.id for c in cases}
    assert cases[0].sizes(Sizes(batch=3)) == Sizes(batch=3, hidden=16)
    assert build_cases(["packed"], ["carry"], ["train"], [4], "uniform", "cpu")[0].cell == "gru"
    feedback = build_cases(["packed", "reference", "torch-packed", "jax"], ["carry"], ["train-feedback"], [4],
                           "uniform", "cpu")  # fmt: skip
    assert [c.strategy for c in feedback] == ["packed"]  # the peers' model B reads IR alone


def test_sweep_round_trips_through_json():
    sweep = Sweep((Case("loop", "reset", "forward", 2, "uniform", "gpu"),), sizes=Sizes(batch=3), rounds=7)
    assert Sweep.from_json(sweep.to_json()) == sweep


def test_real_flops_by_hand():
    sizes = Sizes(hidden=2, output_size=1)
    steps = np.array([[3, 0], [1, 0]])
    # 4 real steps * (2*2*6 + 2*2*1) + 2 runs * (2*2*6) = 4 * 28 + 2 * 24
    assert real_flops(sizes, steps, "forward") == 160.0
    assert real_flops(sizes, steps, "train") == 480.0
    assert real_flops(sizes, steps, "train-notraining") == 480.0


@pytest.mark.parametrize(
    ("cell", "per_step", "per_run"),
    [
        ("gru", 2 * 2 * 6, 2 * 2 * 6),
        ("lstm", 2 * 2 * 8, 2 * 2 * 8),  # 4 gates
        ("rnn", 2 * 2 * 2, 2 * 2 * 2),  # 1 gate
        ("functional", 2 * 2 * 2, 2 * 2 * 2),
        ("stacked", 3 * 2 * 2 * 6, 2 * 2 * 6),  # layer 2's input and recurrent matmuls run per step
    ],
)
def test_real_flops_per_cell(cell, per_step, per_run):
    sizes = Sizes(hidden=2, output_size=1)
    steps = np.array([[3, 0], [1, 0]])
    head = 2 * 2 * 1
    assert real_flops(sizes, steps, "forward", cell) == 4 * (per_step + head) + 2 * per_run
    assert cell in CELLS


def test_generation_phases_run_for_chain_the_baseline_and_jax_only():
    strategies = ["packed", "eager-auto", "reference", "per-sample", "torch-packed", "jax", "jax-tf"]
    phases = ["forward", "generate-greedy", "generate-sampling", "generate-beam4"]
    cases = build_cases(strategies, ["carry"], phases, [4, 16], "uniform", "cpu", reference_max_step=8)
    by_strategy = {s: {(c.phase, c.longest_step) for c in cases if c.strategy == s} for s in strategies}
    generating = {(p, length) for p in phases[1:] for length in (4, 16)}
    assert by_strategy["packed"] == by_strategy["eager-auto"] == {("forward", 4), ("forward", 16)} | generating
    # the baseline is a slow loop: only generation, and only up to reference_max_step, like the reference
    assert by_strategy["per-sample"] == {(p, 4) for p in phases[1:]}
    assert by_strategy["reference"] == {("forward", 4)}
    assert by_strategy["torch-packed"] == {("forward", 4), ("forward", 16)}
    # JAX decodes greedily and samples; it has no beam search
    assert by_strategy["jax"] == {(p, length) for p in phases[:3] for length in (4, 16)}
    assert by_strategy["jax-tf"] == by_strategy["torch-packed"]  # JAX's program in TensorFlow: no generation
    baseline = next(c for c in cases if c.strategy == "per-sample")
    assert baseline.module == "test_per_sample.py" and baseline.function == "test_per_sample"


def test_a_generation_case_pairs_with_its_greedy_case_in_the_same_module():
    sampling = Case("per-sample", "reset", "generate-sampling", 4, "uniform", "cpu")
    sweep = Sweep((sampling,), versus=("phase", "generate-greedy"))
    assert sweep.partner_of(sampling) == Case("per-sample", "reset", "generate-greedy", 4, "uniform", "cpu")
    # a baseline case has no forward partner: the baseline measures only generation
    assert Sweep((sampling,), versus=("phase", "forward")).partner_of(sampling) is None


def test_real_flops_of_generation_add_the_fed_back_tokens_matmul():
    sizes = Sizes(hidden=2, output_size=3)  # V = 3 tokens, embedded in min(3, 16) = 3 features
    steps = np.array([[3, 0], [1, 0]])
    token = 2 * 3 * 6  # a (1, D) @ (D, 3H) matmul per step, D = 3
    forward = real_flops(sizes, steps, "forward")
    assert real_flops(sizes, steps, "generate-greedy") == forward + 4 * token
    lstm = real_flops(sizes, steps, "forward", "lstm") + 4 * 2 * 3 * 8  # 4 gates
    assert real_flops(sizes, steps, "generate-sampling", "lstm") == lstm


def test_a_beam_search_runs_every_step_for_each_hypothesis():
    sizes = Sizes(hidden=2, output_size=3)
    steps = np.array([[3, 0], [1, 0]])
    per_run = 2 * 2 * 6
    greedy = real_flops(sizes, steps, "generate-greedy")
    assert real_flops(sizes, steps, "generate-beam4") == 4 * (greedy - 2 * per_run) + 2 * per_run
