"""Autograding one submission, in a process of its own.

One submission is one :class:`Job`: a small nbgrader course of its own (a copy
of the gradebook that ``generate_assignment`` filled, the source files, the
submitted notebook) in which a child process (:func:`child_main`) runs
nbgrader's ``autograde`` and ``generate_feedback`` and sends a
:class:`SubmissionResult` back through a pipe. The parent
(:mod:`grader.scheduler`) starts each child in a new session, kills the job's
processes when it ends, and is the only one that writes grades anywhere else.
A submission therefore cannot touch another one's grades, whatever its code does.

Inside the child, :class:`~grader.preprocessors.GuardedExecute` runs the
kernels in the job's :class:`~grader.sandbox.Sandbox` and deals with what a
notebook can do to its kernel (infinite loops, ``os._exit``, hooks, memory).
"""
from __future__ import annotations

import os
import secrets
import shutil
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from time import monotonic

import nbformat

from . import sandbox
from .course import IGNORE, GraderError, load_config, quiet_logger, run_converter, source_notebooks
from .intake import Unfit, inspect_notebook
from .notebooks import (
    CELL_TIMEOUT,
    KERNEL_DIED,
    KERNEL_TAMPERED,
    MEMORY_LIMIT,
    NOT_RUN,
    NotebookError,
    cell_label,
    error_message,
    grade_id,
    graded_cells,
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
    :data:`LEARNER` there). The child writes ``grade.log``,
    ``autograded/learner/`` and ``feedback/learner/`` there; the kernels run in
    ``autograded/learner/<assignment>/`` with ``home/`` as their home.

    Attributes:
        env: the complete environment of the child (its kernels get a part of it).
        time_limit: seconds after which the parent kills the child and its kernels;
            default :meth:`hard_limit`.
        memory_mb: memory of all the job's processes together, in MiB (0: unlimited).
        kernel_uid: user id of the kernels (set by the scheduler when grading as root).
        keep_read: whether kernels keep the right to read any file (see
            :class:`~grader.sandbox.Sandbox`).
        token: marks the job's processes.
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
    memory_mb: int = 4096
    kernel_uid: int | None = None
    keep_read: bool = False
    token: str = field(default_factory=lambda: secrets.token_hex(8))
    releases: dict = field(default_factory=dict)  # assignment id -> release notebook path

    @property
    def log_path(self) -> Path:
        return Path(self.workdir) / "grade.log"

    @property
    def pid_path(self) -> Path:
        return Path(self.workdir) / "kernels.pid"

    def sandbox(self) -> sandbox.Sandbox:
        """Where the kernels of this job run."""
        uid = self.kernel_uid
        return sandbox.Sandbox(
            token=self.token, memory_mb=self.memory_mb, uid=uid, gid=uid,
            keep_read=self.keep_read and uid is not None,
            home=str(Path(self.workdir) / "home") if uid is not None else "",
            ipython_dir=str(Path(self.workdir) / ".ipython"))

    def hard_limit(self) -> float:
        """Seconds after which the parent kills the child: every allowed run, plus slack."""
        if self.time_limit is not None:
            return self.time_limit
        if not self.notebook_timeout:  # unlimited notebooks: no hard limit either
            return float("inf")
        return (self.max_kernel_restarts + 1) * (self.notebook_timeout + 30) + 120


def grading_env(parallel: int = 1) -> dict:
    """The environment of a grading child.

    The current environment, with ``DVL_PRESET=smoke`` and, when several
    submissions run at once, the CPU threads shared between them. Kernels get
    only a part of it (:func:`grader.preprocessors.kernel_environment`).
    """
    env = dict(os.environ)
    env.update(DVL_PRESET="smoke", JUPYTER_PLATFORM_DIRS="1", PYTHONDONTWRITEBYTECODE="1")
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
        options: :class:`Job` fields (``cell_timeout``, ``notebook_timeout``, ...);
            ``releases`` defaults to those of ``course`` (:func:`release_notebooks`).

    Only the grader can read the working course; kernels, which may run as
    another user, can reach their own directory and nothing else in it.
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
    os.chmod(workdir, 0o711)
    os.chmod(workdir / "submitted", 0o700)
    os.chmod(workdir / "gradebook.db", 0o600)
    releases = options.pop("releases", None) or release_notebooks(course)
    return Job(str(workdir.resolve()), student, assignment, env=grading_env(parallel),
               releases=releases, **options)


def release_notebooks(root: str | Path) -> dict[str, str]:
    """Assignment id -> the path of its (first) release notebook, in ``root/course/``: used to
    recognise a notebook handed in under the wrong assignment."""
    found = {}
    folder = Path(root) / "course"
    for d in sorted(folder.iterdir()) if folder.is_dir() else []:
        for nb in sorted(d.glob("*.ipynb"))[:1]:
            found[d.name] = str(nb)
    return found


