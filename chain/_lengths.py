"""Length prediction: a part that composes with a Chain, `Chain(..., lengths=LengthHead())`.

A part owns one way of predicting the lengths `steps[b, t]` when they are not given: the layers
it adds, the logits it computes in the train and test steps, its loss and accuracy, and how
`generate` runs at the lengths it predicts. `Chain` and its train step only call these methods.
A new way is a subclass of :class:`Lengths` that implements them.

The layers a part makes are attached to the Chain under the names the part gives
(`length_head`, `stop_head`, `empty_head` for the built-in parts), so saved models keep their
weight paths.
"""

from __future__ import annotations

from typing import Any, Mapping

import keras
import tensorflow as tf

from ragged_common.checks import check_choice, check_flag

from ._generate import Generated, Generation
from ._losses import replica_mean
from ._ops import segment_ids


class Lengths:
    """Base class of length-prediction parts: subclass it to predict lengths one's own way.

    A part makes its layers (`layers`), computes what the train and test steps need of them
    (`logits`), adds a loss term (`loss`), counts its hits for an accuracy (`hits`) and generates
    at the lengths it predicts (`generate`). `fit`, `evaluate`, `generate`, `chain evaluate`
    and saving call nothing else. Register a subclass with
    `keras.saving.register_keras_serializable` so that saved chains load, and give it
    `get_config` if its constructor takes arguments. See the docs' "Extending" page.

    Attributes:
        metric: the name of the accuracy that `fit` and `evaluate` log.
        tracker: the attribute of the Chain that holds that metric.
    """

    metric = "lengths_accuracy"
    tracker = "lengths_tracker"

    def layers(self, max_steps: int, ir_size: int, b_size: int) -> dict[str, keras.layers.Layer]:
        """Built layers, by the Chain attribute each is attached to; `{}` for none.

        Args:
            max_steps: the chain's cap on lengths.
            ir_size: the width of `IR`.
            b_size: the width of B's outputs (before the head).
        """
        return {}

    def logits(self, layers: Mapping[str, keras.layers.Layer], ir: tf.Tensor, b_flat: tf.Tensor) -> dict[str, tf.Tensor]:
        """What the train and test steps compute; the entries reach `loss` and `hits` as `parts`.

        Args:
            layers: the layers `layers` made, by name.
            ir: model A's output `(batch, T, ir_size)`.
            b_flat: B's outputs `(N, H)` at every real inner step, before the head.
        """
        return {}

    def loss(self, parts: dict[str, tf.Tensor], steps: tf.Tensor, outer: tf.Tensor | None,
             inner: tf.Tensor | None) -> tf.Tensor:  # fmt: skip
        """This replica's float32 loss term, with sample weights per `(b, t)` (`outer`) and per
        real inner step (`inner`), each None for none (`chain.replica_mean` averages)."""
        return tf.constant(0.0)

    def hits(self, parts: dict[str, tf.Tensor], steps: tf.Tensor) -> tf.Tensor:
        """Float 0/1 per prediction, averaged into the accuracy `metric`."""
        raise NotImplementedError

    def generate(self, generation: Generation) -> Generated:
        """Runs the chain free at the lengths this part predicts.

        Args:
            generation: model A's output, the part's layers, and `run_at` / `run_until`.

        Returns:
            What `generation.run_at` or `generation.run_until` returns.
        """
        raise NotImplementedError

    def get_config(self) -> dict[str, Any]:
        return {}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "Lengths":
        return cls(**config)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


