"""Target laws. Each maps inputs ``x`` (n, T, input_size) and ``steps`` (n, T) to the clean
targets of every real inner step, flattened in (sample, t, k) order: (sum(steps), output_size).

Notation: ``b`` sample, ``t`` outer step, ``k < steps[b, t]`` inner step, ``c`` the number of
inner steps the sample emitted before this one (over all earlier outer steps and earlier ``k``),
``L = longest_step``, ``D = output_size``, ``d < D`` an output channel.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from . import _gru, _rng, _tokens
from ._params import TOKEN_TASKS, Spec

TEACHER_KEYS = (
    "a_kernel", "a_recurrent_kernel", "a_bias",
    "b_kernel", "b_recurrent_kernel", "b_bias",
    "head_kernel", "head_bias",
)  # fmt: skip


class RaggedIndex(NamedTuple):
    """Coordinates of every real inner step, each (m,) int64 with ``m = sum(steps)``."""

    b: np.ndarray
    t: np.ndarray
    k: np.ndarray
    c: np.ndarray


def ragged_index(steps: np.ndarray) -> RaggedIndex:
    """Sample, outer step, inner step and running count of each real inner step.

    Args:
        steps: int array (n, T).

    Returns:
        A :class:`RaggedIndex` in (sample, t, k) order.
    """
    n, timesteps = steps.shape
    flat = steps.reshape(-1).astype(np.int64)
    position = np.arange(int(flat.sum()))
    cell = np.repeat(np.arange(n * timesteps), flat)
    cell_start = np.cumsum(flat) - flat
    per_sample = flat.reshape(n, timesteps).sum(axis=1)
    sample_start = np.cumsum(per_sample) - per_sample
    b = cell // timesteps
    return RaggedIndex(b, cell % timesteps, position - cell_start[cell], position - sample_start[b])


def echo(x: np.ndarray, steps: np.ndarray) -> np.ndarray:
    """``y[b, t, k] = x[b, t - k]`` for ``t - k >= 0``, zeros where ``t - k < 0``.

    Needs ``output_size == input_size``. Model A must remember the last ``L`` inputs.
    """
    index = ragged_index(steps)
    source = index.t - index.k
    values = x[index.b, np.maximum(source, 0)]
    values[source < 0] = 0.0
    return values


def running_parameters(output_size: int, longest_step: int) -> dict[str, np.ndarray]:
    """Time constants and amplitudes of the ``running`` law (fixed, not random).

    ``tau[d] = (L / 2) * 4^(d / (D - 1))`` (``L / 2`` when ``D = 1``), ``rho[d] = 4 tau[d]``, and
    ``amplitude[d] = (-1)^d * 1.8 / peak`` where ``peak = 4^(-1/3) - 4^(-4/3)`` is the largest
    value of ``exp(-u / rho) - exp(-u / tau)`` over ``u > 0``, so ``|y| <= 1.8``.
    """
    spread = np.arange(output_size) / max(output_size - 1, 1)
    tau = (longest_step / 2) * 4.0**spread
    peak = 4.0 ** (-1 / 3) - 4.0 ** (-4 / 3)
    amplitude = np.where(np.arange(output_size) % 2 == 0, 1.0, -1.0) * 1.8 / peak
    return {"tau": tau, "rho": 4 * tau, "amplitude": amplitude}


def running(steps: np.ndarray, params: dict[str, np.ndarray]) -> np.ndarray:
    """``y[b, t, k, d] = amplitude[d] * (exp(-(c + 1) / rho[d]) - exp(-(c + 1) / tau[d]))``.

    ``c`` counts the inner steps the sample emitted before this one, across outer steps, so only
    a model that carries B's state across outer steps can know it. A GRU cell in carry mode with
    ``2 D`` units represents the law exactly: a unit whose gates ignore input and state, with
    update gate ``z = exp(-1 / tau)`` and candidate ``g``, holds ``g (1 - exp(-(c + 1) / tau))``
    after ``c + 1`` steps, and the head takes differences of two such units.
    """
    count = ragged_index(steps).c[:, None] + 1.0
    slow = np.exp(-count / params["rho"])
    fast = np.exp(-count / params["tau"])
    return params["amplitude"] * (slow - fast)


def bursts_parameters(input_size: int) -> dict[str, np.ndarray]:
    """Projections of the ``bursts`` law: the first three orthonormal DCT-II rows, (3, in).

    ``u[j, i] = s_j cos(pi j (i + 1/2) / in)`` with ``s_0 = sqrt(1 / in)``, ``s_j = sqrt(2 / in)``;
    rows ``j >= in`` are zero (with one input, only the amplitude varies).
    """
    j = np.arange(3)[:, None]
    i = np.arange(input_size)[None, :]
    scale = np.where(j == 0, np.sqrt(1 / input_size), np.sqrt(2 / input_size))
    return {"projection": np.where(j < input_size, scale * np.cos(np.pi * j * (i + 0.5) / input_size), 0.0)}


def bursts(x: np.ndarray, steps: np.ndarray, params: dict[str, np.ndarray], output_size: int) -> np.ndarray:
    """Damped oscillations set by each outer input.

    With ``f = u @ x[b, t]`` (``u`` from :func:`bursts_parameters`):
    ``amplitude = 1 + 0.5 tanh(2 f_0)``, ``frequency = 0.9 + 0.6 tanh(2 f_1)`` (radians per
    inner step), ``decay = 0.3 + 0.2 tanh(2 f_2)`` (per inner step), and
    ``y[b, t, k, d] = amplitude * exp(-decay k) * cos(frequency k + pi d / D)``.
    """
    index = ragged_index(steps)
    features = np.tanh(2.0 * _gru.matmul(x[index.b, index.t], params["projection"].T))
    amplitude = 1.0 + 0.5 * features[:, 0:1]
    frequency = 0.9 + 0.6 * features[:, 1:2]
    decay = 0.3 + 0.2 * features[:, 2:3]
    k = index.k[:, None].astype(np.float64)
    phase = np.pi * np.arange(output_size) / output_size
    return amplitude * np.exp(-decay * k) * np.cos(frequency * k + phase)


AR_TASKS = ("ar", "ar-reset")
AR_LOW, AR_HIGH = 0.8, 0.99
"""The range of the ``ar`` laws' coefficient ``a``: close to 1, so the noise of earlier steps
stays in the outputs and only a model that sees them (feedback) predicts the next one."""


def ar_parameters(spec: Spec) -> dict[str, np.ndarray]:
    """The ``ar`` laws' projections, drawn from the seed's truth stream.

    ``a_kernel`` (in, D) and ``c_kernel`` (in, D) normal with std ``1 / sqrt(in)``, ``a_bias``
    and ``c_bias`` (D,) normal with std 0.5.
    """
    rng = _rng.truth_stream(spec.seed)
    scale = 1.0 / np.sqrt(spec.input_size)
    size = (spec.input_size, spec.output_size)
    return {
        "a_kernel": rng.normal(0.0, scale, size=size),
        "a_bias": rng.normal(0.0, 0.5, size=spec.output_size),
        "c_kernel": rng.normal(0.0, scale, size=size),
        "c_bias": rng.normal(0.0, 0.5, size=spec.output_size),
    }


def ar_coefficients(x: np.ndarray, steps: np.ndarray, params: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """``a`` and ``c`` (sum(steps), D) of every real inner step: functions of its ``x[b, t]``."""
    index = ragged_index(steps)
    inputs = x[index.b, index.t]
    a = AR_LOW + (AR_HIGH - AR_LOW) / (1.0 + np.exp(-2.0 * (_gru.matmul(inputs, params["a_kernel"]) + params["a_bias"])))
    c = 0.1 * np.tanh(_gru.matmul(inputs, params["c_kernel"]) + params["c_bias"])
    return a, c


def _ar_first(steps: np.ndarray, carry: bool) -> np.ndarray:
    """(sum(steps),) True where the previous output is taken as 0: a sample's (carry) or a run's
    (reset) first real inner step."""
    index = ragged_index(steps)
    return index.c == 0 if carry else index.k == 0


def ar(x: np.ndarray, steps: np.ndarray, params: dict[str, np.ndarray], noise: np.ndarray, carry: bool) -> np.ndarray:
    """``y[k] = a(x[b, t]) * y[k - 1] + c(x[b, t]) + e[k]``, elementwise over the D channels.

    ``a = 0.8 + 0.19 sigmoid(2 (x @ a_kernel + a_bias))`` and
    ``c = 0.1 tanh(x @ c_kernel + c_bias)``, ``e`` the Gaussian noise of the step. ``y[-1]`` is 0
    at the sample's first real inner step in ``ar`` (the previous output flows across outer
    steps, as B's state in carry mode) and at every ``(b, t)``'s first step in ``ar-reset``. The
    clean target is the one-step-ahead mean ``a y[k - 1] + c`` given the observed ``y[k - 1]``,
    so the noise floor ``noise ** 2`` is reached only by a model fed its previous output; the
    manifest's ``no_feedback_floor`` is the best MSE without it.
    """
    a, c = ar_coefficients(x, steps, params)
    first = _ar_first(steps, carry)
    clean = np.empty_like(a)
    previous = np.zeros(a.shape[1])
    for p in range(a.shape[0]):
        if first[p]:
            previous = np.zeros(a.shape[1])
        clean[p] = a[p] * previous + c[p]
        previous = clean[p] + noise[p]
    return clean


def ar_no_feedback_floor(x: np.ndarray, steps: np.ndarray, params: dict[str, np.ndarray], noise: float, carry: bool) -> float:
    """The mean over real steps and channels of ``Var(y[k] | x, steps)``: the MSE of the best
    predictor that does not see earlier outputs (``v[k] = a^2 v[k - 1] + noise^2``, ``v[-1] = 0``)."""
    a, _ = ar_coefficients(x, steps, params)
    first = _ar_first(steps, carry)
    variance = np.zeros(a.shape[1])
    total = 0.0
    for p in range(a.shape[0]):
        variance = (np.zeros(a.shape[1]) if first[p] else a[p] ** 2 * variance) + noise**2
        total += float(variance.mean())
    return total / max(a.shape[0], 1)


def teacher_parameters(spec: Spec) -> dict[str, np.ndarray]:
    """Draws the teacher's weights from the seed's truth stream (Keras weight order).

    Kernels are normal with std ``1.5 / sqrt(fan_in)`` (recurrent ``1.2 / sqrt(H)``), biases
    normal with std 0.2, the head's kernel std ``2 / sqrt(H)``: strong enough that targets vary
    with the inputs (clean variance of order 0.1 to 1), gentle enough not to saturate.
    """
    rng = _rng.truth_stream(spec.seed)
    hidden, size_in, size_out = spec.teacher_hidden, spec.input_size, spec.output_size
    shapes = {
        "a_kernel": ((size_in, 3 * hidden), 1.5 / np.sqrt(size_in)),
        "a_recurrent_kernel": ((hidden, 3 * hidden), 1.2 / np.sqrt(hidden)),
        "a_bias": ((2, 3 * hidden), 0.2),
        "b_kernel": ((hidden, 3 * hidden), 1.5 / np.sqrt(hidden)),
        "b_recurrent_kernel": ((hidden, 3 * hidden), 1.2 / np.sqrt(hidden)),
        "b_bias": ((2, 3 * hidden), 0.2),
        "head_kernel": ((hidden, size_out), 2.0 / np.sqrt(hidden)),
        "head_bias": ((size_out,), 0.2),
    }
    return {key: rng.normal(0.0, scale, size=shape).astype(np.float32) for key, (shape, scale) in shapes.items()}


def teacher(x: np.ndarray, steps: np.ndarray, weights: dict[str, np.ndarray]) -> np.ndarray:
    """A fixed chain: ``IR = GRU_A(x)``, GRU cell B in carry mode fed ``IR[b, t]``, linear head.

    Both GRUs follow Keras (``reset_after=True``, gates z, r, h). B's state starts at zeros for
    each sample, flows through every real inner step in order and is untouched by an outer step
    with 0 steps; ``y = B_state @ head_kernel + head_bias``. Computed in float32, like Keras.
    """
    w = {key: np.asarray(value, np.float32) for key, value in weights.items()}
    x_fm = np.ascontiguousarray(x.transpose(1, 2, 0), np.float32)  # feature-major (T, in, n)
    ir = _gru.gru_states(x_fm, w["a_kernel"], w["a_recurrent_kernel"], w["a_bias"])  # (T, H, n)
    projected = _gru.project(ir, w["b_kernel"], w["b_bias"][0])  # (T, 3H, n)
    trace, starts, rank = _carry_trace(projected, steps, _gru.recurrence(w["b_recurrent_kernel"], w["b_bias"][1]))
    outputs = _gru.matmul(trace.T, w["head_kernel"])  # (m, out) in (t, k, sorted sample) order
    flat = np.take(outputs, _trace_rows(steps, starts, rank), axis=0)
    flat.reshape(-1).__iadd__(np.tile(w["head_bias"], len(flat)))  # ~7x faster than broadcasting (out,)
    return flat


def _trace_rows(steps: np.ndarray, starts: np.ndarray, rank: np.ndarray) -> np.ndarray:
    """The trace column of every real inner step, in (sample, t, k) order.

    Step ``k`` of ``(b, t)`` is column ``starts[t, k] + rank[b, t]`` of the trace. Over the ``m``
    real steps in order, ``t K + k = j + (t K - start of (b, t))`` for the ``j``-th step, so the
    index into ``starts`` is a per-cell constant plus ``j``: a ``repeat`` and an add.
    """
    n, timesteps = steps.shape
    flat = steps.reshape(-1).astype(np.int64)
    cell_start = np.cumsum(flat) - flat
    slot = np.tile(np.arange(timesteps, dtype=np.int64) * starts.shape[1], n) - cell_start
    slot = np.repeat(slot, flat)
    slot += np.arange(slot.size, dtype=np.int64)
    columns = np.take(starts.reshape(-1), slot)
    columns += np.repeat(rank.reshape(-1), flat)
    return columns


def _carry_trace(
    projected: np.ndarray, steps: np.ndarray, weights: _gru.Recurrence
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Runs B over all samples at once, outer step by outer step, in carry mode.

    At each ``t`` the samples are sorted by length, longest first, so the samples still running
    at inner step ``k`` are a prefix. Arrays are feature-major (see ``_gru.gru_step``).

    Args:
        projected: (T, 3H, n), ``IR @ b_kernel + b_bias[0]`` from ``_gru.project``.
        steps: (n, T).
        weights: B's recurrent weights (see ``_gru.recurrence``).

    Returns:
        ``trace`` (H, m): B's state after every real inner step, in (t, k, sorted position)
        order; ``starts`` (T, K): the trace column of step ``k`` of outer step ``t`` for the
        sample at sorted position 0 (``K = max(steps)``); ``rank`` (n, T): each sample's sorted
        position at each ``t``.
    """
    n, timesteps = steps.shape
    longest = max(int(steps.max(initial=0)), 1)
    key = (longest - steps).astype(np.uint16 if longest < 2**16 else np.int64)
    order = np.argsort(key, axis=0, kind="stable")  # longest first; radix sort for small keys
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(n)[:, None], axis=0)
    bins = longest + 1
    histogram = np.bincount((steps + np.arange(timesteps) * bins).reshape(-1), minlength=timesteps * bins)
    running = n - np.cumsum(histogram.reshape(timesteps, bins), axis=1)[:, :longest]  # (T, K): count > k
    starts = np.cumsum(running.reshape(-1)) - running.reshape(-1)
    state = np.zeros((weights.kernel.shape[1], n), projected.dtype)
    rows = projected.shape[1]
    inputs = np.concatenate([projected[0], _gru.full_bias(weights, n)])  # (6H, n), rows [0, 3H) refilled per t
    columns: list[np.ndarray] = []
    for t in range(timesteps):
        if t > 0:
            state = state[:, rank[order[:, t], t - 1]]  # re-sort from t - 1's order to t's
        np.take(projected[t], order[:, t], axis=1, out=inputs[:rows])
        state = _inner_run(inputs, state, running[t], weights.kernel, columns)
    trace = np.concatenate(columns, axis=1) if columns else np.zeros((state.shape[0], 0), state.dtype)
    return trace, starts.reshape(timesteps, longest), rank


