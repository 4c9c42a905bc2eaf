"""Different but correct answers to 04_hierarchical_vq: every check must accept each one.

``CASES`` holds ``(check name, answer, how it differs)``: ``torch.cdist``,
one-hot products, ``z_q = z - r_L`` with the graph kept, float64 internals,
stacked codebooks, ``torch.tensor_split`` / ``unflatten`` for the chunks,
``einops``-free reshapes, layers built on the phase-1 reference pieces of
``dvl_helpers.quantizers`` (allowed), and two-level models that inline
``decode`` or name things differently.
"""
import torch
import torch.nn.functional as F
from torch import nn

from dvl_helpers.nn import Decoder, Encoder
from dvl_helpers.quantizers import EMAVectorQuantizer, nearest_code, straight_through

CASES = []


def right(check, how):
    def register(answer):
        CASES.append((check, answer, how))
        return answer
    return register


def _nearest(z, codebook):
    d = (z ** 2).sum(1, keepdim=True) - 2 * z @ codebook.T + (codebook ** 2).sum(1)
    return d.argmin(1)


# ---------------------------------------------------------------- residual_quantize

@right("residual_quantize", "the expansion, a list of picks summed at the end")
def rq_plain(z, codebooks):
    residual = z.detach()
    picks, idx, norms = [], [], []
    for cb in codebooks:
        i = _nearest(residual, cb)
        picks.append(cb[i])
        residual = residual - cb[i].detach()
        idx.append(i)
        norms.append(residual.norm(dim=1).mean())
    return torch.stack(picks).sum(0), torch.stack(idx), torch.stack(norms)


@right("residual_quantize", "torch.cdist and z_q = z - r_L with the residual's graph kept")
def rq_cdist(z, codebooks):
    residual = z.detach()
    idx, norms = [], []
    for cb in codebooks:
        i = torch.cdist(residual.detach(), cb.detach()).argmin(1)
        residual = residual - cb[i]
        idx.append(i)
        norms.append(residual.detach().norm(dim=1).mean())
    return z.detach() - residual, torch.stack(idx), torch.stack(norms)


@right("residual_quantize", "one-hot products in float64, cast back")
def rq_one_hot64(z, codebooks):
    residual = z.detach().double()
    z_q = torch.zeros_like(residual)
    idx, norms = [], []
    for cb in codebooks:
        cb64 = cb.double()
        i = torch.cdist(residual, cb64.detach()).argmin(1)
        one_hot = F.one_hot(i, cb.shape[0]).double()
        pick = one_hot @ cb64
        z_q = z_q + pick
        residual = residual - pick.detach()
        idx.append(i)
        norms.append(torch.linalg.vector_norm(residual, dim=1).mean())
    return z_q.to(z.dtype), torch.stack(idx), torch.stack(norms).to(z.dtype)


@right("residual_quantize", "the phase-1 reference nearest_code (allowed) and F.embedding")
def rq_reference_pieces(z, codebooks):
    residual = z.detach()
    z_q, idx, norms = None, [], []
    for cb in codebooks:
        i = nearest_code(residual, cb)
        pick = F.embedding(i, cb)
        z_q = pick if z_q is None else z_q + pick
        residual = residual - pick.detach()
        idx.append(i)
        norms.append(residual.norm(dim=1).mean())
    return z_q, torch.stack(idx), torch.stack(norms)


# ---------------------------------------------------------------- product_quantize

