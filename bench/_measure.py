"""Timing and peak memory of one case, and the figures that go in pytest-benchmark's `extra_info`.

Peak host memory (``peak_rss_bytes``) is the resident-set peak *while the step runs*: from just
after the case is built (model, variables and, for graph cases, the traced and optimised step)
through the first call and the timed rounds, above the resident set at that point. It is what the step itself holds
at once: activations, saved tensors, gradients. ``build_rss_bytes`` is the building and tracing
before it, a one-time cost that does not grow with the workload (``eager-*`` cases trace, if at
all, inside their first call). Both are measured so:

- On Linux the kernel's peak counter ``VmHWM`` is reset per case by writing ``5`` to
  ``/proc/self/clear_refs``; before the reset, Python's garbage is collected and glibc's free
  heap is returned to the system (``malloc_trim``). The baseline is ``VmRSS`` right after the
  reset. ``peak_rss_method`` is ``"vmhwm-reset"``.
- TensorFlow's CPU allocator in oneDNN builds (the default on x86) keeps freed large blocks in a
  pool and never returns them to the system. In a child that ran earlier cases, memory those
  cases freed is reused without raising RSS, so the peak is under-counted. ``bench run --isolate
  case`` gives every case a fresh process, where the peak is the case's own; the matmul probe
  (``matmul_*_gflop_per_s``) runs after the case for the same reason.
- Elsewhere the process-lifetime peak ``ru_maxrss`` is used (``"ru_maxrss"``). It cannot be reset,
  so it includes the build's peak, and it is the case's own only when the case runs alone in its
  process (``bench run --isolate case``).

On a GPU, ``peak_device_bytes`` is the framework allocator's peak after a reset, minus what was in
use at the reset; on the CPU it is ``None``. With ``bench run --tensor-memory`` the children run
with ``TF_CPU_ALLOCATOR_USE_BFC=true``, which routes every host tensor through a counting
allocator, and ``peak_tensor_bytes`` is that allocator's peak the same way: exact tensor bytes,
free of allocator pools and page rounding. That allocator changes timings by up to about 10%,
so take times from runs without it.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import gc
import os
import resource
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import pytest

from bench._workloads import Case, Sizes, Sweep, make_workload, real_flops

FAULT_ENV = "BENCH_FAULT"


def _status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _trim_heap(collect: bool = True) -> None:
    if collect:
        gc.collect()  # about 0.2 s once TensorFlow has traced something
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


class HostPeak:
    """Peak resident memory of this process above a per-case baseline (see module docs)."""

    def __init__(self) -> None:
        self.method = "ru_maxrss"
        self.baseline = 0

    def reset(self, collect: bool = True) -> None:
        """Starts a measurement window: frees what can be freed, resets the peak counter.

        Args:
            collect: run Python's garbage collector first.
        """
        _trim_heap(collect)
        try:
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")
            self.method = "vmhwm-reset"
            self.baseline = (_status_kb("VmRSS") or 0) * 1024
        except OSError:
            self.method = "ru_maxrss"
            self.baseline = _current_rss()

    def peak_bytes(self) -> int:
        """Peak resident bytes since `reset`, above the baseline."""
        if self.method == "vmhwm-reset":
            peak = (_status_kb("VmHWM") or 0) * 1024
        else:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            peak *= 1 if sys.platform == "darwin" else 1024
        return max(peak - self.baseline, 0)


def _current_rss() -> int:
    kb = _status_kb("VmRSS")
    if kb is not None:
        return kb * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class DeviceMemory(Protocol):
    """An accelerator's allocator statistics."""

    def reset(self) -> None:
        """Resets the allocator's peak."""

    def peak_bytes(self) -> int | None:
        """Peak bytes since `reset`, above what was in use then; None without a device."""


class NoDeviceMemory:
    """`DeviceMemory` for cases that run on the CPU."""

    def reset(self) -> None:
        """Does nothing."""

    def peak_bytes(self) -> int | None:
        """Returns None: there is no device allocator."""
        return None


class Framework(Protocol):
    """What `measure_case` needs from TensorFlow or a peer framework."""

    def versions(self) -> dict[str, str]:
        """Version strings for `extra_info`, keys like ``tensorflow_version``."""

    def skip_reason(self, device: str) -> str | None:
        """Why `device` cannot run here, or None."""

    def scope(self, device: str) -> contextlib.AbstractContextManager[Any]:
        """A context that places work on `device`."""

    def device_memory(self, device: str) -> DeviceMemory:
        """The allocator statistics of `device`."""

    def matmul_figures(self, sizes: Sizes, device: str, cell: str) -> dict[str, float]:
        """Measured matmul peaks at `cell`'s step shapes, for the roofline (may be empty)."""

    def build(self, case: Case, sizes: Sizes, workload: dict[str, Any], seed: int) -> Callable[[], float]:
        """Builds the case; the returned callable runs one forward or train step and syncs."""


@dataclasses.dataclass
class _Timing:
    first_call_s: float
    median_s: float | None


def inject_fault(case: Case) -> None:
    """Fails on purpose when ``BENCH_FAULT`` names this case; used by bench's own tests.

    ``BENCH_FAULT`` is ``KIND:TEXT`` (comma-separated for several), where KIND is ``raise``
    (a Python exception), ``crash`` (the process aborts) or ``hang`` (sleeps past any timeout),
    and TEXT is a substring of the case id.
    """
    for spec in filter(None, os.environ.get(FAULT_ENV, "").split(",")):
        kind, _, text = spec.partition(":")
        if text and text in case.id:
            if kind == "raise":
                raise RuntimeError(f"fault injected by {FAULT_ENV} into {case.id}")
            if kind == "crash":
                os.abort()
            if kind == "hang":
                time.sleep(10**6)


