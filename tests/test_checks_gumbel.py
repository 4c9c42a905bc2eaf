"""The 03_gumbel_dvae checks against catalogues of wrong and of different-but-right answers."""
import math

import pytest
import torch

from catalogue.harness import Catalogue, chatter, quiet_and_rng_kept
from grader.checks import gumbel

CAT = Catalogue(gumbel, "gumbel")
RIGHT, CHECKS = CAT.right, CAT.checks
NAMES = ["sample_gumbel", "gumbel_softmax", "temperature_schedule", "kl_to_uniform",
         "GumbelQuantizer"]


def _answer(catalogue, name):
    return next(c[1] for c in catalogue if c[1].__name__ == name)


test_catalogues_cover_every_check = CAT.coverage_test(min_wrong=60, min_right=16, names=NAMES)
test_wrong_answer_fails = CAT.wrong_answers_test()
test_right_answer_passes = CAT.right_answers_test(seconds=3.0)
test_reference_passes_when_copied_but_fails_when_called = CAT.reference_test("dvl_helpers.gumbel", NAMES)


# Statistical checks: a correct answer that draws its noise in another way sees other
# samples. Shifting the generators' streams (or the layer's global seed) stands for
# those answers; none of them may be rejected.

def _shifted_gumbel_softmax(shift):
    def gumbel_softmax(logits, tau=1.0, hard=False, dim=-1, generator=None):
        if generator is not None:
            torch.rand(shift, generator=generator)           # another stretch of the stream
        u = torch.rand(logits.shape, generator=generator)
        g = -torch.log(-torch.log(u + 1e-10) + 1e-10)
        y = torch.softmax((logits + g) / tau, dim=dim)
        if not hard:
            return y
        y_hard = torch.zeros_like(y).scatter_(dim, y.argmax(dim, keepdim=True), 1.0)
        return y_hard - y.detach() + y
    return gumbel_softmax


def _shifted_sample_gumbel(shift):
    def sample_gumbel(shape, generator=None, eps=1e-10):
        if generator is not None:
            torch.rand(shift, generator=generator)
        u = torch.rand(shape, generator=generator)
        return -torch.log(-torch.log(u + eps) + eps)
    return sample_gumbel


@pytest.mark.parametrize("block", range(4))
def test_statistical_checks_accept_correct_answers_on_many_draws(block):
    for shift in range(1 + 10 * block, 11 + 10 * block):
        gumbel.check_sample_gumbel(_shifted_sample_gumbel(shift))
        gumbel.check_gumbel_softmax(_shifted_gumbel_softmax(shift))


def test_quantizer_check_accepts_a_correct_layer_on_many_draws():
    layer = _answer(RIGHT, "GQPlain")
    for shift in range(1, 16):
        class Shifted(layer):
            def forward(self, z, _shift=shift):
                torch.rand(_shift)                               # another stretch of the stream
                return super().forward(z)
        gumbel.check_GumbelQuantizer(Shifted)


def test_test_statistics_match_known_values():
    # chi-square with 2 degrees of freedom: p = exp(-stat / 2); here stat = 12.5
    counts = torch.tensor([50.0, 25.0, 25.0])
    assert gumbel.chi2_pvalue(counts, torch.full((3,), 1 / 3)) == pytest.approx(math.exp(-6.25))
    # KS: exact logistic quantiles have p near 1, shifted ones p near 0
    u = (torch.arange(1, 2001, dtype=torch.float64) - 0.5) / 2000
    quantiles = torch.log(u / (1 - u))
    assert gumbel.ks_pvalue(quantiles, torch.sigmoid) > 0.99
    assert gumbel.ks_pvalue(quantiles + 0.5, torch.sigmoid) < 1e-20


