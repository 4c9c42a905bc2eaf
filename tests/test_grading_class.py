"""``dvl grade`` on a synthetic class of the toy assignment (grader/synthetic.py).

The class is graded once per test session (shared between xdist workers through
a lock) and every test reads the result: grades, CSV, gradebook, feedback.
"""
import csv
import fcntl
import hashlib
import io
import json
import os
import pickle
import shutil
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import nbformat
import pytest

from grader.autograde import SubmissionResult
from grader.cli import main
from grader.notebooks import read_notebook
from grader.release import release
from grader.synthetic import build_class, problems, write_class

FIXTURE = Path(__file__).parent / "fixtures" / "course"
TOY = "99_toy"
WRONG = {"scale": "def scale(xs, k):\n    return xs"}


def _tree(path: Path) -> dict[str, str]:
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}


def _grade_class(base: Path) -> dict:
    root = base / "toy-course"
    shutil.copytree(FIXTURE, root)
    release(root, [TOY])
    solution = read_notebook(root / "solutions" / TOY / f"{TOY}.ipynb")
    members = build_class(solution, read_notebook(root / "course" / TOY / f"{TOY}.ipynb"),
                          wrong=WRONG)
    submitted = write_class(members, base / "submitted", TOY)
    before = _tree(submitted)
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(["grade", str(submitted), "--root", str(root), "--out", str(base / "grading"),
                     "--timeout", "3", "--jobs", "2"])
    return {"root": root, "members": members, "solution": solution, "code": code,
            "stdout": out.getvalue(), "stderr": err.getvalue(), "out": base / "grading",
            "submitted_before": before, "submitted_after": _tree(submitted)}


@pytest.fixture(scope="session")
def graded(tmp_path_factory) -> dict:
    """The graded class; the first worker grades it, the others wait and read the pickle."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):  # workers of one run share their parent
        base = base.parent
    shared = base / "dvl-graded-class"
    shared.mkdir(exist_ok=True)
    with open(shared / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        done = shared / "graded.pickle"
        if not done.exists():
            done.write_bytes(pickle.dumps(_grade_class(shared)))
        return pickle.loads(done.read_bytes())


@pytest.fixture(scope="session")
def results(graded) -> dict[str, SubmissionResult]:
    raw = json.loads((graded["out"] / "results.json").read_text())
    return {r["student"]: SubmissionResult.from_dict(r) for r in raw}


@pytest.fixture(scope="session")
def rows(graded) -> list[dict]:
    with open(graded["out"] / "grades.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_grading_succeeds_and_prints_a_summary(graded):
    assert graded["code"] == 0, graded["stderr"]
    lines = graded["stdout"].splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("student"))
    table = lines[header + 2: header + 2 + len(graded["members"])]
    assert [line.split()[0] for line in table] == sorted(m.name for m in graded["members"])
    assert any("kernel_dies" in line and "kernel died in cell test_scale" in line for line in table)


@pytest.mark.slow
def test_every_submission_gets_the_grades_it_deserves(graded, results):
    found = []
    for m in graded["members"]:
        path = graded["out"] / "autograded" / m.name / TOY / f"{TOY}.ipynb"
        autograded = nbformat.read(path, as_version=4) if path.exists() else None
        found += problems(m, results[m.name], autograded, graded["solution"])
    assert not found, "\n".join(found)
    expected_totals = {"correct": 3, "empty": 0, "partly_wrong": 1, "infinite_loop": 1,
                       "kernel_dies": 1, "noisy_correct": 3, "not_a_notebook": 0,
                       "test_edited": 2, "test_deleted": 3, "test_pasted": 3}
    assert {name: r.score for name, r in results.items()} == expected_totals


@pytest.mark.slow
def test_edited_and_deleted_tests_are_restored_and_reported(graded, results):
    for name, verb in [("test_edited", "edited"), ("test_deleted", "deleted")]:
        nb = nbformat.read(graded["out"] / "autograded" / name / TOY / f"{TOY}.ipynb", as_version=4)
        cell = next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "test_add")
        assert "r = add(-1, 1)" in cell.source, "the hidden test must be back"
        assert results[name].notes == [f"test cell test_add of {TOY} was {verb} (restored)"]


@pytest.mark.slow
def test_csv_has_one_column_per_test_and_a_status(graded, rows):
    with open(graded["out"] / "grades.csv", newline="") as f:
        header = next(csv.reader(f))
    assert header == ["student", "assignment", "test_add", "test_scale", "total", "max",
                      "manual_max", "status", "notes"]
    by = {r["student"]: r for r in rows}
    assert len(rows) == len(graded["members"])
    keys = ["test_add", "test_scale", "total", "max", "manual_max", "status", "notes"]
    assert [by["correct"][k] for k in keys] == ["1", "2", "3", "3", "1", "ok", ""]
    assert by["kernel_dies"]["status"] == "kernel died in cell test_scale"
    assert (by["kernel_dies"]["test_add"], by["kernel_dies"]["test_scale"]) == ("1", "0")
    assert by["infinite_loop"]["status"] == "timeout in cell test_scale"
    assert by["not_a_notebook"]["status"].startswith("invalid notebook: not valid JSON")
    assert by["noisy_correct"]["total"] == "3", "stderr output must not cost points"
    assert all(r["assignment"] == TOY for r in rows)


@pytest.mark.slow
def test_gradebook_holds_the_same_grades(graded, results):
    from nbgrader.api import Gradebook
    with Gradebook(f"sqlite:///{graded['out'] / 'gradebook.db'}") as gb:
        for name, r in results.items():
            sub = gb.find_submission(TOY, name)
            assert sub.score == r.score, name
            manual = {g.name: g for nb in sub.notebooks for g in nb.grades}["explain"]
            assert manual.needs_manual_grade == (name not in ("empty", "not_a_notebook")), name


@pytest.mark.slow
def test_feedback_for_everyone_without_hidden_tests(graded):
    for m in graded["members"]:
        page = (graded["out"] / "feedback" / m.name / TOY / f"{TOY}.html").read_text()
        for hidden in ["HIDDEN TESTS", "add(-1, 1)", "scale([], 5)", "grader.checks", "is not xs"]:
            assert hidden not in page, f"feedback of {m.name} shows {hidden!r}"
    partly = (graded["out"] / "feedback" / "partly_wrong" / TOY / f"{TOY}.html").read_text()
    assert "scale([1, 2], 3) should be [3, 6]" in partly


@pytest.mark.slow
def test_submissions_are_never_modified(graded):
    assert graded["submitted_after"] == graded["submitted_before"]
    assert not (graded["out"] / ".work").exists(), "working copies are cleaned up"
