"""The token laws: a first-order Markov chain over ``V`` tokens in each inner run, set by ``x[b, t]``.

Notation as in ``datagen._tasks``: ``b`` sample, ``t`` outer step, ``k < steps[b, t]`` inner
step; a *run* is the ``steps[b, t]`` tokens of one ``(b, t)``. A step's *source* is the token it
follows: the token before it in its run, or at ``k = 0`` the last sampled token of the sample's
previous run with at least one step (``tokens``, carry) or none (``tokens-reset``, and the
sample's first run in ``tokens``). A step without a source draws from the start distribution.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from . import _rng, _tasks
from ._params import TOKEN_TASKS as TOKEN_TASKS
from ._params import Spec

TRUTH_KEYS = ("start_bias", "start_kernel", "transition_bias", "transition_kernel")
SPLITS = ("train", "heldout")
HELDOUT_FRACTION = 0.1
"""The split the manifest's figures use: ``datagen.read``'s and ``datagen.load``'s default."""

LURE, GAP, PEAK, SPREAD, X_SCALE = 2.0, 0.6, 2.0, 0.3, 0.6
"""The parameter generator's constants (logits, nats): a flat row's lure token is ``LURE`` above
the rest, its bait ``LURE - GAP``; a sharp row's peak is ``PEAK`` above; every logit gets normal
noise of std ``SPREAD``, and ``x`` moves each by a normal weight of std ``X_SCALE / sqrt(in)``.
Tuned so that, at the defaults, the greedy walk misses the most likely sequence in about 20% to
50% of the runs of two tokens or more (seeds 0 to 9: 18% to 37% for ``tokens``, 19% to 61% for
``tokens-reset``)."""

_ELEMENTS = 2**21
"""Float64 elements a chunk of rows may hold at once in the (r, in, V) and (r, V, V) products."""


