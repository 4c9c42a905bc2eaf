"""Autograding one submission, in a process of its own.

One submission is one :class:`Job`: a small nbgrader course of its own (a copy
of the gradebook that ``generate_assignment`` filled, the source files, the
submitted notebook) in which a child process runs nbgrader's ``autograde`` and
``generate_feedback`` and writes a :class:`SubmissionResult` as JSON. The
parent (:func:`run_jobs`) starts each child in a new session, kills the whole
session and its kernels when the child outlives a hard time limit, and is the
only one that writes grades anywhere else. A submission therefore cannot touch
another one's grades, whatever its code does.

Inside the child, :class:`~grader.preprocessors.GuardedExecute` deals with what
a notebook can do to its kernel (infinite loops, ``os._exit``).
"""
from __future__ import annotations

import contextlib
import copy
import json
import multiprocessing as mp
import multiprocessing.connection
import os
import shutil
import signal
import sys
import traceback
import types
from dataclasses import asdict, dataclass, field
from pathlib import Path
from time import monotonic

import nbformat

from .course import IGNORE, GraderError, load_config, quiet_logger, run_converter, source_notebooks
from .notebooks import (
    CELL_TIMEOUT,
    KERNEL_DIED,
    NOT_RUN,
    NotebookError,
    cell_label,
    error_message,
    grade_id,
    graded_cells,
    is_test_cell,
    read_notebook,
    write_notebook,
)

OK = "ok"
# The student id nbgrader sees inside a job's course. Each job has a course of its own,
# so it can be fixed, and a folder name that nbgrader would misread as a glob
# pattern ("[a] b*") is never passed to it.
LEARNER = "learner"


# --- results -------------------------------------------------------------------------------

@dataclass
class CellResult:
    """The grade of one graded cell.

    Attributes:
        notebook: notebook id (file name without ``.ipynb``).
        grade_id: the cell's nbgrader id.
        kind: ``"test"`` (autograded) or ``"manual"`` (a written answer, graded by hand).
        score: points given by the autograder; ``None`` for an answered manual cell.
        max_score: the cell's points.
        message: for a failed test, the last line of its error (``AssertionError: ...``).
        answered: for a manual cell, whether the learner changed it.
    """
    notebook: str
    grade_id: str
    kind: str
    score: float | None
    max_score: float
    message: str = ""
    answered: bool = False


