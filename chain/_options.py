"""The options of a `Chain`: checked once where they enter, and written to its config."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import keras

from ragged_common.bounds import INT32_MAX, INT64_MAX
from ragged_common.checks import OptionError, check_choice, check_flag, check_int, check_optional

from . import _feedback, _lengths
from ._strategies import STRATEGIES

STATES = ("carry", "reset", "init")
"""Where model B's state comes from at each outer step; `docs/semantics.md` states each."""
AUTO = "auto"


@dataclass(frozen=True)
class ChainOptions:
    """A Chain's options, checked; see `Chain` for what each means."""

    output_size: int | None
    state: str
    strategy: str
    max_steps: int | None
    compiled: bool
    fused: bool | str
    lengths: _lengths.Lengths | None
    stateful: bool
    feedback: bool
    feedback_sampling: Any
    sampling_seed: int
    vocab_size: int | None = None
    token_width: int | None = None
    xla: bool = False  # compiled with `jit_compile=True`: set by `Chain.compile`, not a constructor option

    @classmethod
    def checked(cls, output_size: Any, state: Any, strategy: Any, max_steps: Any, compiled: Any, fused: Any,
                predict_lengths: Any, stop: Any, stateful: Any, lengths: Any, feedback: Any,
                feedback_sampling: Any, sampling_seed: Any, vocab_size: Any = None,
                token_width: Any = None) -> "ChainOptions":  # fmt: skip
        """The options from the constructor's arguments, shorthands resolved.

        Raises:
            ValueError: an option of the wrong kind or out of range, or options that conflict;
                the message names the argument and the value received.
        """
        state = check_choice("state", state, STATES)
        strategy = check_choice("strategy", strategy, (*STRATEGIES, AUTO))
        output_size = check_optional(check_int, "output_size", output_size, 1)
        max_steps = check_optional(check_int, "max_steps", max_steps, 0, INT32_MAX)  # steps are int32
        part = _lengths.from_options(lengths, predict_lengths, stop, max_steps)
        fused = check_choice("fused", fused, (AUTO, True, False))
        stateful, feedback = check_flag("stateful", stateful), check_flag("feedback", feedback)
        compiled = check_flag("compiled", compiled)
        if isinstance(feedback_sampling, dict):  # a schedule, as `config` wrote it
            feedback_sampling = keras.saving.deserialize_keras_object(feedback_sampling)
        _feedback.check_sampling(feedback_sampling)
        if feedback_sampling != 0.0 and not feedback:
            raise ValueError(
                "`feedback_sampling` picks between targets and the model's own outputs fed back "
                f"to model B, so it needs feedback=True; received feedback_sampling={feedback_sampling!r}"
            )
        sampling_seed = check_int("sampling_seed", sampling_seed, 0, INT64_MAX)
        token_width = _check_tokens(vocab_size, token_width, output_size, feedback, part)
        output_size = vocab_size if vocab_size is not None else output_size  # the logits' width
        return cls(output_size, state, strategy, max_steps, compiled, fused, part, stateful, feedback,
                   feedback_sampling, sampling_seed, vocab_size, token_width)  # fmt: skip

    def resolved_strategy(self) -> str:
        """`strategy`, or for `"auto"` the fastest that `bench run` measured: `"packed"`; under
        XLA, which cannot compile `"packed"`, `"padded"`."""
        if self.strategy != AUTO:
            return self.strategy
        return "padded" if self.xla else "packed"

    def config(self) -> dict[str, Any]:
        """The options as `Chain.get_config` writes them."""
        sampling = self.feedback_sampling
        return {
            "output_size": None if self.vocab_size is not None else self.output_size,
            "state": self.state,
            "strategy": self.strategy,
            "max_steps": self.max_steps,
            "compiled": self.compiled,
            "fused": self.fused,
            "lengths": None if self.lengths is None else keras.saving.serialize_keras_object(self.lengths),
            "stateful": self.stateful,
            "feedback": self.feedback,
            "feedback_sampling": keras.saving.serialize_keras_object(sampling) if callable(sampling) else sampling,
            "sampling_seed": self.sampling_seed,
            "vocab_size": self.vocab_size,
            "token_width": self.token_width,
        }


def _check_tokens(vocab_size: Any, token_width: Any, output_size: Any, feedback: bool,
                  part: _lengths.Lengths | None) -> int | None:  # fmt: skip
    """The embedding width of a token chain with feedback (None otherwise), the token options checked.

    Raises:
        ValueError: a vocabulary smaller than 2, `output_size` beside `vocab_size`, a bad
            `token_width` or one without a token chain with feedback, or an end token that the
            vocabulary lacks (or on a real-valued chain).
    """
    vocab_size = check_optional(check_int, "vocab_size", vocab_size, 2)
    if vocab_size is not None and output_size is not None:
        raise ValueError(
            "`vocab_size` sets the head's width (V logits), so it excludes `output_size`; received "
            f"output_size={output_size!r} and vocab_size={vocab_size!r}"
        )
    token_width = check_optional(check_int, "token_width", token_width, 1)
    if token_width is not None and (vocab_size is None or not feedback):
        raise ValueError(
            "`token_width` is the width of the embedding of the previous token fed back to model B, "
            f"so it needs vocab_size and feedback=True; received token_width={token_width!r} with "
            f"vocab_size={vocab_size!r} and feedback={feedback!r}"
        )
    if isinstance(part, _lengths.EndToken):
        part.check_vocabulary(vocab_size)
    if vocab_size is None or not feedback:
        return None
    return token_width if token_width is not None else min(vocab_size, 16)


def one_loss_weight(loss_weights: Any) -> float | None:
    """`compile`'s `loss_weights`: one number or None (a Chain has one output loss)."""
    if loss_weights is None or isinstance(loss_weights, (int, float)):
        return loss_weights
    raise OptionError("loss_weights", "one number (a Chain has one output loss) or None", loss_weights)
