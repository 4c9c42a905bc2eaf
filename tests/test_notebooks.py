"""Every phase notebook, end to end, in the smoke preset.

For each assignment in solutions/: the solution gets full marks from the hidden
tests, the release gets zero without crashing the grader, nbgrader's Validator,
inverted, finds nothing passing in the release, the release runs top to bottom
(only cells tagged `raises-exception` may raise), and course/ is exactly what
`dvl release` makes. Three notebook runs per phase: the suite's budget is 15 min.
"""
import filecmp
import shutil
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


class _KeepingValidator:
    """nbgrader's Validator that keeps the notebook it executed (to check more than it does)."""

    def __new__(cls, **kwargs):
        from nbgrader.validator import Validator
        from traitlets.config import Config

        class Keeping(Validator):
            executed = None

            def _preprocess(self, nb):
                self.executed = super()._preprocess(nb)
                return self.executed

        config = Config()
        config.Execute.timeout = 600    # per cell; the default 30 s is too tight on a busy 2-core box
        return Keeping(config=config, **kwargs)


def test_release_under_validator_and_top_to_bottom(aid, monkeypatch, tmp_path):
    """One run of the release serves two checks.

    nbgrader's Validator, inverted, finds no test cell passing on the unanswered
    release; and, as `pytest --nbval-lax` would, every cell that raised is one
    marked `raises-exception`: the rest of the notebook runs top to bottom.
    (The solution's run through the Validator is exercised on the fixture course
    in tests/test_grader_cli.py; here `dvl check` runs the solution.)
    """
    monkeypatch.setenv("DVL_PRESET", "smoke")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    # A copy: the notebook runs in its own folder and may write checkpoints there.
    path = shutil.copy(_release(aid), tmp_path)
    validator = _KeepingValidator(invert=True)
    results = validator.validate(str(path))
    assert not results.get("passed"), \
        f"test cells pass on the unanswered release: {[c['source'][:80] for c in results['passed']]}"
    assert not results.get("type_changed") and not results.get("changed")

    unexpected, raised = [], 0
    for cell in validator.executed.cells:
        errors = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
        raised += bool(errors)
        if errors and "raises-exception" not in cell.metadata.get("tags", []):
            unexpected.append(f"cell {cell.get('id')}: {errors[0]['ename']}: {errors[0]['evalue'][:200]}")
    assert raised, "the unanswered release ran without a single error: were outputs kept?"
    assert not unexpected, f"{aid} release: cells raised that are not tagged raises-exception: {unexpected}"
