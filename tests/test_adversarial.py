"""``dvl grade`` on an adversarial class (tests/adversarial/toy_class.py): hostile and broken
submissions graded alongside honest ones, each with the score and status it must get.

The class is graded once per test session (shared between xdist workers through a lock);
the tests read the result, the gradebook, the file trees and the process table.
"""
import csv
import fcntl
import hashlib
import importlib.util
import io
import json
import os
import pickle
import shutil
import sys
import tempfile
import time
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import nbformat
import pytest

from grader.autograde import SubmissionResult
from grader.cli import main
from grader.release import release
from grader.sandbox import DEFAULT_UID, SHARED_DIRS, is_root

REPO = Path(__file__).resolve().parents[1]
FIXTURE = Path(__file__).parent / "fixtures" / "course"
_spec = importlib.util.spec_from_file_location("toy_class", Path(__file__).parent / "adversarial" / "toy_class.py")
toy_class = importlib.util.module_from_spec(_spec)
sys.modules["toy_class"] = toy_class  # dataclasses and pickle look modules up by name
_spec.loader.exec_module(toy_class)

UIDS = range(DEFAULT_UID, DEFAULT_UID + 100)  # the kernel users a test run may lease


def _unleased() -> set[int]:
    """Kernel users no grading run holds now (others run in parallel with this test)."""
    free = set()
    folder = Path(tempfile.gettempdir()) / "dvl-kernel-users"
    for uid in UIDS:
        try:
            with open(folder / f"{uid}.lock", "a") as f:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                free.add(uid)
        except OSError:
            pass
    return free


def _tree(path: Path) -> dict[str, str]:
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file() and not p.is_symlink()}


def _watched(base: Path) -> dict[str, dict[str, str]]:
    """Everything outside the run's output folder that a submission might try to change."""
    trees = {"base": {k: v for k, v in _tree(base).items() if not k.startswith(("grading/", "lock",
                                                                                "graded.pickle"))}}
    for sub in ("grader", "dvl_helpers", "solutions", "course", "tests/fixtures", "tests/adversarial"):
        trees[sub] = {k: v for k, v in _tree(REPO / sub).items() if "__pycache__" not in k}
    trees["home"] = {p.name: "" for p in Path.home().iterdir()}
    return trees


def _owned_by_kernel_users() -> list[str]:
    found, free = [], _unleased()
    for top in SHARED_DIRS:
        try:
            found += [e.path for e in os.scandir(top) if e.stat(follow_symlinks=False).st_uid in free]
        except OSError:
            pass
    return found


def _grade(base: Path) -> dict:
    root = base / "toy-course"
    shutil.copytree(FIXTURE, root)
    release(root, None)
    marks = Path(tempfile.mkdtemp(prefix="dvl-adversarial-marks-"))
    os.chmod(marks, 0o1777)  # a leftover process of any user could leave its mark here
    out = base / "grading"
    submitted = base / "submitted"
    protected = [root / "solutions" / "99_toy" / "values.txt",
                 submitted / "honest_correct" / "99_toy" / "99_toy.ipynb",
                 out / "written.txt", REPO / "tests" / "adversarial" / "written.txt",
                 Path.home() / "dvl-written.txt", Path("../../../written.txt"),
                 Path("../../../gradebook.db")]
    members = toy_class.build(root, marks, out / "gradebook.db", protected)
    toy_class.write(members, submitted)
    before = _watched(base)
    stdout, stderr = io.StringIO(), io.StringIO()
    start = time.monotonic()
    with redirect_stdout(stdout), redirect_stderr(stderr):
        code = main(["grade", str(submitted), "--root", str(root), "--out", str(out),
                     "--timeout", "15", "--notebook-timeout", "90", "--jobs", "2", "--memory", "1536"])
    seconds = time.monotonic() - start
    leftovers = _owned_by_kernel_users()
    time.sleep(6)  # longer than the background writer waits before it writes
    found = sorted(p.name for p in marks.iterdir())
    shutil.rmtree(marks, ignore_errors=True)
    return {"members": members, "code": code, "stdout": stdout.getvalue(),
            "stderr": stderr.getvalue(), "out": out, "marks": marks, "seconds": seconds,
            "before": before, "after": _watched(base), "leftovers": leftovers,
            "marks_found": found}


