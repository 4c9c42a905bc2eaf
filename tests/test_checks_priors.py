"""The 08_priors checks against catalogues of wrong and of different-but-right answers."""
import math

import pytest
import torch

from catalogue.harness import Catalogue, chatter, quiet_and_rng_kept
from grader.checks import priors

CAT = Catalogue(priors, "priors")
RIGHT, CHECKS = CAT.right, CAT.checks
NAMES = ["causal_mask", "top_k_filter", "sample_logits", "sample_autoregressive",
         "maskgit_schedule", "maskgit_decode_step", "maskgit_generate"]

test_catalogues_cover_every_check = CAT.coverage_test(min_wrong=50, min_right=20, names=NAMES)
test_wrong_answer_fails = CAT.wrong_answers_test()
test_right_answer_passes = CAT.right_answers_test(seconds=3.0)


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


test_reference_passes_when_copied_but_fails_when_called = CAT.reference_test(
    "dvl_helpers.priors", NAMES, parametrize=False)
test_messages_say_what_is_wrong = CAT.messages_test([
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


def test_checks_are_silent_and_keep_the_global_rng(capfd):
    def noisy(T):
        chatter()
        return torch.ones(T, T, dtype=torch.bool).tril()

    with quiet_and_rng_kept(capfd):
        priors.check_causal_mask(noisy)
        for name in ("sample_logits", "maskgit_generate"):
            CHECKS[name](CAT.right_answer(name))
        with pytest.raises(AssertionError):
            priors.check_sample_logits(CAT.wrong_answer("sample_logits"))


def test_a_crashing_answer_becomes_an_assertion_naming_the_call():
    def broken(logits, k):
        raise NotImplementedError("TODO")

    with pytest.raises(AssertionError, match=r"top_k_filter\(logits \[4, 10\], k=1\) "
                                             r"raised NotImplementedError: TODO"):
        priors.check_top_k_filter(broken)


test_a_monkeypatched_torch_fails_every_check = CAT.patched_torch_test(
    "causal_mask", attribute="multinomial", returns=None)
test_importing_the_checks_imports_nothing_heavy = CAT.light_import_test()
