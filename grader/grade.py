"""``dvl grade``: autograde a folder of submissions, write feedback and a grades table.

``SUBMITTED`` has nbgrader's layout ``<student>/<assignment>/<notebook>.ipynb``
and is only read. Everything goes under ``out`` (default ``./grading``), which
is itself an nbgrader course (so formgrader can open it for the written answers)::

    out/solutions/<id>/, out/course/<id>/   source and release of the graded assignments
    out/gradebook.db                        nbgrader's gradebook, written by this process only
    out/submitted/<student>/<id>/           a copy of the submissions
    out/autograded/<student>/<id>/          the executed notebooks (hidden tests included)
    out/feedback/<student>/<id>/<nb>.html   feedback: points, no hidden tests
    out/logs/<student>/<id>.log             nbgrader's log of each submission
    out/grades.csv                          one row per student and assignment
    out/results.json                        the same, with each failed test's message
    out/nbgrader_config.py                  lets nbgrader's own tools (formgrader) open ``out``

Each submission is autograded in a child process and a working course of its
own (:mod:`grader.autograde`); this process alone writes the gradebook and the
table, so a broken or hostile submission costs only its own grade.
"""
from __future__ import annotations

import csv
import html
import json
import re
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from .autograde import LEARNER, Job, SubmissionResult, prepare_job, run_jobs, zero_result
from .course import InputError, assignment_ids, prepare_course, source_notebooks
from .notebooks import read_notebook

WORK = ".work"


@dataclass
class GradingReport:
    """What :func:`grade_submissions` did.

    Attributes:
        out: the output directory.
        results: one per student and assignment, sorted by assignment then student.
        csv_path: ``out/grades.csv``.
        columns: the CSV header.
    """
    out: Path
    results: list[SubmissionResult] = field(default_factory=list)
    csv_path: Path | None = None
    columns: list[str] = field(default_factory=list)

    @property
    def grader_failures(self) -> list[SubmissionResult]:
        return [r for r in self.results if r.grader_failed]


def find_submissions(submitted: str | Path) -> list[tuple[str, str, Path]]:
    """``(student, assignment, folder)`` for every ``<student>/<assignment>/`` of ``submitted``."""
    found = []
    for student in sorted(Path(submitted).iterdir()):
        if not student.is_dir() or student.name.startswith("."):
            continue
        for folder in sorted(student.iterdir()):
            if folder.is_dir() and not folder.name.startswith("."):
                found.append((student.name, folder.name, folder))
    return found


def _replace_dir(src: Path, dst: Path) -> None:
    if dst.exists():
        shutil.rmtree(dst)
    if src.exists():
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(src), str(dst))


def _fallback_feedback(path: Path, result: SubmissionResult) -> None:
    """A feedback page for a submission nbgrader could not produce one for."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = "".join(f"<tr><td>{html.escape(c.grade_id)}</td><td>{c.score or 0:g} / {c.max_score:g}"
                   f"</td></tr>" for c in result.tests)
    path.write_text(
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(result.assignment)}"
        f"</title></head><body><h1>{html.escape(result.assignment)}: {result.score:g} / "
        f"{result.max_score:g}</h1><p>Your notebook could not be graded normally: "
        f"{html.escape(result.status)}.</p><table>{rows}</table></body></html>\n", encoding="utf-8")


def _record(db_url: str, result: SubmissionResult, timestamp=None) -> None:
    """Write one result into the gradebook, as nbgrader's ``SaveAutoGrades`` would."""
    from nbgrader.api import Gradebook
    from sqlalchemy.exc import SAWarning

    with warnings.catch_warnings(), Gradebook(db_url) as gb:
        warnings.simplefilter("ignore", SAWarning)  # nbgrader's own autoflush notices
        gb.update_or_create_student(result.student)
        kwargs = {"timestamp": timestamp} if timestamp else {}
        gb.update_or_create_submission(result.assignment, result.student, **kwargs)
        for c in result.cells:
            grade = gb.find_grade(c.grade_id, c.notebook, result.assignment, result.student)
            grade.auto_score = c.score
            grade.needs_manual_grade = grade.manual_score is not None or c.score is None
            if c.kind == "manual":
                comment = gb.find_comment(c.grade_id, c.notebook, result.assignment, result.student)
                comment.auto_comment = None if c.answered else "No response."
        gb.db.commit()


