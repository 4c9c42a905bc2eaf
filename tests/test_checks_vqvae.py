"""The 01_vqvae checks against catalogues of wrong and of different-but-right answers."""
import importlib.util
import pathlib
import subprocess
import sys
import time

import pytest
import torch

from grader.checks import vqvae

CATALOGUE = pathlib.Path(__file__).parent / "catalogue"


def _load(name):
    spec = importlib.util.spec_from_file_location(f"_catalogue_{name}", CATALOGUE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


WRONG = _load("vqvae_wrong").CASES
RIGHT = _load("vqvae_right").CASES
CHECKS = {name[len("check_"):]: getattr(vqvae, name) for name in vqvae.__all__}


def _id(case):
    return f"{case[0]}-{case[1].__name__}"


def test_catalogues_cover_every_check():
    assert {c[0] for c in WRONG} == set(CHECKS)
    assert {c[0] for c in RIGHT} == set(CHECKS)
    assert len(WRONG) >= 25 and len(RIGHT) >= 8
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


@pytest.mark.parametrize("name", ["pairwise_sq_distances", "nearest_code", "quantize",
                                  "vq_losses", "straight_through", "code_usage",
                                  "perplexity", "VectorQuantizer"])
def test_reference_passes_when_copied_but_fails_when_called(name):
    """The library's own code passes the checks when it is the learner's own copy."""
    import dvl_helpers.quantizers as ref

    with pytest.raises(AssertionError, match="reference implementation"):
        CHECKS[name](getattr(ref, name))
    # the same source executed in a fresh namespace is an honest implementation
    source = pathlib.Path(ref.__file__).read_text()
    namespace = {"__name__": "learner_notebook"}
    exec(compile(source, "<learner cell>", "exec"), namespace)
    CHECKS[name](namespace[name])


@pytest.mark.parametrize("message_case", [
    ("quantize", "quantize_flat_indices",
     "indices must have shape [B, H, W] = (1, 1, 2), got (2,)"),
    ("vq_losses", "losses_swapped", "the codebook loss must not send gradient to z_e"),
    ("pairwise_sq_distances", "dist_broadcast", "must not build an [N, K, D] tensor"),
    ("pairwise_sq_distances", "dist_loop", "must not loop"),
    ("perplexity", "ppl_nan", "must be finite"),
    ("code_usage", "usage_no_minlength", "must have shape [K] = (5,)"),
    ("VectorQuantizer", "VQBuffer", "must be an nn.Parameter"),
    ("VectorQuantizer", "VQNoBeta", "beta"),
    ("VectorQuantizer", "VQSubclassReference", "reference implementation"),
    ("quantize", "quantize_reference_getattr",
     "reference implementation dvl_helpers.quantizers.quantize;"),
    ("nearest_code", "nearest_float", "dtype torch.int64"),
    ("straight_through", "st_reversed", "value of z_q"),
])
def test_messages_say_what_is_wrong(message_case):
    name, answer_name, expected = message_case
    answer = next(c[1] for c in WRONG if c[0] == name and c[1].__name__ == answer_name)
    with pytest.raises(AssertionError) as info:
        CHECKS[name](answer)
    assert expected in str(info.value)


def test_checks_are_silent_and_keep_the_global_rng(capfd):
    def noisy(z, codebook):
        print("debugging output")
        print("oops", file=sys.stderr)
        import warnings
        warnings.warn("a warning from the answer")
        return torch.cdist(z, codebook) ** 2

    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    vqvae.check_pairwise_sq_distances(noisy)
    vqvae.check_VectorQuantizer(RIGHT[-1][1])
    with pytest.raises(AssertionError):
        vqvae.check_quantize(next(c[1] for c in WRONG if c[0] == "quantize"))
    assert torch.equal(torch.rand(3), expected)
    out, err = capfd.readouterr()
    assert out == "" and err == ""


def test_a_crashing_answer_becomes_an_assertion_naming_the_call():
    def broken(z_e, codebook):
        raise NotImplementedError("TODO")

    expected = r"quantize\(z_e, codebook\) raised NotImplementedError: TODO"
    with pytest.raises(AssertionError, match=expected):
        vqvae.check_quantize(broken)


@pytest.mark.parametrize("target, name", [
    (torch, "allclose"), (torch, "equal"), (torch.Tensor, "__eq__"), (torch.Tensor, "__sub__"),
    (torch.Tensor, "sub"), (torch, "abs"), (torch.nn.functional, "mse_loss"),
])
def test_a_monkeypatched_torch_fails_every_check(monkeypatch, target, name):
    """Patching torch from the notebook cannot make a check pass: the check refuses to run."""
    monkeypatch.setattr(target, name, lambda *a, **k: True)
    answer = next(c[1] for c in RIGHT if c[0] == "perplexity")
    with pytest.raises(AssertionError, match="has replaced"):
        vqvae.check_perplexity(answer)


def test_an_answer_that_patches_torch_while_running_fails():
    original = torch.allclose

    def sneaky(counts):
        torch.allclose = lambda *a, **k: True
        return torch.tensor(1.0)

    try:
        with pytest.raises(AssertionError):
            vqvae.check_perplexity(sneaky)
        # even if the answer's value were right, the patch is noticed on the way out
        def sneaky_right(counts):
            torch.allclose = lambda *a, **k: True
            p = counts / counts.sum()
            return torch.exp(-torch.special.xlogy(p, p).sum())
        torch.allclose = original
        with pytest.raises(AssertionError, match="has replaced torch.allclose"):
            vqvae.check_perplexity(sneaky_right)
    finally:
        torch.allclose = original


def test_comparisons_ignore_patched_tensor_methods():
    """The comparison helpers use torch._C functions captured at import."""
    from grader.checks import _common

    a, b = torch.zeros(3), torch.ones(3)
    saved = torch.Tensor.__sub__, torch.Tensor.abs
    try:
        torch.Tensor.__sub__ = lambda self, other: torch.zeros(3)
        torch.Tensor.abs = lambda self: torch.zeros(3)
        assert _common.max_excess(a, b, 0.0) == 1.0
        with pytest.raises(AssertionError):
            _common.assert_close(a, b, "x", atol=1e-3, rtol=0)
    finally:
        torch.Tensor.__sub__, torch.Tensor.abs = saved


def test_every_check_is_fast():
    answers = {name: answer for name, answer, _ in reversed(RIGHT)}
    for name, check in CHECKS.items():
        start = time.perf_counter()
        check(answers[name])
        assert time.perf_counter() - start < 1.0, f"check_{name} took too long"


def test_importing_the_checks_imports_nothing_heavy():
    code = ("import sys, grader.checks.vqvae; "
            "heavy = ('dvl_helpers', 'matplotlib', 'nbgrader'); "
            "bad = [m for m in sys.modules if m.split('.')[0] in heavy]; "
            "print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
