"""The JAX peer; skipped with the reason when jax or optax cannot be imported."""

import contextlib
from typing import Any

with contextlib.suppress(Exception):  # imported at collection, outside the per-case timeout
    import jax  # noqa: F401  (its backend starts at the first case, after JaxFramework.skip_reason)
    import optax  # noqa: F401

from bench._jax_peer import JaxFramework
from bench._measure import measure_case
from bench._workloads import Case, Sweep


def test_jax(benchmark: Any, bench_case: Case, sweep: Sweep) -> None:
    """Times one forward call or Adam train step of the JAX peer."""
    measure_case(benchmark, bench_case, sweep, JaxFramework(sweep.threads))
