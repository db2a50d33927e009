"""Generation parameters: defaults, names and the one place they are validated."""

from __future__ import annotations

import dataclasses
import math
import operator
import os
from pathlib import Path
from typing import Any

GENERATOR_VERSION = "1.0.0"
"""Bumped whenever the same parameters and seed would give different content."""

TASKS: tuple[str, ...] = ("echo", "running", "bursts", "teacher", "ar", "ar-reset", "tokens", "tokens-reset")
"""Target laws, see `datagen._tasks` and, for the tokens, `datagen._tokens`."""

TOKEN_TASKS: tuple[str, ...] = ("tokens", "tokens-reset")
"""The laws whose targets are int tokens, one per inner step, rather than real vectors."""

MAX_VOCAB_SIZE = 256
"""Decoding a run costs ``vocab_size ** 2`` per token: at 256, about a minute per block of 1024
samples at the default sizes."""

LENGTHS: tuple[str, ...] = ("fixed", "uniform", "poisson", "geometric", "zipf", "input")
"""Distributions of ``steps[b, t]``, see `datagen._lengths`."""

FORMATS: tuple[str, ...] = ("npz", "tfrecord")
"""Shard file formats."""

MAX_LONGEST_STEP = 2**31 - 1
"""``steps`` are int32."""

MAX_NOISE = 1e18
"""So that the noisy targets and the noise floor ``noise ** 2`` stay finite in float32."""


class ParameterError(ValueError):
    """An invalid parameter value.

    Attributes:
        name: the Python name of the parameter (``longest_step``); the CLI option is the same
            name with dashes (``--longest-step``).
        cli_message: the message as ``datagen``'s command line says it, where it advises other
            arguments (``--overwrite`` for ``overwrite=True``); None where the message is the same.
    """

    def __init__(self, name: str, message: str, *, cli_message: str | None = None) -> None:
        super().__init__(message)
        self.name = name
        self.cli_message = cli_message


@dataclasses.dataclass(frozen=True)
class Spec:
    """Everything that determines a dataset's content.

    Two datasets with equal specs and the same :data:`GENERATOR_VERSION` hold equal samples,
    whatever their shard size, worker count or slicing.
    """

    task: str = "teacher"
    timesteps: int = 16
    input_size: int = 4
    output_size: int = 4
    longest_step: int = 8
    lengths: str = "uniform"
    zero_fraction: float = 0.0
    noise: float = 0.05
    seed: int = 0
    teacher_hidden: int = 8
    vocab_size: int = 12

    def __post_init__(self) -> None:
        _validate_spec(self)

    def to_dict(self) -> dict[str, Any]:
        """The parameters as a JSON-ready dict; ``vocab_size`` only for the token tasks, so the
        manifests of the other tasks are those of earlier versions."""
        values = dataclasses.asdict(self)
        if self.task not in TOKEN_TASKS:
            del values["vocab_size"]
        return values


def _integer(name: str, value: Any, low: int, high: float = math.inf) -> int:
    """Returns ``value`` as an int in ``[low, high]`` or raises a ParameterError naming it."""
    try:
        if isinstance(value, bool):
            raise TypeError
        number = operator.index(value)
    except TypeError:
        raise ParameterError(name, f"`{name}` must be an integer; received {value!r}") from None
    if not low <= number <= high:
        bound = f"in [{low}, {high}]" if high != math.inf else f">= {low}"
        raise ParameterError(name, f"`{name}` must be {bound}; received {number}")
    return number


def _real(name: str, value: Any, low: float, high: float) -> float:
    """Returns ``value`` as a finite float in ``[low, high]`` or raises a ParameterError."""
    try:
        if isinstance(value, (bool, str)):
            raise TypeError
        number = float(value)
    except (TypeError, ValueError):
        raise ParameterError(name, f"`{name}` must be a number; received {value!r}") from None
    if not math.isfinite(number) or not low <= number <= high:
        bound = f"in [{low}, {high}]" if math.isfinite(high) else f"finite and >= {low}"
        raise ParameterError(name, f"`{name}` must be {bound}; received {value!r}")
    return number


def _choice(name: str, value: Any, options: tuple[str, ...]) -> str:
    if value not in options:
        raise ParameterError(name, f"`{name}` must be one of {', '.join(options)}; received {value!r}")
    return str(value)


def _validate_spec(spec: Spec) -> None:
    """Checks and normalises every field of ``spec`` in place (it is frozen, hence setattr)."""
    fields = {
        "task": _choice("task", spec.task, TASKS),
        "timesteps": _integer("timesteps", spec.timesteps, 1),
        "input_size": _integer("input_size", spec.input_size, 1),
        "output_size": _integer("output_size", spec.output_size, 1),
        "longest_step": _integer("longest_step", spec.longest_step, 1, MAX_LONGEST_STEP),
        "lengths": _choice("lengths", spec.lengths, LENGTHS),
        "zero_fraction": _real("zero_fraction", spec.zero_fraction, 0.0, 1.0),
        "noise": _real("noise", spec.noise, 0.0, MAX_NOISE),
        "seed": _integer("seed", spec.seed, 0, 2**63 - 1),
        "teacher_hidden": _integer("teacher_hidden", spec.teacher_hidden, 1),
        "vocab_size": _integer("vocab_size", spec.vocab_size, 2, MAX_VOCAB_SIZE),
    }
    if fields["task"] == "echo" and fields["output_size"] != fields["input_size"]:
        raise ParameterError(
            "output_size",
            "`output_size` must equal `input_size` for task 'echo'; received "
            f"output_size={fields['output_size']}, input_size={fields['input_size']}",
        )
    for key, value in fields.items():
        object.__setattr__(spec, key, value)


def validate_count(name: str, value: Any, low: int = 0, high: float = math.inf) -> int:
    """Validates an integer argument that is not part of the spec (sizes of a run)."""
    return _integer(name, value, low, high)


def validate_choice(name: str, value: Any, options: tuple[str, ...]) -> str:
    """Validates a string argument that must be one of ``options``."""
    return _choice(name, value, options)


def validate_flag(name: str, value: Any) -> bool:
    """Validates a True/False argument: ``'no'`` or ``None`` would otherwise pass by truthiness."""
    if not isinstance(value, bool):
        raise ParameterError(name, f"`{name}` must be True or False; received {value!r}")
    return value


def validate_path(name: str, value: Any) -> Path:
    """Validates a file system path argument: a non-empty ``str`` or ``os.PathLike`` of one.

    An empty path would stand for the current directory, so it is refused too.
    """
    try:
        text = os.fspath(value)
    except TypeError:
        text = None
    if not isinstance(text, str) or not text:
        raise ParameterError(name, f"`{name}` must be a non-empty path (str or os.PathLike); received {value!r}")
    return Path(text)
