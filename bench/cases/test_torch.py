"""The PyTorch peer; skipped with the reason when torch cannot be imported."""

import contextlib
from typing import Any

with contextlib.suppress(Exception):  # imported at collection, outside the per-case timeout
    import torch  # noqa: F401

from bench._measure import measure_case
from bench._peers import TorchFramework
from bench._workloads import Case, Sweep


def test_torch(benchmark: Any, bench_case: Case, sweep: Sweep) -> None:
    """Times one forward call or Adam train step of the PyTorch peer."""
    measure_case(benchmark, bench_case, sweep, TorchFramework(sweep.threads))