test_messages_say_what_is_wrong = CAT.messages_test([
    ("sample_gumbel", "gumbel_exponential", "Kolmogorov-Smirnov"),
    ("sample_gumbel", "gumbel_global", "the same seed gave two different samples"),
    ("sample_gumbel", "gumbel_reference", "reference implementation dvl_helpers.gumbel"),
    ("gumbel_softmax", "gs_uniform_noise", "Gumbel-max trick"),
    ("gumbel_softmax", "gs_noise_after_tau", "sharper"),
    ("gumbel_softmax", "gs_tau_ignored", "sharper"),
    ("gumbel_softmax", "gs_times_tau", "sharper"),
    ("gumbel_softmax", "gs_wrong_dim", "must sum to 1 along dim=0"),
    ("gumbel_softmax", "gs_hard_no_gradient", "straight-through"),
    ("gumbel_softmax", "gs_hard_is_soft", "one-hot"),
    ("gumbel_softmax", "gs_hard_noise_free", "the hard samples must follow softmax(logits)"),
    ("gumbel_softmax", "gs_torch_builtin", "must draw its noise from generator"),
    ("gumbel_softmax", "gs_in_place", "must not modify its inputs in place"),
    ("gumbel_softmax", "gs_exponential_noise", "Gumbel-max trick"),
    ("temperature_schedule", "sched_unclamped", "min(step / anneal_steps, 1)"),
    ("temperature_schedule", "sched_swapped", "are the two swapped"),
    ("temperature_schedule", "sched_default_linear", "the default kind is 'exp'"),
    ("temperature_schedule", "sched_integer_division", "float division"),
    ("temperature_schedule", "sched_tensor", "must return a Python float"),
    ("kl_to_uniform", "kl_mean_positions", "do not average"),
    ("kl_to_uniform", "kl_wrong_sign", "sign is flipped"),
    ("kl_to_uniform", "kl_reverse", "KL(U || q)"),
    ("kl_to_uniform", "kl_naive_log", "log_softmax"),
    ("kl_to_uniform", "kl_xlogy", "gradient"),
    ("kl_to_uniform", "kl_no_log_k", "log K is missing"),
    ("GumbelQuantizer", "GQSumLogits", "probability vector"),
    ("GumbelQuantizer", "GQHard", "whole codes"),
    ("GumbelQuantizer", "GQNoiseAfterTau", "Gumbel-softmax distribution"),
    ("GumbelQuantizer", "GQKLMeanPositions", "do not average"),
    ("GumbelQuantizer", "GQKLSumBatch", "do not sum"),
    ("GumbelQuantizer", "GQIndicesFromLogits", "argmax over the codes of the sample"),
    ("GumbelQuantizer", "GQNoisyEval", "deterministic"),
    ("GumbelQuantizer", "GQBufferCodebook", "nn.Parameter"),
    ("GumbelQuantizer", "GQNoTau", "tau"),
    ("GumbelQuantizer", "GQSubclassReference", "reference implementation"),
    ("GumbelQuantizer", "GQDelegates", "reference implementation"),
])


def test_checks_are_silent_and_keep_the_global_rng(capfd):
    def noisy(step, tau_start, tau_end, anneal_steps, kind="exp"):
        chatter()
        f = min(step / anneal_steps, 1.0)
        if kind == "exp":
            return tau_start * (tau_end / tau_start) ** f
        return tau_start + (tau_end - tau_start) * f

    with quiet_and_rng_kept(capfd):
        gumbel.check_temperature_schedule(noisy)
        for name in ("sample_gumbel", "gumbel_softmax", "GumbelQuantizer"):
            CHECKS[name](CAT.right_answer(name))
        with pytest.raises(AssertionError):
            gumbel.check_GumbelQuantizer(CAT.wrong_answer("GumbelQuantizer"))


def test_a_crashing_answer_becomes_an_assertion_naming_the_call():
    def broken(logits, tau=1.0, hard=False, dim=-1, generator=None):
        raise NotImplementedError("TODO")

    with pytest.raises(AssertionError, match=r"gumbel_softmax\(logits \[4, 5\], tau=1.0, "
                                             r"generator=g\) raised NotImplementedError: TODO"):
        gumbel.check_gumbel_softmax(broken)


test_a_monkeypatched_torch_fails_every_check = CAT.patched_torch_test("kl_to_uniform")
test_every_check_is_fast = CAT.fast_test(seconds=1.5)
test_importing_the_checks_imports_nothing_heavy = CAT.light_import_test(
    heavy=("dvl_helpers", "matplotlib", "nbgrader", "scipy"))
