"""Generation parameters: defaults, names and the one place they are validated (with `ragged_common.checks`)."""

from __future__ import annotations

import dataclasses
from types import MappingProxyType
from typing import Any, Mapping

from ragged_common.bounds import INT32_MAX, INT64_MAX
from ragged_common.checks import OptionError, check_choice, check_int, check_number

from ._lengths import RANDOM_LENGTHS

GENERATOR_VERSION = "1.0.0"
"""Bumped whenever the same parameters and seed would give different content."""

TASKS: tuple[str, ...] = ("echo", "running", "bursts", "teacher", "ar", "ar-reset", "tokens", "tokens-reset")
"""Target laws, see `datagen._tasks` and, for the tokens, `datagen._tokens`."""

TOKEN_TASKS: tuple[str, ...] = ("tokens", "tokens-reset")
"""The laws whose targets are int tokens, one per inner step, rather than real vectors."""

MAX_VOCAB_SIZE = 256
"""Decoding a run costs ``vocab_size ** 2`` per token: at 256, about a minute per block of 1024
samples at the default sizes."""

IMPORTED_TASKS: tuple[str, ...] = ("chorales",)
"""Datasets read from a real source by ``datagen import`` rather than made by a law: their targets
are int tokens too, and there is no law to compare a fit with (see `datagen._import`)."""

TOKEN_TARGETS: tuple[str, ...] = (*TOKEN_TASKS, *IMPORTED_TASKS)
"""Every task whose stored targets are int tokens, made or imported: what the readers key on."""

IMPORTED_LENGTHS = "data"
"""The ``lengths`` an imported dataset records: its lengths are the source's, drawn from no law."""

LENGTHS: tuple[str, ...] = (*RANDOM_LENGTHS, "input")
"""Distributions of ``steps[b, t]``, see `datagen._lengths`."""

FORMATS: tuple[str, ...] = ("npz", "tfrecord")
"""Shard file formats."""

MAX_NOISE = 1e18
"""So that the noisy targets and the noise floor ``noise ** 2`` stay finite in float32."""

DEFAULTS: Mapping[str, Any] = MappingProxyType({
    "task": "teacher", "timesteps": 16, "input_size": 4, "output_size": 4, "longest_step": 8,
    "lengths": "uniform", "zero_fraction": 0.0, "noise": 0.05, "seed": 0, "teacher_hidden": 8, "vocab_size": 12,
    "n_samples": 4096, "format": "npz", "shard_size": 1024, "workers": 1, "num_shards": 1, "shard_index": 0,
    "out": "demo-data", "heldout_fraction": 0.1,
})  # fmt: skip
"""The default of every parameter of `make` (and of `datagen make`'s options), and of the held-out
share that `read`, `info` and `load` split off; `generate` shares the generation parameters'."""

ParameterError = OptionError
"""datagen's name for `ragged_common.checks.OptionError`: an invalid parameter, named with its value."""


@dataclasses.dataclass(frozen=True)
class Spec:
    """Everything that determines a dataset's content.

    Two datasets with equal specs and the same :data:`GENERATOR_VERSION` hold equal samples,
    whatever their shard size, worker count or slicing.
    """

    task: str = DEFAULTS["task"]
    timesteps: int = DEFAULTS["timesteps"]
    input_size: int = DEFAULTS["input_size"]
    output_size: int = DEFAULTS["output_size"]
    longest_step: int = DEFAULTS["longest_step"]
    lengths: str = DEFAULTS["lengths"]
    zero_fraction: float = DEFAULTS["zero_fraction"]
    noise: float = DEFAULTS["noise"]
    seed: int = DEFAULTS["seed"]
    teacher_hidden: int = DEFAULTS["teacher_hidden"]
    vocab_size: int = DEFAULTS["vocab_size"]

    def __post_init__(self) -> None:
        _validate_spec(self)

    def to_dict(self) -> dict[str, Any]:
        """The parameters as a JSON-ready dict; ``vocab_size`` only for the token tasks, so the
        manifests of the other tasks are those of earlier versions."""
        values = dataclasses.asdict(self)
        if self.task not in TOKEN_TARGETS:
            del values["vocab_size"]
        return values


def _validate_spec(spec: Spec) -> None:
    """Checks and normalises every field of ``spec`` in place (it is frozen, hence setattr)."""
    task = check_choice("task", spec.task, TASKS + IMPORTED_TASKS)
    fields = {
        "task": task,
        "timesteps": check_int("timesteps", spec.timesteps, 1),
        "input_size": check_int("input_size", spec.input_size, 1),
        "output_size": check_int("output_size", spec.output_size, 1),
        "longest_step": check_int("longest_step", spec.longest_step, 1, INT32_MAX),  # steps are int32
        "lengths": check_choice("lengths", spec.lengths, (IMPORTED_LENGTHS,) if task in IMPORTED_TASKS else LENGTHS),
        "zero_fraction": check_number("zero_fraction", spec.zero_fraction, 0, 1),
        "noise": check_number("noise", spec.noise, 0, MAX_NOISE),
        "seed": check_int("seed", spec.seed, 0, INT64_MAX),
        "teacher_hidden": check_int("teacher_hidden", spec.teacher_hidden, 1),
        "vocab_size": check_int("vocab_size", spec.vocab_size, 2, MAX_VOCAB_SIZE),
    }
    if fields["task"] == "echo" and fields["output_size"] != fields["input_size"]:
        raise ParameterError("output_size", message="`output_size` must equal `input_size` for task 'echo'; "
                             f"received output_size={fields['output_size']}, input_size={fields['input_size']}")
    for key, value in fields.items():
        object.__setattr__(spec, key, value)
