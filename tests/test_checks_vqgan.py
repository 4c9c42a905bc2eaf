"""The 05_vqgan checks against catalogues of wrong and of different-but-right answers."""
import functools
import importlib.util
import pathlib
import subprocess
import sys
import time

import pytest
import torch

from grader.checks import vqgan

CATALOGUE = pathlib.Path(__file__).parent / "catalogue"


def _load(name):
    spec = importlib.util.spec_from_file_location(f"_catalogue_{name}", CATALOGUE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


WRONG = _load("vqgan_wrong").CASES
RIGHT = _load("vqgan_right").CASES
CHECKS = {name[len("check_"):]: getattr(vqgan, name) for name in vqgan.__all__}
NAMES = ["hinge_d_loss", "hinge_g_loss", "non_saturating_d_loss", "non_saturating_g_loss",
         "adaptive_weight", "perceptual_distance", "disc_weight", "patchgan_receptive_field"]


def _id(case):
    return f"{case[0]}-{case[1].__name__}"


def test_catalogues_cover_every_check():
    assert set(CHECKS) == set(NAMES)
    assert {c[0] for c in WRONG} == set(CHECKS)
    assert {c[0] for c in RIGHT} == set(CHECKS)
    assert len(WRONG) >= 40 and len(RIGHT) >= 16
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


@functools.lru_cache(maxsize=1)
def _reference_namespace():
    """The reference module's source executed as a learner's notebook would (absolute imports)."""
    import dvl_helpers.vqgan as ref

    source = pathlib.Path(ref.__file__).read_text().replace("from .", "from dvl_helpers.")
    namespace = {"__name__": "learner_notebook"}
    exec(compile(source, "<learner cell>", "exec"), namespace)
    return namespace


@pytest.mark.parametrize("name", NAMES)
def test_reference_passes_when_copied_but_fails_when_called(name):
    import dvl_helpers.vqgan as ref

    with pytest.raises(AssertionError, match="reference implementation"):
        CHECKS[name](getattr(ref, name))
    CHECKS[name](_reference_namespace()[name])


@pytest.mark.parametrize("message_case", [
    ("hinge_d_loss", "hinge_d_no_half", "½"),
    ("hinge_d_loss", "hinge_d_fake_sign", "relu(1 + fake)"),
    ("hinge_d_loss", "hinge_d_swapped", "swapped"),
    ("hinge_d_loss", "hinge_d_no_mean", "scalar"),
    ("hinge_d_loss", "hinge_d_item", "no gradient reaches"),
    ("hinge_d_loss", "hinge_d_in_place", "must not modify its inputs in place"),
    ("hinge_d_loss", "hinge_d_reference", "reference implementation dvl_helpers.vqgan.hinge_d_loss"),
    ("hinge_g_loss", "hinge_g_sign", "the sign"),
    ("non_saturating_d_loss", "ns_d_signs", "sign inside softplus"),
    ("non_saturating_d_loss", "ns_d_naive", "NaN or inf"),
    ("non_saturating_g_loss", "ns_g_sign", "sign inside softplus"),
    ("non_saturating_g_loss", "ns_g_saturating", "saturating minimax"),
    ("adaptive_weight", "aw_not_detached", "detach"),
    ("adaptive_weight", "aw_inverted", "upside down"),
    ("adaptive_weight", "aw_no_clamp", "clamped to max_weight"),
    ("adaptive_weight", "aw_fixed_delta", "delta = 0.5 must be used"),
    ("adaptive_weight", "aw_backward", ".grad"),
    ("adaptive_weight", "aw_no_retain", "retain_graph=True"),
    ("perceptual_distance", "pd_no_eps", "eps"),
    ("perceptual_distance", "pd_scalar", "[B], one distance per image"),
    ("perceptual_distance", "pd_detached", "no gradient reaches"),
    ("disc_weight", "dw_off_by_one", "step >= disc_start"),
    ("disc_weight", "dw_ramp", "not a ramp"),
    ("patchgan_receptive_field", "rf_no_strides", "70 pixels"),
    ("patchgan_receptive_field", "rf_string", "must be an int"),
])
def test_messages_say_what_is_wrong(message_case):
    name, answer_name, expected = message_case
    answer = next(c[1] for c in WRONG if c[0] == name and c[1].__name__ == answer_name)
    with pytest.raises(AssertionError) as info:
        CHECKS[name](answer)
    assert expected in str(info.value)


def test_checks_are_silent_and_keep_the_global_rng(capfd):
    def noisy(logits_fake):
        print("debugging output")
        print("oops", file=sys.stderr)
        import warnings
        warnings.warn("a warning from the answer")
        return -logits_fake.mean()

    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    vqgan.check_hinge_g_loss(noisy)
    for name in ("adaptive_weight", "perceptual_distance"):
        CHECKS[name](next(c[1] for c in RIGHT if c[0] == name))
    with pytest.raises(AssertionError):
        vqgan.check_hinge_d_loss(next(c[1] for c in WRONG if c[0] == "hinge_d_loss"))
    assert torch.equal(torch.rand(3), expected)
    out, err = capfd.readouterr()
    assert out == "" and err == ""


def test_a_crashing_answer_becomes_an_assertion_naming_the_call():
    def broken(logits_real, logits_fake):
        raise NotImplementedError("TODO")

    with pytest.raises(AssertionError, match=r"hinge_d_loss\(logits_real, logits_fake\)"
                                             r".* raised NotImplementedError: TODO"):
        vqgan.check_hinge_d_loss(broken)


def test_a_monkeypatched_torch_fails_every_check(monkeypatch):
    monkeypatch.setattr(torch, "allclose", lambda *a, **k: True)
    answer = next(c[1] for c in RIGHT if c[0] == "hinge_g_loss")
    with pytest.raises(AssertionError, match="has replaced"):
        vqgan.check_hinge_g_loss(answer)


def test_every_check_is_fast():
    answers = {name: answer for name, answer, _ in reversed(RIGHT)}
    for name, check in CHECKS.items():
        start = time.perf_counter()
        check(answers[name])
        assert time.perf_counter() - start < 1.0, f"check_{name} took too long"


def test_importing_the_checks_imports_nothing_heavy():
    code = ("import sys, grader.checks.vqgan; "
            "heavy = ('dvl_helpers', 'matplotlib', 'nbgrader'); "
            "bad = [m for m in sys.modules if m.split('.')[0] in heavy]; "
            "print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
