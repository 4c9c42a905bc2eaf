"""Different but correct answers to 02_stable_vq: every check must accept each one.

``CASES`` holds ``(check name, answer, how it differs)``: one-hot products,
``scatter_add``, ``torch.lerp``, float64 internals, a random-sample or a
k-means++ start, farthest-point re-seeding, ``torch.distributions``, Python
loops where they are harmless, and EMA layers built on the phase-1 reference
pieces of ``dvl_helpers.quantizers`` (allowed: later phases reuse earlier ones).
"""
import torch
import torch.nn.functional as F
from torch import nn

from dvl_helpers.quantizers import nearest_code, perplexity, quantize, straight_through

CASES = []


def right(check, how):
    def register(answer):
        CASES.append((check, answer, how))
        return answer
    return register


# ---------------------------------------------------------------- ema_update

@right("ema_update", "one-hot matrix products and torch.lerp")
def ema_one_hot(cluster_size, embed_sum, z, indices, decay, eps=1e-5):
    one_hot = F.one_hot(indices, cluster_size.shape[0]).to(z.dtype)      # [N, K]
    counts = one_hot.sum(0)
    sums = one_hot.T @ z
    new_size = torch.lerp(counts.to(cluster_size.dtype), cluster_size, decay)
    new_sum = torch.lerp(sums.to(embed_sum.dtype), embed_sum, decay)
    n = new_size.sum()
    smoothed = (new_size + eps) / (n + cluster_size.shape[0] * eps) * n
    return new_size, new_sum, new_sum / smoothed.unsqueeze(1)


@right("ema_update", "scatter_add on float64 copies, cast back")
def ema_scatter64(cluster_size, embed_sum, z, indices, decay, eps=1e-5):
    k, d = embed_sum.shape
    z64 = z.double()
    counts = torch.zeros(k, dtype=torch.float64).scatter_add_(
        0, indices, torch.ones_like(indices, dtype=torch.float64))
    sums = torch.zeros(k, d, dtype=torch.float64).scatter_add_(
        0, indices[:, None].expand(-1, d), z64)
    size = cluster_size.double().mul(decay).add(counts, alpha=1 - decay)
    total = size.sum()
    embed = embed_sum.double() * decay + sums * (1 - decay)
    codebook = embed / ((size + eps) / (total + k * eps) * total)[:, None]
    dtype = cluster_size.dtype
    return size.to(dtype), embed.to(dtype), codebook.to(dtype)


@right("ema_update", "a Python loop over the codes")
def ema_loop(cluster_size, embed_sum, z, indices, decay, eps=1e-5):
    k = cluster_size.shape[0]
    size, embed = cluster_size.clone(), embed_sum.clone()
    for j in range(k):
        mine = z[indices == j]
        size[j] = decay * cluster_size[j] + (1 - decay) * mine.shape[0]
        embed[j] = decay * embed_sum[j] + (1 - decay) * mine.sum(0)
    total = size.sum()
    laplace = (size + eps) / (total + k * eps) * total
    return size, embed, embed / laplace[:, None]


# ---------------------------------------------------------------- kmeans_init

def _sq(z, codebook):
    return torch.cdist(z, codebook) ** 2


@right("kmeans_init", "random sample of rows, Lloyd, re-seed with random rows")
def kmeans_random_start(z, num_codes, iters=10, generator=None):
    codebook = z[torch.randperm(z.shape[0], generator=generator)[:num_codes]].clone()
    for _ in range(iters):
        idx = _sq(z, codebook).argmin(1)
        counts = torch.bincount(idx, minlength=num_codes)
        sums = torch.zeros_like(codebook).index_add_(0, idx, z)
        empty = counts == 0
        codebook = torch.where(empty[:, None], codebook,
                               sums / counts.clamp_min(1)[:, None].to(z.dtype))
        if empty.any():
            rows = torch.randint(0, z.shape[0], (int(empty.sum()),), generator=generator)
            codebook[empty] = z[rows]
    return codebook


