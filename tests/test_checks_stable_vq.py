"""The 02_stable_vq checks against catalogues of wrong and of different-but-right answers."""
import importlib.util
import pathlib
import subprocess
import sys
import time

import pytest
import torch

from grader.checks import stable_vq

CATALOGUE = pathlib.Path(__file__).parent / "catalogue"


def _load(name):
    spec = importlib.util.spec_from_file_location(f"_catalogue_{name}", CATALOGUE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


WRONG = _load("stable_vq_wrong").CASES
RIGHT = _load("stable_vq_right").CASES
CHECKS = {name[len("check_"):]: getattr(stable_vq, name) for name in stable_vq.__all__}
NAMES = ["ema_update", "kmeans_init", "dead_codes", "reset_dead_codes", "codebook_entropy_loss",
         "EMAVectorQuantizer"]


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
    import dvl_helpers.quantizers as ref

    with pytest.raises(AssertionError, match="reference implementation"):
        CHECKS[name](getattr(ref, name))
    # the same source executed in a fresh namespace is an honest implementation
    source = pathlib.Path(ref.__file__).read_text()
    namespace = {"__name__": "learner_notebook"}
    exec(compile(source, "<learner cell>", "exec"), namespace)
    CHECKS[name](namespace[name])


def test_phase_one_reference_pieces_are_allowed():
    """Later phases build on earlier ones: using the reference nearest_code is fine."""
    from dvl_helpers.quantizers import nearest_code

    answer = next(c[1] for c in RIGHT if c[1].__name__ == "EMAWithReferencePieces")
    stable_vq.check_EMAVectorQuantizer(answer)

    def dead(cluster_size, threshold):
        nearest_code(torch.zeros(1, 1), torch.zeros(1, 1))
        return cluster_size < threshold

    stable_vq.check_dead_codes(dead)


@pytest.mark.parametrize("message_case", [
    ("ema_update", "ema_no_smoothing", "Laplace-smoothed counts"),
    ("ema_update", "ema_decay_swapped", "decay must weigh the old counts"),
    ("ema_update", "ema_in_place", "must not modify its inputs in place"),
    ("ema_update", "ema_reference", "reference implementation dvl_helpers.quantizers.ema_update"),
    ("kmeans_init", "kmeans_sample_only", "run the Lloyd iterations"),
    ("kmeans_init", "kmeans_nan", "NaN or inf"),
    ("kmeans_init", "kmeans_no_reseed", "re-seed"),
    ("kmeans_init", "kmeans_fixed_iters", "must return the start alone"),
    ("kmeans_init", "kmeans_global_rng", "the same seed gave two different results"),
    ("kmeans_init", "kmeans_first_rows", "four different generators gave the same start"),
    ("dead_codes", "dead_le", "is alive"),
    ("reset_dead_codes", "reset_stale", "cluster_size of a restarted code must become 1"),
    ("reset_dead_codes", "reset_stale_sum", "embed_sum of a restarted code"),
    ("reset_dead_codes", "reset_replacement", "without replacement"),
    ("reset_dead_codes", "reset_in_place", "must not modify its inputs in place"),
    ("reset_dead_codes", "reset_everything", "is alive"),
    ("reset_dead_codes", "reset_too_many", "raised"),
    ("reset_dead_codes", "reset_first_rows", "at random"),
    ("codebook_entropy_loss", "entropy_swapped", "signs are swapped"),
    ("codebook_entropy_loss", "entropy_naive", "NaN"),
    ("codebook_entropy_loss", "entropy_detached", "differentiable"),
    ("codebook_entropy_loss", "entropy_xlogy_nan_grad", "NaN gradient at p = 0"),
    ("EMAVectorQuantizer", "EMAUpdatesInEval", "only be updated in training mode"),
    ("EMAVectorQuantizer", "EMAParameter", "buffer"),
    ("EMAVectorQuantizer", "EMACodebookLoss", "includes the codebook loss"),
    ("EMAVectorQuantizer", "EMAZeroStats", "must stay where they were"),
    ("EMAVectorQuantizer", "EMAWithGraph", "autograd graph"),
    ("EMAVectorQuantizer", "EMARestartFirst", "after the EMA step"),
    ("EMAVectorQuantizer", "EMANoRestart", "must be restarted"),
    ("EMAVectorQuantizer", "EMADefaultThreshold", "no code is restarted"),
    ("EMAVectorQuantizer", "EMASubclassReference", "reference implementation"),
    ("EMAVectorQuantizer", "EMADelegates", "reference implementation"),
])
def test_messages_say_what_is_wrong(message_case):
    name, answer_name, expected = message_case
    answer = next(c[1] for c in WRONG if c[0] == name and c[1].__name__ == answer_name)
    with pytest.raises(AssertionError) as info:
        CHECKS[name](answer)
    assert expected in str(info.value)


def test_checks_are_silent_and_keep_the_global_rng(capfd):
    def noisy(cluster_size, threshold):
        print("debugging output")
        print("oops", file=sys.stderr)
        import warnings
        warnings.warn("a warning from the answer")
        return cluster_size < threshold

    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    stable_vq.check_dead_codes(noisy)
    for name in ("kmeans_init", "reset_dead_codes", "EMAVectorQuantizer"):
        CHECKS[name](next(c[1] for c in RIGHT if c[0] == name))
    with pytest.raises(AssertionError):
        stable_vq.check_kmeans_init(next(c[1] for c in WRONG if c[0] == "kmeans_init"))
    assert torch.equal(torch.rand(3), expected)
    out, err = capfd.readouterr()
    assert out == "" and err == ""


def test_a_crashing_answer_becomes_an_assertion_naming_the_call():
    def broken(distances, tau=1.0):
        raise NotImplementedError("TODO")

    with pytest.raises(AssertionError, match=r"codebook_entropy_loss\(distances, tau\) "
                                             r"\(.*\) raised NotImplementedError: TODO"):
        stable_vq.check_codebook_entropy_loss(broken)


def test_a_monkeypatched_torch_fails_every_check(monkeypatch):
    monkeypatch.setattr(torch, "allclose", lambda *a, **k: True)
    answer = next(c[1] for c in RIGHT if c[0] == "dead_codes")
    with pytest.raises(AssertionError, match="has replaced"):
        stable_vq.check_dead_codes(answer)


def test_every_check_is_fast():
    answers = {name: answer for name, answer, _ in reversed(RIGHT)}
    for name, check in CHECKS.items():
        start = time.perf_counter()
        check(answers[name])
        assert time.perf_counter() - start < 1.0, f"check_{name} took too long"


def test_importing_the_checks_imports_nothing_heavy():
    code = ("import sys, grader.checks.stable_vq; "
            "heavy = ('dvl_helpers', 'matplotlib', 'nbgrader'); "
            "bad = [m for m in sys.modules if m.split('.')[0] in heavy]; "
            "print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