@right("product_quantize", "split and cat")
def pq_split(z, codebooks):
    chunks = z.detach().split(z.shape[1] // len(codebooks), dim=1)
    idx = [_nearest(c, cb) for c, cb in zip(chunks, codebooks)]
    return torch.cat([cb[i] for cb, i in zip(codebooks, idx)], dim=1), torch.stack(idx)


@right("product_quantize", "unflatten to [N, M, D/M], stacked codebooks, gather")
def pq_unflatten(z, codebooks):
    m = len(codebooks)
    cbs = torch.stack(list(codebooks))                                # [M, K, w]
    parts = z.detach().unflatten(1, (m, -1)).transpose(0, 1)          # [M, N, w]
    d = torch.cdist(parts, cbs.detach())                              # [M, N, K]
    idx = d.argmin(2)                                                 # [M, N]
    picks = torch.stack([cbs[j][idx[j]] for j in range(m)], dim=1)    # [N, M, w]
    return picks.flatten(1), idx


@right("product_quantize", "a loop with index_select, the reference nearest_code (allowed)")
def pq_loop(z, codebooks):
    m = len(codebooks)
    w = z.shape[1] // m
    idx, pieces = [], []
    for j in range(m):
        idx.append(nearest_code(z[:, j * w:(j + 1) * w], codebooks[j]))
        pieces.append(codebooks[j].index_select(0, idx[j]))
    return torch.cat(pieces, dim=1), torch.stack(idx)


# ---------------------------------------------------------------- ResidualVQ

class RVQPlain(nn.Module):
    def __init__(self, num_quantizers, num_codes, code_dim, beta=0.25):
        super().__init__()
        self.num_quantizers, self.num_codes, self.code_dim, self.beta = \
            num_quantizers, num_codes, code_dim, beta
        k = num_codes
        self.codebooks = nn.Parameter(torch.empty(num_quantizers, k, code_dim).uniform_(-1 / k, 1 / k))

    def forward(self, z_e, num_stages=None):
        n = self.num_quantizers if num_stages is None else num_stages
        b, d, h, w = z_e.shape
        z = z_e.permute(0, 2, 3, 1).reshape(-1, d)
        residual, partial, loss, idx = z.detach(), 0, 0, []
        for l in range(n):
            i = _nearest(residual, self.codebooks[l].detach())
            pick = self.codebooks[l][i]
            partial = partial + pick
            loss = loss + F.mse_loss(pick, residual) + self.beta * F.mse_loss(z, partial.detach())
            residual = residual - pick.detach()
            idx.append(i)
        z_q = partial.reshape(b, h, w, d).permute(0, 3, 1, 2)
        return z_e + (z_q - z_e).detach(), loss, {"indices": torch.stack(idx).reshape(n, b, h, w)}


right("ResidualVQ", "a plain loop")(RVQPlain)


@right("ResidualVQ", "the SoundStream form: commitment ||r_{l-1} - sg(e_l)||^2 per stage, reference pieces")
class RVQSoundStream(nn.Module):
    def __init__(self, num_quantizers, num_codes, code_dim, beta=0.25):
        super().__init__()
        self.beta = beta
        self.num_quantizers = num_quantizers
        k = num_codes
        self.codebooks = nn.Parameter(torch.empty(num_quantizers, k, code_dim).uniform_(-1 / k, 1 / k))

    def forward(self, z_e, num_stages=None):
        n = num_stages or self.num_quantizers
        z = z_e.movedim(1, -1)                                         # [B, H, W, D]
        residual = z
        total, loss, idx = torch.zeros_like(z), z.new_zeros(()), []
        for l in range(n):
            flat = residual.reshape(-1, z.shape[-1])
            i = nearest_code(flat, self.codebooks[l])
            pick = F.embedding(i, self.codebooks[l]).view_as(z)
            loss = loss + F.mse_loss(pick, residual.detach()) + self.beta * F.mse_loss(residual, pick.detach())
            residual = residual - pick.detach()
            total = total + pick
            idx.append(i.view(z.shape[:-1]))
        return straight_through(z_e, total.movedim(-1, 1)), loss, {"indices": torch.stack(idx)}


@right("ResidualVQ", "extra info keys, z_q assembled as z_e - residual")
class RVQExtraInfo(RVQPlain):
    def forward(self, z_e, num_stages=None):
        z_q, loss, info = super().forward(z_e, num_stages)
        info["usage"] = torch.stack([torch.bincount(i.flatten(), minlength=self.num_codes)
                                     for i in info["indices"]])
        info["note"] = "residual"
        return z_q, loss, info


# ---------------------------------------------------------------- ProductVQ

class PVQPlain(nn.Module):
    def __init__(self, num_chunks, num_codes, code_dim, beta=0.25):
        super().__init__()
        self.num_chunks, self.beta = num_chunks, beta
        k = num_codes
        self.codebooks = nn.Parameter(torch.empty(num_chunks, k, code_dim // num_chunks).uniform_(-1 / k, 1 / k))

    def forward(self, z_e):
        b, d, h, w = z_e.shape
        z = z_e.permute(0, 2, 3, 1).reshape(-1, d)
        pieces, idx, loss = [], [], 0
        for j, chunk in enumerate(z.chunk(self.num_chunks, dim=1)):
            i = _nearest(chunk.detach(), self.codebooks[j].detach())
            pick = self.codebooks[j][i]
            loss = loss + F.mse_loss(pick, chunk.detach()) + self.beta * F.mse_loss(chunk, pick.detach())
            pieces.append(pick)
            idx.append(i)
        z_q = torch.cat(pieces, 1).reshape(b, h, w, d).permute(0, 3, 1, 2)
        return z_e + (z_q - z_e).detach(), loss, {"indices": torch.stack(idx).reshape(-1, b, h, w)}


right("ProductVQ", "a plain loop over chunks")(PVQPlain)


@right("ProductVQ", "vectorised over chunks: [B, M, w, H, W] view, loss as M * mse")
class PVQVectorised(nn.Module):
    def __init__(self, num_chunks, num_codes, code_dim, beta=0.25):
        super().__init__()
        self.m, self.beta = num_chunks, beta
        k = num_codes
        self.codebooks = nn.Parameter(torch.empty(num_chunks, k, code_dim // num_chunks).uniform_(-1 / k, 1 / k))

    def forward(self, z_e):
        b, d, h, w = z_e.shape
        parts = z_e.reshape(b, self.m, d // self.m, h, w).permute(1, 0, 3, 4, 2)   # [M, B, H, W, w]
        flat = parts.reshape(self.m, -1, d // self.m)
        idx = torch.cdist(flat.detach(), self.codebooks.detach()).argmin(-1)          # [M, N]
        picks = torch.stack([self.codebooks[j][idx[j]] for j in range(self.m)])      # [M, N, w]
        loss = self.m * (F.mse_loss(picks, flat.detach()) + self.beta * F.mse_loss(flat, picks.detach()))
        z_q = picks.reshape(self.m, b, h, w, -1).permute(1, 0, 4, 2, 3).reshape(b, d, h, w)
        return straight_through(z_e, z_q), loss, {"indices": idx.reshape(self.m, b, h, w)}


# ---------------------------------------------------------------- VQVAE2

class V2Plain(nn.Module):
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

    def forward(self, x):
        h_b = self.enc_b(x - 0.5)
        z_t, loss_t, info_t = self.quant_t(self.enc_t(h_b))
        z_b, loss_b, info_b = self.quant_b(self.pre_b(torch.cat([h_b, self.dec_t(z_t)], dim=1)))
        return self.decode(z_t, z_b), loss_t + loss_b, \
            {"indices_top": info_t["indices"], "indices_bottom": info_b["indices"]}


right("VQVAE2", "the wiring with decode")(V2Plain)


@right("VQVAE2", "decode inlined, torch.concat, x.sub(0.5), extra info")
class V2Inline(V2Plain):
    def forward(self, x):
        bottom = self.enc_b(x.sub(0.5))
        top_q, top_loss, top = self.quant_t(self.enc_t(bottom))
        cond = self.dec_t(top_q)
        bot_q, bot_loss, bot = self.quant_b(self.pre_b(torch.concat((bottom, cond), 1)))
        out = self.dec(torch.concat((self.upsample_t(top_q), bot_q), 1)).add(0.5)
        return out, sum([top_loss, bot_loss]), {"indices_top": top["indices"],
                                                "indices_bottom": bot["indices"],
                                                "z_q_top": top_q, "z_q_bottom": bot_q}
