"""Shared test settings."""
import gc
import os
from collections import Counter
from pathlib import Path

import pytest

# Quiet TensorFlow's start-up logging. A pytest-xdist worker shares the cores with the others:
# TensorFlow gets one thread there (read when it starts, so before any test imports it).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "1")
    os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")


DEFAULT_TIER_MARKS = "not slow"  # the `-m` of pyproject's addopts
MAX_WORKERS = 8  # each holds TensorFlow and its models, 1 to 2 GiB
# Modules of a few tests that run long (child processes, real runs), handed to pytest-xdist's
# workers first; see `pytest_collection_finish`.
RUN_FIRST = ("bench/test_end_to_end.py", "chain/test_distribute.py", "chain/test_mixed_precision.py",
             "bench/test_isolation.py")  # fmt: skip


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads its options
def pytest_cmdline_main(config):
    """A plain `python -m pytest` (the default tier, no paths named) runs on one pytest-xdist
    worker per CPU and one more, up to `MAX_WORKERS`.

    The extra worker takes the CPU whenever another waits: on a bench child process, a file, a
    subprocess or a timeout (on 2 cores, 3 workers took 322 s where 2 took 343 s, the same CPU
    time). It is `-n <CPUs + 1> --maxprocesses 8 --dist loadfile --no-loadscope-reorder`: each test module
    runs whole on one worker, so its module-scoped fixtures are built once, and the modules are
    handed out in the order `order_for_workers` gives. Other runs (named paths, `-m slow`,
    whose fits are timed with all cores to themselves) run in this process; `-n N` (`-n 0` for
    none) or `-p no:xdist` chooses for any run.
    """
    if not config.pluginmanager.hasplugin("xdist") or hasattr(config, "workerinput"):
        return
    plain = config.args_source == pytest.Config.ArgsSource.TESTPATHS and config.option.markexpr == DEFAULT_TIER_MARKS
    if plain and config.option.numprocesses is None:
        config.option.numprocesses = (os.cpu_count() or 1) + 1
        config.option.maxprocesses = config.option.maxprocesses or MAX_WORKERS
        if config.option.dist == "no":
            config.option.dist = "loadfile"
            config.option.loadscopereorder = False  # the modules come in the order the workers collect


@pytest.hookimpl(tryfirst=True)  # before a pytest-xdist worker reports its tests
def pytest_collection_finish(session):
    """Orders the modules for pytest-xdist's workers (`order_for_workers`), and freezes what
    imports and collection left alive out of Python's garbage collector.

    TensorFlow and Keras leave millions of objects that live as long as the process; each full
    collection walked them all again, and tracing a graph allocates enough to start one often:
    about a tenth of the chain tests' CPU time. Only those objects are frozen: whatever a test
    makes is collected as ever.
    """
    if hasattr(session.config, "workerinput"):
        order_for_workers(session.items)
    gc.collect()
    gc.freeze()


def order_for_workers(items):
    """`RUN_FIRST`'s modules first, then the others, most tests first, each module's tests in order.

    A module runs whole on one worker, and the modules are handed out in order, each to the first
    worker that runs out of tests; a long module handed out last keeps its worker busy while the
    others wait at the end. pytest-xdist's own order, by number of tests alone, put the end-to-end
    bench run, a few tests of 40 s, among the last.
    """
    root = Path(__file__).parent
    counts = Counter(item.path for item in items)

    def rank(item):
        name = item.path.relative_to(root).as_posix() if item.path.is_relative_to(root) else None
        return (RUN_FIRST.index(name) if name in RUN_FIRST else len(RUN_FIRST), -counts[item.path])

    items.sort(key=rank)  # stable


def pytest_configure(config):
    """Registers the Hypothesis profiles when pytest itself runs.

    Only here, not at import: `pytest-benchmark compare` loads this file through pytest's config
    (without running this hook) where only `pip install -e .` was done, without Hypothesis. The
    `test` extra installs it; without it the suite fails here, not skips.

    Property-based tests run a small, bounded number of examples in the default (fast) tier.
    `HYPOTHESIS_PROFILE=slow python -m pytest ...` runs ten times more. No example database is
    written, so a run leaves no files; a failure prints its example and a blob to reproduce it.
    """
    from hypothesis import settings

    settings.register_profile("fast", max_examples=20, deadline=None, database=None, print_blob=True)
    settings.register_profile("slow", max_examples=200, deadline=None, database=None, print_blob=True)
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "fast"))


# ----------------------------------------------------------------------------- tiers
#
# Test modules with large parameter grids name, in `DEFAULT_TIER`, which cases of a test the
# default run keeps: `{test_function_name: predicate(params) -> bool}`, `params` being the case's
# parameters by name. The other cases get the `slow` marker, so `python -m pytest -m slow` runs
# them and `python -m pytest -m "slow or not slow"` runs every case.


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker
def pytest_collection_modifyitems(config, items):
    for item in items:
        keep = getattr(item.module, "DEFAULT_TIER", {}).get(getattr(item, "originalname", None))
        callspec = getattr(item, "callspec", None)
        if keep is not None and callspec is not None and not keep(callspec.params):
            item.add_marker(pytest.mark.slow)
