"""The options of a fitting run and their checks, importable without TensorFlow.

Every check is written once here and used twice: by `FitOptions` (a `ValueError` from the Python
API) and by the CLI's option callbacks (exit 2 naming the option).
"""

from __future__ import annotations

import dataclasses
from typing import Any

# Mirrors `chain.STATES` and `chain.STRATEGIES`, which need TensorFlow to import; a test keeps
# them equal.
STATES = ("carry", "reset", "init")
STRATEGIES = ("packed", "padded", "loop", "auto")
INT32_MAX = 2**31 - 1
FLOAT32_MAX = 3.4028234663852886e38
MAX_HIDDEN = 8192


class OptionError(ValueError):
    """An invalid option: `"`name` must be EXPECTED; received VALUE"`.

    Attributes:
        name: the option's field name, e.g. `"batch_size"`.
        detail: the message without the name, for a CLI that names the option itself.
    """

    def __init__(self, name: str, expected: str, value: Any) -> None:
        self.name = name
        self.detail = f"must be {expected}; received {value!r}"
        super().__init__(f"`{name}` {self.detail}")


class TrainingDiverged(RuntimeError):
    """The loss or the weights became NaN or infinite; the run directory keeps the last good checkpoint."""


def check_int(name: str, value: Any, low: int, high: int) -> int:
    """`value` as an int in `[low, high]`, or an OptionError naming `name`."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise OptionError(name, f"an integer in [{low}, {high}]", value)
    return value


def check_lr(value: Any) -> float:
    """A learning rate: finite and > 0 in float32, the optimizer's precision."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= FLOAT32_MAX:
        raise OptionError("lr", f"a finite number > 0 (at most {FLOAT32_MAX:.4g}, float32's largest)", value)
    return float(value)


def check_fraction(value: Any) -> float:
    """A held-out share, in (0, 1)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
        raise OptionError("heldout_fraction", "a number in (0, 1)", value)
    return float(value)


def check_window(value: Any) -> int | None:
    """Outer steps per window for truncated backpropagation through time, or None (no windows)."""
    return None if value is None else check_int("window", value, 1, INT32_MAX)


def check_sampling(value: Any) -> float:
    """A scheduled-sampling probability, in [0, 1]."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise OptionError("feedback_sampling", "a number in [0, 1]", value)
    return float(value)


def check_choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise OptionError(name, f"one of {', '.join(choices)}", value)
    return value


def check_flag(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise OptionError(name, "True or False", value)
    return value


CHECKS = {
    "epochs": lambda value: check_int("epochs", value, 1, INT32_MAX),
    "batch_size": lambda value: check_int("batch_size", value, 1, INT32_MAX),
    "hidden": lambda value: check_int("hidden", value, 1, MAX_HIDDEN),
    "lr": check_lr,
    "seed": lambda value: check_int("seed", value, 0, INT32_MAX),
    "heldout_fraction": check_fraction,
    "state": lambda value: check_choice("state", value, STATES),
    "strategy": lambda value: check_choice("strategy", value, STRATEGIES),
    "predict_lengths": lambda value: check_flag("predict_lengths", value),
    "stop_token": lambda value: check_flag("stop_token", value),
    "window": check_window,
    "feedback": lambda value: check_flag("feedback", value),
    "feedback_sampling": check_sampling,
}


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
        heldout_fraction: share of the dataset held out when no separate held-out set is given.
        window: train on consecutive windows of this many outer steps, each sample's in order,
            with the state carried (a stateful chain) and reset per sample: truncated
            backpropagation through time. None trains on whole sequences. At most T.
        feedback: feed model B its previous output (the previous target while training and
            scoring: teacher forcing).
        feedback_sampling: with `feedback`, the probability of feeding the model's own output
            instead of the target at each inner step while training (scheduled sampling), in [0, 1].

    Raises:
        ValueError: an option is out of range or of the wrong type (the message names it), or
            both `predict_lengths` and `stop_token` are set, or `feedback_sampling` without
            `feedback`.

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
    heldout_fraction: float = 0.1
    window: int | None = None
    feedback: bool = False
    feedback_sampling: float = 0.0

    def __post_init__(self) -> None:
        for name, check in CHECKS.items():
            setattr(self, name, check(getattr(self, name)))
        if self.predict_lengths and self.stop_token:
            raise ValueError("use one of `predict_lengths` and `stop_token`, not both")
        if self.feedback_sampling and not self.feedback:
            raise ValueError(f"`feedback_sampling` needs `feedback`; received feedback_sampling={self.feedback_sampling}")

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
