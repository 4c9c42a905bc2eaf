"""The 04_hierarchical_vq checks against catalogues of wrong and of different-but-right answers."""
import pytest

from catalogue.harness import Catalogue, chatter, quiet_and_rng_kept
from grader.checks import hierarchical_vq

CAT = Catalogue(hierarchical_vq, "hierarchical_vq")
CHECKS = CAT.checks
NAMES = ["residual_quantize", "product_quantize", "ResidualVQ", "ProductVQ", "VQVAE2"]

test_catalogues_cover_every_check = CAT.coverage_test(min_wrong=40, min_right=14, names=NAMES)
test_wrong_answer_fails = CAT.wrong_answers_test()
test_right_answer_passes = CAT.right_answers_test(seconds=2.0)
test_reference_passes_when_copied_but_fails_when_called = CAT.reference_test(
    "dvl_helpers.hierarchical", NAMES)
test_messages_say_what_is_wrong = CAT.messages_test([
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


def test_checks_are_silent_and_keep_the_global_rng(capfd):
    def noisy(z, codebooks):
        chatter()
        return CAT.right_answer("residual_quantize")(z, codebooks)

    with quiet_and_rng_kept(capfd):
        hierarchical_vq.check_residual_quantize(noisy)
        for name in ("ResidualVQ", "VQVAE2"):
            CHECKS[name](CAT.right_answer(name))
        with pytest.raises(AssertionError):
            hierarchical_vq.check_ProductVQ(CAT.wrong_answer("ProductVQ"))


def test_a_crashing_answer_becomes_an_assertion_naming_the_call():
    def broken(z, codebooks):
        raise NotImplementedError("TODO")

    with pytest.raises(AssertionError, match=r"residual_quantize\(z, codebooks\) raised "
                                             r"NotImplementedError: TODO"):
        hierarchical_vq.check_residual_quantize(broken)


test_a_monkeypatched_torch_fails_every_check = CAT.patched_torch_test("product_quantize")
test_every_check_is_fast = CAT.fast_test(seconds=1.0)
test_importing_the_checks_imports_nothing_heavy = CAT.light_import_test()
