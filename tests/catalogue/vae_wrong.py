"""Wrong answers to 00_vae: every check must reject each one.

``CASES`` holds ``(check name, answer, what is wrong)``. Most are mistakes
learners make (the variance used as a standard deviation, the KL averaged over
latent units, MSE for a Bernoulli likelihood, beta on the wrong term, a
sigmoid too many); a few are shortcuts the grader must refuse (calling the
course's reference implementation, noise that ignores the generator).
"""
import math

import torch
import torch.nn.functional as F
from torch import nn

import dvl_helpers
import dvl_helpers.vae as ref_vae
from dvl_helpers.nn import Decoder, Encoder
from dvl_helpers.vae import VAE as RefVAE

CASES = []


def wrong(check, why):
    def register(answer):
        CASES.append((check, answer, why))
        return answer
    return register


# correct pieces the wrong answers below are built from
def _eps(mu, generator):
    return torch.randn(mu.shape, generator=generator, dtype=mu.dtype)


def _kl(mu, logvar):
    return 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).flatten(1).sum(1)


def _bce(x, x_logits):
    return F.binary_cross_entropy_with_logits(x_logits, x, reduction="none").flatten(1).sum(1)


# ---------------------------------------------------------------- reparameterize

@wrong("reparameterize", "the variance exp(logvar) used as the standard deviation")
def rep_variance_as_std(mu, logvar, generator=None):
    return mu + torch.exp(logvar) * _eps(mu, generator)


@wrong("reparameterize", "logvar taken as the log standard deviation: exp(logvar)^2")
def rep_logvar_as_log_std(mu, logvar, generator=None):
    return mu + torch.exp(2 * logvar) * _eps(mu, generator)


@wrong("reparameterize", "the standard deviation taken as logvar itself")
def rep_logvar_as_std(mu, logvar, generator=None):
    return mu + logvar * _eps(mu, generator)


@wrong("reparameterize", "eps from torch's global generator: the generator is ignored")
def rep_ignores_generator(mu, logvar, generator=None):
    return mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)


_EPS_CACHE = {}


@wrong("reparameterize", "eps drawn once per shape and reused on every call")
def rep_eps_reused(mu, logvar, generator=None):
    key = tuple(mu.shape)
    if key not in _EPS_CACHE:
        _EPS_CACHE[key] = _eps(mu, generator)
    return mu + torch.exp(0.5 * logvar) * _EPS_CACHE[key]


@wrong("reparameterize", "the generator re-seeded inside: the same eps every time")
def rep_reseeds(mu, logvar, generator=None):
    g = torch.Generator().manual_seed(0)
    return mu + torch.exp(0.5 * logvar) * _eps(mu, g)


@wrong("reparameterize", "eps of shape [D], shared by every item of the batch")
def rep_eps_per_unit(mu, logvar, generator=None):
    eps = torch.randn(mu.shape[1:], generator=generator)
    return mu + torch.exp(0.5 * logvar) * eps


@wrong("reparameterize", "eps of shape [B, 1], shared by every unit of an item")
def rep_eps_per_item(mu, logvar, generator=None):
    eps = torch.randn(mu.shape[0], *([1] * (mu.dim() - 1)), generator=generator)
    return mu + torch.exp(0.5 * logvar) * eps


@wrong("reparameterize", "one scalar eps for the whole tensor")
def rep_eps_scalar(mu, logvar, generator=None):
    return mu + torch.exp(0.5 * logvar) * torch.randn(1, generator=generator)


@wrong("reparameterize", "uniform noise torch.rand instead of a Gaussian")
def rep_uniform(mu, logvar, generator=None):
    return mu + torch.exp(0.5 * logvar) * torch.rand(mu.shape, generator=generator)


@wrong("reparameterize", "uniform noise with mean 0 and variance 1 (not Gaussian)")
def rep_uniform_standardised(mu, logvar, generator=None):
    u = torch.rand(mu.shape, generator=generator) * 2 - 1
    return mu + torch.exp(0.5 * logvar) * u * math.sqrt(3)


