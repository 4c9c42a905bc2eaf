"""Runs of ``dvl grade`` over time and across machines: a crash in the middle and ``--resume``,
a class split by ``--students`` and put back together by ``dvl merge``.

Three honest submissions of the toy assignment (right, partly wrong, untouched) keep the
runs short.
"""
import csv
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from grader.cli import main
from grader.grade import work_dir, work_prefix
from grader.notebooks import read_notebook
from grader.release import release
from grader.synthetic import build_class, write_class

FIXTURE = Path(__file__).parent / "fixtures" / "course"
_spec = importlib.util.spec_from_file_location("toy_class", Path(__file__).parent / "adversarial" / "toy_class.py")
toy_class = sys.modules.setdefault("toy_class", importlib.util.module_from_spec(_spec))
if not hasattr(toy_class, "build"):
    _spec.loader.exec_module(toy_class)
TOY = "99_toy"
EXPECTED = {"ana_correct": 3.0, "bob_partly_wrong": 1.0, "eve_empty": 0.0}


@pytest.fixture(scope="module")
def course(tmp_path_factory) -> dict:
    base = tmp_path_factory.mktemp("runs")
    root = base / "toy-course"
    shutil.copytree(FIXTURE, root)
    release(root, [TOY])
    members = {m.name: m for m in build_class(
        read_notebook(root / "solutions" / TOY / f"{TOY}.ipynb"),
        read_notebook(root / "course" / TOY / f"{TOY}.ipynb"))}
    for student in EXPECTED:
        m = members[student.split("_", 1)[1]]
        m.name = student
        write_class([m], base / "submitted", TOY)
    return {"root": root, "submitted": base / "submitted", "base": base}


def _grade(course, out, *extra) -> int:
    return main(["grade", str(course["submitted"]), "--root", str(course["root"]), "--out", str(out),
                 "--timeout", "30", *extra])


def _rows(out: Path) -> dict[str, dict]:
    with open(out / "grades.csv", newline="") as f:
        return {r["student"]: r for r in csv.DictReader(f)}


def _gradebook(out: Path) -> dict[str, dict]:
    """student -> {grade id: (auto score, manual score)} of every submission in the gradebook."""
    from nbgrader.api import Gradebook
    with Gradebook(f"sqlite:///{out / 'gradebook.db'}") as gb:
        return {s.student_id: {g.name: (g.auto_score, g.manual_score)
                               for nb in s.notebooks for g in nb.grades}
                for s in gb.find_assignment(TOY).submissions}


def test_a_run_never_meets_the_working_copies_of_a_killed_run(tmp_path):
    out = tmp_path / "out"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = Path(tempfile.gettempdir()) / f"{work_prefix(out)}{dead.pid}"
    live = Path(tempfile.gettempdir()) / f"{work_prefix(out)}{os.getppid()}"
    for folder in (stale, live):
        (folder / "0000-ana-99_toy").mkdir(parents=True)
        (folder / "0000-ana-99_toy" / "kernel.log").write_text("still being written")
    try:
        work = work_dir(out)
        assert work not in (stale, live) and not work.exists()
        assert not stale.exists(), "a dead run's copies are removed"
        assert live.exists(), "a run still going keeps its copies"
        assert work_dir(tmp_path / "other") != work, "one directory per output directory"
    finally:
        shutil.rmtree(stale, ignore_errors=True)
        shutil.rmtree(live, ignore_errors=True)


@pytest.mark.slow
def test_a_crashed_run_keeps_what_it_graded_and_resume_grades_the_rest(course, tmp_path, capsys):
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "grader.cli", "grade", str(course["submitted"]), "--root",
         str(course["root"]), "--out", str(out), "--timeout", "30"], env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while not list((out / "results").glob("*/*.json")) and time.monotonic() < deadline:
        assert proc.poll() is None, "dvl grade ended before the crash"
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)  # the grader dies in the middle of the class
    proc.wait()
    done = {p.parent.name for p in (out / "results").glob("*/*.json")}
    assert 1 <= len(done) < len(EXPECTED), done
    book = _gradebook(out)
    assert set(done) <= set(book), "a saved result is in the gradebook"
    for student, grades in book.items():  # whatever is there is whole
        assert grades["test_add"][0] is not None and grades["test_scale"][0] is not None, student

    kept = {s: (out / "results" / s / f"{TOY}.json").stat().st_mtime_ns for s in done}
    assert _grade(course, out, "--resume") == 0
    printed = capsys.readouterr().out
    assert f"kept {len(done)} result(s)" in printed
    for s in done:
        assert f"  {s}/{TOY}" not in printed, f"{s} was graded again"
        assert (out / "results" / s / f"{TOY}.json").stat().st_mtime_ns == kept[s]
    assert {s: float(r["total"]) for s, r in _rows(out).items()} == EXPECTED
    assert {s: sum(g[0] for k, g in grades.items() if k.startswith("test_"))
            for s, grades in _gradebook(out).items()} == EXPECTED

    # a submission handed in again after the run is graded again; the others are kept
    nb = course["submitted"] / "eve_empty" / TOY / f"{TOY}.ipynb"
    original = nb.read_text()
    try:
        nb.write_text(original.replace("raise NotImplementedError()", "return a + b", 1))
        assert _grade(course, out, "--resume") == 0
        printed = capsys.readouterr().out
        assert f"kept {len(EXPECTED) - 1} result(s)" in printed and f"  eve_empty/{TOY}" in printed
        assert float(_rows(out)["eve_empty"]["total"]) == 1.0
    finally:
        nb.write_text(original)

    # a changed source (a fixed hidden test, new data) makes every result stale
    data = course["root"] / "solutions" / TOY / "values.txt"
    before = data.read_text()
    try:
        data.write_text(before + "\n")
        assert _grade(course, out, "--resume", "--jobs", "2") == 0
        printed = capsys.readouterr().out
        assert "kept" not in printed and all(f"  {s}/{TOY}" in printed for s in EXPECTED)
        assert {s: float(r["total"]) for s, r in _rows(out).items()} == EXPECTED
    finally:
        data.write_text(before)


