"""What the ``tests/test_checks_*.py`` harnesses share.

Each phase's checks (``grader.checks.<phase>``) are run against two catalogues
in this folder: ``<stem>_wrong.py`` (every answer must be rejected) and
``<stem>_right.py`` (every answer must be accepted). Both hold ``CASES``, a
list of ``(check name, answer, why or how)``.

A test file builds one :class:`Catalogue` and binds the tests it shares with
the other phases to module-level names, so that pytest collects them there
under the same ids as before::

    from catalogue.harness import Catalogue

    CAT = Catalogue(vae, "vae")
    test_wrong_answer_fails = CAT.wrong_answers_test()

The methods return fresh test functions (each with its own parametrize marks);
the phase-specific tests stay in the test file. ``tests/`` is on ``sys.path``
because pytest imports the test files in its default (prepend) mode, so
``catalogue`` resolves to this folder.
"""
from __future__ import annotations

import contextlib
import importlib
import importlib.util
import pathlib
import subprocess
import sys
import time
import warnings

import pytest
import torch

CATALOGUE = pathlib.Path(__file__).parent
HEAVY = ("dvl_helpers", "matplotlib", "nbgrader")


def load(name: str):
    """The catalogue module ``tests/catalogue/<name>.py``, loaded under a private name."""
    spec = importlib.util.spec_from_file_location(f"_catalogue_{name}", CATALOGUE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def case_id(case) -> str:
    """The parametrize id of a catalogue case: ``<check name>-<answer name>``."""
    return f"{case[0]}-{case[1].__name__}"


def learner_copy(module_name: str) -> dict:
    """The reference module's source executed as a learner's notebook cell would run it.

    Relative imports become absolute ones (``from .quantizers`` -> ``from
    dvl_helpers.quantizers``), as a learner copying the code would write them.
    """
    ref = importlib.import_module(module_name)
    package = module_name.rsplit(".", 1)[0]
    source = pathlib.Path(ref.__file__).read_text().replace("from .", f"from {package}.")
    namespace = {"__name__": "learner_notebook"}
    exec(compile(source, "<learner cell>", "exec"), namespace)
    return namespace


def chatter() -> None:
    """What a noisy answer does: print to stdout and stderr and raise a warning."""
    print("debugging output")
    print("oops", file=sys.stderr)
    warnings.warn("a warning from the answer")


@contextlib.contextmanager
def quiet_and_rng_kept(capfd):
    """Around checks that must print nothing and leave the global torch generator as they found it."""
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    yield
    assert torch.equal(torch.rand(3), expected)
    out, err = capfd.readouterr()
    assert out == "" and err == ""


class Catalogue:
    """The checks of one phase with its two catalogues, and the tests every phase shares.

    ``checks`` is the ``grader.checks`` module; ``stem`` names the catalogues
    ``<stem>_wrong.py`` and ``<stem>_right.py``.
    """

    def __init__(self, checks, stem: str):
        self.module = checks
        self.wrong = load(f"{stem}_wrong").CASES
        self.right = load(f"{stem}_right").CASES
        self.checks = {name[len("check_"):]: getattr(checks, name) for name in checks.__all__}

    def wrong_answer(self, name: str, answer_name: str | None = None):
        """The first wrong answer for check ``name`` (the one called ``answer_name`` if given)."""
        return next(c[1] for c in self.wrong
                    if c[0] == name and answer_name in (None, c[1].__name__))

    def right_answer(self, name: str):
        """The first right answer for check ``name``."""
        return next(c[1] for c in self.right if c[0] == name)

    # the tests every phase shares

    def coverage_test(self, min_wrong: int, min_right: int, names=None, per_check=None):
        """Both catalogues cover every check, with at least so many answers and unique ids."""
        wrong, right, checks = self.wrong, self.right, self.checks

        def test_catalogues_cover_every_check():
            if names is not None:
                assert set(checks) == set(names)
            assert {c[0] for c in wrong} == set(checks)
            assert {c[0] for c in right} == set(checks)
            assert len(wrong) >= min_wrong and len(right) >= min_right
            if per_check is not None:
                min_wrong_each, min_right_each = per_check
                for name in checks:
                    assert sum(c[0] == name for c in wrong) >= min_wrong_each, f"few wrong answers for {name}"
                    assert sum(c[0] == name for c in right) >= min_right_each, f"few right answers for {name}"
            assert len({case_id(c) for c in wrong}) == len(wrong)
            assert len({case_id(c) for c in right}) == len(right)

        return test_catalogues_cover_every_check

    def wrong_answers_test(self):
        """Every wrong answer fails its check with a message and no traceback."""
        checks = self.checks

        @pytest.mark.parametrize("case", self.wrong, ids=case_id)
        def test_wrong_answer_fails(case):
            name, answer, why = case
            with pytest.raises(AssertionError) as info:
                checks[name](answer)
            message = str(info.value)
            assert message, f"empty message for: {why}"
            assert "Traceback" not in message

        return test_wrong_answer_fails

    def right_answers_test(self, seconds: float = 2.0):
        """Every right answer passes its check within ``seconds``."""
        checks = self.checks

        @pytest.mark.parametrize("case", self.right, ids=case_id)
        def test_right_answer_passes(case):
            name, answer, how = case
            start = time.perf_counter()
            checks[name](answer)
            assert time.perf_counter() - start < seconds, f"check_{name} is slow on: {how}"

        return test_right_answer_passes

    def reference_test(self, module_name: str, names, parametrize: bool = True):
        """The library's own code passes the checks when it is the learner's own copy.

        Called directly it fails (the checks refuse the reference implementation);
        its source executed in a fresh namespace is an honest implementation.
        With ``parametrize=False`` one test goes through every name.
        """
        checks = self.checks

        def refused(name):
            ref = importlib.import_module(module_name)
            with pytest.raises(AssertionError, match="reference implementation"):
                checks[name](getattr(ref, name))

        if not parametrize:
            def test_reference_passes_when_copied_but_fails_when_called():
                """The library's own code passes the checks when it is the learner's own copy."""
                namespace = learner_copy(module_name)
                for name in names:
                    refused(name)
                    checks[name](namespace[name])

            return test_reference_passes_when_copied_but_fails_when_called

        @pytest.mark.parametrize("name", names)
        def test_reference_passes_when_copied_but_fails_when_called(name):
            """The library's own code passes the checks when it is the learner's own copy."""
            refused(name)
            checks[name](learner_copy(module_name)[name])

        return test_reference_passes_when_copied_but_fails_when_called

    def messages_test(self, message_cases):
        """Each ``(check name, wrong answer name, expected text)``: the check's message holds the text."""
        checks = self.checks

        @pytest.mark.parametrize("message_case", message_cases)
        def test_messages_say_what_is_wrong(message_case):
            name, answer_name, expected = message_case
            answer = self.wrong_answer(name, answer_name)
            with pytest.raises(AssertionError) as info:
                checks[name](answer)
            assert expected in str(info.value)

        return test_messages_say_what_is_wrong

    def patched_torch_test(self, name: str, patches=None, attribute: str = "allclose", returns=True):
        """A torch patched from the notebook makes the check of ``name`` refuse to run.

        ``patches`` lists ``(target, attribute)`` pairs, each its own test;
        without it one unparametrized test patches ``torch.<attribute>``. The
        patch is a function returning ``returns``.
        """
        check, answer = self.checks[name], self.right_answer(name)

        def patch_and_check(monkeypatch, target, attribute):
            monkeypatch.setattr(target, attribute, lambda *a, **k: returns)
            with pytest.raises(AssertionError, match="has replaced"):
                check(answer)

        if patches is None:
            def test_a_monkeypatched_torch_fails_every_check(monkeypatch):
                patch_and_check(monkeypatch, torch, attribute)

            return test_a_monkeypatched_torch_fails_every_check

        @pytest.mark.parametrize("target, name", patches)
        def test_a_monkeypatched_torch_fails_every_check(monkeypatch, target, name):
            """Patching torch from the notebook cannot make a check pass: the check refuses to run."""
            patch_and_check(monkeypatch, target, name)

        return test_a_monkeypatched_torch_fails_every_check

    def fast_test(self, seconds: float = 1.0):
        """Every check runs within ``seconds`` on the first right answer in the catalogue."""
        checks, right = self.checks, self.right

        def test_every_check_is_fast():
            answers = {name: answer for name, answer, _ in reversed(right)}
            for name, check in checks.items():
                start = time.perf_counter()
                check(answers[name])
                assert time.perf_counter() - start < seconds, f"check_{name} took too long"

        return test_every_check_is_fast

    def light_import_test(self, heavy=HEAVY):
        """Importing the checks module imports none of the ``heavy`` packages."""
        module = self.module.__name__

        def test_importing_the_checks_imports_nothing_heavy():
            code = (f"import sys, {module}; "
                    f"heavy = {tuple(heavy)!r}; "
                    "bad = [m for m in sys.modules if m.split('.')[0] in heavy]; "
                    "print(bad)")
            out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
            assert out.stdout.strip() == "[]"

        return test_importing_the_checks_imports_nothing_heavy