def _submission_dir(job: Job) -> Path:
    return Path(job.workdir) / "submitted" / LEARNER / job.assignment


def _memory_error(cell) -> bool:
    for out in cell.get("outputs", []):
        if out.get("output_type") != "error":
            continue
        text = f"{out.get('ename', '')}: {out.get('evalue', '')}"
        if out.get("ename") in ("MemoryError", "OutOfMemoryError") or \
                "can't allocate memory" in text or "Cannot allocate memory" in text:
            return True
    return False


def _run_problems(nb: nbformat.NotebookNode) -> list[str]:
    """Statuses read off an autograded notebook: dead kernels, timeouts, memory, tampering."""
    problems = []
    for i, cell in enumerate(nb.cells):
        names = [o.get("ename") for o in cell.get("outputs", []) if o.get("output_type") == "error"]
        if MEMORY_LIMIT in names or _memory_error(cell):
            problems.append(f"memory limit in cell {cell_label(nb, i)}")
        elif KERNEL_DIED in names:
            problems.append(f"kernel died in cell {cell_label(nb, i)}")
        elif CELL_TIMEOUT in names:
            problems.append(f"timeout in cell {cell_label(nb, i)}")
        elif KERNEL_TAMPERED in names:
            problems.append(f"kernel changed during test {cell_label(nb, i)}")
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


def _invalid(e: NotebookError, path: Path) -> str:
    if path.exists() and path.stat().st_size == 0:
        return "invalid notebook: empty file"
    return f"invalid notebook: {str(e).split(': ', 1)[-1]}"


def _intake(job: Job, source: dict, release: dict, notes: list, statuses: list) -> None:
    """Check and repair the submitted notebooks in the work copy (nbgrader reads them next)."""
    sub_dir = _submission_dir(job)
    present = sorted(sub_dir.glob("*.ipynb"))
    if len(source) == 1 and len(present) == 1 and present[0].stem not in source:
        expected = sub_dir / f"{next(iter(source))}.ipynb"
        notes.append(f"graded {present[0].name} as {expected.name}")
        present[0].rename(expected)
    others = {}
    for assignment, path in job.releases.items():
        try:
            others[assignment] = read_notebook(path)
        except NotebookError:
            pass
    for path in sorted(sub_dir.glob("*.ipynb")):
        if path.stem not in source:
            notes.append(f"ignored {path.name}: not a notebook of {job.assignment}")
            continue
        try:
            nb = read_notebook(path)
            notes.extend(inspect_notebook(nb, release[path.stem], path.stem, job.assignment, others))
        except NotebookError as e:
            statuses.append(_invalid(e, path))
            path.unlink()  # the work copy: nbgrader would fail on it
            continue
        except Unfit as e:
            statuses.append(str(e))
            path.unlink()
            continue
        write_notebook(nb, path)


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
    notes, statuses = [], []
    _intake(job, source, release, notes, statuses)
    sub_dir = _submission_dir(job)
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
    config.GuardedExecute.sandbox = job.sandbox().to_json()
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
            undone = graded.metadata.get("dvl_guard") or []
            if undone:
                notes.append(f"the notebook changed the kernel ({', '.join(undone[:5])}"
                             f"{', ...' if len(undone) > 5 else ''}); undone before each test")
        scores = _gradebook_scores(db_url, job.assignment, LEARNER, nb_id)
        for g in graded_cells(src):
            score = scores.get(g.grade_id, 0.0)
            cell = by_id.get(g.grade_id)
            if g.kind == "test":
                score = min(max(float(score or 0.0), 0.0), g.max_score)
                message = error_message(cell) if cell is not None and score < g.max_score else ""
                cells.append(CellResult(nb_id, g.grade_id, "test", score, g.max_score, message))
            else:
                answered = cell is not None and score is None
                cells.append(CellResult(nb_id, g.grade_id, "manual", None if answered else 0.0,
                                        g.max_score, answered=answered))
    return SubmissionResult(job.student, job.assignment, status="; ".join(statuses) or OK,
                            cells=cells, notes=notes, seconds=monotonic() - start)


def child_main(job: Job, conn) -> None:
    """Entry point of the child process: own session, own environment, result to ``conn``."""
    if hasattr(os, "setsid"):
        try:
            os.setsid()
        except OSError:
            pass
    sandbox.die_with_parent()
    sandbox.become_subreaper()  # daemons of the kernels stay our descendants: found and killed
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
    conn.send(result.to_dict())
    conn.close()
