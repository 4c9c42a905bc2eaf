"""Wrong answers to 02_stable_vq: every check must reject each one.

``CASES`` holds ``(check name, answer, what is wrong)``. Most are mistakes
learners make (no Laplace smoothing, the decay on the wrong term, inputs
changed in place, stale statistics after a restart, draws with replacement,
an entropy with its signs swapped, an EMA that also runs in eval mode, ...);
a few are shortcuts the grader must refuse (calling the course's reference
implementation of this phase).
"""
import torch
import torch.nn.functional as F
from torch import nn

import dvl_helpers
import dvl_helpers.quantizers as ref_q
from dvl_helpers.quantizers import EMAVectorQuantizer as RefEMAVectorQuantizer

CASES = []


def wrong(check, why):
    def register(answer):
        CASES.append((check, answer, why))
        return answer
    return register


# correct pieces the wrong answers below are built from
def _dist(z, codebook):
    return (z ** 2).sum(1, keepdim=True) - 2 * z @ codebook.T + (codebook ** 2).sum(1)


def _counts_sums(z, indices, k):
    counts = torch.bincount(indices, minlength=k).to(z.dtype)
    sums = torch.zeros(k, z.shape[1], dtype=z.dtype).index_add_(0, indices, z)
    return counts, sums


def _ema(cluster_size, embed_sum, z, indices, decay, eps=1e-5):
    k = cluster_size.shape[0]
    counts, sums = _counts_sums(z.to(cluster_size.dtype), indices, k)
    n = decay * cluster_size + (1 - decay) * counts
    m = decay * embed_sum + (1 - decay) * sums
    total = n.sum()
    smoothed = (n + eps) / (total + k * eps) * total
    return n, m, m / smoothed[:, None]


def _reset(codebook, cluster_size, embed_sum, dead, z, generator=None):
    codebook, cluster_size, embed_sum = codebook.clone(), cluster_size.clone(), embed_sum.clone()
    which = dead.nonzero().flatten()
    which = which[torch.randperm(which.numel(), generator=generator)[:z.shape[0]]]
    rows = z[torch.randperm(z.shape[0], generator=generator)[:which.numel()]]
    codebook[which] = rows
    cluster_size[which] = 1.0
    embed_sum[which] = rows
    return codebook, cluster_size, embed_sum


def _perplexity(counts):
    p = counts / counts.sum()
    return torch.exp(-torch.special.xlogy(p, p).sum())


def _lloyd(z, codebook, iters, generator, reseed=True):
    k = codebook.shape[0]
    for _ in range(iters):
        idx = _dist(z, codebook).argmin(1)
        counts, sums = _counts_sums(z, idx, k)
        empty = counts == 0
        codebook = torch.where(empty[:, None], codebook, sums / counts.clamp_min(1)[:, None])
        if reseed and empty.any():
            codebook[empty] = z[torch.randperm(z.shape[0], generator=generator)[:int(empty.sum())]]
    return codebook


# ---------------------------------------------------------------- ema_update

@wrong("ema_update", "no Laplace smoothing: codebook = M / N")
def ema_no_smoothing(cluster_size, embed_sum, z, indices, decay, eps=1e-5):
    n, m, _ = _ema(cluster_size, embed_sum, z, indices, decay, eps)
    return n, m, m / n[:, None]


@wrong("ema_update", "decay on the wrong term: N <- (1 - decay) N + decay n")
def ema_decay_swapped(cluster_size, embed_sum, z, indices, decay, eps=1e-5):
    return _ema(cluster_size, embed_sum, z, indices, 1 - decay, eps)


@wrong("ema_update", "updates cluster_size and embed_sum in place")
def ema_in_place(cluster_size, embed_sum, z, indices, decay, eps=1e-5):
    k = cluster_size.shape[0]
    counts, sums = _counts_sums(z, indices, k)
    cluster_size.mul_(decay).add_(counts, alpha=1 - decay)
    embed_sum.mul_(decay).add_(sums, alpha=1 - decay)
    total = cluster_size.sum()
    smoothed = (cluster_size + eps) / (total + k * eps) * total
    return cluster_size, embed_sum, embed_sum / smoothed[:, None]


