"""The 00_vae checks against catalogues of wrong and of different-but-right answers."""
import importlib.util
import pathlib
import subprocess
import sys
import time

import pytest
import torch

from grader.checks import vae

CATALOGUE = pathlib.Path(__file__).parent / "catalogue"


def _load(name):
    spec = importlib.util.spec_from_file_location(f"_catalogue_{name}", CATALOGUE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


WRONG = _load("vae_wrong").CASES
RIGHT = _load("vae_right").CASES
CHECKS = {name[len("check_"):]: getattr(vae, name) for name in vae.__all__}


def _id(case):
    return f"{case[0]}-{case[1].__name__}"


def test_catalogues_cover_every_check():
    assert {c[0] for c in WRONG} == set(CHECKS)
    assert {c[0] for c in RIGHT} == set(CHECKS)
    assert len(WRONG) >= 20 and len(RIGHT) >= 8
    for name in CHECKS:
        assert sum(c[0] == name for c in WRONG) >= 5, f"few wrong answers for {name}"
        assert sum(c[0] == name for c in RIGHT) >= 3, f"few right answers for {name}"
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


@pytest.mark.parametrize("name", ["reparameterize", "gaussian_kl", "negative_elbo", "VAE"])
def test_reference_passes_when_copied_but_fails_when_called(name):
    """The library's own code passes the checks when it is the learner's own copy."""
    import dvl_helpers.vae as ref

    with pytest.raises(AssertionError, match="reference implementation"):
        CHECKS[name](getattr(ref, name))
    source = pathlib.Path(ref.__file__).read_text()
    namespace = {"__name__": "learner_notebook"}
    exec(compile(source, "<learner cell>", "exec"), namespace)
    CHECKS[name](namespace[name])


@pytest.mark.parametrize("message_case", [
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
def test_messages_say_what_is_wrong(message_case):
    name, answer_name, expected = message_case
    answer = next(c[1] for c in WRONG if c[0] == name and c[1].__name__ == answer_name)
    with pytest.raises(AssertionError) as info:
        CHECKS[name](answer)
    assert expected in str(info.value)


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
        print("debugging output")
        print("oops", file=sys.stderr)
        import warnings
        warnings.warn("a warning from the answer")
        return mu + torch.exp(0.5 * logvar) * torch.randn(mu.shape, generator=generator,
                                                          device=mu.device)

    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    vae.check_reparameterize(noisy)      # it seeds the global generator itself
    vae.check_VAE(RIGHT[-1][1])
    with pytest.raises(AssertionError):
        vae.check_gaussian_kl(next(c[1] for c in WRONG if c[0] == "gaussian_kl"))
    assert torch.equal(torch.rand(3), expected)
    out, err = capfd.readouterr()
    assert out == "" and err == ""


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


def test_a_monkeypatched_torch_fails_the_checks(monkeypatch):
    monkeypatch.setattr(torch, "allclose", lambda *a, **k: True)
    answer = next(c[1] for c in RIGHT if c[0] == "gaussian_kl")
    with pytest.raises(AssertionError, match="has replaced"):
        vae.check_gaussian_kl(answer)


def test_every_check_is_fast():
    answers = {name: answer for name, answer, _ in reversed(RIGHT)}
    for name, check in CHECKS.items():
        start = time.perf_counter()
        check(answers[name])
        assert time.perf_counter() - start < 1.0, f"check_{name} took too long"


def test_importing_the_checks_imports_nothing_heavy():
    code = ("import sys, grader.checks.vae; "
            "heavy = ('dvl_helpers', 'matplotlib', 'nbgrader'); "
            "bad = [m for m in sys.modules if m.split('.')[0] in heavy]; "
            "print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
