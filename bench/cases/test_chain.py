"""Chain's strategies, each in a user `tf.function` (or called eagerly for ``eager-*``)."""

from typing import Any

import tensorflow  # noqa: F401  (imported at collection, outside the per-case timeout)

from bench._measure import measure_case
from bench._tf_framework import TensorFlowFramework
from bench._workloads import Case, Sweep


def test_chain(benchmark: Any, bench_case: Case, sweep: Sweep) -> None:
    """Times one forward call or train step of a chain strategy."""
    measure_case(benchmark, bench_case, sweep, TensorFlowFramework(sweep.threads))
