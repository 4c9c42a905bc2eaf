"""Where grades go: the gradebook, one result file per submission, the grades table.

Everything here is written by the grading process alone, after a submission's
processes are gone, and written so that a crash at any moment leaves every
file whole:

- :func:`record` puts one submission's grades into nbgrader's gradebook in a
  single SQLite transaction (all of them or none);
- :func:`save_result` writes ``out/results/<student>/<assignment>.json``
  (with a digest of what was graded) after the gradebook, through a temporary
  file and an atomic rename; ``dvl grade --resume`` trusts these files;
- :func:`write_csv` and :func:`write_json` write the tables the same way.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import warnings
from pathlib import Path

from .autograde import SubmissionResult

RESULTS = "results"


def atomic_write(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see the old file or the new one, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w", encoding="utf-8", newline="") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def digest(folder: str | Path) -> str:
    """A fingerprint of a submission folder: every file's path and content."""
    h = hashlib.sha256()
    folder = Path(folder)
    for p in sorted(folder.rglob("*")):
        if p.is_file() and not p.is_symlink():
            h.update(str(p.relative_to(folder)).encode() + b"\0")
            h.update(hashlib.sha256(p.read_bytes()).digest())
    return h.hexdigest()


def result_path(out: str | Path, student: str, assignment: str) -> Path:
    return Path(out) / RESULTS / student / f"{assignment}.json"


def save_result(out: str | Path, result: SubmissionResult, fingerprint: str | None) -> None:
    """``out/results/<student>/<assignment>.json``: the result and the digest it was graded at."""
    atomic_write(result_path(out, result.student, result.assignment),
                 json.dumps({"digest": fingerprint, "result": result.to_dict()}, indent=1) + "\n")


def load_result(out: str | Path, student: str, assignment: str,
                fingerprint: str | None = None) -> SubmissionResult | None:
    """The saved result of a submission, if there is one for this ``fingerprint`` (any if None)."""
    try:
        saved = json.loads(result_path(out, student, assignment).read_text())
        if fingerprint is not None and saved.get("digest") != fingerprint:
            return None
        return SubmissionResult.from_dict(saved["result"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def saved_results(out: str | Path) -> list[SubmissionResult]:
    """Every result saved under ``out/results``."""
    found = []
    for path in sorted((Path(out) / RESULTS).glob("*/*.json")):
        r = load_result(out, path.parent.name, path.stem)
        if r is not None:
            found.append(r)
    return found


def record(db_url: str, result: SubmissionResult, timestamp=None) -> None:
    """Write one result into the gradebook, as nbgrader's ``SaveAutoGrades`` would, atomically.

    nbgrader's API commits after each change; here its commits only flush, and
    one commit at the end makes the submission's grades appear all at once.
    """
    from nbgrader.api import Gradebook
    from sqlalchemy.exc import SAWarning

    with warnings.catch_warnings(), Gradebook(db_url) as gb:
        warnings.simplefilter("ignore", SAWarning)  # nbgrader's own autoflush notices
        session = gb.db
        commit = session.commit
        session.commit = session.flush
        try:
            gb.update_or_create_student(result.student)
            kwargs = {"timestamp": timestamp} if timestamp else {}
            gb.update_or_create_submission(result.assignment, result.student, **kwargs)
            for c in result.cells:
                grade = gb.find_grade(c.grade_id, c.notebook, result.assignment, result.student)
                grade.auto_score = c.score
                grade.needs_manual_grade = grade.manual_score is not None or c.score is None
                if c.kind == "manual":
                    comment = gb.find_comment(c.grade_id, c.notebook, result.assignment,
                                              result.student)
                    comment.auto_comment = None if c.answered else "No response."
            session.flush()
        except BaseException:
            del session.commit
            session.rollback()
            raise
        del session.commit
        commit()


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
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(header)
    for r in results:
        scores = {_column(r, c): f"{c.score or 0:g}" for c in r.tests}
        w.writerow([r.student, r.assignment, *[scores.get(t, "") for t in tests],
                    f"{r.score:g}", f"{r.max_score:g}", f"{r.manual_max_score:g}", r.status,
                    "; ".join(r.notes)])
    atomic_write(path, buf.getvalue())
    return header


def write_json(results: list[SubmissionResult], path: str | Path) -> None:
    """``results.json``: every result, each failed test with its message."""
    atomic_write(path, json.dumps([r.to_dict() for r in results], indent=1) + "\n")
