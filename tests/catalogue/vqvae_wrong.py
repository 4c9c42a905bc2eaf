"""Wrong answers to 01_vqvae: every check must reject each one.

``CASES`` holds ``(check name, answer, what is wrong)``. Most are mistakes
learners make; a few are shortcuts the grader must refuse (calling the
course's reference implementation, building the [N, K, D] tensor, looping).
"""
import torch
import torch.nn.functional as F
from torch import nn

import dvl_helpers
import dvl_helpers.quantizers as ref_q
from dvl_helpers.quantizers import VectorQuantizer as RefVectorQuantizer
from dvl_helpers.quantizers import quantize as ref_quantize

CASES = []


def wrong(check, why):
    def register(answer):
        CASES.append((check, answer, why))
        return answer
    return register


# correct pieces the wrong layers below are built from
def _dist(z, codebook):
    return (z ** 2).sum(1, keepdim=True) - 2 * z @ codebook.T + (codebook ** 2).sum(1)


def _quantize(z_e, codebook):
    b, d, h, w = z_e.shape
    indices = _dist(z_e.permute(0, 2, 3, 1).reshape(-1, d), codebook).argmin(1)
    return codebook[indices].view(b, h, w, d).permute(0, 3, 1, 2), indices.view(b, h, w)


def _perplexity(counts):
    p = counts / counts.sum()
    return torch.exp(-torch.special.xlogy(p, p).sum())


# ---------------------------------------------------------------- distances

@wrong("pairwise_sq_distances", "sign error: + 2 z e^T")
def dist_plus(z, codebook):
    return (z ** 2).sum(1, keepdim=True) + 2 * z @ codebook.T + (codebook ** 2).sum(1)


@wrong("pairwise_sq_distances", "cross term without the factor 2")
def dist_no_two(z, codebook):
    return (z ** 2).sum(1, keepdim=True) - z @ codebook.T + (codebook ** 2).sum(1)


@wrong("pairwise_sq_distances", "the [N, K, D] broadcast (right values, wrong memory)")
def dist_broadcast(z, codebook):
    return ((z[:, None, :] - codebook[None, :, :]) ** 2).sum(-1)


@wrong("pairwise_sq_distances", "the [N, K, D] broadcast through expand")
def dist_expand(z, codebook):
    n, k = z.shape[0], codebook.shape[0]
    return (z.unsqueeze(1).expand(n, k, -1) - codebook.unsqueeze(0).expand(n, k, -1)).pow(2).sum(2)


@wrong("pairwise_sq_distances", "torch.norm of the [N, K, D] differences, squared")
def dist_norm_broadcast(z, codebook):
    return torch.norm(z[:, None] - codebook[None], dim=-1) ** 2


@wrong("pairwise_sq_distances", "F.pairwise_distance on broadcast views: [N, K, D] inside")
def dist_pairwise_distance(z, codebook):
    return F.pairwise_distance(z[:, None, :], codebook[None, :, :], eps=0.0) ** 2


@wrong("pairwise_sq_distances", "codebook norms as a column: broadcasts [N, K] + [K, 1]")
def dist_column_norms(z, codebook):
    return (z ** 2).sum(1, keepdim=True) - 2 * z @ codebook.T + (codebook ** 2).sum(1, keepdim=True)


@wrong("pairwise_sq_distances", "Euclidean distances, not squared")
def dist_not_squared(z, codebook):
    return torch.cdist(z, codebook)


@wrong("pairwise_sq_distances", "a Python loop over the rows")
def dist_loop(z, codebook):
    return torch.stack([((row - codebook) ** 2).sum(-1) for row in z])


@wrong("pairwise_sq_distances", "returns [K, N]")
def dist_transposed(z, codebook):
    return _dist(z, codebook).T


@wrong("pairwise_sq_distances", "detaches its inputs (no gradient)")
def dist_detached(z, codebook):
    return _dist(z.detach(), codebook.detach())


@wrong("pairwise_sq_distances", "calls the reference implementation")
def dist_reference(z, codebook):
    return ref_q.pairwise_sq_distances(z, codebook)


