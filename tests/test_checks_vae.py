"""The 00_vae checks against catalogues of wrong and of different-but-right answers."""
import pytest
import torch

from catalogue.harness import Catalogue, chatter, quiet_and_rng_kept
from grader.checks import vae

CAT = Catalogue(vae, "vae")
RIGHT = CAT.right

test_catalogues_cover_every_check = CAT.coverage_test(min_wrong=20, min_right=8, per_check=(5, 3))
test_wrong_answer_fails = CAT.wrong_answers_test()
test_right_answer_passes = CAT.right_answers_test(seconds=2.0)
test_reference_passes_when_copied_but_fails_when_called = CAT.reference_test(
    "dvl_helpers.vae", ["reparameterize", "gaussian_kl", "negative_elbo", "VAE"])
test_messages_say_what_is_wrong = CAT.messages_test([
    ("reparameterize", "rep_variance_as_std", "the standard deviation is exp(logvar / 2)"),
    ("reparameterize", "rep_ignores_generator", "generators in the same state"),
    ("reparameterize", "rep_eps_reused", "different seeds"),
    ("reparameterize", "rep_eps_per_unit", "separate eps for every element"),
    ("reparameterize", "rep_uniform_standardised", "not Gaussian"),
    ("reparameterize", "rep_detached_mu", "no gradient reaches mu"),
    ("reparameterize", "rep_detached_std", "no gradient reaches logvar"),
    ("reparameterize", "rep_in_place", "must not modify its inputs"),
    ("reparameterize", "rep_cpu_noise", "draw eps on mu's device"),
    ("gaussian_kl", "kl_dim1_only", "sum over every dimension except the first"),
    ("gaussian_kl", "kl_squeezed", "must have shape [B] = (1,), got ()"),
    ("gaussian_kl", "kl_mean_over_units", "got [1.25]"),
    ("negative_elbo", "elbo_recon_sum_batch", "average it"),
    ("negative_elbo", "elbo_beta_on_recon", "must be recon + beta * kl"),
    ("negative_elbo", "elbo_kl_weighted", "kl for"),
    ("negative_elbo", "elbo_clamped_log", "compute the Bernoulli log-likelihood from the logits"),
    ("negative_elbo", "elbo_naive_log", "must be finite"),
    ("negative_elbo", "elbo_reference_kl", "reference implementation dvl_helpers.vae.gaussian_kl"),
    ("VAE", "VAEDecodesMean", "must decode a sample z"),
    ("VAE", "VAEVarianceAsStd", "exp(logvar / 2) is the standard deviation"),
    ("VAE", "VAEIgnoresGenerator", "generators in the same state"),
    ("VAE", "VAESwapped", "(in this order)"),
    ("VAE", "VAEFixedLatent", "must have shape [B, latent_dim] = (2, 5)"),
    ("VAE", "VAESubclassReference", "reference implementation dvl_helpers.vae.VAE"),
])


def test_recon_averaged_over_pixels_is_named():
    """A mean over pixels is told apart from other wrong values once the hand case passes."""
    def mean_over_pixels_after_hand_case(x, x_logits, mu, logvar, beta=1.0):
        nll = torch.nn.functional.binary_cross_entropy_with_logits(x_logits, x, reduction="none")
        recon = nll.flatten(1).sum(1).mean() if x.numel() == 2 else nll.mean()
        kl = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(1).mean()
        return recon + beta * kl, recon, kl

    with pytest.raises(AssertionError, match="averaged over the pixels"):
        vae.check_negative_elbo(mean_over_pixels_after_hand_case)


def test_checks_are_silent_and_keep_the_global_rng(capfd):
    def noisy(mu, logvar, generator=None):
        chatter()
        return mu + torch.exp(0.5 * logvar) * torch.randn(mu.shape, generator=generator,
                                                          device=mu.device)

    with quiet_and_rng_kept(capfd):
        vae.check_reparameterize(noisy)      # it seeds the global generator itself
        vae.check_VAE(RIGHT[-1][1])
        with pytest.raises(AssertionError):
            vae.check_gaussian_kl(CAT.wrong_answer("gaussian_kl"))


def test_a_crashing_answer_becomes_an_assertion_naming_the_call():
    def broken(x, x_logits, mu, logvar, beta=1.0):
        raise NotImplementedError("TODO")

    with pytest.raises(AssertionError, match=r"negative_elbo\(x, x_logits, mu, logvar\) .*"
                                             r"raised NotImplementedError: TODO"):
        vae.check_negative_elbo(broken)

    class Unfinished(torch.nn.Module):
        def __init__(self, in_channels=1, latent_dim=2, hidden=32, res_hidden=8,
                     num_res_blocks=1, image_size=32):
            super().__init__()
            raise NotImplementedError()

    with pytest.raises(AssertionError, match=r"VAE\(in_channels=1, .*\) raised NotImplementedError"):
        vae.check_VAE(Unfinished)


def test_not_a_module_is_refused():
    with pytest.raises(AssertionError, match="subclass of torch.nn.Module"):
        vae.check_VAE(lambda **kwargs: None)


test_a_monkeypatched_torch_fails_the_checks = CAT.patched_torch_test("gaussian_kl")
test_every_check_is_fast = CAT.fast_test(seconds=1.0)
test_importing_the_checks_imports_nothing_heavy = CAT.light_import_test()
