"""Decoding each run in the context of the true runs before it, as a law's per-run truth is stated."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import tensorflow as tf

from . import _ragged
from ._beam import Beam
from ._model_a import ModelAState
from ._ops import masked, segment_ids

if TYPE_CHECKING:
    from ._model import Chain


def decode_runs(net: "Chain", x: Any, steps: Any, targets: Any, decoder: Any = None,
                return_scores: bool = False) -> Any:  # fmt: skip
    """Decodes every `(b, t)` run of a token chain at its given length, given the target tokens
    of the runs before it.

    `Chain.generate` runs free: in carry mode the run at `t` starts from the state and the token
    that the chain's *own* earlier runs left. Here each run starts where the *targets* leave the
    chain instead (teacher forcing up to `t`), which is how "the most likely run given what came
    before" is defined, e.g. datagen's `y_best_values` for the `tokens` task. Model A reads the
    whole of `x` for every run, as in a call, so a model A that reads both ways (e.g.
    `keras.layers.Bidirectional`) sees the beats after `t` too. In reset and init modes no run
    sees another, and this is `net.generate(x, steps, decoder=...)`.

    Args:
        net: a token `chain.Chain`, not stateful.
        x: `(batch, T, input_size)`; steps: `(batch, T)` lengths.
        targets: the token ids `(batch, T, None)`, ragged with row lengths `steps`, or padded
            `(batch, T, L)`.
        decoder: a `chain.Decoder` (`chain.Greedy()` by default, `chain.Sampler`, `chain.Beam`).
        return_scores: also return the log probabilities, as `generate` does.

    Returns:
        What `net.generate(x, steps, decoder=decoder, return_scores=...)` returns: tokens
        `(batch, T, None)`, or `(batch, K, T, None)` with a `chain.Beam(K)`.

    Raises:
        ValueError: `net` is not a token chain, or is stateful; the arguments as `generate`
            and a call refuse them.
    """
    if getattr(net, "vocab_size", None) is None:
        raise ValueError(f"`decode_runs` needs a token chain (built with `vocab_size`); received {net!r}")
    if net.stateful:
        raise ValueError("`decode_runs` runs windows from explicit states: received a stateful chain; "
                         "set `net.stateful = False` first")  # fmt: skip
    if net.state != "carry":
        return net.generate(x, steps, decoder=decoder, return_scores=return_scores)
    x = tf.convert_to_tensor(x)
    steps = tf.cast(tf.convert_to_tensor(steps), tf.int32)
    decode = _by_windows if ModelAState(net.model_a).kind != "none" else _over_the_whole_sample
    made = decode(net, x, steps, targets, decoder)
    if not made:
        return net.generate(x, steps, decoder=decoder, return_scores=return_scores)
    width = decoder.width if isinstance(decoder, Beam) else None
    tokens, scores = (_join([m[i] for m in made], tf.cast(steps, tf.int32), width) for i in (0, 1))
    return (tokens, scores) if return_scores else tokens


def _by_windows(net: "Chain", x: tf.Tensor, steps: tf.Tensor, targets: Any, decoder: Any) -> list:
    """Each outer step `t` as a window of its own, from the states that the teacher-forced window
    before it left: exact where the chain carries model A's state (a recurrent layer, or a slice
    model), and one step of work per step."""
    states, made = None, []
    for t in range(int(x.shape[1])):
        window = (x[:, t:t + 1], steps[:, t:t + 1])
        made.append(net.generate(*window, initial_state=states, decoder=decoder, return_scores=True))
        given = {"targets": targets[:, t:t + 1]} if net.feedback else {}
        _, states = net(*window, initial_state=states, return_state=True, **given)
    return made


def _over_the_whole_sample(net: "Chain", x: tf.Tensor, steps: tf.Tensor, targets: Any, decoder: Any) -> list:
    """Each outer step `t` from calls over the whole of `x`, for a model A whose state the chain
    does not see (e.g. `keras.layers.Bidirectional`, which reads the steps after `t` too): B runs
    the targets of the runs before `t` only (an empty run passes B's state on unchanged), then
    generates at `t` alone."""
    outer = tf.range(tf.shape(steps)[1])[None]
    made = []
    for t in range(int(x.shape[1])):
        before = outer < t
        given = {"targets": _keep_runs(targets, steps, before)} if net.feedback else {}
        _, states = net(x, tf.where(before, steps, 0), return_state=True, **given)
        made.append(net.generate(x, tf.where(outer == t, steps, 0), initial_state={"model_b": states["model_b"]},
                                 decoder=decoder, return_scores=True))  # fmt: skip
    return made


def _keep_runs(targets: Any, steps: tf.Tensor, keep: tf.Tensor) -> tf.RaggedTensor:
    """`targets` `(batch, T, None)` (ragged, or padded `(batch, T, L)`) with the runs where `keep`
    `(batch, T)` is False emptied."""
    if isinstance(targets, tf.RaggedTensor):
        flat = targets.flat_values
    else:
        padded = tf.convert_to_tensor(targets)
        flat = masked(padded, tf.sequence_mask(steps, tf.shape(padded)[2]))
    keep = tf.broadcast_to(keep, tf.shape(steps))
    flat_keep = tf.gather(tf.reshape(keep, [-1]), segment_ids(tf.reshape(steps, [-1])))
    return _ragged.ragged_from_flat(masked(flat, flat_keep), tf.where(keep, steps, 0))


def _join(windows: list[tf.RaggedTensor], steps: tf.Tensor, width: int | None) -> tf.RaggedTensor:
    """The runs decoded one outer step `t` at a time, joined into the layout `generate` returns.

    `windows[t]` is `(batch, T, None)` or with a beam `(batch, K, T, None)`, with real runs at `t`
    alone: its flat values are those runs, one per sample (and beam). `steps` `(batch, T)`."""
    if width is not None:
        steps = tf.repeat(steps[:, None], width, axis=1)  # (batch, K, T)
    flat_steps = tf.reshape(steps, [-1, steps.shape[-1]])  # a row per sample (and beam)
    rows = [tf.RaggedTensor.from_row_lengths(w.flat_values, flat_steps[:, t]) for t, w in enumerate(windows)]
    return _ragged.ragged_from_flat(tf.concat(rows, axis=1).flat_values, steps)  # each row's tokens in t order
