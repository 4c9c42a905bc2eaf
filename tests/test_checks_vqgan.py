"""The 05_vqgan checks against catalogues of wrong and of different-but-right answers."""
import pytest

from catalogue.harness import Catalogue, chatter, quiet_and_rng_kept
from grader.checks import vqgan

CAT = Catalogue(vqgan, "vqgan")
CHECKS = CAT.checks
NAMES = ["hinge_d_loss", "hinge_g_loss", "non_saturating_d_loss", "non_saturating_g_loss",
         "adaptive_weight", "perceptual_distance", "disc_weight", "patchgan_receptive_field"]

test_catalogues_cover_every_check = CAT.coverage_test(min_wrong=40, min_right=16, names=NAMES)
test_wrong_answer_fails = CAT.wrong_answers_test()
test_right_answer_passes = CAT.right_answers_test(seconds=2.0)
test_reference_passes_when_copied_but_fails_when_called = CAT.reference_test("dvl_helpers.vqgan", NAMES)
test_messages_say_what_is_wrong = CAT.messages_test([
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


def test_checks_are_silent_and_keep_the_global_rng(capfd):
    def noisy(logits_fake):
        chatter()
        return -logits_fake.mean()

    with quiet_and_rng_kept(capfd):
        vqgan.check_hinge_g_loss(noisy)
        for name in ("adaptive_weight", "perceptual_distance"):
            CHECKS[name](CAT.right_answer(name))
        with pytest.raises(AssertionError):
            vqgan.check_hinge_d_loss(CAT.wrong_answer("hinge_d_loss"))


def test_a_crashing_answer_becomes_an_assertion_naming_the_call():
    def broken(logits_real, logits_fake):
        raise NotImplementedError("TODO")

    with pytest.raises(AssertionError, match=r"hinge_d_loss\(logits_real, logits_fake\)"
                                             r".* raised NotImplementedError: TODO"):
        vqgan.check_hinge_d_loss(broken)


test_a_monkeypatched_torch_fails_every_check = CAT.patched_torch_test("hinge_g_loss")
test_every_check_is_fast = CAT.fast_test(seconds=1.0)
test_importing_the_checks_imports_nothing_heavy = CAT.light_import_test()
