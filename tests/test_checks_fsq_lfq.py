"""The 06_fsq_lfq checks against catalogues of wrong and of different-but-right answers."""
import importlib.util
import pathlib
import subprocess
import sys
import time

import pytest
import torch

from grader.checks import fsq_lfq

CATALOGUE = pathlib.Path(__file__).parent / "catalogue"


def _load(name):
    spec = importlib.util.spec_from_file_location(f"_catalogue_{name}", CATALOGUE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


WRONG = _load("fsq_lfq_wrong").CASES
RIGHT = _load("fsq_lfq_right").CASES
CHECKS = {name[len("check_"):]: getattr(fsq_lfq, name) for name in fsq_lfq.__all__}
NAMES = ["fsq_bound", "round_ste", "fsq_quantize", "fsq_codes_to_indices", "fsq_indices_to_codes",
         "lfq_quantize", "lfq_codes_to_indices", "lfq_indices_to_codes", "lfq_entropy_loss",
         "FSQ", "LFQ"]


def _id(case):
    return f"{case[0]}-{case[1].__name__}"


def test_catalogues_cover_every_check():
    assert set(CHECKS) == set(NAMES)
    assert {c[0] for c in WRONG} == set(CHECKS)
    assert {c[0] for c in RIGHT} == set(CHECKS)
    assert len(WRONG) >= 60 and len(RIGHT) >= 25
    assert len({_id(c) for c in WRONG}) == len(WRONG)
    assert len({_id(c) for c in RIGHT}) == len(RIGHT)


@pytest.mark.parametrize("case", WRONG, ids=_id)
def test_wrong_answer_fails(case):
    name, answer, why = case
    with pytest.raises(AssertionError) as info:
        CHECKS[name](answer)
    message = str(info.value)
    assert message, f"empty message for: {why}"
    assert "Traceback" not in message


@pytest.mark.parametrize("case", RIGHT, ids=_id)
def test_right_answer_passes(case):
    name, answer, how = case
    start = time.perf_counter()
    CHECKS[name](answer)
    assert time.perf_counter() - start < 2.0, f"check_{name} is slow on: {how}"


@pytest.mark.parametrize("name", NAMES)
def test_reference_passes_when_copied_but_fails_when_called(name):
    """The library's own code passes the checks when it is the learner's own copy."""
    import dvl_helpers.fsq as ref

    with pytest.raises(AssertionError, match="reference implementation"):
        CHECKS[name](getattr(ref, name))
    # the same source executed in a fresh namespace is an honest implementation
    source = pathlib.Path(ref.__file__).read_text()
    source = source.replace("from .quantizers import", "from dvl_helpers.quantizers import")
    namespace = {"__name__": "learner_notebook"}
    exec(compile(source, "<learner cell>", "exec"), namespace)
    CHECKS[name](namespace[name])


@pytest.mark.parametrize("message_case", [
    ("fsq_bound", "bound_no_offset", "is even: offset = 1/2"),
    ("fsq_bound", "bound_offset_odd", "odd"),
    ("fsq_bound", "bound_no_eps", "1 + 1e-3"),
    ("fsq_bound", "bound_paper_jax", "the factor is 1 + 1e-3"),
    ("fsq_bound", "bound_no_shift", "atanh(offset / h)"),
    ("fsq_bound", "bound_tan_shift", "atanh"),
    ("fsq_bound", "bound_reference", "reference implementation dvl_helpers.fsq.fsq_bound"),
    ("round_ste", "ste_plain_round", "straight-through"),
    ("round_ste", "ste_in_place", "must not modify its inputs in place"),
    ("fsq_quantize", "quantize_no_ste", "round_ste"),
    ("fsq_quantize", "quantize_by_l", "L // 2"),
    ("fsq_codes_to_indices", "codes_reversed", "least significant"),
    ("fsq_codes_to_indices", "codes_truncated", "bfloat16"),
    ("fsq_indices_to_codes", "indices_reversed", "wrong order"),
    ("lfq_quantize", "lfq_sign", "torch.sign(0) = 0"),
    ("lfq_codes_to_indices", "lfq_lsb_first", "most significant"),
    ("lfq_entropy_loss", "entropy_swapped", "signs are swapped"),
    ("lfq_entropy_loss", "entropy_per_bit", "not a sum of per-bit entropies"),
    ("lfq_entropy_loss", "entropy_mean_of_entropies", "averaged over the batch first"),
    ("lfq_entropy_loss", "entropy_naive_log", "NaN"),
    ("lfq_entropy_loss", "entropy_gamma_wrong_term", "expected"),
    ("FSQ", "FSQCommitment", "must be 0"),
    ("FSQ", "FSQLearnedScale", "no trainable parameters"),
    ("FSQ", "FSQSubclass", "reference implementation"),
    ("LFQ", "LFQCommitWrongSide", "sg(z_q)"),
])
def test_messages_say_what_is_wrong(message_case):
    name, answer_name, expected = message_case
    answer = next(c[1] for c in WRONG if c[0] == name and c[1].__name__ == answer_name)
    with pytest.raises(AssertionError) as info:
        CHECKS[name](answer)
    assert expected in str(info.value)


def test_checks_are_silent_and_keep_the_global_rng(capfd):
    def noisy(z):
        print("debugging output")
        print("oops", file=sys.stderr)
        import warnings
        warnings.warn("a warning from the answer")
        return z + (torch.round(z) - z).detach()

    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    fsq_lfq.check_round_ste(noisy)
    for name in ("FSQ", "LFQ", "lfq_entropy_loss"):
        CHECKS[name](next(c[1] for c in RIGHT if c[0] == name))
    with pytest.raises(AssertionError):
        fsq_lfq.check_fsq_bound(next(c[1] for c in WRONG if c[0] == "fsq_bound"))
    assert torch.equal(torch.rand(3), expected)
    out, err = capfd.readouterr()
    assert out == "" and err == ""


def test_a_crashing_answer_becomes_an_assertion_naming_the_call():
    def broken(z, levels):
        raise NotImplementedError("TODO")

    with pytest.raises(AssertionError, match=r"fsq_bound\(zeros\(3, 4\), .*\) raised "
                                             r"NotImplementedError: TODO"):
        fsq_lfq.check_fsq_bound(broken)


def test_a_monkeypatched_torch_fails_every_check(monkeypatch):
    monkeypatch.setattr(torch, "allclose", lambda *a, **k: True)
    answer = next(c[1] for c in RIGHT if c[0] == "round_ste")
    with pytest.raises(AssertionError, match="has replaced"):
        fsq_lfq.check_round_ste(answer)


def test_every_check_is_fast():
    answers = {name: answer for name, answer, _ in reversed(RIGHT)}
    for name, check in CHECKS.items():
        start = time.perf_counter()
        check(answers[name])
        assert time.perf_counter() - start < 1.0, f"check_{name} took too long"


def test_importing_the_checks_imports_nothing_heavy():
    code = ("import sys, grader.checks.fsq_lfq; "
            "heavy = ('dvl_helpers', 'matplotlib', 'nbgrader'); "
            "bad = [m for m in sys.modules if m.split('.')[0] in heavy]; "
            "print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
