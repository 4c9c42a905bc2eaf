"""Wrong answers to 04_hierarchical_vq: every check must reject each one.

``CASES`` holds ``(check name, answer, what is wrong)``: residuals not
updated or computed from the wrong side, norms taken before the stage or
squared, indices transposed, inputs changed in place, chunks taken with a
stride, codebooks used on the wrong chunk, losses averaged instead of summed,
commitment terms that train the codes, a two-level model wired the wrong way,
and a few shortcuts the grader must refuse (calling the course's reference
implementation in ``dvl_helpers.hierarchical``).
"""
import torch
import torch.nn.functional as F
from torch import nn

import dvl_helpers.hierarchical as ref_h
from dvl_helpers.nn import Decoder, Encoder
from dvl_helpers.quantizers import EMAVectorQuantizer

CASES = []


def wrong(check, why):
    def register(answer):
        CASES.append((check, answer, why))
        return answer
    return register


# correct pieces the wrong answers are built from
def _nearest(z, codebook):
    d = (z ** 2).sum(1, keepdim=True) - 2 * z @ codebook.T + (codebook ** 2).sum(1)
    return d.argmin(1)


def _rq(z, codebooks):
    residual = z.detach()
    z_q, idx, norms = 0, [], []
    for cb in codebooks:
        i = _nearest(residual, cb)
        pick = cb[i]
        residual = residual - pick.detach()
        z_q = z_q + pick
        idx.append(i)
        norms.append(residual.norm(dim=1).mean())
    return z_q, torch.stack(idx), torch.stack(norms)