@wrong("ema_update", "index_add_ into embed_sum itself (modifies the input)")
def ema_index_add_input(cluster_size, embed_sum, z, indices, decay, eps=1e-5):
    k = cluster_size.shape[0]
    counts = torch.bincount(indices, minlength=k).to(z.dtype)
    m = embed_sum.mul_(decay).index_add_(0, indices, z * (1 - decay))
    n = decay * cluster_size + (1 - decay) * counts
    total = n.sum()
    return n, m, m / ((n + eps) / (total + k * eps) * total)[:, None]


@wrong("ema_update", "smoothing without rescaling by sum N: (N + eps) / (sum N + K eps)")
def ema_no_rescale(cluster_size, embed_sum, z, indices, decay, eps=1e-5):
    n, m, _ = _ema(cluster_size, embed_sum, z, indices, decay, eps)
    return n, m, m / ((n + eps) / (n.sum() + n.shape[0] * eps))[:, None]


@wrong("ema_update", "eps added to the counts only: N + eps")
def ema_eps_only(cluster_size, embed_sum, z, indices, decay, eps=1e-5):
    n, m, _ = _ema(cluster_size, embed_sum, z, indices, decay, eps)
    return n, m, m / (n + eps)[:, None]


@wrong("ema_update", "batch frequencies n / N instead of counts")
def ema_frequencies(cluster_size, embed_sum, z, indices, decay, eps=1e-5):
    k = cluster_size.shape[0]
    counts, sums = _counts_sums(z, indices, k)
    n = decay * cluster_size + (1 - decay) * counts / z.shape[0]
    m = decay * embed_sum + (1 - decay) * sums
    total = n.sum()
    return n, m, m / ((n + eps) / (total + k * eps) * total)[:, None]


@wrong("ema_update", "the mean, not the sum, of each code's vectors in M")
def ema_means(cluster_size, embed_sum, z, indices, decay, eps=1e-5):
    k = cluster_size.shape[0]
    counts, sums = _counts_sums(z, indices, k)
    n = decay * cluster_size + (1 - decay) * counts
    m = decay * embed_sum + (1 - decay) * sums / counts.clamp_min(1)[:, None]
    total = n.sum()
    return n, m, m / ((n + eps) / (total + k * eps) * total)[:, None]


@wrong("ema_update", "codebook from the smoothed old counts")
def ema_old_counts(cluster_size, embed_sum, z, indices, decay, eps=1e-5):
    n, m, _ = _ema(cluster_size, embed_sum, z, indices, decay, eps)
    total = cluster_size.sum()
    k = n.shape[0]
    return n, m, m / ((cluster_size + eps) / (total + k * eps) * total)[:, None]


@wrong("ema_update", "returns (codebook, cluster_size, embed_sum)")
def ema_wrong_order(cluster_size, embed_sum, z, indices, decay, eps=1e-5):
    n, m, e = _ema(cluster_size, embed_sum, z, indices, decay, eps)
    return e, n, m


@wrong("ema_update", "calls the reference implementation")
def ema_reference(cluster_size, embed_sum, z, indices, decay, eps=1e-5):
    return dvl_helpers.quantizers.ema_update(cluster_size, embed_sum, z, indices, decay, eps)


# ---------------------------------------------------------------- kmeans_init

@wrong("kmeans_init", "k-means without iterations: a random sample of rows")
def kmeans_sample_only(z, num_codes, iters=10, generator=None):
    return z[torch.randperm(z.shape[0], generator=generator)[:num_codes]].clone()


