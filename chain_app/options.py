"""The options of a fitting run and of `chain generate`, and their checks, importable without TensorFlow.

Every check is written once here, with `ragged_common.checks`, and used twice: by `FitOptions` (a
`ValueError` from the Python API) and by the CLI's option callbacks (exit 2 naming the option).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import datagen
from ragged_common.bounds import FLOAT32_MAX, INT32_MAX
from ragged_common.checks import check_choice, check_file_path, check_flag, check_int, check_number

# Mirrors `chain.STATES` and `chain.STRATEGIES`, which need TensorFlow to import; a test keeps
# them equal.
STATES = ("carry", "reset", "init")
STRATEGIES = ("packed", "padded", "loop", "auto")
MAX_HIDDEN = 8192


class TrainingDiverged(RuntimeError):
    """The loss or the weights became NaN or infinite; the run directory keeps the last good checkpoint."""


def _window(name: str, value: Any) -> int | None:
    """Outer steps per window for truncated backpropagation through time, or None (no windows)."""
    return None if value is None else check_int(name, value, 1, INT32_MAX)


_LR = f"a finite number > 0 (at most {FLOAT32_MAX:.4g}, float32's largest)"  # the optimizer's precision

CHECKS: dict[str, Callable[[str, Any], Any]] = {
    "epochs": lambda name, value: check_int(name, value, 1, INT32_MAX),
    "batch_size": lambda name, value: check_int(name, value, 1, INT32_MAX),
    "hidden": lambda name, value: check_int(name, value, 1, MAX_HIDDEN),
    "lr": lambda name, value: check_number(name, value, 0, FLOAT32_MAX, open_low=True, expected=_LR),
    "seed": lambda name, value: check_int(name, value, 0, INT32_MAX),
    "heldout_fraction": lambda name, value: check_number(name, value, 0, 1, open_low=True, open_high=True),
    "state": lambda name, value: check_choice(name, value, STATES),
    "strategy": lambda name, value: check_choice(name, value, STRATEGIES),
    "predict_lengths": check_flag,
    "stop_token": check_flag,
    "window": _window,
    "feedback": check_flag,
    "feedback_sampling": lambda name, value: check_number(name, value, 0, 1),
    "bidirectional": check_flag,
}
"""The check of each `FitOptions` field, `(name, value) -> value`, shared with the CLI's options."""


SPLITS = ("heldout", "train", "all")
"""The parts of a dataset `chain generate` takes its inputs from: datagen's splits, or all samples."""
SAMPLING = ("temperature", "top_k", "top_p", "seed")
"""`chain generate`'s options that draw tokens (`chain.Sampler`) instead of taking the most likely."""
SEARCH = ("beam", "length_penalty")
"""`chain generate`'s options of a beam search (`chain.Beam`)."""

GENERATE_CHECKS: dict[str, Callable[[str, Any], Any]] = {
    "split": lambda name, value: check_choice(name, value, SPLITS),
    "samples": lambda name, value: check_int(name, value, 1, INT32_MAX),
    "temperature": lambda name, value: check_number(name, value, 0, math.inf, open_low=True),
    "top_k": lambda name, value: check_int(name, value, 1, INT32_MAX),
    "top_p": lambda name, value: check_number(name, value, 0, 1, open_low=True),
    "seed": lambda name, value: check_int(name, value, 0, INT32_MAX),
    "beam": lambda name, value: check_int(name, value, 1, INT32_MAX),
    "length_penalty": lambda name, value: check_number(name, value, 0, math.inf),
    "batch_size": lambda name, value: check_int(name, value, 1, INT32_MAX),
    "out": lambda name, value: check_file_path(name, value, ".json"),
    "plot": lambda name, value: check_file_path(name, value, ".png"),
}
"""The checks of `chain generate`'s options (and `generate_run`'s arguments), `(name, value) -> value`."""


