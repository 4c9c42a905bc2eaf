"""Different but correct answers to 00_vae: every check must accept each one.

``CASES`` holds ``(check name, answer, how it differs)``; the answers use the
formulations a learner is likely to find (``logvar.mul(0.5).exp()`` or
``sqrt(exp(logvar))``, ``normal_`` or ``torch.normal`` for the noise,
``torch.distributions`` for the KL and the likelihood, softplus or
``F.binary_cross_entropy_with_logits``, einops).
"""
import math

import einops
import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Bernoulli, Independent, Normal, kl_divergence

from dvl_helpers.nn import Decoder, Encoder

CASES = []


def right(check, how):
    def register(answer):
        CASES.append((check, answer, how))
        return answer
    return register


# ---------------------------------------------------------------- reparameterize

@right("reparameterize", "torch.randn with the generator, std = logvar.mul(0.5).exp()")
def rep_randn(mu, logvar, generator=None):
    eps = torch.randn(mu.shape, generator=generator, dtype=mu.dtype, device=mu.device)
    return mu + logvar.mul(0.5).exp() * eps


@right("reparameterize", "normal_ on an empty_like, std = sqrt(exp(logvar))")
def rep_normal_(mu, logvar, generator=None):
    eps = torch.empty_like(mu).normal_(generator=generator)
    return mu + torch.sqrt(torch.exp(logvar)) * eps


@right("reparameterize", "torch.normal(0, 1, size) and torch.addcmul")
def rep_torch_normal_addcmul(mu, logvar, generator=None):
    eps = torch.normal(0.0, 1.0, size=tuple(mu.shape), generator=generator, device=mu.device)
    return torch.addcmul(mu, torch.exp(0.5 * logvar), eps)


@right("reparameterize", "randn_like without a generator, randn with one; exp(logvar) ** 0.5")
def rep_branch(mu, logvar, generator=None):
    if generator is None:
        eps = torch.randn_like(mu)
    else:
        eps = torch.randn(*mu.shape, generator=generator)
    return eps.mul(logvar.exp() ** 0.5).add(mu)


@right("reparameterize", "a standard normal scaled by a Normal's stddev, in float64")
def rep_float64(mu, logvar, generator=None):
    eps = torch.randn(mu.shape, generator=generator, dtype=torch.float64, device=mu.device)
    std = Normal(mu.double(), torch.exp(logvar.double() / 2)).stddev
    return (mu.double() + std * eps).to(mu.dtype)


# ---------------------------------------------------------------- gaussian_kl

@right("gaussian_kl", "-1/2 sum(1 + logvar - mu^2 - exp(logvar)) over dims 1..")
def kl_textbook(mu, logvar):
    dims = tuple(range(1, mu.dim()))
    return -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp(), dim=dims)


@right("gaussian_kl", "torch.distributions.kl_divergence of Normals, flattened and summed")
def kl_distributions(mu, logvar):
    q = Normal(mu, torch.exp(0.5 * logvar))
    p = Normal(torch.zeros_like(mu), torch.ones_like(mu))
    return kl_divergence(q, p).flatten(1).sum(1)


@right("gaussian_kl", "Independent Normals: the event dimensions summed by torch")
def kl_independent(mu, logvar):
    n = mu.dim() - 1
    q = Independent(Normal(mu, logvar.mul(0.5).exp()), n)
    p = Independent(Normal(torch.zeros_like(mu), torch.ones_like(mu)), n)
    return kl_divergence(q, p)


@right("gaussian_kl", "std first, then 1/2 (mu^2 + std^2 - 1) - log std; einops reduce")
def kl_std(mu, logvar):
    std = torch.exp(logvar / 2)
    per_unit = 0.5 * (mu ** 2 + std ** 2 - 1) - torch.log(std)
    return einops.reduce(per_unit, "b ... -> b", "sum")


@right("gaussian_kl", "reshape(B, -1) and a dot product with ones")
def kl_reshape(mu, logvar):
    b = mu.shape[0]
    per_unit = (mu * mu + torch.exp(logvar) - logvar - 1).reshape(b, -1)
    return per_unit @ torch.full((per_unit.shape[1],), 0.5, dtype=per_unit.dtype)