_WARMED: set[tuple[str, str]] = set()


def _warm_process(framework: Framework, case: Case, sizes: Sizes) -> None:
    """Runs a tiny step once per framework and phase before any case of this process measures.

    Libraries initialise lazily (thread pools, kernels, autodiff machinery); without this the
    first case of each child would carry that one-time memory and time.
    """
    key = (type(framework).__name__, case.phase)
    if key in _WARMED:
        return
    tiny = dataclasses.replace(sizes, batch=2, timesteps=2)
    warm_case = dataclasses.replace(case, longest_step=1)
    with framework.scope(case.device):
        framework.build(warm_case, tiny, make_workload(tiny, 1, case.lengths, 0), 0)()
    _WARMED.add(key)


def _time_case(benchmark: Any, run: Callable[[], float], sweep: Sweep, start: float) -> _Timing:
    """Times the first call from `start` (before the build), then the rounds."""
    run()
    first = time.perf_counter() - start
    benchmark.pedantic(run, rounds=sweep.rounds, iterations=1, warmup_rounds=sweep.warmup_rounds)
    stats = getattr(benchmark, "stats", None)
    median = stats.stats.median if stats is not None else None
    return _Timing(first, median)


def measure_case(benchmark: Any, case: Case, sweep: Sweep, framework: Framework) -> dict[str, Any]:
    """Times one case with pytest-benchmark and stores its figures in ``benchmark.extra_info``.

    Skips the case (``pytest.skip``, with the reason) when `framework` cannot run it here. The
    build (model, variables and, for graph cases, tracing the step) and the first call are timed
    together as ``trace_s``; then ``benchmark.pedantic`` runs ``sweep.warmup_rounds`` untimed and ``sweep.rounds`` timed
    rounds.

    Returns:
        The `extra_info` dict.
    """
    reason = framework.skip_reason(case.device)
    if reason:
        pytest.skip(reason)
    inject_fault(case)
    sizes = case.sizes(sweep.sizes)
    _warm_process(framework, case, sizes)
    workload = make_workload(sizes, case.longest_step, case.lengths, sweep.seed)
    host, device = HostPeak(), framework.device_memory(case.device)
    with framework.scope(case.device):
        host.reset()
        start = time.perf_counter()
        run = framework.build(case, sizes, workload, sweep.seed)
        build_bytes = host.peak_bytes()
        host.reset(collect=False)  # between build and call there is little garbage to collect
        device.reset()
        timing = _time_case(benchmark, run, sweep, start)
        peaks = {"peak_rss_bytes": host.peak_bytes(), "build_rss_bytes": build_bytes, "peak_device_bytes": None}
        peaks[getattr(device, "field", "peak_device_bytes")] = device.peak_bytes()
    # After the case: the matmul probe's buffers would otherwise grow the allocator's pool (oneDNN
    # builds keep freed blocks for reuse) and hide the case's own peak.
    matmul = framework.matmul_figures(sizes, case.device, case.cell)
    info = figures(case, sweep, workload["steps"], timing.median_s, timing.first_call_s)
    info.update(peaks, peak_rss_method=host.method, **matmul, **framework.versions())
    benchmark.extra_info.update(info)
    return info


def figures(
    case: Case, sweep: Sweep, steps: Any, median_s: float | None, first_call_s: float
) -> dict[str, Any]:
    """Throughput figures of one case from its median time per call.

    Args:
        case: The case.
        sweep: Its sweep (sizes, threads).
        steps: int array of shape (batch, T), the case's inner-step counts.
        median_s: Median seconds per call, or None when timing was disabled.
        first_call_s: Seconds of the first call (tracing included).

    Returns:
        ``samples_per_s``, ``real_steps_per_s``, ``padded_steps_per_s``, ``real_steps``,
        ``padded_steps`` (batch * T * L), ``trace_s`` (first call minus the median call),
        ``real_gflop``, ``gflop_per_s`` (of `case.cell` at `case.hidden`) and the sizes.
    """
    sizes = case.sizes(sweep.sizes)
    counts = {
        "real_steps": int(steps.sum()),
        "padded_steps": sizes.batch * sizes.timesteps * case.longest_step,
        "real_gflop": real_flops(sizes, steps, case.phase, case.cell) / 1e9,
        "batch": sizes.batch,
    }
    return {
        **counts,
        **rates(counts, median_s),
        "trace_s": max(first_call_s - (median_s or 0.0), 0.0),
        "timesteps": sizes.timesteps,
        "hidden": sizes.hidden,
        "threads": sweep.threads,
        "load_avg_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }


RATES = {
    "samples_per_s": "batch",
    "real_steps_per_s": "real_steps",
    "padded_steps_per_s": "padded_steps",
    "gflop_per_s": "real_gflop",
}  # each rate figure and the count it divides by the median time


def rates(counts: dict[str, Any], median_s: float | None) -> dict[str, float | None]:
    """The `RATES` figures from `counts` (the fields they name) at `median_s` per call (None: no timing)."""
    return {rate: counts[count] / median_s if median_s else None for rate, count in RATES.items()}


@contextlib.contextmanager
def no_scope() -> Iterator[None]:
    """A context that does nothing, for frameworks placed by tensor device instead."""
    yield