@pytest.fixture(scope="session")
def graded(tmp_path_factory) -> dict:
    """The graded class; the first worker grades it, the others wait and read the pickle."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):  # workers of one run share their parent
        base = base.parent
    shared = base / "dvl-adversarial-class"
    shared.mkdir(exist_ok=True)
    with open(shared / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        done = shared / "graded.pickle"
        if not done.exists():
            done.write_bytes(pickle.dumps(_grade(shared)))
        return pickle.loads(done.read_bytes())


@pytest.fixture(scope="session")
def results(graded) -> dict[str, SubmissionResult]:
    raw = json.loads((graded["out"] / "results.json").read_text())
    return {r["student"]: SubmissionResult.from_dict(r) for r in raw}


def _problems(m, r: SubmissionResult | None) -> list[str]:
    if r is None:
        return [f"{m.name}: no result"]
    found = []
    if m.score is not None and r.score != m.score:
        found.append(f"{m.name}: scored {r.score:g}, expected {m.score:g} ({r.status}; "
                     f"{[t.message for t in r.tests]})")
    if m.status == "ok" and r.status != "ok" or m.status != "ok" and m.status not in r.status:
        found.append(f"{m.name}: status {r.status!r}, expected {m.status!r}")
    if m.message and not any(m.message in t.message for t in r.tests):
        found.append(f"{m.name}: no test says {m.message!r}: {[t.message for t in r.tests]}")
    if m.note and not any(m.note in n for n in r.notes):
        found.append(f"{m.name}: no note says {m.note!r}: {r.notes}")
    return found


@pytest.mark.slow
def test_the_class_is_large_and_grading_finishes(graded):
    assert len(graded["members"]) >= 20
    assert graded["code"] == 0, graded["stderr"]
    assert "student" in graded["stdout"] and "honest_correct" in graded["stdout"]


@pytest.mark.slow
def test_every_submission_gets_its_score_and_status(graded, results):
    found = []
    for m in graded["members"]:
        found += _problems(m, results.get(m.name))
    assert not found, "\n".join(found)


@pytest.mark.slow
def test_honest_submissions_keep_their_grades(graded):
    with open(graded["out"] / "grades.csv", newline="") as f:
        rows = {r["student"]: r for r in csv.DictReader(f)}
    for m in graded["members"]:
        if m.honest:
            assert float(rows[m.name]["total"]) == m.score and rows[m.name]["status"] == "ok", m.name


@pytest.mark.slow
def test_nothing_outside_the_output_folder_changes(graded):
    for name, tree in graded["before"].items():
        assert graded["after"][name] == tree, f"{name} changed"
    assert not graded["marks_found"], f"attacks left marks: {graded['marks_found']}"
    assert not graded["leftovers"], f"kernel users left files: {graded['leftovers']}"
    assert not (graded["out"] / "written.txt").exists()
    for d in (graded["out"] / "autograded").rglob("*"):  # nothing a kernel user may write into
        st = d.lstat()
        assert st.st_uid not in UIDS and (st.st_gid not in UIDS or not st.st_mode & 0o020), d


@pytest.mark.slow
def test_no_process_outlives_grading(graded):
    alive, free = [], _unleased()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            status = Path(f"/proc/{entry}/status").read_text()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        uid = int(status.split("Uid:")[1].split()[0])
        if uid in free and "State:\tZ" not in status or str(graded["marks"]).encode() in cmdline:
            alive.append((entry, cmdline[:80]))
    assert not alive, alive


@pytest.mark.slow
def test_the_gradebook_holds_the_grades_and_nothing_else(graded, results):
    from nbgrader.api import Gradebook
    with Gradebook(f"sqlite:///{graded['out'] / 'gradebook.db'}") as gb:
        for m in graded["members"]:
            if m.score is not None:
                assert gb.find_submission(m.assignment, m.name).score == m.score, m.name


@pytest.mark.slow
@pytest.mark.skipif(not is_root(), reason="kernels change user only when the grader runs as root")
def test_kernels_run_as_another_user_who_writes_only_its_own_directory(graded):
    nb = nbformat.read(graded["out"] / "autograded" / "writes_outside" / "99_toy" / "99_toy.ipynb",
                       as_version=4)
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    uid = int(text.split("uid ")[1].split()[0])
    assert uid in UIDS, text
    written = eval(text.split("written ")[1].splitlines()[0])  # noqa: S307 - our own output
    assert [Path(p).name for p in written] == ["mine.txt"], written


@pytest.mark.slow
def test_feedback_stays_small(graded):
    feedback = graded["out"] / "feedback" / "output_flood" / "99_toy" / "99_toy.html"
    autograded = graded["out"] / "autograded" / "output_flood" / "99_toy" / "99_toy.ipynb"
    assert feedback.stat().st_size < 1_000_000, feedback.stat().st_size
    assert autograded.stat().st_size < 1_000_000, autograded.stat().st_size
    assert "more characters not kept" in autograded.read_text()