# ---------------------------------------------------------------- negative_elbo

def _kl(mu, logvar):
    return -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).flatten(1).sum(1)


@right("negative_elbo", "F.binary_cross_entropy_with_logits, summed, divided by B")
def elbo_bce_sum(x, x_logits, mu, logvar, beta=1.0):
    b = x.shape[0]
    recon = F.binary_cross_entropy_with_logits(x_logits, x, reduction="sum") / b
    kl = _kl(mu, logvar).mean()
    return recon + beta * kl, recon, kl


@right("negative_elbo", "softplus(l) - x l per pixel")
def elbo_softplus(x, x_logits, mu, logvar, beta=1.0):
    nll = F.softplus(x_logits) - x * x_logits
    recon = nll.reshape(nll.shape[0], -1).sum(-1).mean()
    kl = _kl(mu, logvar).mean()
    return recon + beta * kl, recon, kl


@right("negative_elbo", "log-sigmoid of +-logits")
def elbo_logsigmoid(x, x_logits, mu, logvar, beta=1.0):
    log_lik = x * F.logsigmoid(x_logits) + (1 - x) * F.logsigmoid(-x_logits)
    recon = -log_lik.sum(dim=list(range(1, x.dim()))).mean()
    kl = (0.5 * (mu ** 2 + logvar.exp() - 1 - logvar)).sum(dim=1).mean()
    return recon + beta * kl, recon, kl


@right("negative_elbo", "torch.distributions: Bernoulli(logits) log_prob, Normal KL")
def elbo_distributions(x, x_logits, mu, logvar, beta=1.0):
    likelihood = Independent(Bernoulli(logits=x_logits, validate_args=False), x.dim() - 1)
    recon = -likelihood.log_prob(x).mean()
    q = Independent(Normal(mu, torch.exp(0.5 * logvar)), 1)
    p = Independent(Normal(torch.zeros_like(mu), torch.ones_like(mu)), 1)
    kl = kl_divergence(q, p).mean()
    return recon + beta * kl, recon, kl


@right("negative_elbo", "per-item ELBO first, then the batch mean; a Python float beta")
def elbo_per_item(x, x_logits, mu, logvar, beta=1.0):
    per_item_recon = F.binary_cross_entropy_with_logits(
        x_logits, x, reduction="none").flatten(1).sum(1)
    per_item_kl = _kl(mu, logvar)
    loss = (per_item_recon + float(beta) * per_item_kl).mean()
    return loss, per_item_recon.mean(), per_item_kl.mean()


# ---------------------------------------------------------------- VAE

@right("VAE", "one linear head split by chunk; linear + view into the decoder")
class VAEChunk(nn.Module):
    def __init__(self, in_channels=1, latent_dim=2, hidden=32, res_hidden=8, num_res_blocks=1,
                 image_size=32):
        super().__init__()
        side = image_size // 4
        self.shape = (hidden, side, side)
        self.encoder = Encoder(in_channels, hidden, res_hidden, num_res_blocks, downsample=4)
        self.to_stats = nn.Linear(hidden * side * side, 2 * latent_dim)
        self.from_z = nn.Linear(latent_dim, hidden * side * side)
        self.decoder = Decoder(hidden, in_channels, hidden, res_hidden, num_res_blocks, upsample=4)

    def encode(self, x):
        mu, logvar = self.to_stats(self.encoder(x).flatten(1)).chunk(2, dim=1)
        return mu, logvar

    def decode(self, z):
        return self.decoder(self.from_z(z).view(-1, *self.shape))

    def forward(self, x, generator=None):
        mu, logvar = self.encode(x)
        eps = torch.randn(mu.shape, generator=generator)
        return self.decode(mu + logvar.mul(0.5).exp() * eps), mu, logvar


