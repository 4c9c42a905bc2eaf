"""The 01_vqvae checks against catalogues of wrong and of different-but-right answers."""

import pytest
import torch

from catalogue.harness import Catalogue, chatter, quiet_and_rng_kept
from grader.checks import vqvae

CAT = Catalogue(vqvae, "vqvae")
RIGHT = CAT.right

test_catalogues_cover_every_check = CAT.coverage_test(min_wrong=25, min_right=8)
test_wrong_answer_fails = CAT.wrong_answers_test()
test_right_answer_passes = CAT.right_answers_test(seconds=2.0)
test_reference_passes_when_copied_but_fails_when_called = CAT.reference_test(
    "dvl_helpers.quantizers", ["pairwise_sq_distances", "nearest_code", "quantize", "vq_losses",
                               "straight_through", "code_usage", "perplexity", "VectorQuantizer"])
test_messages_say_what_is_wrong = CAT.messages_test([
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


def test_checks_are_silent_and_keep_the_global_rng(capfd):
    def noisy(z, codebook):
        chatter()
        return torch.cdist(z, codebook) ** 2

    with quiet_and_rng_kept(capfd):
        vqvae.check_pairwise_sq_distances(noisy)
        vqvae.check_VectorQuantizer(RIGHT[-1][1])
        with pytest.raises(AssertionError):
            vqvae.check_quantize(CAT.wrong_answer("quantize"))


def test_a_crashing_answer_becomes_an_assertion_naming_the_call():
    def broken(z_e, codebook):
        raise NotImplementedError("TODO")

    expected = r"quantize\(z_e, codebook\) raised NotImplementedError: TODO"
    with pytest.raises(AssertionError, match=expected):
        vqvae.check_quantize(broken)


test_a_monkeypatched_torch_fails_every_check = CAT.patched_torch_test("perplexity", patches=[
    (torch, "allclose"), (torch, "equal"), (torch.Tensor, "__eq__"), (torch.Tensor, "__sub__"),
    (torch.Tensor, "sub"), (torch, "abs"), (torch.nn.functional, "mse_loss"),
])


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


test_every_check_is_fast = CAT.fast_test(seconds=1.0)
test_importing_the_checks_imports_nothing_heavy = CAT.light_import_test()
