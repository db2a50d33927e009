"""Sweep definitions: workload sizes, length laws, the cases of a sweep, and FLOP counts.

A *case* is one measured thing: one strategy, state mode, phase, `longest_step`, length law,
device, model-B cell and hidden size. A *sweep* is a list of cases plus the settings they share (sizes, rounds, timeouts). The
sweep travels from `bench run` to the pytest child processes as JSON, so both sides build the
same case list from this one module.

Length laws, two of datagen's (`datagen.draw_lengths`; numpy-only and seeded, so every strategy
sees identical inputs):

- ``uniform``: ``steps[b, t]`` is uniform on the integers ``0..L``.
- ``zipf``: a heavy tail, ``steps[b, t] = min(Z - 1, L)`` with ``Z ~ Zipf(a=1.5)``; about 38% of
  the outer steps are empty and a few are long.

In both laws ``steps[0, 0]`` is set to ``L`` so that every workload reaches its nominal
``longest_step`` (strategies that pad to the batch maximum pay for ``L``, as the sweep says).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import numpy as np

import datagen
from ragged_common.checks import check_choice

LENGTH_LAWS: tuple[str, ...] = ("uniform", "zipf")
"""The laws of `datagen.LENGTHS` that a sweep draws from."""
STATES: tuple[str, ...] = ("carry", "reset")
BEAM_WIDTH = 4
BEAM_PHASE = f"generate-beam{BEAM_WIDTH}"
"""The beam search phase, of `BEAM_WIDTH` hypotheses."""
GENERATE_PHASES: tuple[str, ...] = ("generate-greedy", "generate-sampling", BEAM_PHASE)
"""``net.generate(x, steps, decoder=...)`` of a token chain with feedback (`vocab_size` V =
``Sizes.output_size``): each chosen token's embedding feeds the next inner step. The decoder is
``chain.Greedy()``, ``chain.Sampler(**SAMPLING)`` or ``chain.Beam(BEAM_WIDTH)``."""
PHASES: tuple[str, ...] = ("forward", "train", "train-notraining", "train-feedback", *GENERATE_PHASES)
"""``train`` calls ``net(x, steps, training=True)`` in its tape, as `fit` does; ``train-notraining``
is the same step with the flag left out, as many custom loops write it; ``train-feedback`` is the
``train`` step of a chain built with ``feedback=True``, teacher-forced with the targets; the
`GENERATE_PHASES` generate tokens."""
TRAIN_PHASES: tuple[str, ...] = ("train", "train-notraining", "train-feedback")
CHAIN_ONLY_PHASES: tuple[str, ...] = ("train-notraining", "train-feedback")
XLA_STRATEGIES: tuple[str, ...] = ("xla-loop", "xla-padded")
"""Chain's ``loop`` and ``padded`` strategies in a user ``tf.function(jit_compile=True)``, as
`Chain.compile(jit_compile=True)` compiles `predict`, `evaluate` and `fit`: forward calls, and
for ``xla-padded`` the ``train`` step too (``loop``'s gradient does not compile under XLA)."""
XLA_PHASES: dict[str, tuple[str, ...]] = {"xla-loop": ("forward",), "xla-padded": ("forward", "train")}
"""The phases each of `XLA_STRATEGIES` runs."""
SAMPLING: dict[str, float] = {"temperature": 1.0, "top_p": 0.9}
"""The sampler of ``generate-sampling`` (nucleus sampling at temperature 1), seeded by the sweep's seed."""
DECODERS: dict[str, str] = {
    "generate-greedy": "greedy",
    "generate-sampling": "sampling " + " ".join(f"{k}={v}" for k, v in SAMPLING.items()),
    BEAM_PHASE: f"beam width={BEAM_WIDTH}",
}
"""How each generation phase picks its tokens, as ``extra_info["decoder"]`` records it."""
CELLS: tuple[str, ...] = ("gru", "lstm", "rnn", "stacked", "functional")
"""Model B: ``GRUCell(H)``, ``LSTMCell(H)``, ``SimpleRNNCell(H)``, ``StackedRNNCells`` of two
``GRUCell(H)``, or a functional ``Model([ipt, state], [out, new_state])`` around one
``SimpleRNNCell(H)`` (the question's slice model)."""
GATES: dict[str, int] = {"gru": 3, "lstm": 4, "rnn": 1, "stacked": 3, "functional": 1}
"""Gate blocks of one layer's ``(H, gates * H)`` kernels."""
LAYERS: dict[str, int] = {"gru": 1, "lstm": 1, "rnn": 1, "stacked": 2, "functional": 1}
DEVICES: tuple[str, ...] = ("cpu", "gpu", "auto")
REFERENCE = "reference"
BASELINE = "per-sample"
"""The generation phases' baseline: one sample, one outer step and one inner step at a time
(`bench._per_sample`)."""
TORCH_STRATEGIES: tuple[str, ...] = ("torch-packed", "torch-padded")
JAX_IN_TF = "jax-tf"
"""The JAX peer's own forward call and train step, converted with ``jax2tf`` and run by
TensorFlow's XLA: the same program on TensorFlow's runtime. Where it is faster or slower than
``jax``, the runtime makes the difference, not the program; it is what a TensorFlow program of
the peer's algorithm can reach. Forward and train phases only."""
JAX_STRATEGIES: tuple[str, ...] = ("jax", JAX_IN_TF)
PEER_STRATEGIES: tuple[str, ...] = (*TORCH_STRATEGIES, *JAX_STRATEGIES)
"""The peer frameworks' strategies."""
ADDED_PEERS: tuple[str, ...] = (*TORCH_STRATEGIES, "jax")
"""The peers that `bench run --peers` adds (`JAX_IN_TF` is asked for by name)."""
JAX_GENERATE_PHASES: tuple[str, ...] = ("generate-greedy", "generate-sampling")
"""The generation phases the JAX peer measures (it has no beam search)."""


@dataclasses.dataclass(frozen=True)
class Sizes:
    """Workload sizes shared by every case of a sweep.

    Attributes:
        batch: Samples per batch.
        timesteps: Outer steps ``T``.
        input_size: Features of ``x``.
        hidden: Units of model A (a GRU) and model B, unless a case sets its own (`Case.hidden`).
        output_size: Units of the dense head on B's output; in the `GENERATE_PHASES` the
            vocabulary size V (the head gives the logits).
    """

    batch: int = 64
    timesteps: int = 32
    input_size: int = 8
    hidden: int = 64
    output_size: int = 8


DEFAULT_SIZES = Sizes()
QUICK_SIZES = Sizes(batch=16, timesteps=8)


@dataclasses.dataclass(frozen=True)
class Case:
    """One measured case; its fields are the pytest params of the same names."""

    strategy: str
    state: str
    phase: str
    longest_step: int
    lengths: str
    device: str
    cell: str = "gru"
    hidden: int = 64

    @property
    def id(self) -> str:
        """The pytest parametrize id, e.g. ``loop-carry-train-L8-uniform-cpu-gru-H64``."""
        return (
            f"{self.strategy}-{self.state}-{self.phase}-L{self.longest_step}"
            f"-{self.lengths}-{self.device}-{self.cell}-H{self.hidden}"
        )

    def sizes(self, base: Sizes) -> Sizes:
        """The sweep's sizes with this case's hidden size (model A's and model B's units)."""
        return dataclasses.replace(base, hidden=self.hidden)

    @property
    def module(self) -> str:
        """The case module (in `bench/cases`) that measures this case."""
        if self.strategy == REFERENCE:
            return "test_reference.py"
        if self.strategy == BASELINE:
            return "test_per_sample.py"
        if self.strategy.startswith("torch-"):
            return "test_torch.py"
        if self.strategy in JAX_STRATEGIES:
            return "test_jax.py"
        return "test_chain.py"

    @property
    def function(self) -> str:
        """The test function name inside `module`."""
        return self.module[: -len(".py")]


@dataclasses.dataclass(frozen=True)
class Sweep:
    """Everything a pytest child needs to run its share of a sweep.

    Attributes:
        cases: The cases, in run order.
        sizes: Workload sizes.
        rounds: Timed rounds per case (``benchmark.pedantic(rounds=...)``).
        warmup_rounds: Untimed rounds after the first (tracing) call.
        seed: Seed of the inputs and the weights.
        threads: CPU threads for TensorFlow (intra- and inter-op) and torch.
        timeout_s: Wall-clock cap per case.
        tensor_memory: Record ``peak_tensor_bytes`` on the CPU (see ``bench._measure``).
        passes: Visits of every case (see `bench._runner.run_sweep`); each times ``rounds``
            rounds, and a case's saved figures pool all its visits.
        versus: ``(field, value)`` of `VERSUS_FIELDS`, or None: each case is timed round by
            round in turn with its partner, the same case with that field set to the value
            (`partner_of`), in one process (see ``bench._measure``).
    """

    cases: tuple[Case, ...]
    sizes: Sizes = DEFAULT_SIZES
    rounds: int = 5
    warmup_rounds: int = 1
    seed: int = 0
    threads: int = 2
    timeout_s: float = 300.0
    tensor_memory: bool = False
    passes: int = 1
    versus: tuple[str, str] | None = None

    def to_json(self) -> str:
        """Serialises the sweep (inverse of `from_json`)."""
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Sweep:
        """Reads a sweep written by `to_json`."""
        raw = json.loads(text)
        raw["cases"] = tuple(Case(**c) for c in raw["cases"])
        raw["sizes"] = Sizes(**raw["sizes"])
        if raw.get("versus") is not None:
            raw["versus"] = tuple(raw["versus"])
        return cls(**raw)

    def partner_of(self, case: Case) -> Case | None:
        """The case `case` is timed against under `versus`, or None when it has none.

        The partner is `case` with the `versus` field set to its value. It must be another case,
        measured by the same case module (so one process builds both) and one that is run at
        all (see `build_cases`); a case that is its own partner, such as the ``train`` cases of
        ``versus=("phase", "train")``, has none.
        """
        if self.versus is None:
            return None
        field, value = self.versus
        partner = dataclasses.replace(case, **{field: value})
        # the case's own L already passed the reference's cap, so only the other rules apply
        if partner == case or partner.module != case.module or not _is_run(partner, partner.longest_step):
            return None
        return partner

    def cases_of(self, module: str) -> list[Case]:
        """The cases measured by one case module, e.g. ``"test_chain.py"``."""
        return [c for c in self.cases if c.module == module]


def build_cases(
    strategies: list[str],
    states: list[str],
    phases: list[str],
    longest_steps: list[int],
    lengths: str,
    device: str,
    reference_max_step: int = 8,
    cells: list[str] | None = None,
    hidden: list[int] | None = None,
) -> list[Case]:
    """Crosses the options into cases, dropping combinations that are not run.

    `reference` and `BASELINE` run only for ``longest_step <= reference_max_step`` (they are
    the slow loops); the peers (PyTorch, JAX) run only in the carry and reset modes.
    ``train-notraining`` is measured for chain's strategies only: the reference and the peers have
    no `training` flag to leave out; so is ``train-feedback`` (their model B reads IR alone). The
    `GENERATE_PHASES` are measured for chain's strategies and `BASELINE`, which measures nothing
    else, and the `JAX_GENERATE_PHASES` for the ``jax`` strategy too.

    Args:
        cells: Model-B cells (`CELLS`); default ``["gru"]``.
        hidden: Hidden sizes; default ``[DEFAULT_SIZES.hidden]``.

    Returns:
        Cases ordered by cell, hidden size, strategy, state, phase, then `longest_step`.
    """
    cases = []
    for cell in cells or ["gru"]:
        for size in hidden or [DEFAULT_SIZES.hidden]:
            for strategy in strategies:
                for state in states:
                    for phase in phases:
                        for length in longest_steps:
                            case = Case(strategy, state, phase, length, lengths, device, cell, size)
                            if _is_run(case, reference_max_step):
                                cases.append(case)
    return cases


def _is_run(case: Case, reference_max_step: int) -> bool:
    generating = case.phase in GENERATE_PHASES
    if case.strategy in (REFERENCE, BASELINE) and case.longest_step > reference_max_step:
        return False
    if case.strategy == BASELINE:
        return generating
    if case.strategy in XLA_STRATEGIES:
        return case.phase in XLA_PHASES[case.strategy]
    if case.strategy in PEER_STRATEGIES and case.state not in ("carry", "reset"):
        return False  # the peers implement the carry and reset modes only
    if case.strategy in JAX_STRATEGIES and case.phase in JAX_GENERATE_PHASES:
        return case.strategy != JAX_IN_TF
    peer = case.strategy == REFERENCE or case.strategy in PEER_STRATEGIES
    return not (peer and (case.phase in CHAIN_ONLY_PHASES or generating))


def make_steps(
    batch: int, timesteps: int, longest_step: int, lengths: str, rng: np.random.Generator
) -> np.ndarray:
    """Draws inner-step counts under one of `LENGTH_LAWS` (`datagen.draw_lengths`).

    Returns:
        int32 array of shape (batch, T), values in ``[0, longest_step]``, with ``[0, 0]`` equal to
        ``longest_step``.
    """
    steps = datagen.draw_lengths(check_choice("lengths", lengths, LENGTH_LAWS), rng, (batch, timesteps), longest_step)
    steps[0, 0] = longest_step
    return steps


def padded_targets(workload: dict[str, Any], longest_step: int) -> np.ndarray:
    """The workload's ``y_values`` laid out as padded targets ``(batch, T, longest_step,
    output_size)``, zeros past each ``(b, t)``'s steps: what `Chain.fit` trains on under XLA."""
    steps = np.asarray(workload["steps"])
    values = np.asarray(workload["y_values"])
    out = np.zeros((*steps.shape, longest_step, values.shape[-1]), values.dtype)
    out[np.arange(longest_step)[None, None, :] < steps[..., None]] = values  # (b, t, k) order
    return out


def make_workload(sizes: Sizes, longest_step: int, lengths: str, seed: int) -> dict[str, Any]:
    """Builds one case's inputs and random targets with numpy.

    Returns:
        A dict with ``x`` float32 (batch, T, input_size), ``steps`` int32 (batch, T) and
        ``y_values`` float32 (sum(steps), output_size) in (sample, t, k) order.
    """
    rng = np.random.default_rng(seed)
    steps = make_steps(sizes.batch, sizes.timesteps, longest_step, lengths, rng)
    x = rng.standard_normal((sizes.batch, sizes.timesteps, sizes.input_size)).astype(np.float32)
    y_values = rng.standard_normal((int(steps.sum()), sizes.output_size)).astype(np.float32)
    return {"x": x, "steps": steps, "y_values": y_values}


def token_width(sizes: Sizes) -> int:
    """Width of the token embedding fed back in the `GENERATE_PHASES`: chain's default, min(V, 16)."""
    return min(sizes.output_size, 16)


def real_flops(sizes: Sizes, steps: np.ndarray, phase: str, cell: str = "gru") -> float:
    """FLOPs of the real work of model B and the head, as the roofline counts them.

    With ``G = GATES[cell]`` gate blocks (GRU 3, LSTM 4, SimpleRNN 1), one ``(H, G * H)`` matmul
    costs ``2 * H * G * H`` per row. Per real inner step: the first layer's recurrent matmul, and
    for the 2-layer stack the second layer's input and recurrent matmuls (its input changes at
    every step), plus the head, ``2 * H * O``. Per non-empty ``(b, t)`` run: the first layer's
    input projection once (B's input is ``IR[b, t]`` repeated, so it need not be recomputed per
    step). Gate element-wise work and model A are not counted. A train step counts 3 times the
    forward FLOPs (forward, plus the two matmuls of each backward product). A generation phase adds,
    per real inner step, the first layer's matmul of the fed-back token's embedding,
    ``2 * D * G * H`` with ``D = token_width(sizes)``; a beam search runs every inner step for
    each of its `BEAM_WIDTH` hypotheses.

    Args:
        sizes: Workload sizes (``H = hidden``, ``O = output_size``; IR has ``H`` features).
        steps: int array of shape (batch, T).
        phase: one of `PHASES`.
        cell: one of `CELLS`.

    Returns:
        FLOPs per call.
    """
    h, o = sizes.hidden, sizes.output_size
    matmul = 2 * h * GATES[cell] * h
    per_step = (2 * LAYERS[cell] - 1) * matmul + 2 * h * o
    if phase in GENERATE_PHASES:  # B's input also holds the token just chosen, new at every step
        per_step += 2 * token_width(sizes) * GATES[cell] * h
    if phase == BEAM_PHASE:
        per_step *= BEAM_WIDTH
    per_run = matmul
    flops = float(steps.sum()) * per_step + float(np.count_nonzero(steps)) * per_run
    return flops * (3.0 if phase in TRAIN_PHASES else 1.0)


VERSUS_FIELDS: tuple[str, ...] = ("phase", "strategy")
"""The case fields that ``bench run --versus FIELD=VALUE`` may set to pick each case's partner."""

PARAM_NAMES: tuple[str, ...] = (
    "strategy", "state", "phase", "longest_step", "lengths", "device", "cell", "hidden",
)
QUICK_LONGEST_STEPS: tuple[int, ...] = (1, 4)
QUICK_LEFT_OUT: tuple[str, ...] = ("eager-auto", "padded", "auto", "torch-padded")  # --quick skips these
DEFAULT_LONGEST_STEPS: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64)


def quick_sweep(chain_strategies: list[str]) -> Sweep:
    """The sweep of a bare ``pytest bench/cases`` on the CPU: L in (1, 4), `QUICK_SIZES`, 3 rounds,
    every strategy, forward calls and train steps of the GRU cell."""
    strategies = [*chain_strategies, REFERENCE, *ADDED_PEERS]
    cases = build_cases(strategies, list(STATES), ["forward", "train"], list(QUICK_LONGEST_STEPS), "uniform", "cpu")
    return Sweep(tuple(cases), sizes=QUICK_SIZES, rounds=3)
