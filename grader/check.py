"""``dvl check``: a learner grades their own notebook against the hidden tests.

No instructor setup: a temporary nbgrader course is built from ``solutions/``,
the notebook is autograded there exactly as ``dvl grade`` would (smoke preset,
same timeouts, same isolation) and thrown away. The report names each test's
points and, for a failure, only the error's last line, never the hidden test.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from .autograde import LEARNER, SubmissionResult, prepare_job, release_notebooks
from .course import GraderError, InputError, assignment_ids, match_assignment, prepare_course
from .notebooks import read_notebook
from .scheduler import run_jobs


def check_notebook(notebook: str | Path, root: str | Path, *, assignment: str | None = None,
                   cell_timeout: int | None = None, notebook_timeout: int | None = None,
                   memory_mb: int | None = None) -> SubmissionResult:
    """Autograde one notebook of any name, anywhere on disk, against the hidden tests.

    Args:
        notebook: the learner's ``.ipynb``.
        root: the course root (holds ``solutions/``).
        assignment: its assignment id; default: from the folder or file name
            (``.../01_vqvae/x.ipynb``, ``01_vqvae-mine.ipynb``).
        cell_timeout, notebook_timeout: seconds; default: ``nbgrader_config.py``.
        memory_mb: memory limit of the notebook's processes (default 4096 MiB, 0: none).

    Raises:
        NotebookError: the file is not a notebook.
        InputError: unknown assignment.
        GraderError: the grader itself failed.
    """
    notebook = Path(notebook)
    read_notebook(notebook)
    known = assignment_ids(root)
    assignment = assignment or match_assignment(notebook, known)
    if assignment is None or assignment not in known:
        what = f"unknown assignment {assignment!r}" if assignment else \
            f"cannot tell which assignment {notebook.name} belongs to"
        raise InputError(f"{what}; known assignments: {', '.join(known) or 'none'} (the folder "
                          "or the file name must start with one, or pass --assignment ID)")
    options = {}
    if cell_timeout is not None:
        options["cell_timeout"] = int(cell_timeout)
    if notebook_timeout is not None:
        options["notebook_timeout"] = int(notebook_timeout)
    if memory_mb is not None:
        options["memory_mb"] = int(memory_mb)
    with tempfile.TemporaryDirectory(prefix="dvl-check-") as tmp:
        os.chmod(tmp, 0o711)  # a kernel running as another user reaches its own directory
        course = Path(tmp) / "course"
        prepare_course(root, course, [assignment])
        os.chmod(course, 0o700)  # hidden tests: the grader's only
        job = prepare_job(course, Path(tmp) / "job", LEARNER, assignment, notebook, feedback=False,
                          releases={**release_notebooks(root), **release_notebooks(course)},
                          **options)
        [result] = run_jobs([job])
        if result.grader_failed:
            log = job.log_path.read_text(errors="replace") if job.log_path.exists() else ""
            raise GraderError(f"{result.status}\n{result.error or ''}{log[-4000:]}".rstrip())
    return result


def check_json(result: SubmissionResult) -> dict:
    """The ``--json`` report: ``score``, ``max_score`` and one entry per test cell."""
    return {
        "assignment": result.assignment,
        "status": result.status,
        "score": result.score,
        "max_score": result.max_score,
        "manual_max_score": result.manual_max_score,
        "tests": [{"grade_id": t.grade_id, "score": t.score, "max_score": t.max_score,
                   "message": t.message} for t in result.tests],
    }


def format_check(result: SubmissionResult, notebook: str | Path) -> str:
    """The human report of :func:`check_notebook`."""
    tests = result.tests
    width = max([len(t.grade_id) for t in tests] + [4])
    lines = [f"{Path(notebook).name}: assignment {result.assignment} (hidden tests, smoke preset)", ""]
    for t in tests:
        mark = "pass" if t.score >= t.max_score else "FAIL"
        line = f"  {mark}  {t.grade_id:<{width}}  {t.score:g} / {t.max_score:g}"
        if t.message:
            line += f"   {t.message}"
        lines.append(line)
    lines.append("")
    if result.status != "ok":
        lines.append(f"note: {result.status}")
    lines.extend(f"note: {n}" for n in result.notes)
    manual = result.manual_max_score
    tail = (f"; written answers ({manual:g} point{'s' if manual != 1 else ''}) are graded by hand"
            if manual else "")
    lines.append(f"score: {result.score:g} / {result.max_score:g} (autograded){tail}")
    return "\n".join(lines)
