"""Which cases of a large parameter grid the default tier keeps (see `DEFAULT_TIER` in conftest).

The full grid runs in the slow tier (`python -m pytest -m slow`); the default tier keeps a
slice in which every value of every axis still appears.
"""

from __future__ import annotations

from math import prod
from typing import Any, Callable, Sequence


def _radix(axes: dict[str, Sequence[Any]], params: dict[str, Any]) -> int:
    index = 0
    for name, values in axes.items():
        index = index * len(values) + list(values).index(params[name])
    return index


def each_once(cover: dict[str, Sequence[Any]], cycle: dict[str, Sequence[Any]]) -> Callable[[dict], bool]:
    """Keeps every combination of the `cover` axes once, paired with the `cycle` axes' combinations
    in turn: combination `k` of `cover` runs with combination `k mod M` of `cycle` (M of them).

    With more `cover` combinations than `cycle` ones, every value of every axis is kept.
    """
    size = prod(len(v) for v in cycle.values())
    return lambda params: _radix(cover, params) % size == _radix(cycle, params)
