"""Decoding each run in the context of the true runs before it, as a law's per-run truth is stated."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import tensorflow as tf

from . import _ragged
from ._beam import Beam

if TYPE_CHECKING:
    from ._model import Chain


def decode_runs(net: "Chain", x: Any, steps: Any, targets: Any, decoder: Any = None,
                return_scores: bool = False) -> Any:  # fmt: skip
    """Decodes every `(b, t)` run of a token chain at its given length, given the target tokens
    of the runs before it.

    `Chain.generate` runs free: in carry mode the run at `t` starts from the state and the token
    that the chain's *own* earlier runs left. Here each run starts where the *targets* leave the
    chain instead (teacher forcing up to `t`), which is how "the most likely run given what came
    before" is defined, e.g. datagen's `y_best_values` for the `tokens` task. In reset and init
    modes no run sees another, and this is `net.generate(x, steps, decoder=...)`.

    Args:
        net: a token `chain.Chain`, not stateful.
        x: `(batch, T, input_size)`; steps: `(batch, T)` lengths.
        targets: the token ids `(batch, T, None)`, ragged, with row lengths `steps`.
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
    steps = tf.convert_to_tensor(steps)
    states, made = None, []
    for t in range(int(x.shape[1])):
        window = (x[:, t:t + 1], steps[:, t:t + 1])
        made.append(net.generate(*window, initial_state=states, decoder=decoder, return_scores=True))
        given = {"targets": targets[:, t:t + 1]} if net.feedback else {}
        _, states = net(*window, initial_state=states, return_state=True, **given)
    if not made:
        return net.generate(x, steps, decoder=decoder, return_scores=return_scores)
    width = decoder.width if isinstance(decoder, Beam) else None
    tokens, scores = (_join([m[i] for m in made], tf.cast(steps, tf.int32), width) for i in (0, 1))
    return (tokens, scores) if return_scores else tokens


def _join(windows: list[tf.RaggedTensor], steps: tf.Tensor, width: int | None) -> tf.RaggedTensor:
    """One-step windows, `(batch, 1, None)` or with a beam `(batch, K, 1, None)`, joined along T
    into the layout `generate` returns; `steps` `(batch, T)`."""
    if width is not None:
        steps = tf.repeat(steps[:, None], width, axis=1)  # (batch, K, T)
    flat_steps = tf.reshape(steps, [-1, steps.shape[-1]])  # a row per sample (and beam)
    rows = [tf.RaggedTensor.from_row_lengths(w.flat_values, flat_steps[:, t]) for t, w in enumerate(windows)]
    return _ragged.ragged_from_flat(tf.concat(rows, axis=1).flat_values, steps)  # each row's tokens in t order