@right("kmeans_init", "k-means++ start (uniform once all distances are 0), farthest-point re-seed")
def kmeans_plus_plus(z, num_codes, iters=10, generator=None):
    n = z.shape[0]
    first = torch.randint(0, n, (1,), generator=generator)
    codebook = z[first].clone()
    nearest = ((z - codebook[0]) ** 2).sum(1)
    while codebook.shape[0] < num_codes:
        weights = nearest if nearest.sum() > 0 else torch.ones_like(nearest)
        pick = torch.multinomial(weights, 1, generator=generator)
        codebook = torch.cat([codebook, z[pick]])
        nearest = torch.minimum(nearest, ((z - z[pick]) ** 2).sum(1))
    for _ in range(iters):
        d = _sq(z, codebook)
        idx = d.argmin(1)
        one_hot = F.one_hot(idx, num_codes).to(z.dtype)
        counts = one_hot.sum(0)
        means = (one_hot.T @ z) / counts.clamp_min(1)[:, None]
        codebook = torch.where((counts > 0)[:, None], means, codebook)
        for j in (counts == 0).nonzero().flatten().tolist():
            far = d.min(1).values.argmax()          # the worst-represented row
            codebook[j] = z[far]
            d[far] = 0
    return codebook


@right("kmeans_init", "Lloyd in float64 with a Python loop over the codes")
def kmeans_loop64(z, num_codes, iters=10, generator=None):
    z64 = z.double()
    codebook = z64[torch.randperm(z.shape[0], generator=generator)[:num_codes]]
    for _ in range(iters):
        idx = ((z64[:, None] - codebook[None]) ** 2).sum(-1).argmin(1)
        new = codebook.clone()
        spare = torch.randperm(z.shape[0], generator=generator)
        used = 0
        for j in range(num_codes):
            members = z64[idx == j]
            if members.shape[0]:
                new[j] = members.mean(0)
            else:
                new[j] = z64[spare[used]]
                used += 1
        codebook = new
    return codebook.to(z.dtype)


# ---------------------------------------------------------------- dead_codes

@right("dead_codes", "torch.lt")
def dead_lt(cluster_size, threshold):
    return torch.lt(cluster_size, threshold)


@right("dead_codes", "not alive: ~(cluster_size >= threshold)")
def dead_not_alive(cluster_size, threshold):
    return ~(cluster_size >= threshold)


# ---------------------------------------------------------------- reset_dead_codes

@right("reset_dead_codes", "torch.where with a gathered replacement")
def reset_where(codebook, cluster_size, embed_sum, dead, z, generator=None):
    k = codebook.shape[0]
    order = torch.randperm(z.shape[0], generator=generator)
    dead_idx = dead.nonzero().flatten()
    dead_idx = dead_idx[torch.randperm(dead_idx.numel(), generator=generator)][:z.shape[0]]
    chosen = torch.zeros(k, dtype=torch.bool)
    chosen[dead_idx] = True
    source = torch.zeros(k, dtype=torch.long)
    source[dead_idx] = order[:dead_idx.numel()]
    new_vectors = z[source]
    new_codebook = torch.where(chosen[:, None], new_vectors, codebook)
    new_sum = torch.where(chosen[:, None], new_vectors, embed_sum)
    new_size = torch.where(chosen, torch.ones_like(cluster_size), cluster_size)
    return new_codebook, new_size, new_sum


@right("reset_dead_codes", "a Python loop, multinomial without replacement")
def reset_loop(codebook, cluster_size, embed_sum, dead, z, generator=None):
    codebook, cluster_size, embed_sum = codebook.clone(), cluster_size.clone(), embed_sum.clone()
    dead_list = dead.nonzero().flatten().tolist()
    n = min(len(dead_list), z.shape[0])
    if n == 0:
        return codebook, cluster_size, embed_sum
    rows = torch.multinomial(torch.ones(z.shape[0]), n, replacement=False, generator=generator)
    for j, r in zip(dead_list[:n], rows.tolist()):
        codebook[j] = z[r]
        embed_sum[j] = z[r]
        cluster_size[j] = 1.0
    return codebook, cluster_size, embed_sum


