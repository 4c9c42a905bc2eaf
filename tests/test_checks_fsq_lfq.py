"""The 06_fsq_lfq checks against catalogues of wrong and of different-but-right answers."""
import pytest
import torch

from catalogue.harness import Catalogue, chatter, quiet_and_rng_kept
from grader.checks import fsq_lfq

CAT = Catalogue(fsq_lfq, "fsq_lfq")
CHECKS = CAT.checks
NAMES = ["fsq_bound", "round_ste", "fsq_quantize", "fsq_codes_to_indices", "fsq_indices_to_codes",
         "lfq_quantize", "lfq_codes_to_indices", "lfq_indices_to_codes", "lfq_entropy_loss",
         "FSQ", "LFQ"]

test_catalogues_cover_every_check = CAT.coverage_test(min_wrong=60, min_right=25, names=NAMES)
test_wrong_answer_fails = CAT.wrong_answers_test()
test_right_answer_passes = CAT.right_answers_test(seconds=2.0)
test_reference_passes_when_copied_but_fails_when_called = CAT.reference_test("dvl_helpers.fsq", NAMES)
test_messages_say_what_is_wrong = CAT.messages_test([
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


def test_checks_are_silent_and_keep_the_global_rng(capfd):
    def noisy(z):
        chatter()
        return z + (torch.round(z) - z).detach()

    with quiet_and_rng_kept(capfd):
        fsq_lfq.check_round_ste(noisy)
        for name in ("FSQ", "LFQ", "lfq_entropy_loss"):
            CHECKS[name](CAT.right_answer(name))
        with pytest.raises(AssertionError):
            fsq_lfq.check_fsq_bound(CAT.wrong_answer("fsq_bound"))


def test_a_crashing_answer_becomes_an_assertion_naming_the_call():
    def broken(z, levels):
        raise NotImplementedError("TODO")

    with pytest.raises(AssertionError, match=r"fsq_bound\(zeros\(3, 4\), .*\) raised "
                                             r"NotImplementedError: TODO"):
        fsq_lfq.check_fsq_bound(broken)


test_a_monkeypatched_torch_fails_every_check = CAT.patched_torch_test("round_ste")
test_every_check_is_fast = CAT.fast_test(seconds=1.0)
test_importing_the_checks_imports_nothing_heavy = CAT.light_import_test()
