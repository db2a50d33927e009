"""The options of a `Chain`: checked once where they enter, and written to its config."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import keras

from . import _feedback, _lengths, _validate
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
        _check_sizes(output_size, state, strategy, max_steps)
        part = _lengths.from_options(lengths, predict_lengths, stop, max_steps)
        if not (isinstance(fused, bool) or (isinstance(fused, str) and fused == AUTO)):
            raise ValueError(f"`fused` must be 'auto', True or False; received {fused!r}")
        for name, value in (("stateful", stateful), ("feedback", feedback), ("compiled", compiled)):
            if not isinstance(value, bool):
                raise ValueError(f"`{name}` must be True or False; received {value!r}")
        if isinstance(feedback_sampling, dict):  # a schedule, as `config` wrote it
            feedback_sampling = keras.saving.deserialize_keras_object(feedback_sampling)
        _feedback.check_sampling(feedback_sampling)
        if feedback_sampling != 0.0 and not feedback:
            raise ValueError(
                "`feedback_sampling` picks between targets and the model's own outputs fed back "
                f"to model B, so it needs feedback=True; received feedback_sampling={feedback_sampling!r}"
            )
        if not _is_int(sampling_seed) or not 0 <= sampling_seed < 2**63:
            raise ValueError(f"`sampling_seed` must be an integer in [0, 2**63 - 1]; received {sampling_seed!r}")
        token_width = _check_tokens(vocab_size, token_width, output_size, feedback, part)
        output_size = vocab_size if vocab_size is not None else output_size  # the logits' width
        return cls(output_size, state, strategy, max_steps, compiled, fused, part, stateful, feedback,
                   feedback_sampling, int(sampling_seed), vocab_size, token_width)  # fmt: skip

    def resolved_strategy(self) -> str:
        """`strategy`, or `"packed"` for `"auto"` (the fastest in every case `bench run` measured)."""
        return "packed" if self.strategy == AUTO else self.strategy

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


def _check_sizes(output_size: Any, state: Any, strategy: Any, max_steps: Any) -> None:
    if state not in STATES:
        raise ValueError(f"`state` must be one of {STATES}; received {state!r}")
    allowed = (*STRATEGIES, AUTO)
    if strategy not in allowed:
        raise ValueError(f"`strategy` must be one of {allowed}; received {strategy!r}")
    if output_size is not None and (not _is_int(output_size) or output_size <= 0):
        raise ValueError(f"`output_size` must be a positive int or None; received {output_size!r}")
    if max_steps is not None and (not _is_int(max_steps) or max_steps < 0):
        raise ValueError(f"`max_steps` must be a non-negative int or None; received {max_steps!r}")
    if max_steps is not None and max_steps > _validate.INT32_MAX:
        raise ValueError(
            f"`max_steps` must be a non-negative int of at most {_validate.INT32_MAX} (steps are int32) or None; "
            f"received {max_steps!r}"
        )


def _check_tokens(vocab_size: Any, token_width: Any, output_size: Any, feedback: bool,
                  part: _lengths.Lengths | None) -> int | None:  # fmt: skip
    """The embedding width of a token chain with feedback (None otherwise), the token options checked.

    Raises:
        ValueError: a vocabulary smaller than 2, `output_size` beside `vocab_size`, a bad
            `token_width` or one without a token chain with feedback, or an end token that the
            vocabulary lacks (or on a real-valued chain).
    """
    if vocab_size is not None and (not _is_int(vocab_size) or vocab_size < 2):
        raise ValueError(f"`vocab_size` must be an integer >= 2 (or None); received {vocab_size!r}")
    if vocab_size is not None and output_size is not None:
        raise ValueError(
            "`vocab_size` sets the head's width (V logits), so it excludes `output_size`; received "
            f"output_size={output_size!r} and vocab_size={vocab_size!r}"
        )
    if token_width is not None and (not _is_int(token_width) or token_width < 1):
        raise ValueError(f"`token_width` must be a positive int or None; received {token_width!r}")
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


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # True would be a size of 1


def one_loss_weight(loss_weights: Any) -> float | None:
    """`compile`'s `loss_weights`: one number or None (a Chain has one output loss)."""
    if loss_weights is None or isinstance(loss_weights, (int, float)):
        return loss_weights
    raise ValueError(
        "`loss_weights` must be one number (a Chain has one output loss) or None; "
        f"received {loss_weights!r}"
    )
