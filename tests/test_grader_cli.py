"""``dvl release`` and ``dvl check`` on a toy assignment (tests/fixtures/course/solutions/99_toy).

The toy has two autograded answers (``add``: 1 point, ``scale``: 2 points, each
with a hidden test) and a written question (1 point, graded by hand); its hidden
tests also check the grading kernel (smoke preset, ``grader`` and
``dvl_helpers`` importable).
"""
import hashlib
import json
import os
import shutil
import time
from pathlib import Path

import nbformat
import pytest

from grader.autograde import prepare_job
from grader.scheduler import run_jobs
from grader.cli import main
from grader.course import find_root, match_assignment, prepare_course
from grader.notebooks import grade_id, read_notebook, write_notebook
from grader.synthetic import learner_source

FIXTURE = Path(__file__).parent / "fixtures" / "course"
TOY = "99_toy"


@pytest.fixture
def course(tmp_path) -> Path:
    """A private copy of the toy course (its release not yet built)."""
    root = tmp_path / "toy-course"
    shutil.copytree(FIXTURE, root)
    return root


@pytest.fixture(scope="module")
def released(tmp_path_factory) -> Path:
    """A toy course with its release built; tests only read it."""
    root = tmp_path_factory.mktemp("released") / "toy-course"
    shutil.copytree(FIXTURE, root)
    assert main(["release", "--root", str(root)]) == 0
    return root


def _answer(root: Path, name: str, source: str | None = None, inject=None) -> nbformat.NotebookNode:
    """The release with every answer right, except ``name`` set to ``source`` (or with ``inject``)."""
    sol = {grade_id(c): c for c in read_notebook(root / "solutions" / TOY / f"{TOY}.ipynb").cells}
    nb = read_notebook(root / "course" / TOY / f"{TOY}.ipynb")
    for cell in nb.cells:
        gid = grade_id(cell)
        if gid in ("add", "scale", "explain"):
            cell.source = source if gid == name and source is not None else \
                learner_source(sol[gid].source, inject if gid == name else None)
    return nb


def _check_json(capsys, *args) -> dict:
    assert main(["check", *map(str, args), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def _tree(path: Path) -> dict[str, str]:
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}


# --- release --------------------------------------------------------------------------------

@pytest.mark.slow
def test_release_is_clean_and_deterministic(course):
    src = course / "solutions" / TOY / f"{TOY}.ipynb"
    nb = read_notebook(src)  # a source as it is after running it: outputs, counts, widget state
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.execution_count = 3
            cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="ran\n")]
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}}}
    write_notebook(nb, src)
    stale = course / "course" / TOY / "stale.txt"
    stale.parent.mkdir(parents=True)
    stale.write_text("left over from an older release")

    assert main(["release", TOY, "--root", str(course)]) == 0
    first = _tree(course / "course" / TOY)
    assert main(["release", "--root", str(course)]) == 0
    assert _tree(course / "course" / TOY) == first, "releasing twice must give identical files"

    assert sorted(first) == [f"{TOY}.ipynb", "values.txt"], "stale files removed, data files copied"
    text = (course / "course" / TOY / f"{TOY}.ipynb").read_text()
    rel = read_notebook(course / "course" / TOY / f"{TOY}.ipynb")
    assert "widgets" not in rel.metadata
    for cell in rel.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None
    for leaked in ["BEGIN SOLUTION", "return a + b", "[k * x for x in xs]", "Callers keep their data",
                   "BEGIN HIDDEN TESTS", "add(-1, 1)", "scale([], 5)", "grader.checks"]:
        assert leaked not in text, f"the release leaks {leaked!r}"
    assert "raise NotImplementedError()" in text and "YOUR ANSWER HERE" in text
    assert 'add(1, 2) == 3' in text, "visible tests stay"
    tests = [c for c in rel.cells if c.metadata.get("nbgrader", {}).get("grade")]
    assert {grade_id(c) for c in tests} == {"test_add", "test_scale", "explain"}
    assert all(c.metadata.nbgrader.get("checksum") for c in tests), "autograding needs the checksums"
    assert not list(course.rglob("gradebook.db")), "no gradebook may be left in the course"


def test_release_of_an_unknown_assignment_fails_clearly(course, capsys):
    assert main(["release", "nope", "--root", str(course)]) == 2
    err = capsys.readouterr().err
    assert "unknown assignment 'nope'" in err and TOY in err


# --- check ----------------------------------------------------------------------------------