@wrong("kmeans_init", "empty clusters become NaN (0 / 0 mean)")
def kmeans_nan(z, num_codes, iters=10, generator=None):
    codebook = z[torch.randperm(z.shape[0], generator=generator)[:num_codes]].clone()
    for _ in range(iters):
        idx = _dist(z, codebook).argmin(1)
        counts, sums = _counts_sums(z, idx, num_codes)
        codebook = sums / counts[:, None]
    return codebook


@wrong("kmeans_init", "empty clusters kept where they are, never re-seeded")
def kmeans_no_reseed(z, num_codes, iters=10, generator=None):
    codebook = z[torch.randperm(z.shape[0], generator=generator)[:num_codes]].clone()
    return _lloyd(z, codebook, iters, generator, reseed=False)


@wrong("kmeans_init", "empty clusters set to zero")
def kmeans_zero_empty(z, num_codes, iters=10, generator=None):
    codebook = z[torch.randperm(z.shape[0], generator=generator)[:num_codes]].clone()
    for _ in range(iters):
        idx = _dist(z, codebook).argmin(1)
        counts, sums = _counts_sums(z, idx, num_codes)
        codebook = sums / counts.clamp_min(1)[:, None]
    return codebook


@wrong("kmeans_init", "iters ignored: always 10 Lloyd iterations")
def kmeans_fixed_iters(z, num_codes, iters=10, generator=None):
    codebook = z[torch.randperm(z.shape[0], generator=generator)[:num_codes]].clone()
    return _lloyd(z, codebook, 10, generator)


@wrong("kmeans_init", "starts from random normal codes, not rows of z")
def kmeans_randn_start(z, num_codes, iters=10, generator=None):
    codebook = torch.randn(num_codes, z.shape[1], generator=generator) * z.std() + z.mean(0)
    return _lloyd(z, codebook, iters, generator)


@wrong("kmeans_init", "starts from the first K rows (not random)")
def kmeans_first_rows(z, num_codes, iters=10, generator=None):
    return _lloyd(z, z[:num_codes].clone(), iters, generator)


@wrong("kmeans_init", "the generator ignored: global random state")
def kmeans_global_rng(z, num_codes, iters=10, generator=None):
    codebook = z[torch.randperm(z.shape[0])[:num_codes]].clone()
    return _lloyd(z, codebook, iters, None)


@wrong("kmeans_init", "Lloyd step without dividing the sums by the counts")
def kmeans_sums(z, num_codes, iters=10, generator=None):
    codebook = z[torch.randperm(z.shape[0], generator=generator)[:num_codes]].clone()
    for _ in range(iters):
        idx = _dist(z, codebook).argmin(1)
        counts, sums = _counts_sums(z, idx, num_codes)
        codebook = torch.where((counts == 0)[:, None], codebook, sums)
    return codebook


@wrong("kmeans_init", "a single Lloyd iteration, whatever iters")
def kmeans_one_iter(z, num_codes, iters=10, generator=None):
    codebook = z[torch.randperm(z.shape[0], generator=generator)[:num_codes]].clone()
    return _lloyd(z, codebook, min(iters, 1), generator)


@wrong("kmeans_init", "calls the reference implementation through an alias")
def kmeans_reference(z, num_codes, iters=10, generator=None):
    return ref_q.kmeans_init(z, num_codes, iters=iters, generator=generator)


# ---------------------------------------------------------------- dead_codes

@wrong("dead_codes", "<= threshold: a code used exactly threshold times counts as dead")
def dead_le(cluster_size, threshold):
    return cluster_size <= threshold


@wrong("dead_codes", "the live codes: cluster_size > threshold")
def dead_alive(cluster_size, threshold):
    return cluster_size > threshold


@wrong("dead_codes", "a float mask")
def dead_float(cluster_size, threshold):
    return (cluster_size < threshold).float()


@wrong("dead_codes", "the indices of the dead codes, not a mask")
def dead_indices(cluster_size, threshold):
    return (cluster_size < threshold).nonzero().flatten()


