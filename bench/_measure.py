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
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import pytest

from bench._workloads import DECODERS, GENERATE_PHASES, Case, Sizes, Sweep, make_workload, real_flops

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
    peaks: dict[str, Any] | None = None  # with a partner: the memory peaks read before it first ran
    partner_s: list[float] = dataclasses.field(default_factory=list)  # the partner's timed rounds


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


def _time_case(
    benchmark: Any, run: Callable[[], float], sweep: Sweep, start: float,
    partner: Callable[[], float] | None = None, read_peaks: Callable[[], dict[str, Any]] | None = None,
) -> _Timing:
    """Times the first call from `start` (before the build), then the rounds.

    With a `partner` (see `Sweep.partner_of`), the case's warm-up rounds run first and the
    memory peaks are read (`read_peaks`, so that they are the case's own), then the partner's
    first call and warm-up rounds; then each timed round of the case follows one timed round of
    the partner, through ``benchmark.pedantic``'s `setup`, so both are timed over the same seconds.
    """
    run()
    first = time.perf_counter() - start
    if partner is None:
        benchmark.pedantic(run, rounds=sweep.rounds, iterations=1, warmup_rounds=sweep.warmup_rounds)
        return _Timing(first, _median(benchmark))
    for _ in range(sweep.warmup_rounds):
        run()
    peaks = read_peaks() if read_peaks is not None else None
    for _ in range(1 + sweep.warmup_rounds):
        partner()
    partner_s: list[float] = []

    def time_partner() -> None:
        begin = time.perf_counter()
        partner()
        partner_s.append(time.perf_counter() - begin)

    benchmark.pedantic(run, setup=time_partner, rounds=sweep.rounds, iterations=1, warmup_rounds=0)
    return _Timing(first, _median(benchmark), peaks, partner_s)


def _median(benchmark: Any) -> float | None:
    stats = getattr(benchmark, "stats", None)
    return stats.stats.median if stats is not None else None


def versus_figures(versus: tuple[str, str], median_s: float | None, partner_s: list[float]) -> dict[str, Any]:
    """``versus`` (``"field=value"``), the partner's rounds and median, and the ratio of medians."""
    partner_median = statistics.median(partner_s) if partner_s else None
    return {
        "versus": "=".join(versus),
        "versus_data_s": list(partner_s),
        "versus_median_s": partner_median,
        "versus_ratio": median_s / partner_median if median_s and partner_median else None,
    }


def measure_case(benchmark: Any, case: Case, sweep: Sweep, framework: Framework) -> dict[str, Any]:
    """Times one case with pytest-benchmark and stores its figures in ``benchmark.extra_info``.

    Skips the case (``pytest.skip``, with the reason) when `framework` cannot run it here. The
    build (model, variables and, for graph cases, tracing the step) and the first call are timed
    together as ``trace_s``; then ``benchmark.pedantic`` runs ``sweep.warmup_rounds`` untimed and
    ``sweep.rounds`` timed rounds. With ``sweep.versus``, the case's partner (`Sweep.partner_of`)
    is built first and timed one round before each of the case's (see `_time_case`); the
    ``versus_*`` figures (`versus_figures`) record it.

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
    partner_case = sweep.partner_of(case)
    with framework.scope(case.device):
        partner = None
        if partner_case is not None:  # built first, so that the case's build and peaks are its own
            partner_sizes = partner_case.sizes(sweep.sizes)
            partner_load = make_workload(partner_sizes, partner_case.longest_step, partner_case.lengths, sweep.seed)
            partner = framework.build(partner_case, partner_sizes, partner_load, sweep.seed)
        host.reset()
        start = time.perf_counter()
        run = framework.build(case, sizes, workload, sweep.seed)
        build_bytes = host.peak_bytes()
        host.reset(collect=False)  # between build and call there is little garbage to collect
        device.reset()

        def read_peaks() -> dict[str, Any]:
            peaks = {"peak_rss_bytes": host.peak_bytes(), "build_rss_bytes": build_bytes, "peak_device_bytes": None}
            peaks[getattr(device, "field", "peak_device_bytes")] = device.peak_bytes()
            return peaks

        timing = _time_case(benchmark, run, sweep, start, partner, read_peaks)
        peaks = timing.peaks if timing.peaks is not None else read_peaks()
    # After the case: the matmul probe's buffers would otherwise grow the allocator's pool (oneDNN
    # builds keep freed blocks for reuse) and hide the case's own peak.
    matmul = framework.matmul_figures(sizes, case.device, case.cell)
    info = figures(case, sweep, workload["steps"], timing.median_s, timing.first_call_s)
    info.update(peaks, peak_rss_method=host.method, **matmul, **framework.versions())
    if partner_case is not None and sweep.versus is not None:
        info.update(versus_figures(sweep.versus, timing.median_s, timing.partner_s))
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
        ``real_gflop``, ``gflop_per_s`` (of `case.cell` at `case.hidden`) and the sizes; in a
        generation phase also ``tokens`` (those of one sequence per sample: ``real_steps``),
        ``tokens_per_s`` and ``decoder`` (`bench._workloads.DECODERS`), else None for them.
    """
    sizes = case.sizes(sweep.sizes)
    generating = case.phase in GENERATE_PHASES
    counts = {
        "real_steps": int(steps.sum()),
        "padded_steps": sizes.batch * sizes.timesteps * case.longest_step,
        "real_gflop": real_flops(sizes, steps, case.phase, case.cell) / 1e9,
        "batch": sizes.batch,
        "tokens": int(steps.sum()) if generating else None,
    }
    return {
        **counts,
        "decoder": DECODERS.get(case.phase),
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
    "tokens_per_s": "tokens",
}  # each rate figure and the count it divides by the median time


def rates(counts: dict[str, Any], median_s: float | None) -> dict[str, float | None]:
    """The `RATES` figures from `counts` (the fields they name) at `median_s` per call (None: no
    timing, or no such count, as ``tokens`` outside the generation phases)."""
    return {
        rate: counts[count] / median_s if median_s and counts.get(count) is not None else None
        for rate, count in RATES.items()
    }


@contextlib.contextmanager
def no_scope() -> Iterator[None]:
    """A context that does nothing, for frameworks placed by tensor device instead."""
    yield
