"""Generation throughput of `datagen make` at the default sizes, for 1 and 2 workers.

Run with ``python -m pytest tests/datagen/test_throughput.py --benchmark-enable``. The default run
disables benchmarks; each case then makes its dataset once and checks the figures are sane.
``samples_per_s`` and ``MB_per_s`` are wall-clock figures; ``samples_per_cpu_s`` divides by the
CPU time of the process and its workers, which other load on the machine does not inflate.
"""

from __future__ import annotations

import itertools
import resource
import shutil
import time

import pytest

import datagen

SAMPLES = 65536
_counter = itertools.count()


@pytest.mark.parametrize("workers", [1, 2])
def test_make_throughput(benchmark, tmp_path, workers):
    samples = SAMPLES if benchmark.enabled else 2048
    cpu_seconds = []

    def cpu_now():
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        return time.process_time() + children.ru_utime + children.ru_stime

    def target():
        out = tmp_path / f"run{next(_counter)}"
        before = cpu_now()
        manifest = datagen.make(out, n_samples=samples, workers=workers)
        cpu_seconds.append(cpu_now() - before)
        return out, manifest

    def cleanup(*_):
        for leftover in tmp_path.glob("run*"):
            shutil.rmtree(leftover)

    out, manifest = benchmark.pedantic(target, setup=cleanup, rounds=3 if benchmark.enabled else 1,
                                       warmup_rounds=1 if benchmark.enabled else 0)  # fmt: skip
    seconds = benchmark.stats.stats.min if benchmark.enabled else None
    written = sum(record["bytes"] for record in manifest["shards"])
    assert manifest["counts"]["samples"] == samples and written > samples * 16 * 4 * 4
    benchmark.extra_info.update({"samples": samples, "workers": workers, "bytes": written})
    if seconds:
        benchmark.extra_info["samples_per_s"] = samples / seconds
        benchmark.extra_info["MB_per_s"] = written / seconds / 1e6
        # CPU time of this process and its workers: a load-independent view on a shared machine
        benchmark.extra_info["samples_per_cpu_s"] = samples / min(cpu_seconds)
        assert 0 < samples / seconds < 1e9
