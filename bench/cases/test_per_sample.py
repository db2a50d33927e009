"""The generation baseline: one sample, one outer step and one inner step at a time."""

from typing import Any

import tensorflow  # noqa: F401  (imported at collection, outside the per-case timeout)

from bench._measure import measure_case
from bench._peers import PerSampleFramework
from bench._workloads import Case, Sweep


def test_per_sample(benchmark: Any, bench_case: Case, sweep: Sweep) -> None:
    """Times one generation of every sample's tokens by the per-sample loop."""
    measure_case(benchmark, bench_case, sweep, PerSampleFramework(sweep.threads))
