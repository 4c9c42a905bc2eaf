"""The 08_priors checks against catalogues of wrong and of different-but-right answers."""
import importlib.util
import math
import pathlib
import subprocess
import sys
import time

import pytest
import torch

from grader.checks import priors

CATALOGUE = pathlib.Path(__file__).parent / "catalogue"


def _load(name):
    spec = importlib.util.spec_from_file_location(f"_catalogue_{name}", CATALOGUE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


WRONG = _load("priors_wrong").CASES
RIGHT = _load("priors_right").CASES
CHECKS = {name[len("check_"):]: getattr(priors, name) for name in priors.__all__}
NAMES = ["causal_mask", "top_k_filter", "sample_logits", "sample_autoregressive",
         "maskgit_schedule", "maskgit_decode_step", "maskgit_generate"]


def _id(case):
    return f"{case[0]}-{case[1].__name__}"


def test_catalogues_cover_every_check():
    assert set(CHECKS) == set(NAMES)
    assert {c[0] for c in WRONG} == set(CHECKS)
    assert {c[0] for c in RIGHT} == set(CHECKS)
    assert len(WRONG) >= 50 and len(RIGHT) >= 20
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
    assert time.perf_counter() - start < 3.0, f"check_{name} is slow on: {how}"


# the statistical tests must not reject correct answers: run them on many other seeds
STATS = {
    "sample_logits": priors._stats_sample_logits,
    "sample_autoregressive": priors._stats_sample_autoregressive,
    "maskgit_decode_step": priors._stats_maskgit_decode_step,
    "maskgit_generate": priors._stats_maskgit_generate,
}
FAST_RIGHT = {"sample_logits": ["sample_multinomial", "sample_gumbel_max", "sample_inverse_cdf"],
              "sample_autoregressive": ["ar_prealloc", "ar_cat"],
              "maskgit_decode_step": ["_decode_reference", "decode_argsort"],
              "maskgit_generate": ["generate_reference", "generate_torch_counts"]}


@pytest.mark.parametrize("name", sorted(STATS))
def test_statistical_tests_accept_right_answers_on_many_seeds(name):
    answers = [c[1] for c in RIGHT if c[0] == name and c[1].__name__ in FAST_RIGHT[name]]
    assert len(answers) == len(FAST_RIGHT[name])
    check = priors.check(STATS[name])        # quiet, global RNG kept, as in a real check
    for answer in answers:
        for seed in range(100, 100 + 15 * 7, 7):
            check(answer, seed)


def test_maskgit_counts_are_far_from_rounding_edges():
    """floor(L * schedule) in float32 or float64 must agree on every configuration the check uses."""
    configs = ((16, 4, "cosine"), (16, 8, "linear"), (16, 4, "square"), (16, 8, "cosine"),
               (16, 16, "cosine"), (6, 10, "cosine"), (16, 1, "linear"), (12, 4, "cosine"))
    for length, steps, kind in configs:
        for s in range(1, steps + 1):
            x64 = length * priors._schedule_ref(s / steps, kind)
            r32 = torch.tensor(s / steps, dtype=torch.float32)
            g32 = {"cosine": torch.cos(r32 * math.pi / 2), "linear": 1 - r32,
                   "square": 1 - r32 * r32}[kind]
            x32 = float(length * g32)
            assert max(math.floor(x64), 0) == max(math.floor(x32), 0), (length, steps, kind, s)


def test_reference_passes_when_copied_but_fails_when_called():
    """The library's own code passes the checks when it is the learner's own copy."""
    import dvl_helpers.priors as ref

    source = pathlib.Path(ref.__file__).read_text()
    namespace = {"__name__": "learner_notebook"}
    exec(compile(source, "<learner cell>", "exec"), namespace)
    for name in NAMES:
        with pytest.raises(AssertionError, match="reference implementation"):
            CHECKS[name](getattr(ref, name))
        CHECKS[name](namespace[name])


@pytest.mark.parametrize("message_case", [
    ("causal_mask", "mask_no_diagonal", "no diagonal"),
    ("causal_mask", "mask_transposed", "transposed"),
    ("top_k_filter", "topk_zero_fill", "must be -inf"),
    ("top_k_filter", "topk_smallest", "keeps the k smallest"),
    ("top_k_filter", "topk_exact_k", "equal to the k-th largest must be kept"),
    ("top_k_filter", "topk_in_place", "in place"),
    ("sample_logits", "sample_argmax", "argmax"),
    ("sample_logits", "sample_temperature_times", "softmax(logits / temperature)"),
    ("sample_logits", "sample_global_rng", "generator"),
    ("sample_autoregressive", "ar_all_at_once", "one position at a time"),
    ("sample_autoregressive", "ar_off_by_one", "does not follow the model's distribution"),
    ("sample_autoregressive", "ar_no_top_k", "top_k"),
    ("maskgit_schedule", "schedule_cos_pi", "cos(pi r)"),
    ("maskgit_schedule", "schedule_swapped", "gives the 'square' schedule"),
    ("maskgit_decode_step", "decode_most_confident", "MOST confident"),
    ("maskgit_decode_step", "decode_resample_all", "already decoded"),
    ("maskgit_decode_step", "decode_one_more", "exactly num_to_mask"),
    ("maskgit_generate", "gen_masks_left", "after the last step"),
    ("maskgit_generate", "gen_resample", "changed in a later step"),
    ("maskgit_generate", "gen_most_confident", "most confident"),
    ("maskgit_generate", "gen_cos_pi", "masked positions per row"),
    ("maskgit_generate", "gen_no_mask_token", "masked positions per row"),
])
def test_messages_say_what_is_wrong(message_case):
    name, answer_name, expected = message_case
    answer = next(c[1] for c in WRONG if c[0] == name and c[1].__name__ == answer_name)
    with pytest.raises(AssertionError) as info:
        CHECKS[name](answer)
    assert expected in str(info.value)


def test_checks_are_silent_and_keep_the_global_rng(capfd):
    def noisy(T):
        print("debugging output")
        print("oops", file=sys.stderr)
        import warnings
        warnings.warn("a warning from the answer")
        return torch.ones(T, T, dtype=torch.bool).tril()

    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    priors.check_causal_mask(noisy)
    for name in ("sample_logits", "maskgit_generate"):
        CHECKS[name](next(c[1] for c in RIGHT if c[0] == name))
    with pytest.raises(AssertionError):
        priors.check_sample_logits(next(c[1] for c in WRONG if c[0] == "sample_logits"))
    assert torch.equal(torch.rand(3), expected)
    out, err = capfd.readouterr()
    assert out == "" and err == ""


def test_a_crashing_answer_becomes_an_assertion_naming_the_call():
    def broken(logits, k):
        raise NotImplementedError("TODO")

    with pytest.raises(AssertionError, match=r"top_k_filter\(logits \[4, 10\], k=1\) "
                                             r"raised NotImplementedError: TODO"):
        priors.check_top_k_filter(broken)


def test_a_monkeypatched_torch_fails_every_check(monkeypatch):
    monkeypatch.setattr(torch, "multinomial", lambda *a, **k: None)
    answer = next(c[1] for c in RIGHT if c[0] == "causal_mask")
    with pytest.raises(AssertionError, match="has replaced"):
        priors.check_causal_mask(answer)


def test_importing_the_checks_imports_nothing_heavy():
    code = ("import sys, grader.checks.priors; "
            "heavy = ('dvl_helpers', 'matplotlib', 'nbgrader'); "
            "bad = [m for m in sys.modules if m.split('.')[0] in heavy]; "
            "print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