def _descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (from /proc)."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {p for p, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads the process tree from /proc")
def test_sigterm_stops_the_run_and_every_process_it_started(course, tmp_path, capsys):
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "grader.cli", "grade", str(course["submitted"]), "--root",
         str(course["root"]), "--out", str(out), "--timeout", "30", "--jobs", "2"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline, started = time.monotonic() + 240, set()
    # wait for a grading child and its kernel (a kernel is started with a connection file)
    while time.monotonic() < deadline:
        assert proc.poll() is None, "dvl grade ended before it was stopped"
        started = _descendants(proc.pid)
        cmdlines = [Path(f"/proc/{p}/cmdline").read_bytes() if _alive(p) else b"" for p in started]
        if any(b"grader.sandbox" in c or b"ipykernel" in c for c in cmdlines):
            break
        time.sleep(0.1)
    assert started, "no grading process was seen"
    proc.send_signal(signal.SIGTERM)    # `kill`, or a batch system stopping the job
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "interrupted" in err, (proc.returncode, err[-2000:])
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in started) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = [p for p in started if _alive(p)]
    assert not left, f"processes of the stopped run still alive: {left}"
    # what was graded before the stop is kept; --resume grades the rest
    assert _grade(course, out, "--resume") == 0
    assert {s: float(r["total"]) for s, r in _rows(out).items()} == EXPECTED


@pytest.mark.slow
def test_without_a_kernel_user_daemons_are_still_found_and_killed(course, tmp_path):
    """Grading as the kernels' own user (not root, or --kernel-uid -1): a daemon that left its
    session and cleared its environment is found all the same (the grading process is its
    subreaper) and killed before the grades are written."""
    import tempfile

    from grader.autograde import prepare_job
    from grader.course import prepare_course
    from grader.scheduler import run_jobs
    marks = Path(tempfile.mkdtemp(prefix="dvl-daemon-marks-"))
    try:
        toy = toy_class._Toy(course["root"], TOY)
        nb = toy.notebook(toy_class.WRONG, {"setup": toy_class._background(marks, tmp_path / "db",
                                                                           "daemon")})
        path = tmp_path / f"{TOY}.ipynb"
        path.write_text(json.dumps(nb))
        prepare_course(course["root"], tmp_path / "course", [TOY])
        job = prepare_job(tmp_path / "course", tmp_path / "job", "someone", TOY, path, feedback=False)
        [result] = run_jobs([job], kernel_uid=None)
        assert result.score == 0 and result.status == "ok", result
        time.sleep(6)  # longer than the daemon waits before it writes
        assert not list(marks.iterdir()), "a daemon outlived its submission"
    finally:
        shutil.rmtree(marks, ignore_errors=True)


@pytest.mark.slow
def test_a_class_split_by_student_ranges_merges_into_one_gradebook(course, tmp_path, capsys):
    from nbgrader.api import Gradebook
    part1, part2, merged = tmp_path / "part1", tmp_path / "part2", tmp_path / "merged"
    assert _grade(course, part1, "--students", ":bz", "--jobs", "2") == 0
    assert _grade(course, part2, "--students", "c:") == 0
    assert set(_rows(part1)) == {"ana_correct", "bob_partly_wrong"}
    assert set(_rows(part2)) == {"eve_empty"}
    with Gradebook(f"sqlite:///{part1 / 'gradebook.db'}") as gb:  # graded by hand in part 1
        grade = gb.find_grade("explain", TOY, TOY, "ana_correct")
        grade.manual_score = 1.0
        gb.db.commit()
    capsys.readouterr()

    assert main(["merge", str(part1), str(part2), "--out", str(merged)]) == 0
    assert "merged 2 grading directories" in capsys.readouterr().out
    assert {s: float(r["total"]) for s, r in _rows(merged).items()} == EXPECTED
    book = _gradebook(merged)
    assert {s: sum(g[0] for k, g in grades.items() if k.startswith("test_"))
            for s, grades in book.items()} == EXPECTED
    assert book["ana_correct"]["explain"][1] == 1.0, "a manual grade survives the merge"
    for student in EXPECTED:
        assert (merged / "feedback" / student / TOY / f"{TOY}.html").exists()
        assert (merged / "autograded" / student / TOY / f"{TOY}.ipynb").exists()
    assert json.loads((merged / "results.json").read_text())[0]["assignment"] == TOY
    assert (merged / "nbgrader_config.py").exists() and (merged / "course" / TOY).is_dir()

    assert main(["merge", str(part1), str(part1), "--out", str(tmp_path / "twice")]) == 2
    assert "graded in both" in capsys.readouterr().err
    assert main(["merge", str(part1), str(part2), "--out", str(merged)]) == 2
    assert "must be new or empty" in capsys.readouterr().err