@wrong("pairwise_sq_distances", "calls the reference through the package attribute")
def dist_reference_attribute(z, codebook):
    return dvl_helpers.quantizers.pairwise_sq_distances(z, codebook)


# ---------------------------------------------------------------- nearest code

@wrong("nearest_code", "argmax instead of argmin")
def nearest_argmax(z, codebook):
    return _dist(z, codebook).argmax(1)


@wrong("nearest_code", "argmin over the codes axis 0")
def nearest_axis0(z, codebook):
    return _dist(z, codebook).argmin(0)


@wrong("nearest_code", "forgets ||e||^2: the largest dot product")
def nearest_dot(z, codebook):
    return (z @ codebook.T).argmax(1)


@wrong("nearest_code", "keepdim: returns [N, 1]")
def nearest_keepdim(z, codebook):
    return _dist(z, codebook).argmin(1, keepdim=True)


@wrong("nearest_code", "float indices")
def nearest_float(z, codebook):
    return _dist(z, codebook).argmin(1).float()


@wrong("nearest_code", "int32 indices")
def nearest_int32(z, codebook):
    return _dist(z, codebook).argmin(1).int()


@wrong("nearest_code", "imports the reference inside the function")
def nearest_reference_import(z, codebook):
    from dvl_helpers.quantizers import nearest_code as reference
    return reference(z, codebook)


# the answer *is* the reference object
CASES.append(("nearest_code", ref_q.nearest_code, "is the reference implementation itself"))


# ---------------------------------------------------------------- quantize

@wrong("quantize", "flattens [B, D, H, W] with reshape(-1, D), without moving channels last")
def quantize_no_permute(z_e, codebook):
    b, d, h, w = z_e.shape
    flat = z_e.reshape(-1, d)
    indices = _dist(flat, codebook).argmin(1)
    return codebook[indices].reshape(b, d, h, w), indices.reshape(b, h, w)


@wrong("quantize", "transpose(1, -1) puts W before H: [B, W, H, D]")
def quantize_transpose(z_e, codebook):
    b, d, h, w = z_e.shape
    flat = z_e.transpose(1, -1).reshape(-1, d)
    indices = _dist(flat, codebook).argmin(1)
    z_q = codebook[indices].view(b, w, h, d).transpose(1, -1)
    return z_q, indices.view(b, h, w)


@wrong("quantize", "indices returned flat [B*H*W]")
def quantize_flat_indices(z_e, codebook):
    z_q, indices = _quantize(z_e, codebook)
    return z_q, indices.reshape(-1)


@wrong("quantize", "z_q put back with view(B, D, H, W) instead of permuting")
def quantize_scrambled_output(z_e, codebook):
    b, d, h, w = z_e.shape
    indices = _dist(z_e.permute(0, 2, 3, 1).reshape(-1, d), codebook).argmin(1)
    return codebook[indices].reshape(b, d, h, w), indices.view(b, h, w)


@wrong("quantize", "z_q from a detached codebook: the codebook never trains")
def quantize_detached(z_e, codebook):
    z_q, indices = _quantize(z_e, codebook.detach())
    return z_q, indices


@wrong("quantize", "applies the straight-through estimator inside quantize")
def quantize_with_st(z_e, codebook):
    z_q, indices = _quantize(z_e, codebook)
    return z_e + (z_q - z_e).detach(), indices


@wrong("quantize", "uses .view, which fails on non-contiguous latents")
def quantize_view(z_e, codebook):
    b, d, h, w = z_e.shape
    flat = z_e.view(b, d, h * w).transpose(1, 2).reshape(-1, d)
    indices = _dist(flat, codebook).argmin(1)
    return codebook[indices].view(b, h, w, d).permute(0, 3, 1, 2), indices.view(b, h, w)


@wrong("quantize", "returns (indices, z_q)")
def quantize_swapped(z_e, codebook):
    z_q, indices = _quantize(z_e, codebook)
    return indices, z_q


@wrong("quantize", "calls the reference implementation via an alias")
def quantize_reference(z_e, codebook):
    return ref_quantize(z_e, codebook)