@keras.saving.register_keras_serializable(package="chain")
class LengthHead(Lengths):
    """A Dense layer over `IR` with `max_steps + 1` logits, trained on `steps` with cross-entropy;
    `generate` runs at its argmax."""

    metric = "length_accuracy"
    tracker = "length_tracker"

    def layers(self, max_steps, ir_size, b_size):
        head = keras.layers.Dense(max_steps + 1, name="length_head")
        head.build((None, None, ir_size))
        return {"length_head": head}

    def logits(self, layers, ir, b_flat):
        return {"length_logits": layers["length_head"](ir)}

    def loss(self, parts, steps, outer, inner):
        logits = tf.cast(parts["length_logits"], tf.float32)
        return replica_mean(keras.losses.sparse_categorical_crossentropy(steps, logits, from_logits=True), outer)

    def hits(self, parts, steps):
        guess = tf.argmax(parts["length_logits"], axis=-1, output_type=tf.int32)
        return tf.cast(tf.equal(guess, steps), tf.float32)

    def generate(self, generation):
        logits = generation.layers["length_head"](generation.ir)
        return generation.run_at(tf.argmax(logits, axis=-1, output_type=tf.int32))


@keras.saving.register_keras_serializable(package="chain")
class StopToken(Lengths):
    """A stop logit on B's outputs at every inner step ("this is the last one") and an empty logit
    on `IR` ("no step at this t"), trained with binary cross-entropy from `steps`; `generate` runs
    each `(b, t)` until it stops or reaches `max_steps`."""

    metric = "stop_accuracy"
    tracker = "stop_tracker"

    def layers(self, max_steps, ir_size, b_size):
        stop, empty = keras.layers.Dense(1, name="stop_head"), keras.layers.Dense(1, name="empty_head")
        stop.build((None, b_size))
        empty.build((None, None, ir_size))
        return {"stop_head": stop, "empty_head": empty}

    def logits(self, layers, ir, b_flat):
        return {"stop_logits": layers["stop_head"](b_flat)[:, 0], "empty_logits": layers["empty_head"](ir)[..., 0]}

    def loss(self, parts, steps, outer, inner):
        last, empty = stop_targets(steps)
        return replica_mean(_bce(last, parts["stop_logits"]), inner) + replica_mean(_bce(empty, parts["empty_logits"]), outer)

    def hits(self, parts, steps):
        last, empty = stop_targets(steps)
        hits = tf.concat([tf.equal(parts["stop_logits"] > 0, last),
                          tf.reshape(tf.equal(parts["empty_logits"] > 0, empty), [-1])], 0)  # fmt: skip
        return tf.cast(hits, tf.float32)

    def generate(self, generation):
        stop_head = generation.layers["stop_head"]
        empty = generation.layers["empty_head"](generation.ir)[..., 0] > 0
        return generation.run_until(lambda out: stop_head(out)[:, 0] > 0, empty)


@keras.saving.register_keras_serializable(package="chain")
class EndToken(Lengths):
    """An end token of a token chain's vocabulary ends each inner run: `generate` runs each
    `(b, t)` until it picks `token` (which it keeps, as the run's last step) or reaches `max_steps`.

    It adds no layer and no loss: the token loss trains it, the targets of each run ending with
    `token`. Every run then has at least one step. Its accuracy (`end_accuracy`) counts, per real
    step, whether the argmax says "end" exactly at the run's last step.

    Args:
        token: the end token, in `[0, vocab_size)`.

    Raises:
        ValueError: `token` is not an integer >= 0; on a Chain, a token outside its vocabulary or
            a real-valued chain.

    Examples:
        >>> import chain, keras
        >>> net = chain.Chain(keras.layers.GRU(4, return_sequences=True), keras.layers.GRUCell(4),
        ...                   vocab_size=5, max_steps=6, lengths=chain.EndToken(4))
    """

    metric = "end_accuracy"
    tracker = "end_tracker"

    def __init__(self, token: int) -> None:
        if isinstance(token, bool) or not isinstance(token, int) or token < 0:
            raise ValueError(f"`token` must be an integer >= 0 (a token of the vocabulary); received {token!r}")
        self.token = token

    def check_vocabulary(self, vocab_size: int | None) -> None:
        """Raises the ValueError of an end token that a chain of `vocab_size` tokens cannot emit."""
        if vocab_size is None:
            raise ValueError(
                f"lengths={self!r} ends runs at a token, which needs a token chain: build it with "
                "`vocab_size`; received vocab_size=None (a real-valued chain)"
            )
        if self.token >= vocab_size:
            raise ValueError(
                f"the end token must be in [0, {vocab_size}) (vocab_size); received EndToken({self.token})"
            )

    def hits(self, parts, steps):
        last, _ = stop_targets(steps)
        chose_end = tf.equal(tf.argmax(parts["flat"], axis=-1, output_type=tf.int32), self.token)
        return tf.cast(tf.equal(chose_end, last), tf.float32)

    def generate(self, generation):
        return generation.run_until(lambda tokens: tf.equal(tokens, self.token), sees="tokens")

    def get_config(self):
        return {"token": self.token}

    def __repr__(self) -> str:
        return f"EndToken({self.token})"


