"""An up-front estimate of the memory a generation needs, so sizes that cannot fit are refused.

The estimate follows the arrays the generator holds (see ``_generate``): for each sample and
outer step the inputs in float64 and float32, the lengths and their random draws; for each real
inner step its ragged index (int64) and its clean and noisy targets, with the law's float64
intermediates; the teacher's GRU states on top. Its mean inner steps per outer step come from the
length law (clipped at ``longest_step``, less ``zero_fraction``). It is meant to be within a small
factor of the truth (measured: 0.6 GiB peak for 1024 samples at T=1000 with the defaults, where it
says 0.6 to 0.9 GiB per block), and is only used to refuse what is plainly impossible.
"""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path

from ._params import TOKEN_TASKS, ParameterError, Spec

_GIB = 2**30


def mean_steps(spec: Spec) -> float:
    """Expected inner steps per outer step under the spec's length law (an upper estimate)."""
    longest = spec.longest_step
    means = {"fixed": float(longest), "zipf": min(float(longest), 1.6 * math.sqrt(longest))}
    mean = means.get(spec.lengths, longest / 2)
    return mean * (1.0 - spec.zero_fraction)


def _width(spec: Spec) -> int:
    """Numbers per inner step's target: ``output_size``, or a token task's distribution over ``V``."""
    return spec.vocab_size if spec.task in TOKEN_TASKS else spec.output_size


def bytes_needed(spec: Spec, samples: int) -> float:
    """Bytes to generate ``samples`` samples at once (float, since sizes may exceed int64)."""
    hidden = 8.0 * spec.teacher_hidden if spec.task == "teacher" else 0.0
    per_outer = 32.0 + 12.0 * spec.input_size + hidden
    per_inner = 48.0 + 24.0 * _width(spec) + hidden
    weights = 0.0
    if spec.task in TOKEN_TASKS:  # the law, and the decoder's chunks of (runs, V, V) scores
        weights = 16.0 * (spec.input_size + 1) * (spec.vocab_size + 1) ** 2 + 2**27
    if spec.task == "teacher":
        units = spec.teacher_hidden
        weights = 8.0 * 3 * units * (spec.input_size + 3 * units + 4) + 8.0 * units * (spec.output_size + 1)
    return float(samples) * spec.timesteps * (per_outer + mean_steps(spec) * per_inner) + weights


def available_bytes() -> float:
    """This machine's memory, or the cgroup's limit when that is lower."""
    try:
        total = float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return math.inf
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit.isdigit():
            total = min(total, float(limit))
    except OSError:
        pass
    return total


def check_fits(spec: Spec, samples: int, processes: int = 1, *, name: str = "sizes") -> float:
    """Refuses, up front, a generation whose arrays cannot fit in this machine's memory.

    Args:
        spec: the content's parameters.
        samples: samples each process holds at once.
        processes: processes generating at the same time.
        name: the parameter the error names when one process alone cannot fit.

    Returns:
        The estimate in bytes for all processes.

    Raises:
        ValueError (ParameterError): the estimate exceeds the memory; the message gives both.
    """
    each = bytes_needed(spec, samples)
    memory = available_bytes()
    sizes = (f"T={spec.timesteps}, input_size={spec.input_size}, output_size={spec.output_size}, "
             f"longest_step={spec.longest_step} (about {mean_steps(spec):.3g} inner steps per outer step)")  # fmt: skip
    if each > memory:
        raise ParameterError(name, message=f"the sizes need about {each / _GIB:.3g} GiB of memory to generate "
                             f"{samples} samples at once ({sizes}), more than this machine's {memory / _GIB:.3g} GiB")
    if each * processes > memory:
        raise ParameterError("workers", message=f"`workers` {processes} would need about "
                             f"{each * processes / _GIB:.3g} GiB of memory, more than this machine's "
                             f"{memory / _GIB:.3g} GiB; received {processes}")  # fmt: skip
    return each * processes


def bytes_stored(spec: Spec, samples: int) -> float:
    """Bytes that ``samples`` samples take on disk before compression: float32 inputs and targets,
    int32 lengths (float, since sizes may exceed int64)."""
    per_outer = 4.0 + 4.0 * spec.input_size
    per_inner = 4.0 * _width(spec) + (8.0 if spec.task in TOKEN_TASKS else 0.0)
    return float(samples) * spec.timesteps * (per_outer + mean_steps(spec) * per_inner)


def check_disk(spec: Spec, samples: int, out: Path, reclaimed: float = 0.0) -> float:
    """Refuses, up front, a dataset that plainly cannot fit in the free space where it goes.

    Compression may shrink the shards, so only a dataset whose uncompressed size is over twice the
    free space is refused.

    Args:
        spec: the content's parameters.
        samples: the samples this run writes.
        out: the dataset's directory (it may not exist yet).
        reclaimed: bytes of files there that this run replaces.

    Returns:
        The estimate in bytes.

    Raises:
        ValueError (ParameterError, naming `n_samples`): the estimate is over twice the free space.
    """
    need = bytes_stored(spec, samples)
    place = Path(out)
    while not place.exists() and place != place.parent:
        place = place.parent
    try:
        usage = shutil.disk_usage(place)
    except OSError:
        return need
    if usage.total == 0:  # a pseudo file system (/proc, /sys): no size to go by
        return need
    free = float(usage.free) + reclaimed
    if need > 2 * free:
        raise ParameterError(
            "n_samples",
            message=f"{samples} samples would take about {need / _GIB:.3g} GiB on disk uncompressed "
            f"(T={spec.timesteps}, input_size={spec.input_size}, output_size={spec.output_size}, about "
            f"{mean_steps(spec):.3g} inner steps per outer step), over twice the {free / _GIB:.3g} GiB free at "
            f"{str(out)!r}; received {samples}",
        )
    return need
