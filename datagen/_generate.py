"""``generate``: samples of a dataset, block by block, deterministic in their global index."""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from ragged_common.checks import check_choice, check_flag, check_int

from . import _lengths, _memory, _rng, _tasks, _tokens
from ._params import DEFAULTS, TASKS, TOKEN_TASKS, Spec

X_LOW, X_HIGH = -1.0, 1.0
"""Inputs are i.i.d. uniform on [X_LOW, X_HIGH) (see ``_lengths`` for ``input`` lengths)."""


@functools.lru_cache(maxsize=8)
def law_truth(spec: Spec) -> dict[str, np.ndarray]:
    """The spec's ground truth, cached and read-only."""
    law = _tasks.truth(spec)
    for value in law.values():
        value.setflags(write=False)
    return law


def _inputs_and_steps(spec: Spec, block: int) -> tuple[np.ndarray, np.ndarray]:
    """Draws one block's ``x`` (BLOCK, T, in) float64 and ``steps`` (BLOCK, T) int32."""
    shape = (_rng.BLOCK, spec.timesteps)
    x = _rng.block_stream(spec.seed, _rng.Purpose.X, block).uniform(X_LOW, X_HIGH, (*shape, spec.input_size))
    if spec.lengths == "input":
        _lengths.shape_input_channel(x, spec.longest_step)
        steps = _lengths.lengths_from_input(x, spec.longest_step)
    else:
        rng = _rng.block_stream(spec.seed, _rng.Purpose.LENGTHS, block)
        steps = _lengths.draw_lengths(spec.lengths, rng, shape, spec.longest_step)
    _lengths.zero_out(steps, _rng.block_stream(spec.seed, _rng.Purpose.ZEROS, block), spec.zero_fraction)
    return x, steps


@functools.lru_cache(maxsize=2)
def _block(spec: Spec, block: int) -> dict[str, np.ndarray]:
    """All arrays of one block of :data:`_rng.BLOCK` samples (cached: shards may share a block)."""
    x, steps = _inputs_and_steps(spec, block)
    if spec.task in TOKEN_TASKS:
        arrays = _token_targets(spec, block, x, steps)
    else:
        arrays = _real_targets(spec, block, x, steps)
    arrays = {"x": x.astype(np.float32), "steps": steps, **arrays}
    for value in arrays.values():
        value.setflags(write=False)
    return arrays


def _real_targets(spec: Spec, block: int, x: np.ndarray, steps: np.ndarray) -> dict[str, np.ndarray]:
    """A block's noisy and clean real targets, float32 (sum(steps), output_size)."""
    shape = (int(steps.sum()), spec.output_size)
    noise = np.zeros(shape, np.float32)
    if spec.noise > 0:
        noise = _rng.block_stream(spec.seed, _rng.Purpose.NOISE, block).standard_normal(shape, dtype=np.float32)
        noise *= np.float32(spec.noise)
    if spec.task in _tasks.AR_TASKS:  # the noise drives the law: each step follows the noisy one before
        clean = _tasks.ar(x, steps, law_truth(spec), noise.astype(np.float64), spec.task == "ar").astype(np.float32)
    else:
        clean = _tasks.clean_targets(spec, x, steps, law_truth(spec)).astype(np.float32, copy=False)
    noisy = clean + noise if spec.noise > 0 else clean
    return {"y_values": noisy, "y_clean_values": clean}


def _token_targets(spec: Spec, block: int, x: np.ndarray, steps: np.ndarray) -> dict[str, np.ndarray]:
    """A block's sampled tokens int32 (sum(steps),), the distribution each was drawn from float32
    (sum(steps), vocab_size) and each run's most likely tokens int32 (sum(steps),)."""
    law, carry = law_truth(spec), spec.task == "tokens"
    uniforms = _rng.block_stream(spec.seed, _rng.Purpose.TOKENS, block).random(int(steps.sum()))
    tokens, probs = _tokens.sample(x, steps, law, uniforms, carry)
    best = _tokens.viterbi(x, steps, tokens, law, carry)
    return {"y_values": tokens, "y_clean_values": probs.astype(np.float32), "y_best_values": best}


def no_feedback_floor(spec: Spec, n_samples: int) -> float:
    """An ``ar`` task's best MSE without feedback, on its first ``min(n_samples, BLOCK)`` samples."""
    x, steps = _inputs_and_steps(spec, 0)
    n = min(n_samples, _rng.BLOCK)
    return _tasks.ar_no_feedback_floor(x[:n], steps[:n], law_truth(spec), spec.noise, spec.task == "ar")


def _take(arrays: dict[str, np.ndarray], first: int, stop: int) -> dict[str, np.ndarray]:
    """Samples ``[first, stop)`` of a block (indices within the block)."""
    per_sample = arrays["steps"].sum(axis=1, dtype=np.int64)
    low, high = int(per_sample[:first].sum()), int(per_sample[:stop].sum())
    rows = {key: value[low:high] for key, value in arrays.items() if key.startswith("y_")}
    return {"x": arrays["x"][first:stop], "steps": arrays["steps"][first:stop], **rows}


