"""Running grading jobs in child processes, ``parallel`` at a time, and cleaning up after each.

The parent (this module) starts each :class:`~grader.autograde.Job` in a child
process of its own session, receives its result through a pipe (never from a
file the submission could reach), kills the child and its kernels when it
outlives its hard limit, and, when a job ends, kills every process the job
started (:func:`grader.sandbox.kill_job`) and removes what its kernel user left
in ``/tmp``-like directories, *before* reporting the result, so that the
caller writes grades only once nothing of the submission is running.

As root, each parallel slot has a kernel user of its own (``kernel_uid +
slot``), so the processes of one job are exactly those of its user.
"""
from __future__ import annotations

import contextlib
import multiprocessing as mp
import multiprocessing.connection
import os
import signal
import threading
import sys
import types
from time import monotonic

from . import sandbox
from .autograde import Job, SubmissionResult, child_main, zero_result
from .course import GraderError, source_notebooks
from .notebooks import read_notebook


def _context():
    if "forkserver" in mp.get_all_start_methods():
        ctx = mp.get_context("forkserver")
        # The server imports nbgrader once; each child is a cheap fork of it.
        ctx.set_forkserver_preload(["grader.autograde", "nbgrader.converters", "nbclient"])
        return ctx
    return mp.get_context("spawn")


@contextlib.contextmanager
def _main_module_hidden():
    """Start children without re-importing ``__main__`` in them.

    ``multiprocessing`` re-runs the parent's main script in a ``spawn`` or
    ``forkserver`` child, which breaks (or repeats work) when the grader is
    called from a script without a ``__main__`` guard, from stdin or from a
    notebook. The child needs nothing from ``__main__``.
    """
    main = sys.modules.get("__main__")
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        sys.modules["__main__"] = main


def _kill(job: Job, proc) -> None:
    """Kill the child's session and every kernel it started (each has a session of its own)."""
    pids = [proc.pid]
    if job.pid_path.exists():
        pids += [int(p) for p in job.pid_path.read_text().split() if p.strip().isdigit()]
    for pid in pids:
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError, AttributeError, OSError):
            pass
    if proc.is_alive():
        proc.kill()


def clean_up(job: Job) -> None:
    """Nothing of ``job`` left running or lying in ``/tmp``: call before its grades are written."""
    box = job.sandbox()
    sandbox.kill_job(box)
    if box.uid is not None:
        sandbox.clean_shared_dirs(box.uid)


def _collect(job: Job, payload: dict | None, exitcode: int | None,
             killed_after: float | None) -> SubmissionResult:
    source = {p.stem: read_notebook(p) for p in source_notebooks(job.workdir, job.assignment)}
    if killed_after is not None:
        return zero_result(source, job.student, job.assignment,
                           f"killed after {killed_after:.0f} s (time limit of the whole submission)")
    if payload is None:
        return zero_result(source, job.student, job.assignment,
                           f"grader error: the grading process ended with code {exitcode} "
                           f"and no result; see {job.log_path}")
    result = SubmissionResult.from_dict(payload)
    if not result.cells:  # the child failed before it knew the cells: zero them all
        zero = zero_result(source, result.student, result.assignment, result.status, result.error)
        zero.notes, zero.seconds = result.notes, result.seconds
        return zero
    return result


@contextlib.contextmanager
def _stop_signals_as_interrupt():
    """SIGTERM and SIGHUP (``kill``, a closed terminal, a batch system stopping the job) take
    the path of Ctrl-C: running children are stopped, results written so far are kept.

    Without this the default action ends the grader at once and its children, in sessions
    of their own, grade on with nobody to collect their results.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def kernel_users(base: int | None, parallel: int):
    """A lease of one kernel user per slot (``None`` unless root and ``base``), and whether
    kernels must keep the right to read files (the Python installation is not readable by them)."""
    if base is None or base < 0 or not sandbox.is_root():
        return None, False
    lease = sandbox.UidLease(base, max(1, parallel))
    try:
        sandbox.check_user(lease.uids[0])
    except OSError as e:
        lease.close()
        raise GraderError(str(e)) from None
    return lease, not sandbox.python_readable_by(lease.uids[0], lease.uids[0])


def run_jobs(jobs: list[Job], *, parallel: int = 1, on_result=None,
             kernel_uid: int | None = sandbox.DEFAULT_UID) -> list[SubmissionResult]:
    """Run ``jobs`` in child processes, ``parallel`` at a time; results in the order of ``jobs``.

    Args:
        on_result: called as ``on_result(job, result)`` as each one finishes, after
            every process of that job is gone.
        kernel_uid: as root, kernels run as users from ``kernel_uid`` up, one per slot
            (:class:`~grader.sandbox.UidLease`; ``None``: as root too, not recommended).
    """
    if not jobs:
        return []
    ctx = _context()
    lease, keep_read = kernel_users(kernel_uid, parallel)
    uids = lease.uids if lease else [None] * max(1, parallel)
    pending = list(enumerate(jobs))
    running: dict[int, tuple] = {}
    results: dict[int, SubmissionResult] = {}
    free = list(range(max(1, parallel)))
    try:
        with _stop_signals_as_interrupt():
            _run(ctx, pending, running, results, free, uids, keep_read, on_result)
    finally:  # interrupted (Ctrl-C, SIGTERM): children live in sessions of their own, stop them
        for job, proc, *_ in running.values():
            _kill(job, proc)
            clean_up(job)
        if lease:
            lease.close()
    return [results[i] for i in range(len(jobs))]


def _run(ctx, pending, running, results, free, uids, keep_read, on_result) -> None:
    """Start jobs as slots free up until every one has a result."""
    while pending or running:
        while pending and free:
            i, job = pending.pop(0)
            slot = free.pop(0)
            job.kernel_uid, job.keep_read = uids[slot], keep_read
            reader, writer = ctx.Pipe(duplex=False)
            proc = ctx.Process(target=child_main, args=(job, writer), name=f"grade-{job.student}")
            with _main_module_hidden():
                proc.start()
            writer.close()
            running[i] = (job, proc, monotonic(), reader, slot, [None])
        _wait(running, pending, free, results, on_result)


def _wait(running, pending, free, results, on_result) -> None:
    waits = [p.sentinel for _, p, *_ in running.values()]
    waits += [r for _, _, _, r, _, box in running.values() if box[0] is None and not r.closed]
    mp.connection.wait(waits, timeout=0.5)
    for i, (job, proc, started, reader, slot, box) in list(running.items()):
        if box[0] is None and not reader.closed and reader.poll():
            try:
                box[0] = reader.recv()
            except (EOFError, OSError):
                reader.close()
        elapsed = monotonic() - started
        killed = None
        if proc.is_alive():
            if elapsed < job.hard_limit():
                continue
            _kill(job, proc)
            killed = elapsed
        proc.join()
        if box[0] is None and not reader.closed and reader.poll():
            with contextlib.suppress(EOFError, OSError):
                box[0] = reader.recv()
        reader.close()
        if proc.exitcode not in (0, None):
            _kill(job, proc)  # a crashed child may leave its kernels behind
        clean_up(job)
        result = _collect(job, box[0], proc.exitcode, killed)
        del running[i]
        free.append(slot)
        results[i] = result
        if on_result is not None:
            on_result(job, result)
