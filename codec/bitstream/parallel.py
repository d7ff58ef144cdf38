"""Chunks range-coded on several CPU cores at once: ``work_units`` cuts a file's chunks into jobs, ``map_groups``
runs them in forked worker processes.

Chunks are independent: each starts from the prior's start token. The integer prior's results do not depend on
how chunks are batched, so its jobs are runs of at most ``group`` chunks, cut smaller when there are fewer groups
than workers; the float coder of older files must run a group's chunks in lockstep, on the same shapes as when
they were coded, so its jobs are the file's groups. Either way no byte of a file and no decoded token depends on
the number of workers. The workers are forked from this process (the prior's weights are shared, copy on write,
and nothing is loaded again); each runs torch on one thread, as the coders always do. Where fork is not available
(Windows, macOS's default) or one worker is asked for, the jobs run here, one after another. A worker that dies
without its result (the out-of-memory killer, a signal) raises ``WorkerError`` at its job's turn, never a hang.
"""

import collections
import contextlib
import ctypes
import itertools
import multiprocessing
import os
import signal
import sys
import warnings
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from codec.errors import WorkerError

_TASK: Callable | None = None  # the function the forked workers run, inherited from the parent


def cpu_count() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def can_fork() -> bool:
    return sys.platform.startswith("linux") and "fork" in multiprocessing.get_all_start_methods()


def work_units(groups: list[list[tuple]], workers: int, lockstep: bool) -> list[list[tuple]]:
    """The chunks of ``groups`` (``Metadata.groups``) as jobs, in file order: the groups themselves when their
    chunks must run in ``lockstep``; otherwise runs of at most a group, cut so that ``workers`` all get work."""
    if lockstep or not groups:
        return groups
    chunks = [c for g in groups for c in g]
    size = max(1, min(len(groups[0]), -(-len(chunks) // max(1, workers))))
    return [chunks[i : i + size] for i in range(0, len(chunks), size)]


def _die_with_parent() -> None:
    """In a worker: end when the process that forked it ends, even killed (Linux's parent-death signal)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _run(args: tuple):
    return _TASK(*args)


def map_groups(fn: Callable, jobs: Iterable[tuple], workers: int, count: int) -> Iterator:
    """``fn(*job)`` for every job, in order, in up to ``workers`` forked processes.

    Args:
        fn: the work of one group; any callable (it is not pickled: the workers inherit it). Its arguments and
            results are pickled, so they should be plain data (arrays, bytes, lists).
        jobs: the groups' arguments; read lazily, as the workers take them.
        workers: processes to use; 1 (or ``count`` < 2, or no fork on this platform) runs here, in order.
        count: the number of jobs (to use no more processes than there are groups).

    Yields:
        Each job's result, in job order, as soon as it and those before it are done. An exception raised by
        ``fn`` is raised here, at that job's turn.
    """
    workers = min(workers, count)
    if workers < 2 or not can_fork():
        yield from (fn(*job) for job in jobs)
        return
    global _TASK
    _TASK = fn
    jobs = iter(jobs)
    pending: collections.deque = collections.deque()
    try:
        with warnings.catch_warnings():  # Python 3.12+ warns on fork in a threaded process; the workers use no
            warnings.simplefilter("ignore", DeprecationWarning)  # lock a torch thread may hold (one thread each)
            pool = ProcessPoolExecutor(workers, multiprocessing.get_context("fork"), initializer=_die_with_parent)
        try:
            for job in itertools.islice(jobs, 2 * workers):  # a few jobs ahead: the rest are read as work is done
                pending.append(pool.submit(_run, job))
            while pending:
                result = pending.popleft().result()
                job = next(jobs, None)  # jobs are tuples, never None
                if job is not None:
                    pending.append(pool.submit(_run, job))  # a pool broken meanwhile refuses this too
                yield result
        except BrokenProcessPool:
            raise WorkerError(
                "a worker process ended without its result (killed by a signal, or out of memory)"
            ) from None
        finally:
            for future in pending:
                future.cancel()
            for process in list((getattr(pool, "_processes", None) or {}).values()):  # stop work no one will read
                process.terminate()
            pool.shutdown(wait=True)
    finally:
        _TASK = None