@wrong("reparameterize", "returns the mean: no sampling at all")
def rep_mean_only(mu, logvar, generator=None):
    return mu + 0 * logvar


@wrong("reparameterize", "no gradient through mu")
def rep_detached_mu(mu, logvar, generator=None):
    return mu.detach() + torch.exp(0.5 * logvar) * _eps(mu, generator)


@wrong("reparameterize", "no gradient through logvar (std detached)")
def rep_detached_std(mu, logvar, generator=None):
    return mu + torch.exp(0.5 * logvar).detach() * _eps(mu, generator)


@wrong("reparameterize", "z sampled by torch.normal: no gradient, generator aside")
def rep_torch_normal(mu, logvar, generator=None):
    return torch.normal(mu, torch.exp(0.5 * logvar), generator=generator)


@wrong("reparameterize", "modifies logvar in place")
def rep_in_place(mu, logvar, generator=None):
    std = logvar.mul_(0.5).exp_()
    return mu + std * _eps(mu, generator)


@wrong("reparameterize", "eps always on the CPU: fails for latents on a GPU")
def rep_cpu_noise(mu, logvar, generator=None):
    return mu + torch.exp(0.5 * logvar) * torch.randn(mu.shape, generator=generator)


@wrong("reparameterize", "calls the reference implementation")
def rep_reference(mu, logvar, generator=None):
    return ref_vae.reparameterize(mu, logvar, generator)


@wrong("reparameterize", "calls the reference through the package attribute")
def rep_reference_attribute(mu, logvar, generator=None):
    return dvl_helpers.vae.reparameterize(mu, logvar, generator=generator)


# ---------------------------------------------------------------- gaussian_kl

@wrong("gaussian_kl", "averaged over the latent units instead of summed")
def kl_mean_over_units(mu, logvar):
    return 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).flatten(1).mean(1)


@wrong("gaussian_kl", "sign error: 0.5 * sum(1 + logvar - mu^2 - exp(logvar))")
def kl_sign(mu, logvar):
    return 0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).flatten(1).sum(1)


@wrong("gaussian_kl", "missing the factor 1/2")
def kl_no_half(mu, logvar):
    return (mu.pow(2) + logvar.exp() - 1 - logvar).flatten(1).sum(1)


@wrong("gaussian_kl", "missing the -1: not zero at the prior")
def kl_no_one(mu, logvar):
    return 0.5 * (mu.pow(2) + logvar.exp() - logvar).flatten(1).sum(1)


@wrong("gaussian_kl", "missing mu^2")
def kl_no_mu(mu, logvar):
    return 0.5 * (logvar.exp() - 1 - logvar).flatten(1).sum(1)


@wrong("gaussian_kl", "logvar taken as the log standard deviation")
def kl_log_std(mu, logvar):
    return 0.5 * (mu.pow(2) + (2 * logvar).exp() - 1 - 2 * logvar).flatten(1).sum(1)


@wrong("gaussian_kl", "the standard deviation where the variance belongs")
def kl_std_for_var(mu, logvar):
    return 0.5 * (mu.pow(2) + (0.5 * logvar).exp() - 1 - logvar).flatten(1).sum(1)


@wrong("gaussian_kl", "summed over the batch too: a scalar")
def kl_scalar(mu, logvar):
    return 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum()


@wrong("gaussian_kl", "keepdim: [B, 1]")
def kl_keepdim(mu, logvar):
    return 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(1, keepdim=True)


@wrong("gaussian_kl", "summed over dim 1 only: [B, H, W] for 4-D latents")
def kl_dim1_only(mu, logvar):
    return 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(dim=1)


@wrong("gaussian_kl", "squeezed: a 0-dim tensor when B = 1")
def kl_squeezed(mu, logvar):
    return _kl(mu, logvar).squeeze()