@wrong("dead_codes", "threshold relative to the mean count")
def dead_relative(cluster_size, threshold):
    return cluster_size < threshold * cluster_size.mean()


@wrong("dead_codes", "the threshold ignored: unused codes only")
def dead_zero(cluster_size, threshold):
    return cluster_size == 0


@wrong("dead_codes", "imports the reference inside the function")
def dead_reference(cluster_size, threshold):
    from dvl_helpers.quantizers import dead_codes as reference
    return reference(cluster_size, threshold)


# ---------------------------------------------------------------- reset_dead_codes

@wrong("reset_dead_codes", "restarted codes keep their stale statistics")
def reset_stale(codebook, cluster_size, embed_sum, dead, z, generator=None):
    new_cb, _, _ = _reset(codebook, cluster_size, embed_sum, dead, z, generator)
    return new_cb, cluster_size.clone(), embed_sum.clone()


@wrong("reset_dead_codes", "cluster_size restarted, embed_sum stale")
def reset_stale_sum(codebook, cluster_size, embed_sum, dead, z, generator=None):
    new_cb, new_cs, _ = _reset(codebook, cluster_size, embed_sum, dead, z, generator)
    return new_cb, new_cs, embed_sum.clone()


@wrong("reset_dead_codes", "cluster_size of restarted codes set to 0")
def reset_zero_count(codebook, cluster_size, embed_sum, dead, z, generator=None):
    new_cb, new_cs, new_es = _reset(codebook, cluster_size, embed_sum, dead, z, generator)
    return new_cb, torch.where(dead & (new_cs == 1), torch.zeros_like(new_cs), new_cs), new_es


@wrong("reset_dead_codes", "rows drawn with replacement (randint)")
def reset_replacement(codebook, cluster_size, embed_sum, dead, z, generator=None):
    codebook, cluster_size, embed_sum = codebook.clone(), cluster_size.clone(), embed_sum.clone()
    which = dead.nonzero().flatten()[:z.shape[0]]
    rows = z[torch.randint(0, z.shape[0], (which.numel(),), generator=generator)]
    codebook[which], cluster_size[which], embed_sum[which] = rows, 1.0, rows
    return codebook, cluster_size, embed_sum


@wrong("reset_dead_codes", "modifies its inputs in place")
def reset_in_place(codebook, cluster_size, embed_sum, dead, z, generator=None):
    which = dead.nonzero().flatten()
    which = which[torch.randperm(which.numel(), generator=generator)[:z.shape[0]]]
    rows = z[torch.randperm(z.shape[0], generator=generator)[:which.numel()]]
    codebook[which], cluster_size[which], embed_sum[which] = rows, 1.0, rows
    return codebook, cluster_size, embed_sum


@wrong("reset_dead_codes", "the first rows of z, not random ones")
def reset_first_rows(codebook, cluster_size, embed_sum, dead, z, generator=None):
    codebook, cluster_size, embed_sum = codebook.clone(), cluster_size.clone(), embed_sum.clone()
    which = dead.nonzero().flatten()[:z.shape[0]]
    rows = z[:which.numel()]
    codebook[which], cluster_size[which], embed_sum[which] = rows, 1.0, rows
    return codebook, cluster_size, embed_sum


@wrong("reset_dead_codes", "the generator ignored: global random state")
def reset_global_rng(codebook, cluster_size, embed_sum, dead, z, generator=None):
    return _reset(codebook, cluster_size, embed_sum, dead, z, None)


@wrong("reset_dead_codes", "restarts every code, live ones too")
def reset_everything(codebook, cluster_size, embed_sum, dead, z, generator=None):
    return _reset(codebook, cluster_size, embed_sum, torch.ones_like(dead), z, generator)