def parameters(spec: Spec) -> dict[str, np.ndarray]:
    """Draws a token law from the seed's truth stream, built so that a greedy walk misses.

    Half the tokens (rounded down) are *sharp*: the row of a sharp token puts
    ``PEAK`` on one sharp token, so from it the chain runs on a likely path. The other tokens are
    *flat*: the row of a flat token, and the start distribution, put ``LURE`` on a flat token (the
    lure, its argmax) and ``LURE - GAP`` on a sharp token (the bait). A greedy walk takes the
    lure and lands on a flat row, where every continuation is unlikely; the most likely sequence
    of two or more tokens often takes the bait instead and follows the sharp rows' peaks.

    Returns:
        ``start_bias`` (V,), ``start_kernel`` (in, V), ``transition_bias`` (V, V) (row: the
        source token) and ``transition_kernel`` (in, V, V), float64.
    """
    rng = _rng.truth_stream(spec.seed)
    size, inputs = spec.vocab_size, spec.input_size
    order = rng.permutation(size)
    sharp, flat = order[: size // 2], order[size // 2 :]  # both non-empty: size >= 2
    bias = rng.normal(0.0, SPREAD, (size + 1, size))  # row `size` is the start distribution's
    rows = np.arange(size + 1)
    is_sharp = np.isin(rows, sharp)
    bait, lure, peak = (rng.choice(sharp, size + 1), rng.choice(flat, size + 1), rng.choice(sharp, size + 1))
    bias[rows[is_sharp], peak[is_sharp]] += PEAK
    bias[rows[~is_sharp], lure[~is_sharp]] += LURE
    bias[rows[~is_sharp], bait[~is_sharp]] += LURE - GAP
    kernel = rng.normal(0.0, X_SCALE / np.sqrt(inputs), (inputs, size + 1, size))
    return {"start_bias": bias[size], "start_kernel": kernel[:, size],
            "transition_bias": bias[:size], "transition_kernel": kernel[:, :size]}  # fmt: skip


LAW = """``P(token | source, x[b, t]) = softmax(transition_bias[source] + x[b, t] @
    transition_kernel[:, source, :])``, and ``softmax(start_bias + x[b, t] @ start_kernel)`` for a
    step without a source: a run's first token in ``tokens-reset`` and the sample's first token in
    ``tokens``; in ``tokens`` a run's first token follows the last token of the sample's previous
    run with at least one step, through the transition of its own ``x[b, t]``. ``y_values`` holds
    the sampled tokens, ``y_clean_values`` the distribution each was drawn from, and
    ``y_best_values`` each run's most likely token sequence given its source (Viterbi)."""
"""The law in words, as the manifest's ``law.law`` gives it."""


class Steps(NamedTuple):
    """Where each real inner step sits, (m,) arrays in (sample, t, k) order."""

    b: np.ndarray
    t: np.ndarray
    k: np.ndarray
    depth: np.ndarray  # the steps before it that it depends on: its count in the sample (carry) or k (reset)
    starts: np.ndarray  # True where the step has no source


def locate(steps: np.ndarray, carry: bool) -> Steps:
    """The coordinates of every real inner step and whether it draws from the start distribution."""
    index = _tasks.ragged_index(steps)
    depth = index.c if carry else index.k
    return Steps(index.b, index.t, index.k, depth, depth == 0)


def sources(where: Steps, tokens: np.ndarray) -> np.ndarray:
    """(m,) int64: the token each step follows, -1 where it has none (see the module's notes)."""
    previous = np.concatenate([[-1], tokens[:-1]]).astype(np.int64)
    return np.where(where.starts, -1, previous)


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def row_log_probs(inputs: np.ndarray, source: np.ndarray, params: dict[str, np.ndarray]) -> np.ndarray:
    """Log-probabilities (r, V) of the next token, one row per ``(x[b, t], source)``.

    Args:
        inputs: (r, in) the outer inputs.
        source: (r,) the source tokens, -1 for the start distribution.
        params: the law (:func:`parameters`).
    """
    size = params["transition_bias"].shape[0]
    logits = np.empty((len(source), size))
    start = source < 0
    logits[start] = params["start_bias"] + inputs[start] @ params["start_kernel"]
    kernel = params["transition_kernel"].transpose(1, 0, 2)  # (V, in, V): the source's (in, V) slice
    rows = np.flatnonzero(~start)
    chunk = max(1, _ELEMENTS // (inputs.shape[1] * size))
    for low in range(0, rows.size, chunk):
        part = rows[low : low + chunk]
        picked = source[part]
        logits[part] = params["transition_bias"][picked] + np.matmul(inputs[part, None, :], kernel[picked])[:, 0]
    return _log_softmax(logits)


def step_log_probs(x: np.ndarray, steps: np.ndarray, tokens: np.ndarray, params: dict[str, np.ndarray],
                   carry: bool) -> np.ndarray:  # fmt: skip
    """(m, V) float64: the law's log-distribution of every real step given its realised source."""
    where = locate(steps, carry)
    return row_log_probs(x[where.b, where.t].astype(np.float64), sources(where, tokens), params)


def _depth_groups(depth: np.ndarray) -> list[np.ndarray]:
    """The step indices at each depth 0, 1, ..., each sorted: steps that can be drawn together."""
    order = np.argsort(depth, kind="stable")
    bounds = np.cumsum(np.bincount(depth, minlength=1))
    return np.split(order, bounds[:-1])


def sample(x: np.ndarray, steps: np.ndarray, params: dict[str, np.ndarray], uniforms: np.ndarray,
           carry: bool) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Draws every real step's token by inverse CDF, in the chain's order.

    Steps at the same depth (the count of earlier steps in the sample for ``tokens``, ``k`` for
    ``tokens-reset``) do not depend on each other and are drawn together.

    Args:
        x: (n, T, in).
        steps: (n, T).
        params: the law.
        uniforms: (m,) uniform on [0, 1), one per real step in (sample, t, k) order.
        carry: ``tokens`` (True) or ``tokens-reset``.

    Returns:
        ``tokens`` int32 (m,) and ``probs`` float64 (m, V), the distribution each was drawn from.
    """
    where = locate(steps, carry)
    inputs = x[where.b, where.t].astype(np.float64)
    size = params["transition_bias"].shape[0]
    tokens = np.zeros(len(uniforms), np.int32)
    probs = np.empty((len(uniforms), size))
    for rows in _depth_groups(where.depth):
        previous = tokens[np.maximum(rows - 1, 0)].astype(np.int64)
        source = np.where(where.starts[rows], -1, previous)
        probs[rows] = np.exp(row_log_probs(inputs[rows], source, params))
        below = np.cumsum(probs[rows], axis=1) <= uniforms[rows, None]
        tokens[rows] = np.minimum(below.sum(axis=1), size - 1)
    return tokens, probs


class Runs(NamedTuple):
    """The runs with at least one step: first step's index, length and source token, (R,) each."""

    first: np.ndarray
    length: np.ndarray
    source: np.ndarray


def runs(steps: np.ndarray, tokens: np.ndarray, carry: bool) -> tuple[Steps, Runs]:
    """Every real step's place and every non-empty run, with the realised token each run follows."""
    where = locate(steps, carry)
    first = np.flatnonzero(where.k == 0)
    length = steps[where.b[first], where.t[first]].astype(np.int64)
    return where, Runs(first, length, sources(where, tokens)[first])


def viterbi(x: np.ndarray, steps: np.ndarray, tokens: np.ndarray, params: dict[str, np.ndarray],
            carry: bool) -> np.ndarray:  # fmt: skip
    """Each run's most likely token sequence at its length, given its realised source.

    Returns:
        int32 (m,): the sequences, laid out like the tokens.
    """
    where, found = runs(steps, tokens, carry)
    best = np.zeros(len(tokens), np.int32)
    size = params["transition_bias"].shape[0]
    chunk = max(1, _ELEMENTS // (size * size))
    for low in range(0, found.first.size, chunk):
        part = Runs(*(column[low : low + chunk] for column in found))
        inputs = x[where.b[part.first], where.t[part.first]].astype(np.float64)
        path = _viterbi_runs(inputs, part, params)
        columns = np.arange(path.shape[1])
        keep = columns[None, :] < part.length[:, None]
        best[(part.first[:, None] + columns[None, :])[keep]] = path[keep]
    return best


def _transitions(inputs: np.ndarray, params: dict[str, np.ndarray]) -> np.ndarray:
    """(r, V, V) log transition matrices of ``r`` outer inputs (row: source, column: next)."""
    logits = params["transition_bias"] + np.einsum("ri,isv->rsv", inputs, params["transition_kernel"])
    return _log_softmax(logits)


def _viterbi_runs(inputs: np.ndarray, part: Runs, params: dict[str, np.ndarray]) -> np.ndarray:
    """The most likely sequences (r, max length) of a chunk of runs; columns past a run's length
    are meaningless. Ties go to the lower token at each choice.

    The runs are taken longest first, so the runs still going at step ``k`` are a prefix.
    """
    order = np.argsort(-part.length, kind="stable")
    matrices = _transitions(inputs[order], params)
    source = part.source[order]
    start = _log_softmax(params["start_bias"] + inputs[order] @ params["start_kernel"])
    score = np.where(source[:, None] < 0, start, matrices[np.arange(len(order)), np.maximum(source, 0)])
    lengths = part.length[order]
    going = [int(count) for count in (lengths[None, :] > np.arange(int(lengths[0]))[:, None]).sum(axis=1)]
    into = np.ascontiguousarray(matrices.transpose(0, 2, 1))  # (r, next, source)
    back = [np.zeros((0, 0), np.int64)]
    last = np.argmax(score, axis=1)
    for k, live in enumerate(going[1:], start=1):
        total = score[:live, None, :] + into[:live]
        back.append(np.argmax(total, axis=2))
        score = np.take_along_axis(total, back[k][:, :, None], axis=2)[:, :, 0]
        ended = going[k + 1] if k + 1 < len(going) else 0  # runs [ended, live) end at step k
        last[ended:live] = np.argmax(score[ended:], axis=1)
    path = np.zeros((len(order), len(going)), np.int64)
    current = last.copy()
    for k in range(len(going) - 1, -1, -1):
        live = going[k]
        path[:live, k] = current[:live]
        if k > 0:
            current[:live] = back[k][np.arange(live), current[:live]]
    ordered = np.empty_like(path)
    ordered[order] = path
    return ordered


def greedy(x: np.ndarray, steps: np.ndarray, tokens: np.ndarray, params: dict[str, np.ndarray],
           carry: bool) -> np.ndarray:  # fmt: skip
    """Each run's greedy walk: from its realised source, the most likely next token at every step.

    Returns:
        int32 (m,), laid out like the tokens.
    """
    where = locate(steps, carry)
    inputs = x[where.b, where.t].astype(np.float64)
    run_source = sources(where, tokens)
    walk = np.zeros(len(tokens), np.int32)
    for k, rows in enumerate(_depth_groups(where.k)):
        source = run_source[rows] if k == 0 else walk[rows - 1].astype(np.int64)
        walk[rows] = np.argmax(row_log_probs(inputs[rows], source, params), axis=1)
    return walk


def shard_statistics(arrays: dict[str, np.ndarray], params: dict[str, np.ndarray], carry: bool, start: int,
                     cut: int) -> dict[str, dict[str, Any]]:  # fmt: skip
    """What the manifest's token figures sum, for the samples of one shard.

    Args:
        arrays: the shard's ``x``, ``steps``, ``y_values`` (tokens) and ``y_best_values``.
        params: the law.
        carry: ``tokens`` (True) or ``tokens-reset``.
        start: the global index of the shard's first sample.
        cut: the global index of the first held-out sample.

    Returns:
        For ``train`` and ``heldout``: ``tokens`` (real steps), ``log_loss`` (the sum of the law's
        negative log-likelihood of the sampled tokens, nats), ``runs`` (runs of two tokens or
        more) and ``greedy_misses`` (those of them whose greedy walk differs from
        ``y_best_values``).
    """
    x, steps, tokens = arrays["x"], arrays["steps"], arrays["y_values"].astype(np.int64)
    log_probs = step_log_probs(x, steps, tokens, params, carry)
    loss = -np.take_along_axis(log_probs, tokens[:, None], axis=1)[:, 0]
    where, found = runs(steps, tokens, carry)
    differs = (greedy(x, steps, tokens, params, carry) != arrays["y_best_values"]).astype(np.int64)
    run_of = np.cumsum(where.k == 0) - 1
    missed = np.bincount(run_of, weights=differs, minlength=found.first.size) > 0
    held_step = start + where.b >= cut
    held_run = held_step[found.first]
    long_run = found.length >= 2
    figures = {}
    for split, mask, run_mask in (("train", ~held_step, ~held_run), ("heldout", held_step, held_run)):
        figures[split] = {"tokens": int(mask.sum()), "log_loss": float(loss[mask].sum()),
                          "runs": int((long_run & run_mask).sum()),
                          "greedy_misses": int((long_run & run_mask & missed).sum())}  # fmt: skip
    return figures


def summary(records: list[dict[str, Any]], heldout_fraction: float) -> dict[str, Any]:
    """The manifest's token figures, summed from its shard records' ``law_stats``.

    Returns:
        ``heldout_fraction``; and for ``all``, ``train`` and ``heldout``: ``cross_entropy_floor``
        (nats per token; None without tokens), ``greedy_miss_rate`` (over runs of two tokens or
        more; None without any) and ``runs`` (how many such runs).
    """
    totals = {split: {key: sum(record["law_stats"][split][key] for record in records)
                      for key in ("tokens", "log_loss", "runs", "greedy_misses")} for split in SPLITS}  # fmt: skip
    totals["all"] = {key: totals["train"][key] + totals["heldout"][key] for key in totals["train"]}
    order = ("all", "train", "heldout")
    return {
        "heldout_fraction": heldout_fraction,
        "cross_entropy_floor": {s: totals[s]["log_loss"] / totals[s]["tokens"] if totals[s]["tokens"] else None
                                for s in order},
        "greedy_miss_rate": {s: totals[s]["greedy_misses"] / totals[s]["runs"] if totals[s]["runs"] else None
                             for s in order},
        "runs": {s: totals[s]["runs"] for s in order},
    }  # fmt: skip