def check_generate_option(name: str, value: Any) -> Any:
    """`value` checked as `chain generate`'s option `name` (a `ragged_common.cli.checked` check)."""
    return GENERATE_CHECKS[name](name, value)


def check_option(name: str, value: Any) -> Any:
    """`value` checked as `FitOptions` field `name` (a `ragged_common.cli.checked` check)."""
    return CHECKS[name](name, value)


@dataclasses.dataclass
class FitOptions:
    """Options of a fitting run; the defaults reach the noise floor on datagen's tasks.

    Attributes:
        state: B's state mode, `"carry"`, `"reset"` or `"init"`.
        epochs: total epochs of the run, in [1, 2**31 - 1].
        batch_size: samples per batch, in [1, 2**31 - 1].
        hidden: units of model A (a GRU) and model B (a GRUCell), in [1, 8192].
        lr: peak learning rate of Adam, finite and > 0; it follows a cosine decay to 1% over the run.
        strategy: the Chain strategy.
        predict_lengths: add a length head trained on `steps`.
        stop_token: add a stop head instead.
        seed: seeds the weights, the per-epoch shuffles and scheduled sampling's draws, in
            [0, 2**31 - 1].
        heldout_fraction: share of the dataset held out when no separate held-out set is given:
            datagen's held-out split, of datagen's default share (`datagen.DEFAULTS`) unless set.
        window: train on consecutive windows of this many outer steps, each sample's in order,
            with the state carried (a stateful chain) and reset per sample: truncated
            backpropagation through time. None trains on whole sequences. At most T.
        feedback: feed model B its previous output (the previous target while training and
            scoring: teacher forcing).
        feedback_sampling: with `feedback`, the probability of feeding the model's own output
            instead of the target at each inner step while training (scheduled sampling), in [0, 1].
        bidirectional: model A reads `x` both ways (a bidirectional GRU of `hidden` units each
            way), so each outer step's `IR` sees the whole sample: for inputs known in full
            beforehand, such as a chorale's lower voices. Not with `window`, whose windows run in
            order with model A's state carried forward only.

    Raises:
        ValueError: an option is out of range or of the wrong type (the message names it), or
            both `predict_lengths` and `stop_token` are set, `feedback_sampling` without
            `feedback`, or `bidirectional` with `window`.

    Examples:
        >>> FitOptions(epochs=3).epochs
        3
    """

    state: str = "carry"
    epochs: int = 60
    batch_size: int = 32
    hidden: int = 64
    lr: float = 6e-3
    strategy: str = "packed"
    predict_lengths: bool = False
    stop_token: bool = False
    seed: int = 0
    heldout_fraction: float = datagen.DEFAULTS["heldout_fraction"]
    window: int | None = None
    feedback: bool = False
    feedback_sampling: float = 0.0
    bidirectional: bool = False

    def __post_init__(self) -> None:
        for name in CHECKS:
            setattr(self, name, check_option(name, getattr(self, name)))
        if self.predict_lengths and self.stop_token:
            raise ValueError("use one of `predict_lengths` and `stop_token`, not both")
        if self.feedback_sampling and not self.feedback:
            raise ValueError(f"`feedback_sampling` needs `feedback`; received feedback_sampling={self.feedback_sampling}")
        if self.bidirectional and self.window is not None:
            raise ValueError(f"`bidirectional` reads each sample whole, which `window` cuts in pieces run in order; "
                             f"received bidirectional=True and window={self.window}")  # fmt: skip

    @classmethod
    def from_state(cls, values: Any, where: str) -> FitOptions:
        """The options stored in a run's state, or a ValueError naming `where` and the problem."""
        if not isinstance(values, dict):
            raise ValueError(f"{where}: `options` must be an object; received {values!r}")
        unknown = sorted(set(values) - {field.name for field in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"{where}: `options` has unknown keys {unknown}")
        try:
            return cls(**values)
        except ValueError as error:
            raise ValueError(f"{where}: {error}") from None