def _inner_run(
    inputs: np.ndarray, state: np.ndarray, running: np.ndarray, kernel: np.ndarray, trace: list[np.ndarray],
) -> np.ndarray:  # fmt: skip
    """One outer step's inner steps for samples sorted by length, longest first.

    Each step works on contiguous copies of the live prefix: numpy runs 2-D operations on
    contiguous arrays about 1.5 times faster than on column slices of wider ones.

    Args:
        inputs: (6H, n), the projection (``_gru.project``) over the bias (``_gru.full_bias``),
            kept together so that one copy shrinks both.
        state: (H, n) states before this outer step.
        running: (K,) how many samples run inner step ``k`` (non-increasing).
        kernel: B's recurrent kernel (see ``_gru.recurrence``).
        trace: appended with the (H, running[k]) states after each inner step.

    Returns:
        (H, n), each sample's state after its last inner step (unchanged for samples with none).
    """
    final = state.copy()
    previous = state
    rows = inputs.shape[0] // 2
    for k, live in enumerate(running.tolist()):
        if live == 0:
            break
        if live < inputs.shape[1]:
            inputs = np.ascontiguousarray(inputs[:, :live])
            previous = np.ascontiguousarray(previous[:, :live])
        previous = _gru.gru_step(inputs[:rows], inputs[rows:], previous, kernel)
        trace.append(previous)
        ended = int(running[k + 1]) if k + 1 < len(running) else 0
        final[:, ended:live] = previous[:, ended:]  # samples whose last step is k
    return final