# ---------------------------------------------------------------- codebook_entropy_loss

@right("codebook_entropy_loss", "torch.distributions.Categorical entropies")
def entropy_categorical(distances, tau=1.0):
    per_vector = torch.distributions.Categorical(logits=-distances / tau)
    usage = torch.distributions.Categorical(probs=per_vector.probs.mean(0))
    return per_vector.entropy().mean() - usage.entropy()


@right("codebook_entropy_loss", "xlogy for both entropies")
def entropy_xlogy(distances, tau=1.0):
    log_p = torch.log_softmax(-distances / tau, dim=-1)
    p = log_p.exp()
    avg = p.mean(dim=0)
    return -(p * log_p).sum(-1).mean() + torch.special.xlogy(avg, avg.clamp_min(1e-30)).sum()


@right("codebook_entropy_loss", "p * log(p + 1e-10), written out")
def entropy_epsilon(distances, tau=1.0):
    p = torch.softmax(-distances / tau, dim=1)
    h_each = -(p * torch.log(p + 1e-10)).sum(dim=1)
    avg = p.mean(dim=0)
    h_avg = -(avg * torch.log(avg + 1e-10)).sum()
    return h_each.mean() - h_avg


# ---------------------------------------------------------------- the EMA layer

def _ema(cluster_size, embed_sum, z, indices, decay, eps):
    k = cluster_size.shape[0]
    counts = torch.bincount(indices, minlength=k).to(cluster_size.dtype)
    sums = torch.zeros_like(embed_sum).index_add_(0, indices, z.to(embed_sum.dtype))
    size = decay * cluster_size + (1 - decay) * counts
    embed = decay * embed_sum + (1 - decay) * sums
    total = size.sum()
    return size, embed, embed / ((size + eps) / (total + k * eps) * total)[:, None]


def _reset(codebook, cluster_size, embed_sum, dead, z):
    codebook, cluster_size, embed_sum = codebook.clone(), cluster_size.clone(), embed_sum.clone()
    which = dead.nonzero().flatten()[:z.shape[0]]
    rows = z[torch.randperm(z.shape[0])[:which.numel()]]
    codebook[which], cluster_size[which], embed_sum[which] = rows, 1.0, rows
    return codebook, cluster_size, embed_sum


@right("EMAVectorQuantizer", "phase-1 reference pieces (quantize, straight_through, perplexity)")
class EMAWithReferencePieces(nn.Module):
    def __init__(self, num_codes, code_dim, beta=0.25, decay=0.99, eps=1e-5, dead_threshold=None):
        super().__init__()
        self.num_codes, self.beta, self.decay, self.eps = num_codes, beta, decay, eps
        self.dead_threshold = dead_threshold
        codebook = torch.randn(num_codes, code_dim)
        self.register_buffer("codebook", codebook)
        self.register_buffer("cluster_size", torch.ones(num_codes))
        self.register_buffer("embed_sum", codebook.clone())

    def forward(self, z_e):
        z_q, indices = quantize(z_e, self.codebook)
        loss = self.beta * F.mse_loss(z_e, z_q)
        usage = torch.bincount(indices.flatten(), minlength=self.num_codes).float()
        if self.training:
            with torch.no_grad():
                flat = z_e.detach().permute(0, 2, 3, 1).reshape(-1, z_e.shape[1])
                n, m, e = _ema(self.cluster_size, self.embed_sum, flat, indices.flatten(),
                               self.decay, self.eps)
                if self.dead_threshold is not None:
                    e, n, m = _reset(e, n, m, n < self.dead_threshold, flat)
                self.cluster_size.copy_(n)
                self.embed_sum.copy_(m)
                self.codebook.copy_(e)
        info = {"indices": indices, "perplexity": perplexity(usage), "usage": usage}
        return straight_through(z_e, z_q), loss, info


