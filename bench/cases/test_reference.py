"""The reference approach: the question's nested loops, run op by op in plain eager mode."""

from typing import Any

import tensorflow  # noqa: F401  (imported at collection, outside the per-case timeout)

from bench._measure import measure_case
from bench._peers import ReferenceFramework
from bench._workloads import Case, Sweep


def test_reference(benchmark: Any, bench_case: Case, sweep: Sweep) -> None:
    """Times one eager forward call or eager train step of the reference approach."""
    measure_case(benchmark, bench_case, sweep, ReferenceFramework(sweep.threads))