def truth(spec: Spec) -> dict[str, np.ndarray]:
    """The ground truth of a spec's law: weights or fixed parameters (empty for ``echo``)."""
    if spec.task == "teacher":
        return teacher_parameters(spec)
    if spec.task == "running":
        return running_parameters(spec.output_size, spec.longest_step)
    if spec.task == "bursts":
        return bursts_parameters(spec.input_size)
    if spec.task in AR_TASKS:
        return ar_parameters(spec)
    if spec.task in TOKEN_TASKS:
        return _tokens.parameters(spec)
    return {}


def truth_file(task: str) -> tuple[str, tuple[str, ...]] | None:
    """The file a task's law is stored in and the arrays it holds, or None where the manifest
    holds the law's parameters (small closed forms)."""
    if task == "teacher":
        return "teacher.npz", TEACHER_KEYS
    if task in TOKEN_TASKS:
        return "tokens.npz", _tokens.TRUTH_KEYS
    return None


def clean_targets(spec: Spec, x: np.ndarray, steps: np.ndarray, law: dict[str, np.ndarray]) -> np.ndarray:
    """Dispatches to the spec's law.

    Args:
        spec: the dataset's parameters.
        x: (n, T, input_size).
        steps: (n, T).
        law: :func:`truth` of the spec.

    Returns:
        float64 (sum(steps), output_size).
    """
    if spec.task == "teacher":
        return teacher(x, steps, law)
    if spec.task == "running":
        return running(steps, law)
    if spec.task == "bursts":
        return bursts(x, steps, law, spec.output_size)
    if spec.task in AR_TASKS:  # without noise; datagen's samples pass theirs (see `ar`)
        return ar(x, steps, law, np.zeros((int(steps.sum()), spec.output_size)), spec.task == "ar")
    return echo(x, steps)


def describe(spec: Spec) -> dict[str, Any]:
    """The law as stored in the manifest: its docstring and, for stateful laws, the state mode."""
    functions = {"teacher": teacher, "running": running, "bursts": bursts, "echo": echo, "ar": ar, "ar-reset": ar}
    words = _tokens.LAW if spec.task in TOKEN_TASKS else functions[spec.task].__doc__
    entry: dict[str, Any] = {"task": spec.task, "law": " ".join((words or "").split())}
    if spec.task in ("teacher", "running", "ar", "tokens"):
        entry["state"] = "carry"
    if spec.task in ("ar-reset", "tokens-reset"):
        entry["state"] = "reset"
    if spec.task in TOKEN_TASKS:
        entry["vocab_size"] = spec.vocab_size
    if spec.task == "teacher":
        entry["hidden"] = {"model_a": spec.teacher_hidden, "model_b": spec.teacher_hidden}
    return entry