def generate_spec(spec: Spec, start: int, n_samples: int) -> dict[str, np.ndarray]:
    """Samples ``[start, start + n_samples)`` of the dataset a (validated) spec defines."""
    pieces = []
    for block in range(start // _rng.BLOCK, (start + n_samples - 1) // _rng.BLOCK + 1):
        base = block * _rng.BLOCK
        first, stop = max(start - base, 0), min(start + n_samples - base, _rng.BLOCK)
        pieces.append(_take(_block(spec, block), first, stop))
    if len(pieces) == 1:
        return dict(pieces[0])  # read-only views of the cached block, no copy
    return {key: np.concatenate([piece[key] for piece in pieces]) for key in pieces[0]}


def generate(
    n_samples: int,
    *,
    task: str = DEFAULTS["task"],
    timesteps: int = DEFAULTS["timesteps"],
    input_size: int = DEFAULTS["input_size"],
    output_size: int = DEFAULTS["output_size"],
    longest_step: int = DEFAULTS["longest_step"],
    lengths: str = DEFAULTS["lengths"],
    zero_fraction: float = DEFAULTS["zero_fraction"],
    noise: float = DEFAULTS["noise"],
    seed: int = DEFAULTS["seed"],
    start: int = 0,
    return_truth: bool = False,
    teacher_hidden: int = DEFAULTS["teacher_hidden"],
    vocab_size: int = DEFAULTS["vocab_size"],
) -> dict[str, Any]:
    """Makes inputs, ragged-length labels and targets whose law is known exactly.

    Inputs are i.i.d. uniform on [-1, 1). Sample ``i`` of a dataset depends only on the
    parameters and ``i``, so ``generate(n, start=s)`` equals ``generate(s + n)`` sliced to
    ``[s, s + n)``. Noise comes from its own random stream: changing ``noise`` changes only
    ``y_values``.

    The token tasks (``datagen.TOKEN_TASKS``) sample one int token in ``[0, vocab_size)`` per
    inner step from a Markov chain set by ``x`` (see ``datagen._tokens``); ``output_size`` and
    ``noise`` do not apply to them.

    Args:
        n_samples: number of samples, >= 1.
        task: the target law, one of ``datagen.TASKS`` (see ``datagen._tasks``).
        timesteps: ``T``, outer steps per sample.
        input_size: features per outer step.
        output_size: features per inner step (must equal ``input_size`` for ``echo``).
        longest_step: ``L``, the clip of every length distribution, >= 1.
        lengths: the distribution of ``steps``, one of ``datagen.LENGTHS``.
        zero_fraction: probability in [0, 1] that a step is set to 0 inner steps.
        noise: standard deviation of the Gaussian noise added to the targets.
        seed: the root seed, an integer >= 0.
        start: global index of the first sample.
        return_truth: also return the law's ground truth under ``"truth"``.
        teacher_hidden: units of the teacher's GRU A and GRU cell B.
        vocab_size: ``V``, the tokens of the token tasks, in [2, 256].

    Returns:
        A dict with ``x`` float32 (n_samples, T, input_size), ``steps`` int32 (n_samples, T),
        ``y_values`` float32 (sum(steps), output_size) in (sample, t, k) row order,
        ``y_clean_values`` float32 (sum(steps), output_size) without noise, and with
        ``return_truth`` a dict ``truth`` of numpy arrays. For the token tasks ``y_values`` is
        int32 (sum(steps),), the sampled tokens; ``y_clean_values`` float32 (sum(steps), V),
        the distribution each token was drawn from; and ``y_best_values`` int32 (sum(steps),),
        each run's most likely token sequence given the token it follows.

    Raises:
        ValueError: a parameter is out of range, or the arrays asked for cannot fit in this
            machine's memory (estimated up front); the message names it and the value received.

    Examples:
        >>> data = generate(8, task="running", seed=1)
        >>> data["x"].shape, bool(data["y_values"].shape[0] == data["steps"].sum())
        ((8, 16, 4), True)
    """
    check_choice("task", task, TASKS)  # imported tasks come from `datagen import`, not from a law
    spec = Spec(task, timesteps, input_size, output_size, longest_step, lengths,
                zero_fraction, noise, seed, teacher_hidden, vocab_size)  # fmt: skip
    n_samples = check_int("n_samples", n_samples, 1)
    start = check_int("start", start, 0)
    return_truth = check_flag("return_truth", return_truth)
    _memory.check_fits(spec, _rng.BLOCK)
    _memory.check_fits(spec, _rng.BLOCK + 2 * n_samples, name="n_samples")
    # writable arrays of the caller's own, never views of the cached blocks
    data: dict[str, Any] = {key: np.array(value) for key, value in generate_spec(spec, start, n_samples).items()}
    if return_truth:
        data["truth"] = {key: np.array(value) for key, value in law_truth(spec).items()}
    return data
