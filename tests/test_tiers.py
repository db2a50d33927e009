"""The default tier keeps a slice of each large grid, and `-m slow` runs the rest of it."""

from __future__ import annotations

import itertools
import subprocess
import sys
from pathlib import Path

from .tiers import each_once

ROOT = Path(__file__).resolve().parents[1]


def test_each_once_keeps_every_cover_combination_once_with_the_cycle_in_turn():
    cover, cycle = {"kind": ["a", "b", "c", "d", "e"]}, {"state": ["carry", "reset"], "training": [True, None]}
    keep = each_once(cover, cycle)
    kept = [(k, s, t) for k, s, t in itertools.product(cover["kind"], *cycle.values())
            if keep({"kind": k, "state": s, "training": t})]  # fmt: skip
    assert [k for k, _, _ in kept] == cover["kind"]
    assert [(s, t) for _, s, t in kept] == [("carry", True), ("carry", None), ("reset", True), ("reset", None),
                                             ("carry", True)]  # fmt: skip


GRID = """
import pytest

DEFAULT_TIER = {"test_grid": lambda p: p["state"] != "init"}


@pytest.mark.parametrize("state", ["carry", "reset", "init"])
@pytest.mark.parametrize("strategy", ["loop", "padded"])
def test_grid(strategy, state):
    pass


def test_alone():
    pass
"""


def _collected(tmp_path, *args) -> set[str]:
    """The cases that `pytest --collect-only`, with this project's conftest as a plugin, keeps."""
    (tmp_path / "test_grid.py").write_text(GRID)
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", "-p", "tests.conftest",
         "-c", str(ROOT / "pyproject.toml"), "--rootdir", str(tmp_path), *args, str(tmp_path / "test_grid.py")],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    return {line.split("::")[1] for line in out.stdout.splitlines() if "::" in line}


def test_the_default_tier_and_the_slow_tier_split_a_grid_between_them(tmp_path):
    default, slow = _collected(tmp_path), _collected(tmp_path, "-m", "slow")
    assert default == {"test_alone", *(f"test_grid[{s}-{m}]" for s in ("loop", "padded") for m in ("carry", "reset"))}
    assert slow == {"test_grid[loop-init]", "test_grid[padded-init]"}