@wrong("quantize", "reaches the reference through getattr at run time")
def quantize_reference_getattr(z_e, codebook):
    import importlib
    module = importlib.import_module(".".join(["dvl_helpers", "quantizers"]))
    return getattr(module, "".join(["quan", "tize"]))(z_e, codebook)


# ---------------------------------------------------------------- losses

@wrong("vq_losses", "stop-gradients swapped")
def losses_swapped(z_e, z_q):
    return F.mse_loss(z_e, z_q.detach()), F.mse_loss(z_q, z_e.detach())


@wrong("vq_losses", "no stop-gradients")
def losses_no_detach(z_e, z_q):
    return F.mse_loss(z_q, z_e), F.mse_loss(z_e, z_q)


@wrong("vq_losses", "both sides detached: no gradient at all")
def losses_all_detached(z_e, z_q):
    return F.mse_loss(z_q.detach(), z_e.detach()), F.mse_loss(z_e.detach(), z_q.detach())


@wrong("vq_losses", "sums instead of means")
def losses_sum(z_e, z_q):
    return (((z_e.detach() - z_q) ** 2).sum(), ((z_e - z_q.detach()) ** 2).sum())


@wrong("vq_losses", "squared norm over channels, mean over positions")
def losses_per_vector(z_e, z_q):
    return (((z_e.detach() - z_q) ** 2).sum(1).mean(), ((z_e - z_q.detach()) ** 2).sum(1).mean())


@wrong("vq_losses", "returns Python floats")
def losses_item(z_e, z_q):
    return F.mse_loss(z_q, z_e.detach()).item(), F.mse_loss(z_e, z_q.detach()).item()


@wrong("vq_losses", "beta = 0.25 applied inside vq_losses")
def losses_beta(z_e, z_q):
    return F.mse_loss(z_q, z_e.detach()), 0.25 * F.mse_loss(z_e, z_q.detach())


@wrong("vq_losses", "per-element losses, not reduced")
def losses_unreduced(z_e, z_q):
    return (z_e.detach() - z_q) ** 2, (z_e - z_q.detach()) ** 2


# ---------------------------------------------------------------- straight-through

@wrong("straight_through", "returns z_q: gradient reaches z_q, not z_e")
def st_identity(z_e, z_q):
    return z_q


@wrong("straight_through", "z_q.detach(): no gradient at all")
def st_detached(z_e, z_q):
    return z_q.detach()


@wrong("straight_through", "reversed: z_q + (z_e - z_q).detach() has the value of z_e")
def st_reversed(z_e, z_q):
    return z_q + (z_e - z_q).detach()


@wrong("straight_through", "missing detach: z_e + (z_q - z_e), gradient goes to z_q")
def st_no_detach(z_e, z_q):
    return z_e + (z_q - z_e)


@wrong("straight_through", "z_q + z_e - z_e.detach(): the gradient also reaches z_q")
def st_also_to_z_q(z_e, z_q):
    return z_q + z_e - z_e.detach()


@wrong("straight_through", "halves the gradient")
def st_half(z_e, z_q):
    return 0.5 * z_e + (z_q - 0.5 * z_e).detach()


@wrong("straight_through", "returns z_e")
def st_returns_z_e(z_e, z_q):
    return z_e


# ---------------------------------------------------------------- usage

@wrong("code_usage", "bincount without minlength")
def usage_no_minlength(indices, num_codes):
    return torch.bincount(indices.reshape(-1)).float()


@wrong("code_usage", "integer counts")
def usage_long(indices, num_codes):
    return torch.bincount(indices.reshape(-1), minlength=num_codes)


@wrong("code_usage", "probabilities instead of counts")
def usage_normalised(indices, num_codes):
    counts = torch.bincount(indices.reshape(-1), minlength=num_codes).float()
    return counts / counts.sum()


@wrong("code_usage", "unique(return_counts): only the used codes")
def usage_unique(indices, num_codes):
    return torch.unique(indices, return_counts=True)[1].float()


