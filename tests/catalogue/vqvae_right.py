"""Different but correct answers to 01_vqvae: every check must accept each one.

``CASES`` holds ``(check name, answer, how it differs)``; the answers use the
formulations a learner is likely to find (cdist, einsum, addmm, one-hot
products, F.embedding, einops, custom autograd Functions, distributions).
"""
import einops
import torch
import torch.nn.functional as F
from torch import nn

CASES = []


def right(check, how):
    def register(answer):
        CASES.append((check, answer, how))
        return answer
    return register


# ---------------------------------------------------------------- distances

@right("pairwise_sq_distances", "the expansion with keepdim norms and a matmul")
def dist_expansion(z, codebook):
    z_sq = (z ** 2).sum(dim=1, keepdim=True)
    e_sq = (codebook ** 2).sum(dim=1, keepdim=True).T
    return z_sq - 2 * z @ codebook.T + e_sq


@right("pairwise_sq_distances", "torch.cdist squared (less exact in float32)")
def dist_cdist(z, codebook):
    return torch.cdist(z, codebook) ** 2


@right("pairwise_sq_distances", "einsum for the cross term and clamp at 0")
def dist_einsum(z, codebook):
    cross = torch.einsum("nd,kd->nk", z, codebook)
    z_sq = torch.einsum("nd,nd->n", z, z)[:, None]
    d = z_sq - 2 * cross + torch.einsum("kd,kd->k", codebook, codebook)
    return d.clamp(min=0)


@right("pairwise_sq_distances", "torch.addmm with alpha=-2")
def dist_addmm(z, codebook):
    norms = z.pow(2).sum(1, keepdim=True) + codebook.pow(2).sum(1)
    return torch.addmm(norms, z, codebook.t(), alpha=-2)


@right("pairwise_sq_distances", "linalg.vector_norm and a float64 computation")
def dist_float64(z, codebook):
    z64, e64 = z.double(), codebook.double()
    d = (torch.linalg.vector_norm(z64, dim=1) ** 2).unsqueeze(1) \
        + (torch.linalg.vector_norm(e64, dim=1) ** 2).unsqueeze(0) - 2 * z64.mm(e64.t())
    return d.to(z.dtype)


# ---------------------------------------------------------------- nearest code

@right("nearest_code", "argmin of the full expansion")
def nearest_argmin(z, codebook):
    return dist_expansion(z, codebook).argmin(dim=1)


@right("nearest_code", "drops ||z||^2, which does not change the argmin")
def nearest_without_z_norm(z, codebook):
    return ((codebook ** 2).sum(1) - 2 * z @ codebook.T).argmin(1)


@right("nearest_code", "broadcast differences (allowed here) and torch.min")
def nearest_broadcast(z, codebook):
    return torch.min(((z[:, None, :] - codebook[None]) ** 2).sum(-1), dim=1).indices


@right("nearest_code", "argmin of torch.cdist under no_grad")
@torch.no_grad()
def nearest_cdist(z, codebook):
    return torch.cdist(z, codebook).argmin(dim=-1)


@right("nearest_code", "argmax of the negated distances, detached")
def nearest_argmax_negative(z, codebook):
    return torch.argmax(-dist_addmm(z.detach(), codebook.detach()), dim=1).long()


# ---------------------------------------------------------------- quantize

@right("quantize", "permute + reshape, codebook indexing, permute back")
def quantize_permute(z_e, codebook):
    b, d, h, w = z_e.shape
    flat = z_e.permute(0, 2, 3, 1).reshape(-1, d)
    indices = nearest_argmin(flat, codebook)
    z_q = codebook[indices].view(b, h, w, d).permute(0, 3, 1, 2)
    return z_q, indices.view(b, h, w)