def _pq(z, codebooks):
    chunks = z.detach().split(z.shape[1] // len(codebooks), dim=1)
    idx = [_nearest(c, cb) for c, cb in zip(chunks, codebooks)]
    return torch.cat([cb[i] for cb, i in zip(codebooks, idx)], dim=1), torch.stack(idx)


# ---------------------------------------------------------------- residual_quantize

@wrong("residual_quantize", "residual never updated: every stage quantizes z")
def rq_no_update(z, codebooks):
    z_q, idx, norms = 0, [], []
    residual = z.detach()
    for cb in codebooks:
        i = _nearest(z, cb)
        z_q = z_q + cb[i]
        residual = residual - cb[i].detach()
        idx.append(i)
        norms.append(residual.norm(dim=1).mean())
    return z_q, torch.stack(idx), torch.stack(norms)


@wrong("residual_quantize", "residual computed from the quantized side: r = e - r")
def rq_sign(z, codebooks):
    residual = z.detach()
    z_q, idx, norms = 0, [], []
    for cb in codebooks:
        i = _nearest(residual, cb)
        residual = cb[i].detach() - residual
        z_q = z_q + cb[i]
        idx.append(i)
        norms.append(residual.norm(dim=1).mean())
    return z_q, torch.stack(idx), torch.stack(norms)


@wrong("residual_quantize", "next residual is the quantized vector, not what is left")
def rq_residual_is_pick(z, codebooks):
    residual = z.detach()
    z_q, idx, norms = 0, [], []
    for cb in codebooks:
        i = _nearest(residual, cb)
        z_q = z_q + cb[i]
        norms.append((residual - cb[i].detach()).norm(dim=1).mean())
        residual = cb[i].detach()
        idx.append(i)
    return z_q, torch.stack(idx), torch.stack(norms)


@wrong("residual_quantize", "residual from the partial sum of the input: r_l = z - z_q but z_q never grows")
def rq_residual_from_first(z, codebooks):
    z_q, idx, norms = 0, [], []
    first = None
    for cb in codebooks:
        residual = z.detach() if first is None else z.detach() - first
        i = _nearest(residual, cb)
        first = cb[i].detach() if first is None else first
        z_q = z_q + cb[i]
        idx.append(i)
        norms.append((residual - cb[i].detach()).norm(dim=1).mean())
    return z_q, torch.stack(idx), torch.stack(norms)


@wrong("residual_quantize", "stages stacked in reverse order")
def rq_reversed(z, codebooks):
    z_q, idx, norms = _rq(z, codebooks)
    return z_q, idx.flip(0), norms.flip(0)


@wrong("residual_quantize", "norms taken before each stage")
def rq_norms_before(z, codebooks):
    residual = z.detach()
    z_q, idx, norms = 0, [], []
    for cb in codebooks:
        norms.append(residual.norm(dim=1).mean())
        i = _nearest(residual, cb)
        residual = residual - cb[i].detach()
        z_q = z_q + cb[i]
        idx.append(i)
    return z_q, torch.stack(idx), torch.stack(norms)


@wrong("residual_quantize", "squared norms")
def rq_norms_squared(z, codebooks):
    z_q, idx, _ = _rq(z, codebooks)
    norms, r = [], z.detach()
    for l, cb in enumerate(codebooks):
        r = r - cb[idx[l]].detach()
        norms.append(r.pow(2).sum(1).mean())
    return z_q, idx, torch.stack(norms)


@wrong("residual_quantize", "RMS of the residual entries instead of the mean norm")
def rq_norms_rms(z, codebooks):
    z_q, idx, _ = _rq(z, codebooks)
    norms, r = [], z.detach()
    for l, cb in enumerate(codebooks):
        r = r - cb[idx[l]].detach()
        norms.append(r.pow(2).mean().sqrt())
    return z_q, idx, torch.stack(norms)


@wrong("residual_quantize", "norm of the whole residual matrix, not a mean over rows")
def rq_norms_frobenius(z, codebooks):
    z_q, idx, _ = _rq(z, codebooks)
    norms, r = [], z.detach()
    for l, cb in enumerate(codebooks):
        r = r - cb[idx[l]].detach()
        norms.append(r.norm())
    return z_q, idx, torch.stack(norms)


@wrong("residual_quantize", "indices transposed: [N, L]")
def rq_transposed(z, codebooks):
    z_q, idx, norms = _rq(z, codebooks)
    return z_q, idx.T.contiguous(), norms


@wrong("residual_quantize", "subtracts in place from z")
def rq_in_place(z, codebooks):
    residual = z.data
    z_q, idx, norms = 0, [], []
    for cb in codebooks:
        i = _nearest(residual, cb)
        residual -= cb[i].detach()
        z_q = z_q + cb[i]
        idx.append(i)
        norms.append(residual.norm(dim=1).mean())
    return z_q, torch.stack(idx), torch.stack(norms)


@wrong("residual_quantize", "z_q is the last stage's code only")
def rq_last_only(z, codebooks):
    _, idx, norms = _rq(z, codebooks)
    return codebooks[-1][idx[-1]], idx, norms


@wrong("residual_quantize", "returns the last residual as z_q")
def rq_returns_residual(z, codebooks):
    z_q, idx, norms = _rq(z, codebooks)
    return z.detach() - z_q.detach(), idx, norms


@wrong("residual_quantize", "z_q detached from the codebooks")
def rq_detached(z, codebooks):
    z_q, idx, norms = _rq(z, codebooks)
    return z_q.detach(), idx, norms


@wrong("residual_quantize", "z_q = z - r_L with a detached residual: gradient goes to z")
def rq_z_minus_residual(z, codebooks):
    z_q, idx, norms = _rq(z, codebooks)
    return z - (z - z_q).detach(), idx, norms


@wrong("residual_quantize", "the first codebook used at every stage")
def rq_one_codebook(z, codebooks):
    return _rq(z, [codebooks[0]] * len(codebooks))


@wrong("residual_quantize", "argmax of z e^T (forgets ||e||^2)")
def rq_dot_product(z, codebooks):
    residual = z.detach()
    z_q, idx, norms = 0, [], []
    for cb in codebooks:
        i = (residual @ cb.T).argmax(1)
        residual = residual - cb[i].detach()
        z_q = z_q + cb[i]
        idx.append(i)
        norms.append(residual.norm(dim=1).mean())
    return z_q, torch.stack(idx), torch.stack(norms)


@wrong("residual_quantize", "broadcast [N, K, D] distances")
def rq_broadcast(z, codebooks):
    residual = z.detach()
    z_q, idx, norms = 0, [], []
    for cb in codebooks:
        i = (residual[:, None] - cb[None]).pow(2).sum(-1).argmin(1)
        residual = residual - cb[i].detach()
        z_q = z_q + cb[i]
        idx.append(i)
        norms.append(residual.norm(dim=1).mean())
    return z_q, torch.stack(idx), torch.stack(norms)


@wrong("residual_quantize", "adds the code to the residual instead of subtracting it")
def rq_adds(z, codebooks):
    residual = z.detach()
    z_q, idx, norms = 0, [], []
    for cb in codebooks:
        i = _nearest(residual, cb)
        residual = residual + cb[i].detach()
        z_q = z_q + cb[i]
        idx.append(i)
        norms.append(residual.norm(dim=1).mean())
    return z_q, torch.stack(idx), torch.stack(norms)


@wrong("residual_quantize", "calls the reference implementation")
def rq_reference(z, codebooks):
    return ref_h.residual_quantize(z, codebooks)


@wrong("residual_quantize", "imports the reference inside the function")
def rq_reference_import(z, codebooks):
    from dvl_helpers.hierarchical import residual_quantize as reference
    return reference(z, codebooks)


# ---------------------------------------------------------------- product_quantize

@wrong("product_quantize", "chunks taken with a stride (interleaved), not contiguous")
def pq_strided(z, codebooks):
    m = len(codebooks)
    idx = [_nearest(z.detach()[:, j::m], cb) for j, cb in enumerate(codebooks)]
    z_q = torch.empty(z.shape[0], z.shape[1])
    z_q = torch.stack([cb[i] for cb, i in zip(codebooks, idx)], dim=2).reshape(z.shape[0], -1)
    return z_q, torch.stack(idx)


@wrong("product_quantize", "codebooks used on the wrong chunks (reversed)")
def pq_mismatched(z, codebooks):
    z_q, idx = _pq(z, list(codebooks)[::-1])
    return z_q, idx


@wrong("product_quantize", "indices transposed: [N, M]")
def pq_transposed(z, codebooks):
    z_q, idx = _pq(z, codebooks)
    return z_q, idx.T.contiguous()


@wrong("product_quantize", "chunks of z_q put back in reverse order")
def pq_cat_reversed(z, codebooks):
    chunks = z.detach().split(z.shape[1] // len(codebooks), dim=1)
    idx = [_nearest(c, cb) for c, cb in zip(chunks, codebooks)]
    return torch.cat([cb[i] for cb, i in zip(codebooks, idx)][::-1], dim=1), torch.stack(idx)


@wrong("product_quantize", "the first codebook for every chunk")
def pq_one_codebook(z, codebooks):
    return _pq(z, [codebooks[0]] * len(codebooks))


@wrong("product_quantize", "z.chunk(M) splits rows, not the vector")
def pq_chunk_rows(z, codebooks):
    m = len(codebooks)
    w = z.shape[1] // m
    parts = z.detach().chunk(m, dim=0)
    idx = torch.cat([_nearest(p[:, :w], codebooks[0]) for p in parts])
    idx = torch.stack([idx] * m)
    return torch.cat([cb[i] for cb, i in zip(codebooks, idx)], dim=1), idx


@wrong("product_quantize", "writes z_q into z in place")
def pq_in_place(z, codebooks):
    z_q, idx = _pq(z, codebooks)
    z.data.copy_(z_q.detach())
    return z_q, idx


@wrong("product_quantize", "z_q detached from the codebooks")
def pq_detached(z, codebooks):
    z_q, idx = _pq(z, codebooks)
    return z_q.detach(), idx


@wrong("product_quantize", "z_q is z itself")
def pq_returns_z(z, codebooks):
    _, idx = _pq(z, codebooks)
    return z.detach().clone(), idx


@wrong("product_quantize", "broadcast [N, K, D/M] distances")
def pq_broadcast(z, codebooks):
    chunks = z.detach().split(z.shape[1] // len(codebooks), dim=1)
    idx = [(c[:, None] - cb[None]).pow(2).sum(-1).argmin(1) for c, cb in zip(chunks, codebooks)]
    return torch.cat([cb[i] for cb, i in zip(codebooks, idx)], dim=1), torch.stack(idx)


@wrong("product_quantize", "calls the reference implementation")
def pq_reference(z, codebooks):
    return ref_h.product_quantize(z, codebooks)


# ---------------------------------------------------------------- ResidualVQ

class _RVQ(nn.Module):
    """A correct residual layer; the wrong ones override one piece."""

    def __init__(self, num_quantizers, num_codes, code_dim, beta=0.25):
        super().__init__()
        self.num_quantizers, self.num_codes, self.code_dim, self.beta = \
            num_quantizers, num_codes, code_dim, beta
        k = num_codes
        self.codebooks = nn.Parameter(torch.empty(num_quantizers, k, code_dim).uniform_(-1 / k, 1 / k))

    def flat(self, z_e):
        return z_e.permute(0, 2, 3, 1).reshape(-1, z_e.shape[1])

    def unflat(self, t, z_e):
        b, d, h, w = z_e.shape
        return t.reshape(b, h, w, d).permute(0, 3, 1, 2)

    def losses(self, z, picks):
        loss, residual, partial = 0, z.detach(), 0
        for pick in picks:
            partial = partial + pick
            loss = loss + F.mse_loss(pick, residual) + self.beta * F.mse_loss(z, partial.detach())
            residual = residual - pick.detach()
        return loss

    def forward(self, z_e, num_stages=None):
        n = num_stages or self.num_quantizers
        z = self.flat(z_e)
        z_q, idx, _ = _rq(z, list(self.codebooks[:n]))
        picks = [self.codebooks[l][idx[l]] for l in range(n)]
        loss = self.losses(z, picks)
        b, d, h, w = z_e.shape
        return z_e + (self.unflat(z_q, z_e) - z_e).detach(), loss, \
            {"indices": idx.reshape(n, b, h, w)}


@wrong("ResidualVQ", "no straight-through: z_q carries no gradient to z_e")
class RVQNoStraightThrough(_RVQ):
    def forward(self, z_e, num_stages=None):
        z_q, loss, info = super().forward(z_e, num_stages)
        return z_q.detach(), loss, info


@wrong("ResidualVQ", "beta on the codebook term")
class RVQBetaSwapped(_RVQ):
    def losses(self, z, picks):
        loss, residual, partial = 0, z.detach(), 0
        for pick in picks:
            partial = partial + pick
            loss = loss + self.beta * F.mse_loss(pick, residual) + F.mse_loss(z, partial.detach())
            residual = residual - pick.detach()
        return loss


@wrong("ResidualVQ", "losses of the last stage only")
class RVQLastLoss(_RVQ):
    def losses(self, z, picks):
        residual = z.detach() - sum(p.detach() for p in picks[:-1]) if len(picks) > 1 else z.detach()
        return F.mse_loss(picks[-1], residual) + self.beta * F.mse_loss(z, sum(picks).detach())


@wrong("ResidualVQ", "losses averaged over the stages, not summed")
class RVQMeanLoss(_RVQ):
    def losses(self, z, picks):
        return super().losses(z, picks) / len(picks)


@wrong("ResidualVQ", "residuals keep their graph: commitment terms train earlier codebooks")
class RVQResidualGraph(_RVQ):
    def losses(self, z, picks):
        loss, residual = 0, z
        for pick in picks:
            loss = loss + F.mse_loss(pick, residual.detach()) + \
                self.beta * F.mse_loss(residual, pick.detach())
            residual = residual - pick
        return loss


@wrong("ResidualVQ", "one commitment term on the full sum only")
class RVQOneCommitment(_RVQ):
    def losses(self, z, picks):
        loss, residual = 0, z.detach()
        for pick in picks:
            loss = loss + F.mse_loss(pick, residual)
            residual = residual - pick.detach()
        return loss + self.beta * F.mse_loss(z, sum(picks).detach())


@wrong("ResidualVQ", "no codebook loss: the codebooks never learn")
class RVQNoCodebookLoss(_RVQ):
    def losses(self, z, picks):
        partial, loss = 0, 0
        for pick in picks:
            partial = partial + pick.detach()
            loss = loss + self.beta * F.mse_loss(z, partial)
        return loss


@wrong("ResidualVQ", "indices [B, H, W, L]")
class RVQIndicesLast(_RVQ):
    def forward(self, z_e, num_stages=None):
        z_q, loss, info = super().forward(z_e, num_stages)
        return z_q, loss, {"indices": info["indices"].permute(1, 2, 3, 0)}


@wrong("ResidualVQ", "num_stages ignored")
class RVQIgnoresStages(_RVQ):
    def forward(self, z_e, num_stages=None):
        return super().forward(z_e, None)


@wrong("ResidualVQ", "flattens [B, D, H, W] without moving D last")
class RVQNoPermute(_RVQ):
    def flat(self, z_e):
        return z_e.reshape(-1, z_e.shape[1])

    def unflat(self, t, z_e):
        return t.reshape(z_e.shape)


@wrong("ResidualVQ", "straight-through with the last stage's code only")
class RVQLastStraightThrough(_RVQ):
    def forward(self, z_e, num_stages=None):
        n = num_stages or self.num_quantizers
        z = self.flat(z_e)
        z_q, idx, _ = _rq(z, list(self.codebooks[:n]))
        picks = [self.codebooks[l][idx[l]] for l in range(n)]
        b, d, h, w = z_e.shape
        out = self.unflat(picks[-1], z_e)
        return z_e + (out - z_e).detach(), self.losses(z, picks), {"indices": idx.reshape(n, b, h, w)}


@wrong("ResidualVQ", "subclasses the reference layer")
class RVQSubclass(ref_h.ResidualVectorQuantizer):
    pass


@wrong("ResidualVQ", "delegates to the reference residual_quantize")
class RVQDelegates(_RVQ):
    def forward(self, z_e, num_stages=None):
        n = num_stages or self.num_quantizers
        z = self.flat(z_e)
        z_q, idx, _ = ref_h.residual_quantize(z, self.codebooks[:n])
        picks = [self.codebooks[l][idx[l]] for l in range(n)]
        b, d, h, w = z_e.shape
        return z_e + (self.unflat(z_q, z_e) - z_e).detach(), self.losses(z, picks), \
            {"indices": idx.reshape(n, b, h, w)}


# ---------------------------------------------------------------- ProductVQ

class _PVQ(nn.Module):
    def __init__(self, num_chunks, num_codes, code_dim, beta=0.25):
        super().__init__()
        self.num_chunks, self.num_codes, self.code_dim, self.beta = num_chunks, num_codes, code_dim, beta
        k = num_codes
        self.codebooks = nn.Parameter(torch.empty(num_chunks, k, code_dim // num_chunks).uniform_(-1 / k, 1 / k))

    def losses(self, z, z_q):
        m = self.num_chunks
        loss = 0
        for a, q in zip(z.chunk(m, dim=1), z_q.chunk(m, dim=1)):
            loss = loss + F.mse_loss(q, a.detach()) + self.beta * F.mse_loss(a, q.detach())
        return loss

    def quantize(self, z):
        return _pq(z, list(self.codebooks))

    def forward(self, z_e):
        b, d, h, w = z_e.shape
        z = z_e.permute(0, 2, 3, 1).reshape(-1, d)
        z_q, idx = self.quantize(z)
        loss = self.losses(z, z_q)
        z_q = z_q.reshape(b, h, w, d).permute(0, 3, 1, 2)
        return z_e + (z_q - z_e).detach(), loss, {"indices": idx.reshape(-1, b, h, w)}


@wrong("ProductVQ", "chunks taken with a stride")
class PVQStrided(_PVQ):
    def quantize(self, z):
        m = self.num_chunks
        perm = torch.arange(z.shape[1]).reshape(-1, m).T.reshape(-1)     # interleaved columns
        z_q, idx = _pq(z[:, perm], list(self.codebooks))
        return z_q[:, perm.argsort()], idx


@wrong("ProductVQ", "loss: one mean over all elements (averaged over chunks)")
class PVQMeanLoss(_PVQ):
    def losses(self, z, z_q):
        return F.mse_loss(z_q, z.detach()) + self.beta * F.mse_loss(z, z_q.detach())


@wrong("ProductVQ", "no straight-through")
class PVQNoStraightThrough(_PVQ):
    def forward(self, z_e):
        z_q, loss, info = super().forward(z_e)
        return z_q.detach(), loss, info


@wrong("ProductVQ", "indices [B, H, W, M]")
class PVQIndicesLast(_PVQ):
    def forward(self, z_e):
        z_q, loss, info = super().forward(z_e)
        return z_q, loss, {"indices": info["indices"].permute(1, 2, 3, 0)}


@wrong("ProductVQ", "reshape without moving D last")
class PVQNoPermute(_PVQ):
    def forward(self, z_e):
        b, d, h, w = z_e.shape
        z = z_e.reshape(-1, d)
        z_q, idx = self.quantize(z)
        loss = self.losses(z, z_q)
        return z_e + (z_q.reshape(z_e.shape) - z_e).detach(), loss, {"indices": idx.reshape(-1, b, h, w)}


@wrong("ProductVQ", "beta ignored")
class PVQNoBeta(_PVQ):
    def losses(self, z, z_q):
        beta, self.beta = self.beta, 1.0
        try:
            return super().losses(z, z_q)
        finally:
            self.beta = beta


@wrong("ProductVQ", "subclasses the reference layer")
class PVQSubclass(ref_h.ProductVectorQuantizer):
    pass


# ---------------------------------------------------------------- VQVAE2

class _V2(nn.Module):
    def __init__(self, in_channels=3, hidden=128, res_hidden=32, num_res_blocks=2, num_codes=512,
                 code_dim=64, beta=0.25, decay=0.99, dead_threshold=1.0):
        super().__init__()
        self.enc_b = Encoder(in_channels, hidden, res_hidden, num_res_blocks, downsample=4)
        self.enc_t = Encoder(hidden, hidden, res_hidden, num_res_blocks, downsample=2, out_channels=code_dim)
        self.quant_t = EMAVectorQuantizer(num_codes, code_dim, beta, decay, dead_threshold=dead_threshold)
        self.dec_t = Decoder(code_dim, code_dim, hidden, res_hidden, num_res_blocks, upsample=2)
        self.pre_b = nn.Conv2d(hidden + code_dim, code_dim, 1)
        self.quant_b = EMAVectorQuantizer(num_codes, code_dim, beta, decay, dead_threshold=dead_threshold)
        self.upsample_t = nn.ConvTranspose2d(code_dim, code_dim, 4, stride=2, padding=1)
        self.dec = Decoder(2 * code_dim, in_channels, hidden, res_hidden, num_res_blocks, upsample=4)

    def decode(self, z_t, z_b):
        return self.dec(torch.cat([self.upsample_t(z_t), z_b], dim=1)) + 0.5

    def parts(self, x):
        h_b = self.enc_b(x - 0.5)
        z_t, loss_t, info_t = self.quant_t(self.enc_t(h_b))
        z_b, loss_b, info_b = self.quant_b(self.pre_b(torch.cat([h_b, self.dec_t(z_t)], dim=1)))
        return h_b, z_t, z_b, loss_t, loss_b, info_t, info_b

    def pack(self, x_rec, loss, info_t, info_b):
        return x_rec, loss, {"indices_top": info_t["indices"], "indices_bottom": info_b["indices"]}

    def forward(self, x):
        h_b, z_t, z_b, loss_t, loss_b, info_t, info_b = self.parts(x)
        return self.pack(self.decode(z_t, z_b), loss_t + loss_b, info_t, info_b)


@wrong("VQVAE2", "forgets the shift: the model sees x, not x - 0.5")
class V2NoShift(_V2):
    def parts(self, x):
        return super().parts(x + 0.5)


@wrong("VQVAE2", "the bottom quantizer is not conditioned on the top codes")
class V2Unconditioned(_V2):
    def forward(self, x):
        h_b = self.enc_b(x - 0.5)
        z_t, loss_t, info_t = self.quant_t(self.enc_t(h_b))
        cond = torch.zeros(h_b.shape[0], z_t.shape[1], *h_b.shape[2:])
        z_b, loss_b, info_b = self.quant_b(self.pre_b(torch.cat([h_b, cond], dim=1)))
        return self.pack(self.decode(z_t, z_b), loss_t + loss_b, info_t, info_b)


@wrong("VQVAE2", "concatenation order swapped before pre_b")
class V2CatSwapped(_V2):
    def forward(self, x):
        h_b = self.enc_b(x - 0.5)
        z_t, loss_t, info_t = self.quant_t(self.enc_t(h_b))
        up = self.dec_t(z_t)
        both = torch.cat([up, h_b], dim=1)
        z_b, loss_b, info_b = self.quant_b(self.pre_b(both))
        return self.pack(self.decode(z_t, z_b), loss_t + loss_b, info_t, info_b)


@wrong("VQVAE2", "the top decoder gets the unquantized top latents")
class V2DecTUnquantized(_V2):
    def forward(self, x):
        h_b = self.enc_b(x - 0.5)
        e_t = self.enc_t(h_b)
        z_t, loss_t, info_t = self.quant_t(e_t)
        z_b, loss_b, info_b = self.quant_b(self.pre_b(torch.cat([h_b, self.dec_t(e_t)], dim=1)))
        return self.pack(self.decode(z_t, z_b), loss_t + loss_b, info_t, info_b)


@wrong("VQVAE2", "the decoder sees the bottom level only")
class V2BottomOnly(_V2):
    def forward(self, x):
        h_b, z_t, z_b, loss_t, loss_b, info_t, info_b = self.parts(x)
        return self.pack(self.decode(torch.zeros_like(z_t), z_b), loss_t + loss_b, info_t, info_b)


@wrong("VQVAE2", "decoder input concatenated bottom first")
class V2DecodeSwapped(_V2):
    def forward(self, x):
        h_b, z_t, z_b, loss_t, loss_b, info_t, info_b = self.parts(x)
        x_rec = self.dec(torch.cat([z_b, self.upsample_t(z_t)], dim=1)) + 0.5
        return self.pack(x_rec, loss_t + loss_b, info_t, info_b)


@wrong("VQVAE2", "loss of the bottom quantizer only")
class V2BottomLoss(_V2):
    def forward(self, x):
        h_b, z_t, z_b, loss_t, loss_b, info_t, info_b = self.parts(x)
        return self.pack(self.decode(z_t, z_b), loss_b, info_t, info_b)


@wrong("VQVAE2", "top and bottom indices swapped in info")
class V2IndicesSwapped(_V2):
    def forward(self, x):
        h_b, z_t, z_b, loss_t, loss_b, info_t, info_b = self.parts(x)
        return self.pack(self.decode(z_t, z_b), loss_t + loss_b, info_b, info_t)


@wrong("VQVAE2", "no + 0.5 on the output")
class V2NoUnshift(_V2):
    def forward(self, x):
        h_b, z_t, z_b, loss_t, loss_b, info_t, info_b = self.parts(x)
        return self.pack(self.decode(z_t, z_b) - 0.5, loss_t + loss_b, info_t, info_b)


@wrong("VQVAE2", "latents detached before the decoder")
class V2Detached(_V2):
    def forward(self, x):
        h_b, z_t, z_b, loss_t, loss_b, info_t, info_b = self.parts(x)
        return self.pack(self.decode(z_t.detach(), z_b.detach()), loss_t + loss_b, info_t, info_b)


@wrong("VQVAE2", "subclasses the reference model")
class V2Subclass(ref_h.VQVAE2):
    pass
