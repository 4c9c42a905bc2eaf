"""The 04_hierarchical_vq checks against catalogues of wrong and of different-but-right answers."""
import importlib.util
import pathlib
import subprocess
import sys
import time

import pytest
import torch

from grader.checks import hierarchical_vq

CATALOGUE = pathlib.Path(__file__).parent / "catalogue"


def _load(name):
    spec = importlib.util.spec_from_file_location(f"_catalogue_{name}", CATALOGUE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


WRONG = _load("hierarchical_vq_wrong").CASES
RIGHT = _load("hierarchical_vq_right").CASES
CHECKS = {name[len("check_"):]: getattr(hierarchical_vq, name) for name in hierarchical_vq.__all__}
NAMES = ["residual_quantize", "product_quantize", "ResidualVQ", "ProductVQ", "VQVAE2"]


def _id(case):
    return f"{case[0]}-{case[1].__name__}"


def test_catalogues_cover_every_check():
    assert set(CHECKS) == set(NAMES)
    assert {c[0] for c in WRONG} == set(CHECKS)
    assert {c[0] for c in RIGHT} == set(CHECKS)
    assert len(WRONG) >= 40 and len(RIGHT) >= 14
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
    import dvl_helpers.hierarchical as ref

    with pytest.raises(AssertionError, match="reference implementation"):
        CHECKS[name](getattr(ref, name))
    source = pathlib.Path(ref.__file__).read_text()
    namespace = {"__name__": "learner_notebook"}
    exec(compile(source, "<learner cell>", "exec"), namespace)
    CHECKS[name](namespace[name])


@pytest.mark.parametrize("message_case", [
    ("residual_quantize", "rq_no_update", "must quantize the residual z - e_1"),
    ("residual_quantize", "rq_norms_before", "before each stage"),
    ("residual_quantize", "rq_norms_squared", "squared"),
    ("residual_quantize", "rq_transposed", "one row per stage"),
    ("residual_quantize", "rq_in_place", "must not modify its inputs in place"),
    ("residual_quantize", "rq_last_only", "sum of the stages' codes"),
    ("residual_quantize", "rq_z_minus_residual", "gets no gradient"),
    ("residual_quantize", "rq_broadcast", "[N, K, D]"),
    ("residual_quantize", "rq_reference", "reference implementation"),
    ("product_quantize", "pq_strided", "contiguous"),
    ("product_quantize", "pq_mismatched", "codebooks[m]"),
    ("product_quantize", "pq_transposed", "one row per chunk"),
    ("ResidualVQ", "RVQResidualGraph", "stop-gradient"),
    ("ResidualVQ", "RVQMeanLoss", "sum over stages"),
    ("ResidualVQ", "RVQIndicesLast", "stage axis first"),
    ("ResidualVQ", "RVQIgnoresStages", "only the first num_stages"),
    ("ResidualVQ", "RVQNoStraightThrough", "straight"),
    ("ResidualVQ", "RVQSubclass", "reference implementation"),
    ("ProductVQ", "PVQStrided", "chunk 0"),
    ("ProductVQ", "PVQIndicesLast", "chunk axis first"),
    ("VQVAE2", "V2NoShift", "x - 0.5"),
    ("VQVAE2", "V2Unconditioned", "self.dec_t is never called"),
    ("VQVAE2", "V2CatSwapped", "wrong order"),
    ("VQVAE2", "V2DecTUnquantized", "before quantization"),
    ("VQVAE2", "V2BottomLoss", "sum of the top and the bottom"),
    ("VQVAE2", "V2Detached", "bottom encoder"),
])
def test_messages_say_what_is_wrong(message_case):
    name, answer_name, expected = message_case
    answer = next(c[1] for c in WRONG if c[0] == name and c[1].__name__ == answer_name)
    with pytest.raises(AssertionError) as info:
        CHECKS[name](answer)
    assert expected in str(info.value)


def test_checks_are_silent_and_keep_the_global_rng(capfd):
    def noisy(z, codebooks):
        print("debugging output")
        print("oops", file=sys.stderr)
        import warnings
        warnings.warn("a warning from the answer")
        return next(c[1] for c in RIGHT if c[0] == "residual_quantize")(z, codebooks)

    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    hierarchical_vq.check_residual_quantize(noisy)
    for name in ("ResidualVQ", "VQVAE2"):
        CHECKS[name](next(c[1] for c in RIGHT if c[0] == name))
    with pytest.raises(AssertionError):
        hierarchical_vq.check_ProductVQ(next(c[1] for c in WRONG if c[0] == "ProductVQ"))
    assert torch.equal(torch.rand(3), expected)
    out, err = capfd.readouterr()
    assert out == "" and err == ""


def test_a_crashing_answer_becomes_an_assertion_naming_the_call():
    def broken(z, codebooks):
        raise NotImplementedError("TODO")

    with pytest.raises(AssertionError, match=r"residual_quantize\(z, codebooks\) raised "
                                             r"NotImplementedError: TODO"):
        hierarchical_vq.check_residual_quantize(broken)


def test_a_monkeypatched_torch_fails_every_check(monkeypatch):
    monkeypatch.setattr(torch, "allclose", lambda *a, **k: True)
    answer = next(c[1] for c in RIGHT if c[0] == "product_quantize")
    with pytest.raises(AssertionError, match="has replaced"):
        hierarchical_vq.check_product_quantize(answer)


def test_every_check_is_fast():
    answers = {name: answer for name, answer, _ in reversed(RIGHT)}
    for name, check in CHECKS.items():
        start = time.perf_counter()
        check(answers[name])
        assert time.perf_counter() - start < 1.0, f"check_{name} took too long"


def test_importing_the_checks_imports_nothing_heavy():
    code = ("import sys, grader.checks.hierarchical_vq; "
            "heavy = ('dvl_helpers', 'matplotlib', 'nbgrader'); "
            "bad = [m for m in sys.modules if m.split('.')[0] in heavy]; "
            "print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