@right("quantize", "einops.rearrange and F.embedding")
def quantize_einops(z_e, codebook):
    b, _, h, w = z_e.shape
    flat = einops.rearrange(z_e, "b d h w -> (b h w) d")
    indices = einops.rearrange(nearest_without_z_norm(flat, codebook), "(b h w) -> b h w",
                               b=b, h=h, w=w)
    z_q = einops.rearrange(F.embedding(indices, codebook), "b h w d -> b d h w")
    return z_q, indices


@right("quantize", "movedim, a one-hot matrix product and contiguous output")
def quantize_one_hot(z_e, codebook):
    channels_last = z_e.movedim(1, -1)                  # [B, H, W, D]
    flat = channels_last.reshape(-1, z_e.shape[1])
    indices = dist_cdist(flat, codebook).argmin(1)
    one_hot = F.one_hot(indices, codebook.shape[0]).to(codebook.dtype)
    z_q = (one_hot @ codebook).reshape(channels_last.shape).movedim(-1, 1).contiguous()
    return z_q, indices.reshape(channels_last.shape[:-1])


@right("quantize", "index_select and a tuple built with torch.stack-free ops")
def quantize_index_select(z_e, codebook):
    b, d, h, w = z_e.shape
    flat = z_e.transpose(1, 2).transpose(2, 3).contiguous().view(-1, d)
    indices = nearest_broadcast(flat, codebook)
    z_q = torch.index_select(codebook, 0, indices).view(b, h, w, d).permute(0, 3, 1, 2)
    return (z_q, indices.view(b, h, w))


# ---------------------------------------------------------------- losses

@right("vq_losses", "F.mse_loss with detach")
def losses_mse(z_e, z_q):
    return F.mse_loss(z_q, z_e.detach()), F.mse_loss(z_e, z_q.detach())


@right("vq_losses", "explicit squares and means, list instead of tuple")
def losses_explicit(z_e, z_q):
    codebook_loss = ((z_e.detach() - z_q) ** 2).mean()
    commitment_loss = (z_e - z_q.detach()).square().mean()
    return [codebook_loss, commitment_loss]


@right("vq_losses", "squared norms divided by the element count")
def losses_norm(z_e, z_q):
    n = z_e.numel()
    return (torch.linalg.vector_norm(z_q - z_e.detach()) ** 2 / n,
            torch.sum((z_e - z_q.detach()) ** 2) / n)


# ---------------------------------------------------------------- straight-through

@right("straight_through", "z_e + (z_q - z_e).detach()")
def st_classic(z_e, z_q):
    return z_e + (z_q - z_e).detach()


@right("straight_through", "z_q.detach() + z_e - z_e.detach()")
def st_difference(z_e, z_q):
    return z_q.detach() + z_e - z_e.detach()


class _StraightThrough(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z_e, z_q):
        return z_q.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad, None


@right("straight_through", "a custom autograd.Function")
def st_function(z_e, z_q):
    return _StraightThrough.apply(z_e, z_q)


# ---------------------------------------------------------------- usage

@right("code_usage", "bincount with minlength")
def usage_bincount(indices, num_codes):
    return torch.bincount(indices.flatten(), minlength=num_codes).float()


@right("code_usage", "scatter_add into zeros")
def usage_scatter(indices, num_codes):
    flat = indices.reshape(-1)
    return torch.zeros(num_codes).scatter_add_(0, flat, torch.ones(flat.shape[0]))


@right("code_usage", "a one-hot sum")
def usage_one_hot(indices, num_codes):
    return F.one_hot(indices.reshape(-1), num_codes).sum(0).to(torch.float32)


@right("code_usage", "float64 counts with index_add")
def usage_index_add(indices, num_codes):
    flat = indices.contiguous().view(-1)
    return torch.zeros(num_codes, dtype=torch.float64).index_add_(
        0, flat, torch.ones_like(flat, dtype=torch.float64))


# ---------------------------------------------------------------- perplexity

@right("perplexity", "xlogy handles 0 log 0")
def ppl_xlogy(counts):
    p = counts / counts.sum()
    return torch.exp(-torch.special.xlogy(p, p).sum())