@wrong("gaussian_kl", "torch.distributions with exp(logvar) as the scale")
def kl_distributions_var_as_scale(mu, logvar):
    q = torch.distributions.Normal(mu, logvar.exp())
    p = torch.distributions.Normal(torch.zeros_like(mu), torch.ones_like(mu))
    return torch.distributions.kl_divergence(q, p).flatten(1).sum(1)


@wrong("gaussian_kl", "KL(p || q) instead of KL(q || p)")
def kl_reversed(mu, logvar):
    q = torch.distributions.Normal(mu, (0.5 * logvar).exp())
    p = torch.distributions.Normal(torch.zeros_like(mu), torch.ones_like(mu))
    return torch.distributions.kl_divergence(p, q).flatten(1).sum(1)


@wrong("gaussian_kl", "no gradient: computed on detached inputs")
def kl_detached(mu, logvar):
    return _kl(mu.detach(), logvar.detach())


@wrong("gaussian_kl", "calls the reference implementation")
def kl_reference(mu, logvar):
    from dvl_helpers.vae import gaussian_kl as reference
    return reference(mu, logvar)


# ---------------------------------------------------------------- negative_elbo

def _elbo(recon, kl, beta):
    return recon + beta * kl, recon, kl


@wrong("negative_elbo", "MSE instead of the Bernoulli likelihood")
def elbo_mse(x, x_logits, mu, logvar, beta=1.0):
    recon = (torch.sigmoid(x_logits) - x).pow(2).flatten(1).sum(1).mean()
    return _elbo(recon, _kl(mu, logvar).mean(), beta)


@wrong("negative_elbo", "reconstruction averaged over the pixels (the default reduction)")
def elbo_recon_mean_pixels(x, x_logits, mu, logvar, beta=1.0):
    recon = F.binary_cross_entropy_with_logits(x_logits, x)
    return _elbo(recon, _kl(mu, logvar).mean(), beta)


@wrong("negative_elbo", "reconstruction summed over the batch")
def elbo_recon_sum_batch(x, x_logits, mu, logvar, beta=1.0):
    recon = F.binary_cross_entropy_with_logits(x_logits, x, reduction="sum")
    return _elbo(recon, _kl(mu, logvar).mean(), beta)


@wrong("negative_elbo", "KL summed over the batch")
def elbo_kl_sum_batch(x, x_logits, mu, logvar, beta=1.0):
    return _elbo(_bce(x, x_logits).mean(), _kl(mu, logvar).sum(), beta)


@wrong("negative_elbo", "beta on the reconstruction term")
def elbo_beta_on_recon(x, x_logits, mu, logvar, beta=1.0):
    recon, kl = _bce(x, x_logits).mean(), _kl(mu, logvar).mean()
    return beta * recon + kl, recon, kl


@wrong("negative_elbo", "kl returned with beta already applied")
def elbo_kl_weighted(x, x_logits, mu, logvar, beta=1.0):
    recon, kl = _bce(x, x_logits).mean(), beta * _kl(mu, logvar).mean()
    return recon + kl, recon, kl


@wrong("negative_elbo", "beta ignored")
def elbo_no_beta(x, x_logits, mu, logvar, beta=1.0):
    recon, kl = _bce(x, x_logits).mean(), _kl(mu, logvar).mean()
    return recon + kl, recon, kl


@wrong("negative_elbo", "the ELBO's sign: recon - beta * kl")
def elbo_minus_kl(x, x_logits, mu, logvar, beta=1.0):
    recon, kl = _bce(x, x_logits).mean(), _kl(mu, logvar).mean()
    return recon - beta * kl, recon, kl


@wrong("negative_elbo", "sigmoid applied twice: BCE with logits on probabilities")
def elbo_double_sigmoid(x, x_logits, mu, logvar, beta=1.0):
    return _elbo(_bce(x, torch.sigmoid(x_logits)).mean(), _kl(mu, logvar).mean(), beta)