def _timestamp(folder: Path):
    path = folder / "timestamp.txt"
    if not path.exists():
        return None
    from nbgrader.utils import parse_utc
    try:
        return parse_utc(path.read_text().strip())
    except Exception:
        return None


def _write_nbgrader_config(out: Path) -> None:
    """``out/nbgrader_config.py``, so nbgrader's own tools (formgrader) can open ``out``."""
    from .course import CONFIG_FILE
    (out / "nbgrader_config.py").write_text(
        "# Written by `dvl grade`: nbgrader's own tools (formgrader, `nbgrader db`) run here\n"
        "# use the course configuration, with this directory as the course.\n"
        "c = get_config()  # noqa: F821\n"
        f"load_subconfig({str(CONFIG_FILE)!r})  # noqa: F821\n"
        f"c.CourseDirectory.root = {str(out)!r}\n"
        f"c.CourseDirectory.db_url = {'sqlite:///' + str(out / 'gradebook.db')!r}\n")


def _column(result: SubmissionResult, cell) -> str:
    notebooks = {c.notebook for c in result.cells}
    return cell.grade_id if len(notebooks) <= 1 else f"{cell.notebook}/{cell.grade_id}"


def write_csv(results: list[SubmissionResult], path: str | Path) -> list[str]:
    """Write the grades table; returns its header.

    Columns: ``student``, ``assignment``, one per test cell (its autograded
    points; ``<notebook>/<grade_id>`` when an assignment has several notebooks),
    ``total`` and ``max`` (autograded points), ``manual_max`` (points of written
    answers, graded by hand), ``status`` and ``notes``.
    """
    tests: list[str] = []
    for r in results:
        for c in r.tests:
            name = _column(r, c)
            if name not in tests:
                tests.append(name)
    header = ["student", "assignment", *tests, "total", "max", "manual_max", "status", "notes"]
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        for r in results:
            scores = {_column(r, c): f"{c.score or 0:g}" for c in r.tests}
            w.writerow([r.student, r.assignment, *[scores.get(t, "") for t in tests],
                        f"{r.score:g}", f"{r.max_score:g}", f"{r.manual_max_score:g}", r.status,
                        "; ".join(r.notes)])
    return header


