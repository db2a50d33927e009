"""A case directory whose cases measure a framework that needs no TensorFlow.

`bench._runner` runs the cases of `bench._runner.CASES_DIR` in pytest children. `write_cases`
makes a directory with the same case modules (``test_chain.py``, ``test_reference.py``,
``test_per_sample.py``, ``test_torch.py``, ``test_jax.py``) and the same conftest, each case
measured through `bench._measure.measure_case` with `FakeFramework`: a child starts in about a
second instead of importing TensorFlow, so the runner's protocol (events, crashes, timeouts,
passes, partners, skips) is tested fast. One real `bench run` (tests/bench/test_end_to_end.py)
measures TensorFlow.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench._measure import NoDeviceMemory, measure_case
from bench._workloads import Case, Sizes, Sweep

ROOT = Path(__file__).resolve().parents[2]
STEP_S = 0.002  # one fake step
NO_GPU = "the fake framework has no GPU"


class FakeFramework:
    """`bench._measure.Framework` whose step sleeps `STEP_S`; it never sees a GPU."""

    def versions(self) -> dict[str, str]:
        return {"fake_version": "1"}

    def skip_reason(self, device: str) -> str | None:
        return NO_GPU if device == "gpu" else None

    def scope(self, device: str) -> contextlib.AbstractContextManager[Any]:
        return contextlib.nullcontext()

    def device_memory(self, device: str) -> NoDeviceMemory:
        return NoDeviceMemory()

    def matmul_figures(self, sizes: Sizes, device: str, cell: str) -> dict[str, float]:
        return {}

    def build(self, case: Case, sizes: Sizes, workload: dict[str, Any], seed: int) -> Callable[[], float]:
        def step() -> float:
            time.sleep(STEP_S)
            return 0.0

        return step


def test_case(benchmark: Any, bench_case: Case, sweep: Sweep) -> None:
    """The body of every fake case module's test function."""
    measure_case(benchmark, bench_case, sweep, FakeFramework())


CONFTEST = "from bench.cases.conftest import *  # noqa: F401,F403  (the hooks and fixtures of bench's cases)\n"
MODULE = "from tests.bench.fake_cases import test_case as {name}  # noqa: F401\n"


def write_cases(directory: Path) -> Path:
    """Writes the fake case directory (the conftest and one module per case module) into `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "conftest.py").write_text(CONFTEST)
    for name in ("test_chain", "test_reference", "test_per_sample", "test_torch", "test_jax"):
        (directory / f"{name}.py").write_text(MODULE.format(name=name))
    return directory