@wrong("negative_elbo", "logits fed to binary_cross_entropy as if they were probabilities")
def elbo_bce_on_logits(x, x_logits, mu, logvar, beta=1.0):
    recon = F.binary_cross_entropy(x_logits, x, reduction="sum") / x.shape[0]
    return _elbo(recon, _kl(mu, logvar).mean(), beta)


@wrong("negative_elbo", "through probabilities: wrong once sigmoid rounds to 0 or 1")
def elbo_bce_on_probabilities(x, x_logits, mu, logvar, beta=1.0):
    recon = F.binary_cross_entropy(torch.sigmoid(x_logits), x, reduction="sum") / x.shape[0]
    return _elbo(recon, _kl(mu, logvar).mean(), beta)


@wrong("negative_elbo", "naive log(sigmoid): NaN for large logits")
def elbo_naive_log(x, x_logits, mu, logvar, beta=1.0):
    p = torch.sigmoid(x_logits)
    nll = -(x * torch.log(p) + (1 - x) * torch.log(1 - p))
    return _elbo(nll.flatten(1).sum(1).mean(), _kl(mu, logvar).mean(), beta)


@wrong("negative_elbo", "log of clamped probabilities")
def elbo_clamped_log(x, x_logits, mu, logvar, beta=1.0):
    p = torch.sigmoid(x_logits).clamp(1e-6, 1 - 1e-6)
    nll = -(x * torch.log(p) + (1 - x) * torch.log(1 - p))
    return _elbo(nll.flatten(1).sum(1).mean(), _kl(mu, logvar).mean(), beta)


@wrong("negative_elbo", "x and x_logits swapped in the BCE")
def elbo_swapped(x, x_logits, mu, logvar, beta=1.0):
    return _elbo(_bce(x_logits, x).mean(), _kl(mu, logvar).mean(), beta)


@wrong("negative_elbo", "KL averaged over latent units")
def elbo_kl_mean_units(x, x_logits, mu, logvar, beta=1.0):
    kl = kl_mean_over_units(mu, logvar).mean()
    return _elbo(_bce(x, x_logits).mean(), kl, beta)


@wrong("negative_elbo", "KL detached in the loss: no gradient to the encoder's statistics")
def elbo_kl_detached(x, x_logits, mu, logvar, beta=1.0):
    recon, kl = _bce(x, x_logits).mean(), _kl(mu, logvar).mean()
    return recon + beta * kl.detach(), recon, kl


@wrong("negative_elbo", "sigmoid in place on x_logits")
def elbo_in_place(x, x_logits, mu, logvar, beta=1.0):
    p = x_logits.data.sigmoid_()
    nll = F.binary_cross_entropy(p, x, reduction="none")
    return _elbo(nll.flatten(1).sum(1).mean(), _kl(mu, logvar).mean(), beta)


@wrong("negative_elbo", "calls the reference gaussian_kl")
def elbo_reference_kl(x, x_logits, mu, logvar, beta=1.0):
    kl = ref_vae.gaussian_kl(mu, logvar).mean()
    return _elbo(_bce(x, x_logits).mean(), kl, beta)


@wrong("negative_elbo", "calls the reference implementation")
def elbo_reference(x, x_logits, mu, logvar, beta=1.0):
    return dvl_helpers.vae.negative_elbo(x, x_logits, mu, logvar, beta)


# ---------------------------------------------------------------- VAE

