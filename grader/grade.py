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
    out/results/<student>/<id>.json         each submission's result, as soon as it is graded
    out/grades.csv                          one row per student and assignment
    out/results.json                        the same, with each failed test's message
    out/nbgrader_config.py                  lets nbgrader's own tools (formgrader) open ``out``

Each submission is autograded in a child process and a working course of its
own, outside ``out`` (:mod:`grader.autograde`, :mod:`grader.scheduler`); this
process alone writes the gradebook and the tables, once the submission's
processes are gone, so a broken or hostile submission costs only its own
grade. Grades are written as each submission finishes (:mod:`grader.records`):
an interrupted run keeps them, and ``resume=True`` grades only the rest.
"""
from __future__ import annotations

import hashlib
import html
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from . import sandbox
from .autograde import LEARNER, Job, SubmissionResult, prepare_job, release_notebooks, zero_result
from .course import InputError, assignment_ids, copy_tree, prepare_course, source_notebooks
from .notebooks import read_notebook
from .records import digest, load_result, record, save_result, write_csv, write_json
from .scheduler import run_jobs


@dataclass
class GradingReport:
    """What :func:`grade_submissions` did.

    Attributes:
        out: the output directory.
        results: one per student and assignment, sorted by assignment then student.
        csv_path: ``out/grades.csv``.
        columns: the CSV header.
        reused: how many results were kept from an earlier run (``resume``).
    """
    out: Path
    results: list[SubmissionResult] = field(default_factory=list)
    csv_path: Path | None = None
    columns: list[str] = field(default_factory=list)
    reused: int = 0

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


def parse_students(spec: str | None) -> tuple[str | None, str | None]:
    """``"FIRST:LAST"`` (either may be empty) -> the inclusive range of student ids to grade.

    Raises:
        InputError: not of that form.
    """
    if spec is None:
        return None, None
    if spec.count(":") != 1:
        raise InputError(f"--students must be FIRST:LAST (either may be empty), got {spec!r}")
    first, last = (x.strip() or None for x in spec.split(":"))
    if first and last and first > last:
        raise InputError(f"--students {spec!r}: {first!r} comes after {last!r}")
    return first, last


def in_range(student: str, span: tuple[str | None, str | None]) -> bool:
    first, last = span
    return (first is None or student >= first) and (last is None or student <= last)


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


def _timestamp(folder: Path):
    path = folder / "timestamp.txt"
    if not path.exists():
        return None
    from nbgrader.utils import parse_utc
    try:
        return parse_utc(path.read_text().strip())
    except Exception:
        return None


def write_nbgrader_config(out: Path) -> None:
    """``out/nbgrader_config.py``, so nbgrader's own tools (formgrader) can open ``out``."""
    from .course import CONFIG_FILE
    (out / "nbgrader_config.py").write_text(
        "# Written by `dvl grade`: nbgrader's own tools (formgrader, `nbgrader db`) run here\n"
        "# use the course configuration, with this directory as the course.\n"
        "c = get_config()  # noqa: F821\n"
        f"load_subconfig({str(CONFIG_FILE)!r})  # noqa: F821\n"
        f"c.CourseDirectory.root = {str(out)!r}\n"
        f"c.CourseDirectory.db_url = {'sqlite:///' + str(out / 'gradebook.db')!r}\n")


def work_dir(out: Path) -> Path:
    """A fresh directory for the working copies of a run into ``out``: in the system's
    temporary directory, outside ``out`` (a kernel must not learn where the gradebook is).

    Its name carries this process's id, so a run never meets the leftovers of an earlier
    run that was killed (``kill -9``: no cleanup, and its dying children may still be
    writing); :func:`sweep_dead_runs` removes those.
    """
    sweep_dead_runs(out)
    work = Path(tempfile.gettempdir()) / f"{work_prefix(out)}{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)  # an earlier run of this same process
    return work


def sweep_dead_runs(out: Path) -> None:
    """Remove the working directories of runs into ``out`` whose process is gone."""
    prefix = work_prefix(out)
    for old in Path(tempfile.gettempdir()).glob(prefix + "*"):
        pid = old.name[len(prefix):]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            shutil.rmtree(old, ignore_errors=True)


def work_prefix(out: Path) -> str:
    """How the names of the working directories of runs into ``out`` begin."""
    return f"dvl-grade-{hashlib.sha256(str(out).encode()).hexdigest()[:16]}-"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _template(out: Path, work: Path) -> Path:
    """What each job copies or links: the gradebook, copies of source and release (the
    grader's only)."""
    template = work / ".template"
    template.mkdir(parents=True)
    os.chmod(template, 0o700)
    shutil.copyfile(out / "gradebook.db", template / "gradebook.db")
    for sub in ("solutions", "course"):
        copy_tree(out / sub, template / sub)
    return template


