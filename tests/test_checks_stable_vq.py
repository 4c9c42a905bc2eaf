"""The 02_stable_vq checks against catalogues of wrong and of different-but-right answers."""
import pytest
import torch

from catalogue.harness import Catalogue, chatter, quiet_and_rng_kept
from grader.checks import stable_vq

CAT = Catalogue(stable_vq, "stable_vq")
RIGHT, CHECKS = CAT.right, CAT.checks
NAMES = ["ema_update", "kmeans_init", "dead_codes", "reset_dead_codes", "codebook_entropy_loss",
         "EMAVectorQuantizer"]

test_catalogues_cover_every_check = CAT.coverage_test(min_wrong=40, min_right=14, names=NAMES)
test_wrong_answer_fails = CAT.wrong_answers_test()
test_right_answer_passes = CAT.right_answers_test(seconds=2.0)
test_reference_passes_when_copied_but_fails_when_called = CAT.reference_test(
    "dvl_helpers.quantizers", NAMES)


def test_phase_one_reference_pieces_are_allowed():
    """Later phases build on earlier ones: using the reference nearest_code is fine."""
    from dvl_helpers.quantizers import nearest_code

    answer = next(c[1] for c in RIGHT if c[1].__name__ == "EMAWithReferencePieces")
    stable_vq.check_EMAVectorQuantizer(answer)

    def dead(cluster_size, threshold):
        nearest_code(torch.zeros(1, 1), torch.zeros(1, 1))
        return cluster_size < threshold

    stable_vq.check_dead_codes(dead)


test_messages_say_what_is_wrong = CAT.messages_test([
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


def test_checks_are_silent_and_keep_the_global_rng(capfd):
    def noisy(cluster_size, threshold):
        chatter()
        return cluster_size < threshold

    with quiet_and_rng_kept(capfd):
        stable_vq.check_dead_codes(noisy)
        for name in ("kmeans_init", "reset_dead_codes", "EMAVectorQuantizer"):
            CHECKS[name](CAT.right_answer(name))
        with pytest.raises(AssertionError):
            stable_vq.check_kmeans_init(CAT.wrong_answer("kmeans_init"))


def test_a_crashing_answer_becomes_an_assertion_naming_the_call():
    def broken(distances, tau=1.0):
        raise NotImplementedError("TODO")

    with pytest.raises(AssertionError, match=r"codebook_entropy_loss\(distances, tau\) "
                                             r"\(.*\) raised NotImplementedError: TODO"):
        stable_vq.check_codebook_entropy_loss(broken)


test_a_monkeypatched_torch_fails_every_check = CAT.patched_torch_test("dead_codes")
test_every_check_is_fast = CAT.fast_test(seconds=1.0)
test_importing_the_checks_imports_nothing_heavy = CAT.light_import_test()
