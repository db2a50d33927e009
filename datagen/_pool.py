"""Worker processes that never outlive the run that started them.

Each worker asks the kernel for SIGKILL when its parent dies (``PR_SET_PDEATHSIG`` on Linux) and
also watches its parent's pid from a thread (every other system, and the moment between the
fork and that request). So ``kill -9`` of ``datagen make --workers N`` leaves no worker blocked on
a pipe. A failed shard cancels the shards not started yet instead of waiting for all of them.

Ctrl-C is the parent's to handle: workers ignore SIGINT, and are started with it blocked so that
one arriving while they start is neither lost by the parent nor raised inside a worker. The
parent stops handing out shards, waits for the running ones and raises KeyboardInterrupt.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import ctypes
import ctypes.util
import multiprocessing
import os
import signal
import sys
import threading
import time
from typing import Any, Callable, Iterable, Iterator

_PR_SET_PDEATHSIG = 1
_WATCH_SECONDS = 0.5


def _die_with(parent: int) -> None:
    """Kills this process when ``parent`` is gone, and leaves Ctrl-C to it; runs first in every worker."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass  # the watcher below still ends the worker
    if os.getppid() != parent:  # the parent died before the request above
        os._exit(1)
    threading.Thread(target=_watch, args=(parent,), daemon=True, name="datagen-parent-watch").start()


def _watch(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(_WATCH_SECONDS)
    os._exit(1)


def context() -> multiprocessing.context.BaseContext:
    """``fork`` is cheapest, but unsafe once TensorFlow's threads exist in this process."""
    if "tensorflow" in sys.modules or "fork" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    return multiprocessing.get_context("fork")


def imap(function: Callable[[Any], Any], jobs: Iterable[Any], workers: int) -> Iterator[Any]:
    """``map(function, jobs)`` over up to ``workers`` processes, in order, as results come.

    Runs in this process when there is at most one job or one worker, and yields nothing for no
    jobs.
    """
    jobs = list(jobs)
    if workers == 1 or len(jobs) <= 1:
        yield from map(function, jobs)
        return
    pool = concurrent.futures.ProcessPoolExecutor(
        min(workers, len(jobs)), mp_context=context(), initializer=_die_with, initargs=(os.getpid(),)
    )
    try:
        with _sigint_blocked():  # map() submits every job, so the workers start here
            results = pool.map(function, jobs, chunksize=1)
        yield from results
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


@contextlib.contextmanager
def _sigint_blocked() -> Iterator[None]:
    """Holds SIGINT back (it is delivered on exit) while workers fork and inherit the mask."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
