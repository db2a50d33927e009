"""Peak memory windows, figures and fault injection, without TensorFlow."""

import numpy as np
import pytest

from bench._measure import HostPeak, figures, inject_fault
from bench._workloads import Case, Sizes, Sweep

CASE = Case("packed", "reset", "train", 4, "uniform", "cpu")


def test_host_peak_sees_an_allocation_and_resets():
    peak = HostPeak()
    peak.reset()
    block = np.ones(64 * 2**20 // 8)  # 64 MiB, touched
    del block
    first = peak.peak_bytes()
    peak.reset()
    small = np.ones(1024)
    second = peak.peak_bytes()
    del small
    assert first > 60 * 2**20
    if peak.method == "vmhwm-reset":
        assert second < 16 * 2**20


def test_figures_from_a_median_time():
    sweep = Sweep((CASE,), sizes=Sizes(batch=2, timesteps=3, hidden=4, output_size=1))
    steps = np.array([[4, 0, 1], [2, 2, 0]])
    info = figures(CASE, sweep, steps, median_s=0.5, first_call_s=2.0)
    assert info["real_steps"] == 9 and info["padded_steps"] == 2 * 3 * 4
    assert info["real_steps_per_s"] == 18.0 and info["padded_steps_per_s"] == 48.0
    assert info["samples_per_s"] == 4.0 and info["trace_s"] == 1.5
    assert info["gflop_per_s"] == pytest.approx(info["real_gflop"] / 0.5)


def test_figures_without_timing_leave_rates_empty():
    info = figures(CASE, Sweep((CASE,)), np.ones((64, 32), int), median_s=None, first_call_s=1.0)
    assert info["real_steps_per_s"] is None and info["trace_s"] == 1.0


def test_fault_injection_hits_only_the_named_case(monkeypatch):
    monkeypatch.setenv("BENCH_FAULT", "raise:reset-train-L4")
    with pytest.raises(RuntimeError, match="fault injected by BENCH_FAULT into packed-reset-train-L4"):
        inject_fault(CASE)
    inject_fault(Case("packed", "carry", "train", 4, "uniform", "cpu"))  # no match, no fault


def test_generation_figures_count_tokens_per_second():
    case = Case("per-sample", "reset", "generate-sampling", 4, "uniform", "cpu")
    steps = np.array([[4, 0, 1], [2, 2, 0]])
    info = figures(case, Sweep((case,), sizes=Sizes(batch=2, timesteps=3)), steps, median_s=0.5, first_call_s=2.0)
    assert info["tokens"] == 9 and info["tokens_per_s"] == 18.0
    assert info["decoder"] == "sampling temperature=1.0 top_p=0.9"
    other = figures(CASE, Sweep((CASE,)), steps, median_s=0.5, first_call_s=2.0)
    assert other["tokens"] is None and other["tokens_per_s"] is None and other["decoder"] is None
    beam = figures(Case("packed", "carry", "generate-beam4", 4, "uniform", "cpu"), Sweep((CASE,)), steps, 0.5, 2.0)
    assert beam["tokens"] == 9 and beam["decoder"] == "beam width=4"  # one output per sample