@wrong("code_usage", "counts only the first item of the batch")
def usage_first_item(indices, num_codes):
    return torch.bincount(indices[0].reshape(-1), minlength=num_codes).float()


@wrong("code_usage", "one-hot summed over the wrong axis")
def usage_wrong_axis(indices, num_codes):
    return F.one_hot(indices.reshape(-1), num_codes).sum(1).float()


# ---------------------------------------------------------------- perplexity

@wrong("perplexity", "exp of the entropy in bits")
def ppl_bits(counts):
    p = counts / counts.sum()
    return torch.exp(-torch.special.xlogy(p, p).sum() / torch.log(torch.tensor(2.0)))


@wrong("perplexity", "returns the entropy, not its exponential")
def ppl_entropy(counts):
    p = counts / counts.sum()
    return -torch.special.xlogy(p, p).sum()


@wrong("perplexity", "NaN on unused codes: p * log p with p = 0")
def ppl_nan(counts):
    p = counts / counts.sum()
    return torch.exp(-(p * p.log()).sum())


@wrong("perplexity", "not normalised: counts used as probabilities")
def ppl_unnormalised(counts):
    return torch.exp(-torch.special.xlogy(counts, counts).sum())


@wrong("perplexity", "returns a Python float")
def ppl_float(counts):
    return float(_perplexity(counts))


@wrong("perplexity", "inverse Simpson index 1 / sum p^2 (right only for uniform usage)")
def ppl_simpson(counts):
    p = counts / counts.sum()
    return 1.0 / (p ** 2).sum()


@wrong("perplexity", "returns shape [1]")
def ppl_shape(counts):
    return _perplexity(counts).reshape(1)


@wrong("perplexity", "Categorical(logits=counts): a softmax of the counts")
def ppl_logits(counts):
    return torch.distributions.Categorical(logits=counts).entropy().exp()


# ---------------------------------------------------------------- the layer

class _GoodVQ(nn.Module):
    """Right; the wrong layers below change one thing each."""

    def __init__(self, num_codes, code_dim, beta=0.25):
        super().__init__()
        self.beta = beta
        self.codebook = nn.Parameter(torch.empty(num_codes, code_dim).uniform_(-1 / num_codes,
                                                                              1 / num_codes))

    def losses(self, z_e, z_q):
        return F.mse_loss(z_q, z_e.detach()) + self.beta * F.mse_loss(z_e, z_q.detach())

    def straight(self, z_e, z_q):
        return z_e + (z_q - z_e).detach()

    def info(self, indices):
        counts = torch.bincount(indices.reshape(-1), minlength=self.codebook.shape[0]).float()
        return {"indices": indices, "perplexity": _perplexity(counts)}

    def forward(self, z_e):
        z_q, indices = _quantize(z_e, self.codebook)
        return self.straight(z_e, z_q), self.losses(z_e, z_q), self.info(indices)


@wrong("VectorQuantizer", "codebook is a plain tensor, not an nn.Parameter")
class VQPlainTensor(_GoodVQ):
    def __init__(self, num_codes, code_dim, beta=0.25):
        super().__init__(num_codes, code_dim, beta)
        del self.codebook
        self.codebook = torch.rand(num_codes, code_dim)


@wrong("VectorQuantizer", "codebook registered as a buffer")
class VQBuffer(_GoodVQ):
    def __init__(self, num_codes, code_dim, beta=0.25):
        super().__init__(num_codes, code_dim, beta)
        del self.codebook
        self.register_buffer("codebook", torch.rand(num_codes, code_dim))


@wrong("VectorQuantizer", "codebook stored transposed [D, K]")
class VQTransposed(_GoodVQ):
    def __init__(self, num_codes, code_dim, beta=0.25):
        super().__init__(num_codes, code_dim, beta)
        self.codebook = nn.Parameter(torch.rand(code_dim, num_codes))

    def forward(self, z_e):
        z_q, indices = _quantize(z_e, self.codebook.T)
        return self.straight(z_e, z_q), self.losses(z_e, z_q), self.info(indices)