@right("perplexity", "Categorical(probs=...).entropy()")
def ppl_categorical(counts):
    return torch.distributions.Categorical(probs=counts).entropy().exp()


@right("perplexity", "a mask on the used codes")
def ppl_masked(counts):
    p = counts / counts.sum()
    p = p[p > 0]
    return torch.exp(-(p * p.log()).sum())


@right("perplexity", "a small epsilon inside the log")
def ppl_epsilon(counts):
    p = counts / counts.sum()
    return torch.exp(-torch.sum(p * torch.log(p + 1e-10)))


@right("perplexity", "entropy in bits, raised back with base 2")
def ppl_bits(counts):
    p = counts.double() / counts.sum()
    bits = -torch.where(p > 0, p * torch.log2(p), torch.zeros_like(p)).sum()
    return (2.0 ** bits).float()


@right("perplexity", "log-sum form: log N - sum c log c / N")
def ppl_log_sum(counts):
    total = counts.sum()
    entropy = total.log() - torch.special.xlogy(counts, counts).sum() / total
    return entropy.exp()


# ---------------------------------------------------------------- the layer

@right("VectorQuantizer", "the functions above; uniform(-1/K, 1/K) init")
class VQPlain(nn.Module):
    def __init__(self, num_codes, code_dim, beta=0.25):
        super().__init__()
        self.beta = beta
        self.codebook = nn.Parameter(torch.empty(num_codes, code_dim).uniform_(-1 / num_codes,
                                                                              1 / num_codes))

    def forward(self, z_e):
        z_q, indices = quantize_permute(z_e, self.codebook)
        codebook_loss, commitment_loss = losses_mse(z_e, z_q)
        loss = codebook_loss + self.beta * commitment_loss
        counts = usage_bincount(indices, self.codebook.shape[0])
        return st_classic(z_e, z_q), loss, {"indices": indices, "perplexity": ppl_xlogy(counts)}


@right("VectorQuantizer", "nn.Embedding weight aliased as codebook, einops, perplexity as float")
class VQEmbedding(nn.Module):
    def __init__(self, num_codes, code_dim, beta=0.25):
        super().__init__()
        self.num_codes, self.beta = num_codes, beta
        self.embedding = nn.Embedding(num_codes, code_dim)
        self.codebook = self.embedding.weight

    def forward(self, z_e):
        b, d, h, w = z_e.shape
        flat = einops.rearrange(z_e, "b d h w -> (b h w) d")
        indices = torch.cdist(flat.detach(), self.codebook.detach()).argmin(1)
        z_q = einops.rearrange(self.embedding(indices), "(b h w) d -> b d h w", b=b, h=h, w=w)
        loss = F.mse_loss(z_q, z_e.detach()) + self.beta * F.mse_loss(z_e, z_q.detach())
        counts = torch.bincount(indices, minlength=self.num_codes).float()
        p = counts / counts.sum()
        ppl = float(torch.exp(-torch.special.xlogy(p, p).sum()))
        return z_e + (z_q - z_e).detach(), loss, {"indices": indices.view(b, h, w),
                                                   "perplexity": ppl, "usage": counts}


@right("VectorQuantizer", "one-hot codes, custom straight-through, normal init, tuple built late")
class VQOneHot(nn.Module):
    def __init__(self, num_codes, code_dim, beta=0.25):
        super().__init__()
        self.register_parameter("codebook", nn.Parameter(torch.randn(num_codes, code_dim)))
        self.register_buffer("beta", torch.tensor(float(beta)))

    def forward(self, z_e):
        z_q, indices = quantize_one_hot(z_e, self.codebook)
        codebook_loss, commitment_loss = losses_explicit(z_e, z_q)
        info = dict(indices=indices,
                    perplexity=ppl_categorical(usage_one_hot(indices, self.codebook.shape[0])))
        return (st_function(z_e, z_q), codebook_loss + self.beta * commitment_loss, info)