@wrong("reset_dead_codes", "assumes fewer dead codes than rows of z")
def reset_too_many(codebook, cluster_size, embed_sum, dead, z, generator=None):
    codebook, cluster_size, embed_sum = codebook.clone(), cluster_size.clone(), embed_sum.clone()
    rows = z[torch.randperm(z.shape[0], generator=generator)[:int(dead.sum())]]
    codebook[dead], cluster_size[dead], embed_sum[dead] = rows, 1.0, rows
    return codebook, cluster_size, embed_sum


@wrong("reset_dead_codes", "restarted codes get random normal vectors, not rows of z")
def reset_randn(codebook, cluster_size, embed_sum, dead, z, generator=None):
    codebook, cluster_size, embed_sum = codebook.clone(), cluster_size.clone(), embed_sum.clone()
    which = dead.nonzero().flatten()[:z.shape[0]]
    rows = torch.randn(which.numel(), z.shape[1], generator=generator) * z.std() + z.mean(0)
    codebook[which], cluster_size[which], embed_sum[which] = rows, 1.0, rows
    return codebook, cluster_size, embed_sum


@wrong("reset_dead_codes", "subclass trick: calls the reference through the package")
def reset_reference(codebook, cluster_size, embed_sum, dead, z, generator=None):
    return dvl_helpers.quantizers.reset_dead_codes(codebook, cluster_size, embed_sum, dead, z,
                                                   generator)


# ---------------------------------------------------------------- codebook_entropy_loss

def _entropies(distances, tau):
    log_p = F.log_softmax(-distances / tau, dim=1)
    p = log_p.exp()
    avg = p.mean(0)
    return -(p * log_p).sum(1).mean(), -(avg * avg.clamp_min(1e-30).log()).sum()


@wrong("codebook_entropy_loss", "signs swapped: H(mean p) - mean H(p_n)")
def entropy_swapped(distances, tau=1.0):
    sample, codebook = _entropies(distances, tau)
    return codebook - sample


@wrong("codebook_entropy_loss", "softmax of +d: the farthest codes get the mass")
def entropy_plus_d(distances, tau=1.0):
    sample, codebook = _entropies(-distances, tau)
    return sample - codebook


@wrong("codebook_entropy_loss", "softmax over the vectors (dim 0)")
def entropy_dim0(distances, tau=1.0):
    sample, codebook = _entropies(distances.T, tau)
    return sample - codebook


@wrong("codebook_entropy_loss", "tau multiplies the distances")
def entropy_tau_times(distances, tau=1.0):
    sample, codebook = _entropies(distances * tau * tau, tau)
    return sample - codebook


@wrong("codebook_entropy_loss", "p * log(p): NaN once a probability underflows to 0")
def entropy_naive(distances, tau=1.0):
    p = torch.softmax(-distances / tau, dim=1)
    avg = p.mean(0)
    return -(p * p.log()).sum(1).mean() + (avg * avg.log()).sum()


@wrong("codebook_entropy_loss", "H(mean p) replaced by the mean of H(p_n): always 0")
def entropy_mean_of_h(distances, tau=1.0):
    sample, _ = _entropies(distances, tau)
    return sample - sample


@wrong("codebook_entropy_loss", "sums the per-vector entropies over n")
def entropy_sum_n(distances, tau=1.0):
    sample, codebook = _entropies(distances, tau)
    return sample * distances.shape[0] - codebook


@wrong("codebook_entropy_loss", "entropies in bits (log2)")
def entropy_bits(distances, tau=1.0):
    sample, codebook = _entropies(distances, tau)
    return (sample - codebook) / torch.log(torch.tensor(2.0))


@wrong("codebook_entropy_loss", "detached: a value without gradient")
def entropy_detached(distances, tau=1.0):
    sample, codebook = _entropies(distances.detach(), tau)
    return sample - codebook


@wrong("codebook_entropy_loss", "only the per-vector term")
def entropy_sample_only(distances, tau=1.0):
    return _entropies(distances, tau)[0]


@wrong("codebook_entropy_loss", "only the usage term, -H(mean p)")
def entropy_usage_only(distances, tau=1.0):
    return -_entropies(distances, tau)[1]


