"""bench: throughput and memory of chained ragged models, stored for `pytest-benchmark compare`.

Run a sweep with ``bench run`` (see ``bench run --help``), compare saved runs with
``pytest-benchmark --storage .benchmarks compare``, and re-render one with ``bench report RUN``.

Examples:
    >>> from bench import Sizes, make_workload
    >>> workload = make_workload(Sizes(batch=2, timesteps=3), longest_step=4, lengths="zipf", seed=0)
    >>> workload["steps"].shape
    (2, 3)
"""

from ._results import load_records as load_records
from ._runner import run_sweep as run_sweep
from ._tf_framework import matmul_peak_gflops as matmul_peak_gflops
from ._workloads import CELLS as CELLS
from ._workloads import Case as Case
from ._workloads import Sizes as Sizes
from ._workloads import Sweep as Sweep
from ._workloads import build_cases as build_cases
from ._workloads import make_workload as make_workload
from ._workloads import real_flops as real_flops

__all__ = [
    "CELLS",
    "Case",
    "Sizes",
    "Sweep",
    "build_cases",
    "load_records",
    "make_workload",
    "matmul_peak_gflops",
    "real_flops",
    "run_sweep",
]