@right("VAE", "two heads, nn.Flatten / nn.Unflatten, a ReLU after the latent projection")
class VAETwoHeads(nn.Module):
    def __init__(self, in_channels=1, latent_dim=2, hidden=32, res_hidden=8, num_res_blocks=1,
                 image_size=32):
        super().__init__()
        side = image_size // 4
        features = hidden * side * side
        self.encoder = nn.Sequential(
            Encoder(in_channels, hidden, res_hidden, num_res_blocks, downsample=4), nn.Flatten())
        self.mu = nn.Linear(features, latent_dim)
        self.logvar = nn.Linear(features, latent_dim)
        self.decoder = nn.Sequential(
            nn.Linear(latent_dim, features), nn.ReLU(), nn.Unflatten(1, (hidden, side, side)),
            Decoder(hidden, in_channels, hidden, res_hidden, num_res_blocks, upsample=4))

    def encode(self, x):
        h = self.encoder(x)
        return self.mu(h), self.logvar(h)

    def decode(self, z):
        return self.decoder(z)

    def forward(self, x, generator=None):
        mu, logvar = self.encode(x)
        eps = torch.empty_like(mu).normal_(generator=generator)
        z = torch.addcmul(mu, torch.sqrt(torch.exp(logvar)), eps)
        return self.decode(z), mu, logvar


@right("VAE", "a 1x1 conv head to 2D channels, pooled; samples only in train mode; clamped logvar")
class VAEConvHead(nn.Module):
    def __init__(self, in_channels=1, latent_dim=2, hidden=32, res_hidden=8, num_res_blocks=1,
                 image_size=32):
        super().__init__()
        self.side = image_size // 4
        self.hidden = hidden
        self.encoder = Encoder(in_channels, hidden, res_hidden, num_res_blocks, downsample=4,
                               out_channels=2 * latent_dim)
        self.head = nn.Linear(2 * latent_dim * self.side ** 2, 2 * latent_dim)
        self.expand = nn.Linear(latent_dim, hidden * self.side ** 2)
        self.decoder = Decoder(hidden, in_channels, hidden, res_hidden, num_res_blocks, upsample=4)

    def encode(self, x):
        stats = self.head(einops.rearrange(self.encoder(x), "b c h w -> b (c h w)"))
        mu, logvar = torch.tensor_split(stats, 2, dim=1)
        return mu, logvar

    def decode(self, z):
        h = einops.rearrange(self.expand(z), "b (c h w) -> b c h w", c=self.hidden, h=self.side)
        return self.decoder(h)

    def forward(self, x, generator=None):
        mu, logvar = self.encode(x)
        if not self.training:
            return self.decode(mu), mu, logvar
        std = torch.exp(0.5 * logvar.clamp(-30.0, 20.0))
        eps = torch.normal(0.0, 1.0, size=tuple(mu.shape), generator=generator)
        return self.decode(mu + std * eps), mu, logvar


def _reparameterize(mu, logvar, generator=None):
    """The learner's own reparameterize, defined next to the class (a notebook's globals)."""
    return mu + torch.exp(0.5 * logvar) * torch.randn(mu.shape, generator=generator)


@right("VAE", "calls its own reparameterize; latent size from math.prod")
class VAEOwnReparameterize(nn.Module):
    def __init__(self, in_channels=1, latent_dim=2, hidden=32, res_hidden=8, num_res_blocks=1,
                 image_size=32):
        super().__init__()
        self.feature_shape = (hidden, image_size // 4, image_size // 4)
        n = math.prod(self.feature_shape)
        self.encoder = Encoder(in_channels, hidden, res_hidden, num_res_blocks)
        self.fc = nn.Linear(n, 2 * latent_dim)
        self.fc_dec = nn.Linear(latent_dim, n)
        self.decoder = Decoder(hidden, in_channels, hidden, res_hidden, num_res_blocks)

    def encode(self, x):
        stats = self.fc(self.encoder(x).reshape(x.shape[0], -1))
        d = stats.shape[1] // 2
        return stats[:, :d], stats[:, d:]

    def decode(self, z):
        return self.decoder(self.fc_dec(z).reshape(z.shape[0], *self.feature_shape))

    def forward(self, x, generator=None):
        mu, logvar = self.encode(x)
        return self.decode(_reparameterize(mu, logvar, generator)), mu, logvar
