"""Every phase notebook, end to end, in the smoke preset.

For each assignment in solutions/: the solution gets full marks from the hidden
tests, the release gets zero without crashing the grader, nbgrader's Validator
agrees (and, inverted, finds nothing passing in the release), the release runs
top to bottom under nbval, and course/ is exactly what `dvl release` makes.
"""
import filecmp
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from grader.check import check_notebook
from grader.course import assignment_ids
from grader.release import release_assignment

ROOT = Path(__file__).resolve().parents[1]
IDS = assignment_ids(ROOT)

pytestmark = [pytest.mark.slow, pytest.mark.parametrize("aid", IDS)]


def _solution(aid: str) -> Path:
    return ROOT / "solutions" / aid / f"{aid}.ipynb"


def _release(aid: str) -> Path:
    return ROOT / "course" / aid / f"{aid}.ipynb"


def test_there_are_phases_to_test(aid):
    assert _solution(aid).is_file() and _release(aid).is_file(), \
        f"{aid}: solutions/{aid}/{aid}.ipynb and its release course/{aid}/{aid}.ipynb must both exist"


def test_solution_gets_full_marks(aid):
    result = check_notebook(_solution(aid), ROOT)
    failed = {t.grade_id: t.message for t in result.tests if t.score < t.max_score}
    assert result.status == "ok", result.status
    assert result.max_score > 0 and not failed, f"{aid} solution lost points: {failed}"
    assert result.manual_max_score > 0, f"{aid} has no written questions"


def test_release_gets_zero_and_grades(aid):
    result = check_notebook(_release(aid), ROOT)
    assert not result.grader_failed, result.status
    assert result.max_score > 0 and result.score == 0, \
        f"{aid} release scores {result.score}: {[t.grade_id for t in result.tests if t.score]}"


def test_course_is_what_release_generates(aid, tmp_path):
    shutil.copytree(ROOT / "solutions" / aid, tmp_path / "solutions" / aid)
    release_assignment(tmp_path, aid)
    fresh, committed = tmp_path / "course" / aid, ROOT / "course" / aid
    cmp = filecmp.dircmp(fresh, committed)
    differ = [f for f in cmp.common_files if not filecmp.cmp(fresh / f, committed / f, shallow=False)]
    assert not (cmp.left_only or cmp.right_only or differ), (
        f"course/{aid} is stale, run `dvl release {aid}`: only fresh {cmp.left_only}, "
        f"only committed {cmp.right_only}, different {differ}")


@pytest.mark.parametrize("which", ["solution", "release"])
def test_nbgrader_validator(aid, which, monkeypatch, tmp_path):
    from nbgrader.validator import Validator

    monkeypatch.setenv("DVL_PRESET", "smoke")
    # A copy: the notebook runs in its own folder and may write checkpoints there.
    path = shutil.copy(_solution(aid) if which == "solution" else _release(aid), tmp_path)
    validator = Validator(invert=(which == "release"))
    results = validator.validate(str(path))
    if which == "solution":
        assert not results.get("failed"), [c["raw_error"][-500:] for c in results["failed"]]
    else:
        assert not results.get("passed"), \
            f"test cells pass on the unanswered release: {[c['source'][:80] for c in results['passed']]}"
    assert not results.get("type_changed") and not results.get("changed")


def test_release_runs_top_to_bottom_under_nbval(aid, tmp_path):
    env = {**os.environ, "DVL_PRESET": "smoke", "MPLBACKEND": "Agg"}
    nb = shutil.copy(_release(aid), tmp_path / f"{aid}.ipynb")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "--nbval-lax", "-p", "no:cacheprovider", "-p", "no:xdist",
         f"--rootdir={tmp_path}", "-c", os.devnull, str(nb)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