def grade_submissions(submitted: str | Path, root: str | Path, out: str | Path = "grading", *,
                      cell_timeout: int | None = None, notebook_timeout: int | None = None,
                      parallel: int = 1, on_result=None) -> GradingReport:
    """Autograde every submission of ``submitted`` against the course at ``root``.

    Args:
        submitted: ``<student>/<assignment>/<notebook>.ipynb`` folders; never modified.
        root: the course root (holds ``solutions/``).
        out: output directory (see the module docstring).
        cell_timeout, notebook_timeout: seconds; default: ``nbgrader_config.py``.
        parallel: submissions graded at the same time.
        on_result: called as ``on_result(result)`` after each submission.

    Raises:
        InputError: nothing to grade, or ``out`` inside ``submitted``.
        GraderError: nbgrader rejected the course's source.
    """
    submitted, root, out = Path(submitted).resolve(), Path(root).resolve(), Path(out).resolve()
    if not submitted.is_dir():
        raise InputError(f"{submitted} is not a directory of submissions "
                          "(<student>/<assignment>/<notebook>.ipynb)")
    if out == submitted or out.is_relative_to(submitted):
        raise InputError(f"the output directory {out} must not be inside {submitted}")
    subs = find_submissions(submitted)
    if not subs:
        raise InputError(f"no submissions in {submitted}: expected "
                          "<student>/<assignment>/<notebook>.ipynb")
    known = assignment_ids(root)
    ids = sorted({a for _, a, _ in subs if a in known})
    out.mkdir(parents=True, exist_ok=True)
    work = out / WORK
    if work.exists():
        shutil.rmtree(work)
    db_url = prepare_course(root, out, ids).CourseDirectory.db_url if ids else None
    template = work / ".template"  # what each job copies: gradebook, links to source and release
    if ids:
        template.mkdir(parents=True)
        shutil.copyfile(out / "gradebook.db", template / "gradebook.db")
        for sub in ("solutions", "course"):
            (template / sub).symlink_to(out / sub, target_is_directory=True)
    source = {a: {p.stem: read_notebook(p) for p in source_notebooks(out, a)} for a in ids}

    options = {}
    if cell_timeout is not None:
        options["cell_timeout"] = int(cell_timeout)
    if notebook_timeout is not None:
        options["notebook_timeout"] = int(notebook_timeout)
    jobs: list[Job] = []
    results: list[SubmissionResult] = []
    for student, assignment, folder in subs:
        if assignment not in known:
            r = zero_result({}, student, assignment,
                            f"unknown assignment (known: {', '.join(known) or 'none'})")
            results.append(r)
            if on_result:
                on_result(r)
            continue
        copy = out / "submitted" / student / assignment
        try:
            if copy.resolve() != folder.resolve():
                if copy.exists():
                    shutil.rmtree(copy)
                shutil.copytree(folder, copy, symlinks=True)
            safe = re.sub(r"[^A-Za-z0-9_.-]", "_", f"{len(jobs):04d}-{student}-{assignment}")
            jobs.append(prepare_job(template, work / safe, student, assignment, copy,
                                    parallel=parallel, **options))
        except OSError as e:  # unreadable files, odd names: this submission only
            r = zero_result(source[assignment], student, assignment,
                            f"could not copy the submission: {e}")
            results.append(r)
            if on_result:
                on_result(r)

    def finished(job: Job, result: SubmissionResult) -> None:
        wd = Path(job.workdir)
        try:
            _replace_dir(wd / "autograded" / LEARNER / job.assignment,
                         out / "autograded" / job.student / job.assignment)
            fb = out / "feedback" / job.student / job.assignment
            _replace_dir(wd / "feedback" / LEARNER / job.assignment, fb)
            if not any(fb.glob("*.html")):
                for nb_id in source[job.assignment] or [job.assignment]:
                    _fallback_feedback(fb / f"{nb_id}.html", result)
            log = out / "logs" / job.student / f"{job.assignment}.log"
            log.parent.mkdir(parents=True, exist_ok=True)
            if job.log_path.exists():
                shutil.copyfile(job.log_path, log)
            _record(db_url, result, _timestamp(out / "submitted" / job.student / job.assignment))
        except Exception as e:  # noqa: BLE001 - one submission's bookkeeping, not the class's
            result.status = f"grader error: could not record the result ({type(e).__name__}: {e})"
        if not result.grader_failed:
            shutil.rmtree(wd, ignore_errors=True)
        if on_result:
            on_result(result)

    results += run_jobs(jobs, parallel=parallel, on_result=finished)
    if not any(r.grader_failed for r in results):  # else kept, for the instructor to look at
        shutil.rmtree(work, ignore_errors=True)
    results.sort(key=lambda r: (r.assignment, r.student))
    _write_nbgrader_config(out)
    csv_path = out / "grades.csv"
    columns = write_csv(results, csv_path)
    (out / "results.json").write_text(json.dumps([r.to_dict() for r in results], indent=1) + "\n")
    return GradingReport(out, results, csv_path, columns)


def format_summary(report: GradingReport) -> str:
    """The table ``dvl grade`` prints: one line per student and assignment."""
    rows = [("student", "assignment", "score", "status")]
    rows += [(r.student, r.assignment, f"{r.score:g} / {r.max_score:g}", r.status)
             for r in report.results]
    w = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = [f"{a:<{w[0]}}  {b:<{w[1]}}  {c:>{w[2]}}  {d}" for a, b, c, d in rows]
    lines.insert(1, "-" * (sum(w) + 6 + max(len(r[3]) for r in rows)))
    return "\n".join(lines)