# ---------------------------------------------------------------- the EMA layer

class _GoodEMA(nn.Module):
    """Right; the wrong layers below change one thing each."""

    def __init__(self, num_codes, code_dim, beta=0.25, decay=0.99, eps=1e-5, dead_threshold=None):
        super().__init__()
        self.num_codes, self.beta, self.decay, self.eps = num_codes, beta, decay, eps
        self.dead_threshold = dead_threshold
        codebook = torch.randn(num_codes, code_dim)
        self.register_buffer("codebook", codebook)
        self.register_buffer("cluster_size", torch.ones(num_codes))
        self.register_buffer("embed_sum", codebook.clone())

    def quantize(self, z_e):
        b, d, h, w = z_e.shape
        flat = z_e.permute(0, 2, 3, 1).reshape(-1, d)
        indices = _dist(flat, self.codebook).argmin(1)
        return flat, self.codebook[indices].view(b, h, w, d).permute(0, 3, 1, 2), indices

    def loss(self, z_e, z_q):
        return self.beta * F.mse_loss(z_e, z_q.detach())

    def straight(self, z_e, z_q):
        return z_e + (z_q - z_e).detach()

    def update(self, flat, indices):
        with torch.no_grad():
            n, m, e = _ema(self.cluster_size, self.embed_sum, flat.detach(), indices,
                           self.decay, self.eps)
            if self.dead_threshold is not None:
                e, n, m = _reset(e, n, m, n < self.dead_threshold, flat.detach())
            self.cluster_size.copy_(n)
            self.embed_sum.copy_(m)
            self.codebook.copy_(e)

    def info(self, z_e, indices):
        b, _, h, w = z_e.shape
        usage = torch.bincount(indices, minlength=self.num_codes).float()
        return {"indices": indices.view(b, h, w), "perplexity": _perplexity(usage), "usage": usage}

    def forward(self, z_e):
        flat, z_q, indices = self.quantize(z_e)
        if self.training:
            self.update(flat, indices)
        return self.straight(z_e, z_q), self.loss(z_e, z_q), self.info(z_e, indices)


@wrong("EMAVectorQuantizer", "updates the codebook in eval mode too")
class EMAUpdatesInEval(_GoodEMA):
    def forward(self, z_e):
        flat, z_q, indices = self.quantize(z_e)
        self.update(flat, indices)
        return self.straight(z_e, z_q), self.loss(z_e, z_q), self.info(z_e, indices)


@wrong("EMAVectorQuantizer", "codebook as an nn.Parameter that receives gradient")
class EMAParameter(_GoodEMA):
    def __init__(self, num_codes, code_dim, beta=0.25, decay=0.99, eps=1e-5, dead_threshold=None):
        super().__init__(num_codes, code_dim, beta, decay, eps, dead_threshold)
        del self.codebook
        self.codebook = nn.Parameter(self.embed_sum.clone())

    def loss(self, z_e, z_q):
        return F.mse_loss(z_q, z_e.detach()) + self.beta * F.mse_loss(z_e, z_q.detach())


@wrong("EMAVectorQuantizer", "loss includes the codebook term: (1 + beta) * mse")
class EMACodebookLoss(_GoodEMA):
    def loss(self, z_e, z_q):
        return F.mse_loss(z_q, z_e.detach()) + self.beta * F.mse_loss(z_e, z_q.detach())


@wrong("EMAVectorQuantizer", "beta missing: loss = commitment_loss")
class EMANoBeta(_GoodEMA):
    def loss(self, z_e, z_q):
        return F.mse_loss(z_e, z_q.detach())


@wrong("EMAVectorQuantizer", "no straight-through: returns the raw z_q")
class EMANoStraightThrough(_GoodEMA):
    def straight(self, z_e, z_q):
        return z_q