@dataclass
class SubmissionResult:
    """What autograding one student's assignment gave.

    Attributes:
        student, assignment: ids.
        status: ``"ok"`` or what went wrong, e.g. ``"kernel died in cell test_x"``,
            ``"timeout in cell quantize"``, ``"invalid notebook: not valid JSON ..."``,
            ``"grader error: ..."`` (several joined by ``"; "``).
        cells: every graded cell of the assignment, in notebook order.
        notes: things an instructor may want to know (test cells restored, ...).
        error: details of a grader error (a traceback), else ``None``.
        seconds: wall-clock time of the child.
    """
    student: str
    assignment: str
    status: str = OK
    cells: list[CellResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    error: str | None = None
    seconds: float = 0.0

    @property
    def tests(self) -> list[CellResult]:
        return [c for c in self.cells if c.kind == "test"]

    @property
    def score(self) -> float:
        """Autograded points."""
        return float(sum(c.score or 0.0 for c in self.tests))

    @property
    def max_score(self) -> float:
        """Points of the autograded tests."""
        return float(sum(c.max_score for c in self.tests))

    @property
    def manual_max_score(self) -> float:
        """Points of the written answers, graded by hand."""
        return float(sum(c.max_score for c in self.cells if c.kind == "manual"))

    @property
    def grader_failed(self) -> bool:
        return self.status.startswith("grader error")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "SubmissionResult":
        d = dict(d)
        d["cells"] = [CellResult(**c) for c in d.get("cells", [])]
        return cls(**d)


def zero_result(source: dict[str, nbformat.NotebookNode], student: str, assignment: str,
                status: str, error: str | None = None) -> SubmissionResult:
    """A result that gives zero to every graded cell of ``source`` (notebook id -> notebook)."""
    cells = [CellResult(nb_id, g.grade_id, g.kind, 0.0, g.max_score)
             for nb_id, nb in source.items() for g in graded_cells(nb)]
    return SubmissionResult(student, assignment, status=status, cells=cells, error=error)


# --- the job, run in the child ------------------------------------------------------------------

@dataclass
class Job:
    """One submission to autograde, in its own working course ``workdir``.

    ``workdir`` holds ``gradebook.db`` (filled by ``generate_assignment``),
    ``solutions/<assignment>/`` and ``course/<assignment>/`` (source and release),
    and ``submitted/learner/<assignment>/`` (nbgrader's student id is always
    :data:`LEARNER` there). The child writes ``result.json``, ``grade.log``,
    ``autograded/learner/`` and ``feedback/learner/`` there.

    Attributes:
        env: the complete environment of the child (and so of its kernels).
        time_limit: seconds after which the parent kills the child and its kernels;
            default :meth:`hard_limit`.
    """
    workdir: str
    student: str
    assignment: str
    cell_timeout: int = 120
    notebook_timeout: int = 600
    max_kernel_restarts: int = 2
    feedback: bool = True
    env: dict = field(default_factory=dict)
    time_limit: float | None = None

    @property
    def result_path(self) -> Path:
        return Path(self.workdir) / "result.json"

    @property
    def log_path(self) -> Path:
        return Path(self.workdir) / "grade.log"

    @property
    def pid_path(self) -> Path:
        return Path(self.workdir) / "kernels.pid"

    def hard_limit(self) -> float:
        """Seconds after which the parent kills the child: every allowed run, plus slack."""
        if self.time_limit is not None:
            return self.time_limit
        if not self.notebook_timeout:  # unlimited notebooks: no hard limit either
            return float("inf")
        return (self.max_kernel_restarts + 1) * (self.notebook_timeout + 30) + 120


def grading_env(workdir: str | Path, parallel: int = 1) -> dict:
    """The environment of a grading child and its kernels.

    The current environment, with ``DVL_PRESET=smoke``, IPython's files inside
    ``workdir`` (no profile or startup file of the machine applies) and, when
    several submissions run at once, the CPU threads shared between them.
    """
    env = dict(os.environ)
    env.update(DVL_PRESET="smoke", JUPYTER_PLATFORM_DIRS="1",
               IPYTHONDIR=str(Path(workdir) / ".ipython"), PYTHONDONTWRITEBYTECODE="1")
    if parallel > 1:
        threads = str(max(1, (os.cpu_count() or 1) // parallel))
        env.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
    return env


def _links_and_junk(folder: str, names: list[str]) -> set[str]:
    """What a job's copy of a submission leaves out: links (they may dangle or point
    anywhere) and what the course never copies (checkpoints, caches)."""
    junk = set(shutil.ignore_patterns(*IGNORE)(folder, names))
    return junk | {n for n in names if os.path.islink(os.path.join(folder, n))}


def _link_or_copy(target: Path, link: Path) -> None:
    try:
        link.symlink_to(target, target_is_directory=True)
    except OSError:
        shutil.copytree(target, link)


def prepare_job(course: str | Path, workdir: str | Path, student: str, assignment: str,
                submission: str | Path, *, parallel: int = 1, **options) -> Job:
    """Lay out the working course of one submission and return its :class:`Job`.

    Args:
        course: a course built by :func:`grader.course.prepare_course` (its gradebook
            is copied, its ``solutions/`` and ``course/`` are linked).
        workdir: a new directory for this submission.
        submission: the student's assignment folder (``<notebook>.ipynb`` and any
            other files), or a single notebook file, graded as the assignment's
            notebook whose name starts its file name (else its first notebook).
        options: :class:`Job` fields (``cell_timeout``, ``notebook_timeout``, ...).
    """
    course, workdir, submission = Path(course), Path(workdir), Path(submission)
    if workdir.exists():
        shutil.rmtree(workdir)
    dest = workdir / "submitted" / LEARNER / assignment
    if submission.is_dir():
        shutil.copytree(submission, dest, ignore=_links_and_junk)
    else:
        names = [p.stem for p in source_notebooks(course, assignment)]
        hits = [n for n in names if submission.stem.startswith(n)]
        name = max(hits, key=len) if hits else names[0]
        dest.mkdir(parents=True)
        shutil.copyfile(submission, dest / f"{name}.ipynb")
    shutil.copyfile(course / "gradebook.db", workdir / "gradebook.db")
    for sub in ("solutions", "course"):
        _link_or_copy((course / sub).resolve(), workdir / sub)
    return Job(str(workdir.resolve()), student, assignment, env=grading_env(workdir, parallel),
               **options)


def _submission_dir(job: Job) -> Path:
    return Path(job.workdir) / "submitted" / LEARNER / job.assignment


def _tampering_notes(submitted: nbformat.NotebookNode, release: nbformat.NotebookNode,
                     nb_id: str) -> list[str]:
    """Locked cells of the release that the submission changed or deleted."""
    theirs = {grade_id(c): c for c in submitted.cells if grade_id(c)}
    notes = []
    for cell in release.cells:
        gid = grade_id(cell)
        if not gid or not cell.metadata["nbgrader"].get("locked"):
            continue
        what = "test cell" if is_test_cell(cell) else "locked cell"
        restored = "restored" if is_test_cell(cell) or gid in theirs else "not restored"
        if gid not in theirs:
            notes.append(f"{what} {gid} of {nb_id} was deleted ({restored})")
        elif theirs[gid].source.strip() != cell.source.strip():
            notes.append(f"{what} {gid} of {nb_id} was edited (restored)")
    return notes


# The nbgrader metadata that decides grading (checksums and locks nbgrader restores itself).
_GRADING_KEYS = ("grade", "solution", "task", "points", "grade_id")


def _repair_metadata(nb: nbformat.NotebookNode, release: nbformat.NotebookNode) -> list[str]:
    """Give cells the nbgrader metadata of the release, in place; returns the cells changed.

    A learner cannot legitimately change it, and nbgrader fails on a whole
    submission for a pasted copy of a graded cell (duplicate ``grade_id``), an
    old schema or a malformed field. Cells whose id is unknown or repeated become
    plain cells; cells deleted altogether are nbgrader's to add back.
    """
    reference = {grade_id(c): c.metadata["nbgrader"] for c in release.cells if grade_id(c)}
    seen, changed = set(), []
    for i, cell in enumerate(nb.cells):
        meta = cell.get("metadata", {}).get("nbgrader")
        if meta is None:
            continue
        gid = grade_id(cell)
        if gid in reference and gid not in seen:
            seen.add(gid)
            if any(meta.get(k) != reference[gid].get(k) for k in _GRADING_KEYS):
                changed.append(gid)
            cell.metadata["nbgrader"] = copy.deepcopy(reference[gid])
        else:
            del cell.metadata["nbgrader"]
            changed.append(str(gid) if gid else f"#{i + 1}")
    return changed


def _run_problems(nb: nbformat.NotebookNode) -> list[str]:
    """Statuses read off an autograded notebook: dead kernels, timeouts, time limit."""
    problems = []
    for i, cell in enumerate(nb.cells):
        names = [o.get("ename") for o in cell.get("outputs", []) if o.get("output_type") == "error"]
        if KERNEL_DIED in names:
            problems.append(f"kernel died in cell {cell_label(nb, i)}")
        elif CELL_TIMEOUT in names:
            problems.append(f"timeout in cell {cell_label(nb, i)}")
        elif NOT_RUN in names:
            why = "notebook time limit" if "time limit" in error_message(cell) else "kernel died too often"
            problems.append(f"{why}: cells from {cell_label(nb, i)} on were not run")
            break
    return problems


def _gradebook_scores(db_url: str, assignment: str, student: str, nb_id: str) -> dict[str, float | None]:
    from nbgrader.api import Gradebook, MissingEntry
    with Gradebook(db_url) as gb:
        try:
            sub = gb.find_submission_notebook(nb_id, assignment, student)
        except MissingEntry:
            return {}
        return {g.name: g.auto_score for g in sub.grades}


def run_job(job: Job) -> SubmissionResult:
    """Autograde ``job`` in its working course (what the child process does).

    Submission problems end up in the result's status with zero points where
    due; only failures of the grader itself raise.
    """
    start = monotonic()
    root = Path(job.workdir)
    log = quiet_logger(f"job.{os.getpid()}", job.log_path)
    source = {p.stem: read_notebook(p) for p in source_notebooks(root, job.assignment)}
    release = {s: read_notebook(root / "course" / job.assignment / f"{s}.ipynb") for s in source}
    sub_dir = _submission_dir(job)
    notes, statuses = [], []

    present = sorted(sub_dir.glob("*.ipynb"))
    if len(source) == 1 and len(present) == 1 and present[0].stem not in source:
        expected = sub_dir / f"{next(iter(source))}.ipynb"
        notes.append(f"graded {present[0].name} as {expected.name}")
        present[0].rename(expected)
    for path in sorted(sub_dir.glob("*.ipynb")):
        if path.stem not in source:
            notes.append(f"ignored {path.name}: not a notebook of {job.assignment}")
            continue
        try:
            nb = read_notebook(path)
        except NotebookError as e:
            statuses.append(f"invalid notebook: {str(e).split(': ', 1)[-1]}")
            path.unlink()  # the work copy: nbgrader would fail on it
            continue
        notes.extend(_tampering_notes(nb, release[path.stem], path.stem))
        repaired = _repair_metadata(nb, release[path.stem])
        if repaired:
            notes.append(f"nbgrader metadata of {path.stem} repaired in cells {', '.join(repaired)}")
        write_notebook(nb, path)
    missing = [s for s in source if not (sub_dir / f"{s}.ipynb").exists()]
    if len(missing) == len(source):
        if not statuses:
            statuses.append("no notebook submitted")
        result = zero_result(source, job.student, job.assignment, "; ".join(statuses))
        result.notes, result.seconds = notes, monotonic() - start
        return result
    for s in missing:
        if not statuses:
            statuses.append(f"missing notebook {s}.ipynb")

    config = load_config(root, cell_timeout=job.cell_timeout, notebook_timeout=job.notebook_timeout,
                         kernel_pid_file=str(job.pid_path))
    config.GuardedExecute.max_kernel_restarts = job.max_kernel_restarts
    db_url = config.CourseDirectory.db_url
    run_converter("autograde", config, assignment=job.assignment, student=LEARNER, log=log,
                  create_student=True)
    if job.feedback:
        try:
            run_converter("generate_feedback", config, assignment=job.assignment,
                          student=LEARNER, log=log)
        except GraderError as e:
            notes.append(f"no feedback: {e}")

    cells = []
    for nb_id, src in source.items():
        graded_path = root / "autograded" / LEARNER / job.assignment / f"{nb_id}.ipynb"
        graded = nbformat.read(graded_path, as_version=4) if graded_path.exists() else None
        by_id = {grade_id(c): c for c in graded.cells if grade_id(c)} if graded else {}
        if graded is not None:
            statuses.extend(_run_problems(graded))
        scores = _gradebook_scores(db_url, job.assignment, LEARNER, nb_id)
        for g in graded_cells(src):
            score = scores.get(g.grade_id, 0.0)
            cell = by_id.get(g.grade_id)
            if g.kind == "test":
                score = float(score or 0.0)
                message = error_message(cell) if cell is not None and score < g.max_score else ""
                cells.append(CellResult(nb_id, g.grade_id, "test", score, g.max_score, message))
            else:
                answered = cell is not None and score is None
                cells.append(CellResult(nb_id, g.grade_id, "manual", None if answered else 0.0,
                                        g.max_score, answered=answered))
    return SubmissionResult(job.student, job.assignment, status="; ".join(statuses) or OK,
                            cells=cells, notes=notes, seconds=monotonic() - start)


def _child_main(job: Job) -> None:
    """Entry point of the child process: own session, own environment, result to JSON."""
    if hasattr(os, "setsid"):
        try:
            os.setsid()
        except OSError:
            pass
    os.chdir(job.workdir)
    os.environ.clear()
    os.environ.update(job.env)
    with open(job.log_path, "a", encoding="utf-8") as logf:
        os.dup2(logf.fileno(), 1)
        os.dup2(logf.fileno(), 2)
    try:
        result = run_job(job)
    except BaseException as e:  # noqa: BLE001 - the parent must always get a result
        detail = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        result = SubmissionResult(job.student, job.assignment, status=f"grader error: {detail}",
                                  error=traceback.format_exc())
    tmp = job.result_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result.to_dict(), indent=1))
    tmp.replace(job.result_path)


# --- the parent ------------------------------------------------------------------------------------

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


def _collect(job: Job, source: dict, exitcode: int | None, killed_after: float | None) -> SubmissionResult:
    if killed_after is not None:
        return zero_result(source, job.student, job.assignment,
                           f"killed after {killed_after:.0f} s (time limit of the whole submission)")
    try:
        result = SubmissionResult.from_dict(json.loads(job.result_path.read_text()))
    except (OSError, ValueError, TypeError) as e:
        return zero_result(source, job.student, job.assignment,
                           f"grader error: the grading process ended with code {exitcode} "
                           f"and no result ({type(e).__name__}); see {job.log_path}")
    if not result.cells:  # the child failed before it knew the cells: zero them all
        zero = zero_result(source, result.student, result.assignment, result.status, result.error)
        zero.notes, zero.seconds = result.notes, result.seconds
        return zero
    return result


def run_jobs(jobs: list[Job], *, parallel: int = 1, on_result=None) -> list[SubmissionResult]:
    """Run ``jobs`` in child processes, ``parallel`` at a time; results in the order of ``jobs``.

    Args:
        on_result: called as ``on_result(job, result)`` as each one finishes.
    """
    ctx = _context()
    pending = list(enumerate(jobs))
    running: dict[int, tuple] = {}
    results: dict[int, SubmissionResult] = {}
    try:
        _schedule(ctx, pending, running, results, parallel, on_result)
    finally:  # interrupted (Ctrl-C): children live in sessions of their own, stop them
        for job, proc, _ in running.values():
            _kill(job, proc)
    return [results[i] for i in range(len(jobs))]


def _schedule(ctx, pending, running, results, parallel, on_result) -> None:
    while pending or running:
        while pending and len(running) < max(1, parallel):
            i, job = pending.pop(0)
            job.result_path.unlink(missing_ok=True)
            proc = ctx.Process(target=_child_main, args=(job,), name=f"grade-{job.student}")
            with _main_module_hidden():
                proc.start()
            running[i] = (job, proc, monotonic())
        mp.connection.wait([p.sentinel for _, p, _ in running.values()], timeout=0.5)
        for i, (job, proc, started) in list(running.items()):
            elapsed = monotonic() - started
            killed = None
            if proc.is_alive():
                if elapsed < job.hard_limit():
                    continue
                _kill(job, proc)
                killed = elapsed
            proc.join()
            if proc.exitcode not in (0, None):
                _kill(job, proc)  # a crashed child may leave its kernels behind
            source = {p.stem: read_notebook(p) for p in source_notebooks(job.workdir, job.assignment)}
            result = _collect(job, source, proc.exitcode, killed)
            del running[i]
            results[i] = result
            if on_result is not None:
                on_result(job, result)