@wrong("VectorQuantizer", "codebook initialised with zeros: all codes equal")
class VQZeros(_GoodVQ):
    def __init__(self, num_codes, code_dim, beta=0.25):
        super().__init__(num_codes, code_dim, beta)
        nn.init.zeros_(self.codebook)


@wrong("VectorQuantizer", "missing beta: codebook_loss + commitment_loss")
class VQNoBeta(_GoodVQ):
    def losses(self, z_e, z_q):
        return F.mse_loss(z_q, z_e.detach()) + F.mse_loss(z_e, z_q.detach())


@wrong("VectorQuantizer", "beta on the codebook term")
class VQBetaWrongTerm(_GoodVQ):
    def losses(self, z_e, z_q):
        return self.beta * F.mse_loss(z_q, z_e.detach()) + F.mse_loss(z_e, z_q.detach())


@wrong("VectorQuantizer", "beta hard-coded to 0.25, the argument ignored")
class VQFixedBeta(_GoodVQ):
    def losses(self, z_e, z_q):
        return F.mse_loss(z_q, z_e.detach()) + 0.25 * F.mse_loss(z_e, z_q.detach())


@wrong("VectorQuantizer", "default beta 1.0 instead of 0.25")
class VQDefaultBeta(_GoodVQ):
    def __init__(self, num_codes, code_dim, beta=1.0):
        super().__init__(num_codes, code_dim, beta)


@wrong("VectorQuantizer", "no stop-gradients: (1 + beta) * mse(z_e, z_q)")
class VQNoStopGradient(_GoodVQ):
    def losses(self, z_e, z_q):
        return (1 + self.beta) * F.mse_loss(z_e, z_q)


@wrong("VectorQuantizer", "no straight-through: returns the raw z_q")
class VQNoStraightThrough(_GoodVQ):
    def straight(self, z_e, z_q):
        return z_q


@wrong("VectorQuantizer", "losses computed from the straight-through output")
class VQLossAfterST(_GoodVQ):
    def forward(self, z_e):
        z_q, indices = _quantize(z_e, self.codebook)
        z_st = self.straight(z_e, z_q)
        return z_st, self.losses(z_e, z_st), self.info(indices)


@wrong("VectorQuantizer", "argmax: the farthest code")
class VQArgmax(_GoodVQ):
    def forward(self, z_e):
        b, d, h, w = z_e.shape
        indices = _dist(z_e.permute(0, 2, 3, 1).reshape(-1, d), self.codebook).argmax(1)
        z_q = self.codebook[indices].view(b, h, w, d).permute(0, 3, 1, 2)
        return self.straight(z_e, z_q), self.losses(z_e, z_q), self.info(indices.view(b, h, w))


@wrong("VectorQuantizer", "indices flat in info")
class VQFlatIndices(_GoodVQ):
    def info(self, indices):
        out = super().info(indices)
        out["indices"] = indices.reshape(-1)
        return out


@wrong("VectorQuantizer", "no perplexity in info")
class VQNoPerplexity(_GoodVQ):
    def info(self, indices):
        return {"indices": indices}


@wrong("VectorQuantizer", "perplexity of the first item of the batch only")
class VQBadPerplexity(_GoodVQ):
    def info(self, indices):
        counts = torch.bincount(indices[0].reshape(-1), minlength=self.codebook.shape[0]).float()
        return {"indices": indices, "perplexity": _perplexity(counts)}


@wrong("VectorQuantizer", "returns (z_q, loss) without info")
class VQTwoOutputs(_GoodVQ):
    def forward(self, z_e):
        z_q, loss, _ = super().forward(z_e)
        return z_q, loss


@wrong("VectorQuantizer", "subclasses the reference VectorQuantizer")
class VQSubclassReference(RefVectorQuantizer):
    pass


@wrong("VectorQuantizer", "delegates forward to the reference quantize")
class VQDelegates(_GoodVQ):
    def forward(self, z_e):
        z_q, indices = dvl_helpers.quantizers.quantize(z_e, self.codebook)
        return self.straight(z_e, z_q), self.losses(z_e, z_q), self.info(indices)