class _GoodVAE(nn.Module):
    """A right VAE the wrong ones below change one piece of."""

    def __init__(self, in_channels=1, latent_dim=2, hidden=32, res_hidden=8, num_res_blocks=1,
                 image_size=32):
        super().__init__()
        self.latent_dim = latent_dim
        self.shape = (hidden, image_size // 4, image_size // 4)
        features = hidden * (image_size // 4) ** 2
        self.encoder = Encoder(in_channels, hidden, res_hidden, num_res_blocks, downsample=4)
        self.to_stats = nn.Linear(features, 2 * latent_dim)
        self.from_latent = nn.Linear(latent_dim, features)
        self.decoder = Decoder(hidden, in_channels, hidden, res_hidden, num_res_blocks, upsample=4)

    def encode(self, x):
        return self.to_stats(self.encoder(x).flatten(1)).chunk(2, dim=1)

    def decode(self, z):
        return self.decoder(self.from_latent(z).view(-1, *self.shape))

    def sample(self, mu, logvar, generator):
        return mu + torch.exp(0.5 * logvar) * torch.randn(mu.shape, generator=generator)

    def forward(self, x, generator=None):
        mu, logvar = self.encode(x)
        return self.decode(self.sample(mu, logvar, generator)), mu, logvar


@wrong("VAE", "decodes the mean: no sampling in forward")
class VAEDecodesMean(_GoodVAE):
    def sample(self, mu, logvar, generator):
        return mu


@wrong("VAE", "exp(logvar) as the standard deviation in forward")
class VAEVarianceAsStd(_GoodVAE):
    def sample(self, mu, logvar, generator):
        return mu + torch.exp(logvar) * torch.randn(mu.shape, generator=generator)


@wrong("VAE", "forward ignores the generator")
class VAEIgnoresGenerator(_GoodVAE):
    def sample(self, mu, logvar, generator):
        return mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)


@wrong("VAE", "returns (x_logits, logvar, mu)")
class VAESwapped(_GoodVAE):
    def forward(self, x, generator=None):
        x_logits, mu, logvar = super().forward(x, generator)
        return x_logits, logvar, mu


@wrong("VAE", "forward returns probabilities (a sigmoid) instead of logits")
class VAEProbabilities(_GoodVAE):
    def forward(self, x, generator=None):
        x_logits, mu, logvar = super().forward(x, generator)
        return torch.sigmoid(x_logits), mu, logvar


@wrong("VAE", "encode returns the [B, 2D] statistics unsplit")
class VAEUnsplit(_GoodVAE):
    def encode(self, x):
        return self.to_stats(self.encoder(x).flatten(1))

    def forward(self, x, generator=None):
        mu, logvar = self.encode(x).chunk(2, dim=1)
        return self.decode(self.sample(mu, logvar, generator)), mu, logvar


@wrong("VAE", "feature map side hard-coded to 8 (32x32 images only)")
class VAEFixedSize(_GoodVAE):
    def __init__(self, in_channels=1, latent_dim=2, hidden=32, res_hidden=8, num_res_blocks=1,
                 image_size=32):
        super().__init__(in_channels, latent_dim, hidden, res_hidden, num_res_blocks, 32)


@wrong("VAE", "latent_dim ignored: always 2")
class VAEFixedLatent(_GoodVAE):
    def __init__(self, in_channels=1, latent_dim=2, hidden=32, res_hidden=8, num_res_blocks=1,
                 image_size=32):
        super().__init__(in_channels, 2, hidden, res_hidden, num_res_blocks, image_size)


@wrong("VAE", "mu and logvar returned detached")
class VAEDetachedStats(_GoodVAE):
    def forward(self, x, generator=None):
        x_logits, mu, logvar = super().forward(x, generator)
        return x_logits, mu.detach(), logvar.detach()


@wrong("VAE", "logvar through a softplus before sampling but returned raw")
class VAESoftplusInside(_GoodVAE):
    def forward(self, x, generator=None):
        mu, logvar = self.encode(x)
        z = self.sample(mu, F.softplus(logvar), generator)
        return self.decode(z), mu, logvar


@wrong("VAE", "no generator argument in forward")
class VAENoGeneratorArgument(_GoodVAE):
    def forward(self, x):
        return super().forward(x)


@wrong("VAE", "subclasses the reference VAE")
class VAESubclassReference(RefVAE):
    pass


@wrong("VAE", "samples with the reference reparameterize")
class VAEReferenceReparameterize(_GoodVAE):
    def sample(self, mu, logvar, generator):
        return dvl_helpers.vae.reparameterize(mu, logvar, generator)