@wrong("EMAVectorQuantizer", "codebook a plain attribute, not a registered buffer")
class EMAPlainAttribute(_GoodEMA):
    def __init__(self, num_codes, code_dim, beta=0.25, decay=0.99, eps=1e-5, dead_threshold=None):
        super().__init__(num_codes, code_dim, beta, decay, eps, dead_threshold)
        codebook = self.codebook
        del self._buffers["codebook"]
        object.__setattr__(self, "codebook", codebook)


@wrong("EMAVectorQuantizer", "statistics start at zero: unused codes collapse to 0")
class EMAZeroStats(_GoodEMA):
    def __init__(self, num_codes, code_dim, beta=0.25, decay=0.99, eps=1e-5, dead_threshold=None):
        super().__init__(num_codes, code_dim, beta, decay, eps, dead_threshold)
        self.cluster_size.zero_()
        self.embed_sum.zero_()


@wrong("EMAVectorQuantizer", "the EMA statistics keep the autograd graph (no detach, no no_grad)")
class EMAWithGraph(_GoodEMA):
    def update(self, flat, indices):
        n, m, e = _ema(self.cluster_size, self.embed_sum, flat, indices, self.decay, self.eps)
        self.cluster_size = n
        self.embed_sum = m
        self.codebook = e


@wrong("EMAVectorQuantizer", "decay ignored: hard-coded 0.99")
class EMAFixedDecay(_GoodEMA):
    def update(self, flat, indices):
        self.decay = 0.99
        super().update(flat, indices)


@wrong("EMAVectorQuantizer", "dead_threshold ignored: never restarts")
class EMANoRestart(_GoodEMA):
    def __init__(self, num_codes, code_dim, beta=0.25, decay=0.99, eps=1e-5, dead_threshold=None):
        super().__init__(num_codes, code_dim, beta, decay, eps, None)


@wrong("EMAVectorQuantizer", "restarts before the EMA step: the step undoes the restart")
class EMARestartFirst(_GoodEMA):
    def update(self, flat, indices):
        with torch.no_grad():
            e, n, m = self.codebook, self.cluster_size, self.embed_sum
            if self.dead_threshold is not None:
                e, n, m = _reset(e, n, m, n < self.dead_threshold, flat.detach())
            n, m, e = _ema(n, m, flat.detach(), indices, self.decay, self.eps)
            self.cluster_size.copy_(n)
            self.embed_sum.copy_(m)
            self.codebook.copy_(e)


@wrong("EMAVectorQuantizer", "restarts dead codes even without a dead_threshold (default 1)")
class EMADefaultThreshold(_GoodEMA):
    def __init__(self, num_codes, code_dim, beta=0.25, decay=0.99, eps=1e-5, dead_threshold=1.0):
        super().__init__(num_codes, code_dim, beta, decay, eps, dead_threshold)


@wrong("EMAVectorQuantizer", "no usage in info")
class EMANoUsage(_GoodEMA):
    def info(self, z_e, indices):
        out = super().info(z_e, indices)
        del out["usage"]
        return out


@wrong("EMAVectorQuantizer", "subclasses the reference EMAVectorQuantizer")
class EMASubclassReference(RefEMAVectorQuantizer):
    pass


@wrong("EMAVectorQuantizer", "delegates the update to the reference ema_update")
class EMADelegates(_GoodEMA):
    def update(self, flat, indices):
        n, m, e = ref_q.ema_update(self.cluster_size, self.embed_sum, flat, indices,
                                   self.decay, self.eps)
        self.cluster_size.copy_(n)
        self.embed_sum.copy_(m)
        self.codebook.copy_(e)


@wrong("codebook_entropy_loss", "xlogy(avg, avg): right value, NaN gradient where avg = 0")
def entropy_xlogy_nan_grad(distances, tau=1.0):
    log_p = F.log_softmax(-distances / tau, dim=1)
    p = log_p.exp()
    avg = p.mean(0)
    return -(p * log_p).sum(1).mean() + torch.special.xlogy(avg, avg).sum()