def _bce(labels: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
    logits = tf.cast(logits, tf.float32)
    return tf.nn.sigmoid_cross_entropy_with_logits(tf.cast(labels, logits.dtype), logits)


def stop_targets(steps: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Labels of the stop head.

    Args:
        steps: `(batch, T)` int32.

    Returns:
        `(last (N,), empty (batch, T))`: `last` is True at the last inner step of each `(b, t)`
        (in flat order), `empty` is True where `steps == 0`.
    """
    flat_steps = tf.reshape(steps, [-1])
    run = segment_ids(flat_steps)  # each inner step's (b, t)
    ends = tf.cumsum(flat_steps)
    return tf.equal(tf.range(tf.size(run)), tf.gather(ends, run) - 1), tf.equal(steps, 0)


def check_generates(part: Lengths | None) -> None:
    """Refuses `generate` without `steps` on a chain that has no lengths part.

    Raises:
        ValueError: `part` is None.
    """
    if part is None:
        raise ValueError(
            "`generate` without `steps` needs predicted lengths: build the Chain with "
            "`lengths=chain.LengthHead()` (or `predict_lengths=True`) or `lengths=chain.StopToken()` "
            "(or `stop='token'`), or pass `steps`; received lengths=None"
        )


def from_options(lengths: Any, predict_lengths: Any, stop: Any, max_steps: int | None) -> Lengths | None:
    """The part of a Chain's options: `lengths`, or the shorthands `predict_lengths=True` and
    `stop="token"`.

    Raises:
        ValueError: a bad value, more than one way given, or a part without `max_steps`.
    """
    if isinstance(lengths, dict):  # as get_config wrote it
        lengths = keras.saving.deserialize_keras_object(lengths)
    if lengths is not None and not isinstance(lengths, Lengths):
        raise ValueError(
            "`lengths` must be a length-prediction part such as chain.LengthHead() or "
            f"chain.StopToken() (a chain.Lengths), or None; received {lengths!r}"
        )
    check_choice("stop", stop, STOP_MODES)
    check_flag("predict_lengths", predict_lengths)
    if predict_lengths and stop:
        raise ValueError("use one way to predict lengths: received predict_lengths=True and stop='token'")
    shorthand = LengthHead() if predict_lengths else StopToken() if stop else None
    if lengths is not None and shorthand is not None:
        which = "predict_lengths=True" if predict_lengths else "stop='token'"
        raise ValueError(f"use one way to predict lengths: received lengths={lengths!r} and {which}")
    part = lengths or shorthand
    which = f"lengths={part!r}" if lengths is not None else "predict_lengths=True" if predict_lengths else "stop='token'"
    if part is not None and max_steps is None:
        raise ValueError(f"{which} needs `max_steps` (the largest length); received max_steps=None")
    if isinstance(part, (StopToken, EndToken)) and max_steps == 0:
        raise ValueError(
            f"{which} runs each (b, t) until its stop logit fires, at most `max_steps` steps, so it needs "
            "max_steps >= 1; received max_steps=0, with which no step could ever run"
        )
    return part


STOP_MODES = (None, "token")
