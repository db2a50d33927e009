"""Distributions of ``steps[b, t]``, the number of inner steps at each outer step.

Every distribution is clipped to ``[0, L]`` with ``L = longest_step``:

* ``fixed``: always ``L``.
* ``uniform``: uniform on the integers ``0..L`` (mean ``L/2``).
* ``poisson``: Poisson with mean ``L/2``.
* ``geometric``: number of failures before the first success, ``P(n) = p (1-p)^n`` for
  ``n >= 0``, with ``p = 2 / (L + 2)`` so the unclipped mean is ``L/2``.
* ``zipf``: heavy tail, ``n = K - 1`` where ``P(K = k) = k^(-a) / zeta(a)`` for ``k >= 1``, with
  exponent ``a = 1.5`` (infinite unclipped mean; the clip at ``L`` holds the tail's mass).
* ``input``: a deterministic function of ``x[b, t, 0]``: ``n = floor((x + 1) / 2 * (L + 1))``.
  The inputs are drawn so that ``x[b, t, 0]`` only falls in the middle 60% of each of the
  ``L + 1`` bins (see :func:`shape_input_channel`), so classes are separated by empty gaps and a
  learned length head can classify them exactly. ``n`` is then uniform on ``0..L``.

``zero_fraction = p`` then sets each step to 0 independently with probability ``p``, from its
own random stream, so ``input`` lengths stay a function of ``x`` only where ``p = 0``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ragged_common.checks import check_choice

RANDOM_LENGTHS: tuple[str, ...] = ("fixed", "uniform", "poisson", "geometric", "zipf")
"""The laws `draw_lengths` draws: every one of :data:`datagen.LENGTHS` but ``input``."""
ZIPF_EXPONENT = 1.5
INPUT_BIN_FILL = 0.6
"""Share of each length bin that ``input`` lengths' ``x[b, t, 0]`` occupies (centred)."""


def parameters(name: str, longest_step: int) -> dict[str, Any]:
    """The documented parameters of a length distribution, as stored in the manifest.

    Args:
        name: one of :data:`datagen.LENGTHS`.
        longest_step: ``L``, the clip.

    Returns:
        A JSON-ready dict, e.g. ``{"name": "poisson", "mean": 4.0, "clip": 8}``.
    """
    low = {"name": name, "clip": longest_step}
    extra: dict[str, Any] = {
        "fixed": {"value": longest_step},
        "uniform": {"low": 0, "high": longest_step},
        "poisson": {"mean": longest_step / 2},
        "geometric": {"p": 2 / (longest_step + 2), "support_starts_at": 0},
        "zipf": {"exponent": ZIPF_EXPONENT, "offset": -1},
        "input": {"channel": 0, "bins": longest_step + 1, "bin_fill": INPUT_BIN_FILL},
    }[name]
    return {**low, **extra}


def shape_input_channel(x: np.ndarray, longest_step: int) -> None:
    """Moves ``x[..., 0]`` into the middle of its length bin, in place.

    Args:
        x: float array (n, T, input_size) with values in [-1, 1).
        longest_step: ``L``; there are ``L + 1`` bins of width ``2 / (L + 1)``.
    """
    bins = longest_step + 1
    position = (x[..., 0] + 1.0) / 2.0 * bins
    index = np.clip(np.floor(position), 0, bins - 1)
    inside = (1.0 - INPUT_BIN_FILL) / 2 + INPUT_BIN_FILL * (position - index)
    x[..., 0] = (index + inside) / bins * 2.0 - 1.0


def lengths_from_input(x: np.ndarray, longest_step: int) -> np.ndarray:
    """The ``input`` law: ``floor((x[..., 0] + 1) / 2 * (L + 1))`` clipped to ``[0, L]``.

    Args:
        x: float array (n, T, input_size).
        longest_step: ``L``.

    Returns:
        int32 array (n, T).
    """
    position = np.floor((x[..., 0].astype(np.float64) + 1.0) / 2.0 * (longest_step + 1))
    return np.clip(position, 0, longest_step).astype(np.int32)


def draw_lengths(
    lengths: str, rng: np.random.Generator, shape: tuple[int, int], longest_step: int
) -> np.ndarray:
    """Draws ``steps`` from one of the random length laws, the laws of :func:`datagen.generate`.

    Args:
        lengths: the law, one of :data:`RANDOM_LENGTHS` (``datagen.LENGTHS`` but ``input``).
        rng: the random stream drawn from.
        shape: ``(n, T)``.
        longest_step: ``L``, the clip.

    Returns:
        int32 array (n, T) with values in ``[0, L]``.

    Raises:
        ValueError: ``lengths`` names no random law.

    Examples:
        >>> import numpy as np
        >>> draw_lengths("fixed", np.random.default_rng(0), (2, 3), 4).tolist()
        [[4, 4, 4], [4, 4, 4]]
    """
    name = check_choice("lengths", lengths, RANDOM_LENGTHS)
    if name == "fixed":
        raw = np.full(shape, longest_step)
    elif name == "uniform":
        raw = rng.integers(0, longest_step + 1, size=shape)
    elif name == "poisson":
        raw = rng.poisson(longest_step / 2, size=shape)
    elif name == "geometric":
        raw = rng.geometric(2 / (longest_step + 2), size=shape) - 1
    else:
        raw = rng.zipf(ZIPF_EXPONENT, size=shape) - 1
    return np.minimum(raw, longest_step).astype(np.int32)


def zero_out(steps: np.ndarray, rng: np.random.Generator, fraction: float) -> None:
    """Sets each entry of ``steps`` (n, T) to 0 with probability ``fraction``, in place."""
    if fraction > 0:
        steps[rng.random(steps.shape) < fraction] = 0
