"""Decoders: how a token chain picks each inner step's token from its logits while generating.

A decoder follows one contract, `next(logits, index) -> tokens`: the logits `(n, V)` of `n` runs
at one inner step, and `index`, a scalar int that generation counts up once per inner step (it
seeds stateless draws, so the same seed gives the same tokens eagerly and inside a
`tf.function`). The built-in decoders, :class:`Greedy` and :class:`Sampler`, implement it, and
`Chain.generate(x, decoder=...)` calls nothing else; a decoder of one's own subclasses
:class:`Decoder`. The generation loop (`chain._generate`) keeps per-run finished flags and B's
states apart from the decoder, so a search over several hypotheses per run (a beam) can reuse it
with a decoder that also reorders states.
"""

from __future__ import annotations

import math
from typing import Any

import keras
import tensorflow as tf


class Decoder:
    """Base class of decoders: subclass it and implement `next`."""

    def next(self, logits: tf.Tensor, index: tf.Tensor) -> tf.Tensor:
        """The chosen tokens.

        Args:
            logits: `(n, V)` float, the head's output at one inner step of `n` runs.
            index: scalar int32, distinct for every inner step of one generation call.

        Returns:
            `(n,)` int32 tokens in `[0, V)`.
        """
        raise NotImplementedError

    def check(self, vocab_size: int) -> None:
        """Raises a ValueError when the decoder cannot serve a vocabulary of `vocab_size`."""
        return None  # a body AutoGraph can read: a bare docstring made it warn inside tf.function

    def get_config(self) -> dict[str, Any]:
        return {}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "Decoder":
        return cls(**config)

    def key(self) -> tuple:
        """What a traced generation function depends on (its cache key)."""
        return (type(self).__name__, tuple(sorted(self.get_config().items())))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


@keras.saving.register_keras_serializable(package="chain")
class Greedy(Decoder):
    """The most likely token at every step (the argmax of the logits; the lowest id on a tie).

    Examples:
        >>> import tensorflow as tf
        >>> Greedy().next(tf.constant([[0.0, 2.0, 1.0]]), 0).numpy().tolist()
        [1]
    """

    def next(self, logits, index):
        return tf.argmax(logits, axis=-1, output_type=tf.int32)


@keras.saving.register_keras_serializable(package="chain")
class Sampler(Decoder):
    """Draws each token from `softmax(logits / temperature)`, optionally cut to the `top_k` most
    likely tokens and then to the smallest set whose probability reaches `top_p` (nucleus).

    Draws are stateless (`tf.random.stateless_categorical`), seeded by `(seed, index)`: the same
    seed gives the same tokens, eagerly and in a `tf.function`.

    Args:
        temperature: > 0 and finite; below 1 sharpens, above 1 flattens the distribution.
        top_k: keep the `top_k` most likely tokens (1 <= top_k <= V), or None for all.
        top_p: keep the most likely tokens whose probabilities first sum to at least `top_p`,
            in (0, 1]; None (or 1) keeps all.
        seed: an integer >= 0.

    Raises:
        ValueError: an argument out of range, naming it and the value received.

    Examples:
        >>> import tensorflow as tf
        >>> Sampler(top_k=1, seed=3).next(tf.constant([[0.0, 2.0, 1.0]]), 0).numpy().tolist()
        [1]
    """

    def __init__(self, temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
                 seed: int = 0) -> None:  # fmt: skip
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not (
            math.isfinite(temperature) and temperature > 0
        ):
            raise ValueError(f"`temperature` must be a finite number > 0; received {temperature!r}")
        if top_k is not None and (not _is_int(top_k) or top_k < 1):
            raise ValueError(f"`top_k` must be an integer >= 1 or None; received {top_k!r}")
        if top_p is not None and (isinstance(top_p, bool) or not isinstance(top_p, (int, float))
                                  or not 0 < top_p <= 1):  # fmt: skip
            raise ValueError(f"`top_p` must be in (0, 1] or None; received {top_p!r}")
        if not _is_int(seed) or not 0 <= seed < 2**63:
            raise ValueError(f"`seed` must be an integer in [0, 2**63 - 1]; received {seed!r}")
        self.temperature, self.top_k, self.top_p, self.seed = float(temperature), top_k, top_p, int(seed)

    def check(self, vocab_size):
        if self.top_k is not None and self.top_k > vocab_size:
            raise ValueError(
                f"`top_k` must be at most the vocabulary size {vocab_size}; received top_k={self.top_k}"
            )

    def next(self, logits, index):
        logits = cut_logits(tf.cast(logits, tf.float32) / self.temperature, self.top_k, self.top_p)
        seed = tf.stack([tf.constant(self.seed, tf.int64), tf.cast(index, tf.int64)])
        return tf.cast(tf.random.stateless_categorical(logits, 1, seed)[:, 0], tf.int32)

    def get_config(self):
        return {"temperature": self.temperature, "top_k": self.top_k, "top_p": self.top_p, "seed": self.seed}


def cut_logits(logits: tf.Tensor, top_k: int | None, top_p: float | None) -> tf.Tensor:
    """`logits` `(n, V)` with the tokens outside the top-k and top-p sets set to -inf."""
    if top_k is not None:
        kept = tf.math.top_k(logits, top_k).indices
        inside = tf.reduce_max(tf.one_hot(kept, tf.shape(logits)[-1], dtype=tf.int32), axis=1) > 0
        logits = tf.where(inside, logits, -math.inf)
    if top_p is not None and top_p < 1:
        order = tf.argsort(logits, axis=-1, direction="DESCENDING", stable=True)
        probs = tf.gather(tf.nn.softmax(logits), order, batch_dims=1)
        before = tf.cumsum(probs, axis=-1, exclusive=True)  # what the more likely tokens sum to
        keep_sorted = before < top_p
        inside = tf.gather(keep_sorted, tf.argsort(order, axis=-1), batch_dims=1)  # back to token order
        logits = tf.where(inside, logits, -math.inf)
    return logits


def check_decoder(decoder: Any, vocab_size: int | None) -> "Decoder":
    """The decoder for `generate`: `decoder`, or `Greedy()` for None.

    Raises:
        ValueError: the chain has no vocabulary, or `decoder` is not a `chain.Decoder` or cannot
            serve the vocabulary.
    """
    if vocab_size is None:
        if decoder is None:
            return None
        what = "beam search" if type(decoder).__name__ == "Beam" else "`decoder` picks tokens, which"
        raise ValueError(
            f"{what} needs a Chain built with `vocab_size`; received decoder={decoder!r} for a "
            "real-valued chain"
        )
    decoder = Greedy() if decoder is None else decoder
    if not isinstance(decoder, Decoder):
        raise ValueError(
            f"`decoder` must be a chain.Decoder such as chain.Greedy() or chain.Sampler(); received {decoder!r}"
        )
    decoder.check(vocab_size)
    return decoder


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