@pytest.mark.slow
def test_check_gives_the_solution_full_marks(released, tmp_path, monkeypatch, capsys):
    # A `python3` kernelspec elsewhere on the machine must not decide which Python grades.
    spec = tmp_path / "jupyter" / "kernels" / "python3"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps(
        {"argv": ["/nonexistent/python", "-m", "ipykernel_launcher", "-f", "{connection_file}"],
         "display_name": "wrong python", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("DVL_PRESET", "gpu")  # check always grades in the smoke preset

    report = _check_json(capsys, released / "solutions" / TOY / f"{TOY}.ipynb", "--root", released)
    assert report["score"] == report["max_score"] == 3.0, report
    assert report["manual_max_score"] == 1.0
    assert [t["grade_id"] for t in report["tests"]] == ["test_add", "test_scale"]
    for t in report["tests"]:
        assert set(t) == {"grade_id", "score", "max_score", "message"}
        assert t["score"] == t["max_score"] and t["message"] == ""


@pytest.mark.slow
def test_check_on_the_release_scores_zero(released, tmp_path, capsys):
    mine = tmp_path / f"{TOY}-mine.ipynb"  # any name that starts with the id, anywhere on disk
    shutil.copyfile(released / "course" / TOY / f"{TOY}.ipynb", mine)
    report = _check_json(capsys, mine, "--root", released)
    assert report["assignment"] == TOY
    assert report["score"] == 0.0 and report["max_score"] == 3.0
    assert [t["message"] for t in report["tests"]] == ["NotImplementedError"] * 2


@pytest.mark.slow
@pytest.mark.parametrize("answer, invert, expected", [
    ("right", False, "nothing failed"),     # an answered release: the learner's Validate button is happy
    ("none", True, "nothing passed"),       # the unanswered release: every test cell fails
    ("wrong", False, "test_add failed"),
])
def test_nbgrader_validator_agrees(released, tmp_path, monkeypatch, answer, invert, expected):
    from nbgrader.validator import Validator

    monkeypatch.setenv("DVL_PRESET", "smoke")
    path = tmp_path / f"{TOY}.ipynb"
    shutil.copyfile(released / "course" / TOY / "values.txt", tmp_path / "values.txt")
    if answer == "none":
        shutil.copyfile(released / "course" / TOY / f"{TOY}.ipynb", path)
    else:
        source = "def add(a, b):\n    return a - b\n" if answer == "wrong" else None
        write_notebook(_answer(released, "add", source), path)
    results = Validator(invert=invert).validate(str(path))
    assert not results.get("changed") and not results.get("type_changed"), results
    failed = [c["source"].splitlines()[0] for c in results.get("failed", [])]
    passed = [c["source"].splitlines()[0] for c in results.get("passed", [])]
    if expected == "nothing failed":
        assert not failed, failed
    elif expected == "nothing passed":
        assert not passed, passed
    else:
        assert len(failed) == 1 and "add" in failed[0], failed


@pytest.mark.slow
def test_check_reports_hidden_failures_by_message_only(released, tmp_path, capsys):
    # Passes the visible test, fails a hidden one: changes xs in place.
    nb = _answer(released, "scale", "def scale(xs, k):\n    for i in range(len(xs)):\n"
                                    "        xs[i] *= k\n    return xs")
    path = tmp_path / TOY / "whatever.ipynb"  # the folder names the assignment
    write_notebook(nb, path)
    assert main(["check", str(path), "--root", str(released)]) == 0
    out = capsys.readouterr().out
    assert "pass  test_add" in out and "FAIL  test_scale" in out
    assert "AssertionError: scale must return a new list and leave xs unchanged" in out
    assert "score: 1 / 3" in out and "graded by hand" in out
    for hidden in ["is not xs", "scale([], 5)", "HIDDEN", "Traceback"]:
        assert hidden not in out


@pytest.mark.slow
def test_check_stops_a_notebook_at_its_time_limit(released, tmp_path, capsys):
    nb = _answer(released, "add")
    nb.cells.insert(0, nbformat.v4.new_code_cell("import time\ntime.sleep(30)"))  # a slow plain cell
    path = tmp_path / f"{TOY}.ipynb"
    write_notebook(nb, path)
    report = _check_json(capsys, path, "--root", released, "--timeout", "60", "--notebook-timeout", "3")
    assert report["score"] == 0.0
    assert "notebook time limit" in report["status"], report["status"]
    assert "timeout in cell #1" in report["status"], report["status"]
    assert all(t["message"].startswith("NotRun") for t in report["tests"]), report["tests"]


@pytest.mark.slow
def test_a_kernel_that_keeps_dying_leaves_the_rest_not_run(released, tmp_path):
    nb = _answer(released, "add", inject=["import os", "os._exit(1)"])
    path = tmp_path / f"{TOY}.ipynb"
    write_notebook(nb, path)
    prepare_course(released, tmp_path / "course", [TOY])
    job = prepare_job(tmp_path / "course", tmp_path / "job", "someone", TOY, path,
                      feedback=False, max_kernel_restarts=0)
    [result] = run_jobs([job])
    assert result.status == ("kernel died in cell test_add; kernel died too often: "
                             "cells from scale on were not run"), result.status
    assert result.score == 0
    assert result.tests[0].message.startswith("KernelDied")


@pytest.mark.slow
def test_a_submission_past_its_hard_limit_is_killed_with_its_kernel(released, tmp_path):
    nb = _answer(released, "add", inject=["import time", "time.sleep(600)"])
    path = tmp_path / f"{TOY}.ipynb"
    write_notebook(nb, path)
    prepare_course(released, tmp_path / "course", [TOY])
    job = prepare_job(tmp_path / "course", tmp_path / "job", "someone", TOY, path,
                      feedback=False, cell_timeout=600, time_limit=6)
    [result] = run_jobs([job])
    assert result.status.startswith("killed after"), result.status
    assert result.score == 0 and [t.grade_id for t in result.tests] == ["test_add", "test_scale"]
    kernels = [int(p) for p in job.pid_path.read_text().split()]
    assert kernels, "the kernel's pid was recorded"
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in kernels) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(_alive(pid) for pid in kernels), "the kernel outlived its submission"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie counts as dead
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return True


@pytest.mark.parametrize("content, expected", [
    ("this is not json", "not valid JSON"),
    ('{"just": "json"}', "not a Jupyter notebook"),
    ('{"cells": [], "nbformat": 3, "metadata": {}}', "nbformat 3, expected 4"),
])
def test_check_refuses_what_is_not_a_notebook(released, tmp_path, capsys, content, expected):
    path = tmp_path / f"{TOY}.ipynb"
    path.write_text(content)
    assert main(["check", str(path), "--root", str(released)]) == 2
    err = capsys.readouterr().err
    assert "not a notebook" in err and expected in err


def test_check_refuses_an_unknown_assignment(released, tmp_path, capsys):
    path = tmp_path / "homework.ipynb"
    shutil.copyfile(released / "course" / TOY / f"{TOY}.ipynb", path)
    assert main(["check", str(path), "--root", str(released)]) == 2
    err = capsys.readouterr().err
    assert "cannot tell which assignment homework.ipynb belongs to" in err and TOY in err
    assert main(["check", str(path), "--root", str(released), "--assignment", "42_nope"]) == 2
    assert "unknown assignment '42_nope'" in capsys.readouterr().err
    assert main(["check", str(tmp_path / "missing.ipynb"), "--root", str(released)]) == 2
    assert "no such file" in capsys.readouterr().err


def test_grade_refuses_bad_input(released, tmp_path, capsys):
    assert main(["grade", str(tmp_path / "nothing"), "--root", str(released)]) == 2
    assert "not a directory of submissions" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["grade", str(tmp_path / "empty"), "--root", str(released)]) == 2
    assert "no submissions" in capsys.readouterr().err
    (tmp_path / "subs" / "ana" / TOY).mkdir(parents=True)
    assert main(["grade", str(tmp_path / "subs"), "--root", str(released),
                 "--out", str(tmp_path / "subs" / "out")]) == 2
    assert "must not be inside" in capsys.readouterr().err
    assert main(["grade", str(tmp_path / "subs"), "--root", str(released), "--jobs", "0"]) == 2
    assert "--jobs must be at least 1" in capsys.readouterr().err
    assert main(["grade", str(tmp_path / "subs"), "--root", str(released), "--students", "z:a",
                 "--out", str(tmp_path / "out")]) == 2
    assert "'z' comes after 'a'" in capsys.readouterr().err
    assert main(["grade", str(tmp_path / "subs"), "--root", str(released), "--students", "b:",
                 "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "no submissions" in err and "for students b:" in err


def test_match_assignment_by_folder_or_file_name():
    ids = ["01_vqvae", "01_vqvae_extra", "02_stable_vq"]
    assert match_assignment("/x/01_vqvae/anything.ipynb", ids) == "01_vqvae"
    assert match_assignment("/x/y/01_vqvae-mine.ipynb", ids) == "01_vqvae"
    assert match_assignment("01_vqvae_extra (1).ipynb", ids) == "01_vqvae_extra"
    assert match_assignment("/x/02_stable_vq/01_vqvae.ipynb", ids) == "02_stable_vq"
    assert match_assignment("/x/homework.ipynb", ids) is None


def test_find_root_walks_up_from_the_current_directory(course, monkeypatch):
    deep = course / "course" / "somewhere"
    deep.mkdir(parents=True)
    monkeypatch.chdir(deep)
    assert find_root() == course.resolve()
