"""``dvl merge``: one grading directory from several, for a class graded on several machines.

A large class is split by student ranges, each part graded on its own machine
(``dvl grade submitted/ --students a:m --out part1``), and the parts merged::

    dvl merge part1 part2 --out grading

The merged directory is a grading directory like any other: the assignments'
source and release (which must be the same in every part), a gradebook that
holds every part's grades (autograded and, if already given in a part's
formgrader, manual scores, extra credit and comments, timestamps), the
submitted, autograded and feedback folders, logs, per-submission results, and
``grades.csv`` / ``results.json`` over the whole class. A student graded for
the same assignment in two parts is an error: the parts must not overlap.
"""
from __future__ import annotations

import filecmp
import shutil
import warnings
from pathlib import Path

from .course import InputError, assignment_ids, copy_tree, load_config, run_converter
from .grade import GradingReport, write_nbgrader_config
from .records import RESULTS, saved_results, write_csv, write_json

_FOLDERS = ("submitted", "autograded", "feedback")


def _same_tree(a: Path, b: Path) -> bool:
    cmp = filecmp.dircmp(a, b, ignore=[".ipynb_checkpoints", "__pycache__"])

    def same(c) -> bool:
        if c.left_only or c.right_only or c.diff_files or c.funny_files:
            return False
        return all(same(sub) for sub in c.subdirs.values())
    return same(cmp)


def _submissions(db_url: str) -> list[tuple[str, str]]:
    from nbgrader.api import Gradebook
    with Gradebook(db_url) as gb:
        return [(s.student_id, a.name) for a in gb.assignments for s in a.submissions]


def _copy_submission(src_db: str, dst_db: str, student: str, assignment: str) -> None:
    """Copy one submission (student record, timestamp, every grade and comment), atomically."""
    from nbgrader.api import Gradebook
    from sqlalchemy.exc import SAWarning

    with warnings.catch_warnings(), Gradebook(src_db) as src, Gradebook(dst_db) as dst:
        warnings.simplefilter("ignore", SAWarning)
        sub = src.find_submission(assignment, student)
        who = sub.student
        commit = dst.db.commit
        dst.db.commit = dst.db.flush  # one transaction per submission (see records.record)
        try:
            dst.update_or_create_student(student, first_name=who.first_name,
                                         last_name=who.last_name, email=who.email,
                                         lms_user_id=who.lms_user_id)
            kwargs = {"timestamp": sub.timestamp} if sub.timestamp else {}
            new = dst.update_or_create_submission(assignment, student, **kwargs)
            new.extension = sub.extension
            for nb in sub.notebooks:
                for g in nb.grades:
                    grade = dst.find_grade(g.name, nb.name, assignment, student)
                    grade.auto_score, grade.manual_score = g.auto_score, g.manual_score
                    grade.extra_credit, grade.needs_manual_grade = g.extra_credit, g.needs_manual_grade
                for c in nb.comments:
                    comment = dst.find_comment(c.name, nb.name, assignment, student)
                    comment.auto_comment, comment.manual_comment = c.auto_comment, c.manual_comment
            dst.db.flush()
        except BaseException:
            del dst.db.commit
            dst.db.rollback()
            raise
        del dst.db.commit
        commit()


def merge(parts: list[str | Path], out: str | Path) -> GradingReport:
    """Merge grading directories made by ``dvl grade`` into ``out`` (new or empty).

    Raises:
        InputError: a part is not a grading directory, parts disagree on an
            assignment's source, a submission is in two parts, or ``out`` is not empty.
    """
    parts = [Path(p).resolve() for p in parts]
    out = Path(out).resolve()
    if len(parts) < 2:
        raise InputError("merge needs at least two grading directories")
    for p in parts:
        if not (p / "gradebook.db").is_file():
            raise InputError(f"{p} is not a grading directory (no gradebook.db)")
    if out in parts or (out.exists() and any(out.iterdir())):
        raise InputError(f"the merged directory {out} must be new or empty")

    sources: dict[str, Path] = {}
    for p in parts:
        for a in assignment_ids(p):
            if a in sources and not _same_tree(sources[a] / "solutions" / a, p / "solutions" / a):
                raise InputError(f"assignment {a} differs between {sources[a]} and {p}: "
                                  "grade every part with the same release")
            sources.setdefault(a, p)
    seen: dict[tuple[str, str], Path] = {}
    for p in parts:
        for key in _submissions(f"sqlite:///{p / 'gradebook.db'}"):
            if key in seen:
                raise InputError(f"{key[0]}/{key[1]} is graded in both {seen[key]} and {p}: "
                                  "parts must cover different students")
            seen[key] = p

    out.mkdir(parents=True, exist_ok=True)
    config = load_config(out)
    for a, p in sorted(sources.items()):
        copy_tree(p / "solutions" / a, out / "solutions" / a)
        run_converter("generate_assignment", config, assignment=a)
    db_url = config.CourseDirectory.db_url
    for (student, assignment), p in sorted(seen.items()):
        _copy_submission(f"sqlite:///{p / 'gradebook.db'}", db_url, student, assignment)
        for folder in _FOLDERS:
            src = p / folder / student / assignment
            if src.exists():
                shutil.copytree(src, out / folder / student / assignment, symlinks=True)
        for rel in (Path("logs") / student / f"{assignment}.log",
                    Path(RESULTS) / student / f"{assignment}.json"):
            if (p / rel).exists():
                (out / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(p / rel, out / rel)
    results = sorted(saved_results(out), key=lambda r: (r.assignment, r.student))
    write_nbgrader_config(out)
    columns = write_csv(results, out / "grades.csv")
    write_json(results, out / "results.json")
    return GradingReport(out, results, out / "grades.csv", columns)