@right("EMAVectorQuantizer", "update first, z_q from the new codebook; buffers reassigned")
class EMAUpdateFirst(nn.Module):
    def __init__(self, num_codes, code_dim, beta=0.25, decay=0.99, eps=1e-5, dead_threshold=None):
        super().__init__()
        self.k, self.beta, self.decay, self.eps = num_codes, beta, decay, eps
        self.dead_threshold = dead_threshold
        codebook = torch.empty(num_codes, code_dim).uniform_(-1 / num_codes, 1 / num_codes)
        self.register_buffer("codebook", codebook)
        self.register_buffer("cluster_size", torch.full((num_codes,), 5.0))
        self.register_buffer("embed_sum", 5.0 * codebook)

    def forward(self, z_e):
        b, d, h, w = z_e.shape
        flat = z_e.permute(0, 2, 3, 1).reshape(-1, d)
        indices = nearest_code(flat, self.codebook)
        if self.training:
            z = flat.detach()
            n, m, e = _ema(self.cluster_size, self.embed_sum, z, indices, self.decay, self.eps)
            if self.dead_threshold is not None:
                e, n, m = _reset(e, n, m, n < self.dead_threshold, z)
            self.cluster_size, self.embed_sum, self.codebook = n, m, e
        z_q = self.codebook[indices].view(b, h, w, d).permute(0, 3, 1, 2)
        loss = self.beta * ((z_e - z_q) ** 2).mean()
        usage = torch.bincount(indices, minlength=self.k).float()
        p = usage / usage.sum()
        ppl = torch.exp(-(p * torch.log(p.clamp_min(1e-12))).sum())
        return z_e + (z_q - z_e).detach(), loss, {"indices": indices.view(b, h, w),
                                                  "perplexity": ppl, "usage": usage}


@right("EMAVectorQuantizer", "einsum one-hot statistics, a float perplexity in info")
class EMAOneHot(nn.Module):
    def __init__(self, num_codes, code_dim, beta=0.25, decay=0.99, eps=1e-5, dead_threshold=None):
        super().__init__()
        self.num_codes, self.beta, self.decay, self.eps = num_codes, beta, decay, eps
        self.dead_threshold = dead_threshold
        init = torch.randn(num_codes, code_dim) * 0.1
        self.register_buffer("codebook", init)
        self.register_buffer("cluster_size", torch.ones(num_codes))
        self.register_buffer("embed_sum", init.clone())

    @torch.no_grad()
    def _update(self, flat, one_hot):
        n = self.decay * self.cluster_size + (1 - self.decay) * one_hot.sum(0)
        m = self.decay * self.embed_sum + (1 - self.decay) * torch.einsum("nk,nd->kd", one_hot, flat)
        total = n.sum()
        e = m / ((n + self.eps) / (total + self.num_codes * self.eps) * total).unsqueeze(1)
        if self.dead_threshold is not None:
            e, n, m = _reset(e, n, m, n < self.dead_threshold, flat)
        self.cluster_size.copy_(n)
        self.embed_sum.copy_(m)
        self.codebook.copy_(e)

    def forward(self, z_e):
        flat = z_e.movedim(1, -1).reshape(-1, z_e.shape[1])
        d = torch.cdist(flat, self.codebook) ** 2
        indices = d.argmin(1)
        one_hot = F.one_hot(indices, self.num_codes).float()
        z_q = (one_hot @ self.codebook).view(*z_e.shape[:1], *z_e.shape[2:], -1).movedim(-1, 1)
        if self.training:
            self._update(flat.detach(), one_hot)
        usage = one_hot.sum(0)
        p = usage / usage.sum()
        ppl = float(torch.exp(-torch.special.xlogy(p, p).sum()))
        loss = self.beta * F.mse_loss(z_e, z_q.detach())
        info = {"indices": indices.view(z_e.shape[0], *z_e.shape[2:]), "perplexity": ppl,
                "usage": usage}
        return z_e + (z_q - z_e).detach(), loss, info