def grade_submissions(submitted: str | Path, root: str | Path, out: str | Path = "grading", *,
                      cell_timeout: int | None = None, notebook_timeout: int | None = None,
                      memory_mb: int | None = None, parallel: int = 1, resume: bool = False,
                      students: str | None = None, kernel_uid: int | None = sandbox.DEFAULT_UID,
                      on_result=None) -> GradingReport:
    """Autograde every submission of ``submitted`` against the course at ``root``.

    Args:
        submitted: ``<student>/<assignment>/<notebook>.ipynb`` folders; never modified.
        root: the course root (holds ``solutions/``).
        out: output directory (see the module docstring).
        cell_timeout, notebook_timeout: seconds; default: ``nbgrader_config.py``.
        memory_mb: memory of one submission's processes, MiB (default 4096; 0: unlimited).
        parallel: submissions graded at the same time.
        resume: keep the results an earlier run into ``out`` saved for submissions
            that have not changed since (nor has the assignment's source), grade only
            the others.
        students: ``"FIRST:LAST"``, grade only student ids in that range (inclusive).
        kernel_uid: as root, kernels run as users from this id up (``None``: as root).
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
    span = parse_students(students)
    subs = [s for s in find_submissions(submitted) if in_range(s[0], span)]
    if not subs:
        what = f" for students {students}" if students else ""
        raise InputError(f"no submissions in {submitted}{what}: expected "
                          "<student>/<assignment>/<notebook>.ipynb")
    known = assignment_ids(root)
    ids = sorted({a for _, a, _ in subs if a in known})
    out.mkdir(parents=True, exist_ok=True)
    if sandbox.is_root() and kernel_uid is not None:
        os.chmod(out, 0o700)  # the kernels' users: nothing of the class to read or write
    if not resume:
        shutil.rmtree(out / "results", ignore_errors=True)
    work = work_dir(out)
    db_url = prepare_course(root, out, ids).CourseDirectory.db_url if ids else None
    if ids:
        os.chmod(out / "gradebook.db", 0o600)
        work.mkdir(mode=0o700)
        os.chmod(work, 0o711)  # kernels reach their own directory, list nothing
        template = _template(out, work)
    source = {a: {p.stem: read_notebook(p) for p in source_notebooks(out, a)} for a in ids}
    # a result is kept by --resume only for the same submission graded by the same source
    source_digest = {a: digest(out / "solutions" / a) for a in ids}

    options = {k: int(v) for k, v in [("cell_timeout", cell_timeout), ("memory_mb", memory_mb),
                                      ("notebook_timeout", notebook_timeout)] if v is not None}
    options["releases"] = {**release_notebooks(root), **release_notebooks(out)}
    jobs: list[Job] = []
    digests: dict[tuple[str, str], str] = {}
    results: list[SubmissionResult] = []
    reused = 0

    def done(r: SubmissionResult) -> None:
        results.append(r)
        if on_result:
            on_result(r)

    for student, assignment, folder in subs:
        if assignment not in known:
            done(zero_result({}, student, assignment,
                             f"unknown assignment (known: {', '.join(known) or 'none'})"))
            continue
        copy = out / "submitted" / student / assignment
        try:
            fingerprint = f"{digest(folder)}:{source_digest[assignment]}"
            digests[student, assignment] = fingerprint
            kept = load_result(out, student, assignment, fingerprint) if resume else None
            if kept is not None:
                reused += 1
                results.append(kept)
                continue
            if copy.resolve() != folder.resolve():
                if copy.exists():
                    shutil.rmtree(copy)
                shutil.copytree(folder, copy, symlinks=True)
            safe = re.sub(r"[^A-Za-z0-9_.-]", "_", f"{len(jobs):04d}-{student}-{assignment}")
            jobs.append(prepare_job(template, work / safe, student, assignment, copy,
                                    parallel=parallel, **options))
        except OSError as e:  # unreadable files, odd names: this submission only
            done(zero_result(source[assignment], student, assignment,
                             f"could not copy the submission: {e}"))

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
            record(db_url, result, _timestamp(out / "submitted" / job.student / job.assignment))
            save_result(out, result, digests.get((job.student, job.assignment)))
        except Exception as e:  # noqa: BLE001 - one submission's bookkeeping, not the class's
            result.status = f"grader error: could not record the result ({type(e).__name__}: {e})"
        if not result.grader_failed:
            shutil.rmtree(wd, ignore_errors=True)
        done(result)

    run_jobs(jobs, parallel=parallel, on_result=finished, kernel_uid=kernel_uid)
    if not any(r.grader_failed for r in results):  # else kept, for the instructor to look at
        shutil.rmtree(work, ignore_errors=True)
    sweep_dead_runs(out)  # again: a killed run's last children may have been writing at the start
    results.sort(key=lambda r: (r.assignment, r.student))
    write_nbgrader_config(out)
    csv_path = out / "grades.csv"
    columns = write_csv(results, csv_path)
    write_json(results, out / "results.json")
    return GradingReport(out, results, csv_path, columns, reused)


def format_summary(report: GradingReport) -> str:
    """The table ``dvl grade`` prints: one line per student and assignment."""
    rows = [("student", "assignment", "score", "status")]
    rows += [(r.student, r.assignment, f"{r.score:g} / {r.max_score:g}", r.status)
             for r in report.results]
    w = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = [f"{a:<{w[0]}}  {b:<{w[1]}}  {c:>{w[2]}}  {d}" for a, b, c, d in rows]
    lines.insert(1, "-" * (sum(w) + 6 + max(len(r[3]) for r in rows)))
    return "\n".join(lines)
