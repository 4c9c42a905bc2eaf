"""Plain transformer blocks and the two code priors of notebook ``08_priors``.

Models as plain as nanoGPT: pre-norm blocks of multi-head self-attention and
an MLP, learned position embeddings, no tricks.

- :class:`Block`: one transformer block over ``[B, T, dim]``; ``causal=True``
  attends only to the past, else it attends everywhere (or as an explicit
  boolean mask says).
- :class:`Transformer`: ``depth`` blocks and a final LayerNorm, the trunk of
  both priors and of any model that needs plain bidirectional blocks over
  ``[B, T, dim]`` (the 1-D latent-token tokenizer of ``07_modern_tokenizers``
  uses it with ``causal=False``).
- :class:`CodePrior`: a GPT over sequences of ``length`` codes in
  ``{0..K-1}`` with a BOS token (Esser et al. 2021, the VQGAN transformer).
- :class:`MaskedCodePrior`: the bidirectional MaskGIT prior (Chang et al. 2022,
  https://arxiv.org/abs/2202.04200) with a mask token ``mask_id = K``.

Attention masks are boolean ``[T, T]`` (or ``[B, T, T]``) with **True where
query i may attend key j**, the convention of
:func:`torch.nn.functional.scaled_dot_product_attention`.

Used in: phase 7 (modern tokenizers), 8 (priors).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["SelfAttention", "MLP", "Block", "Transformer", "CodePrior", "MaskedCodePrior"]


def _check_tokens(x: torch.Tensor, dim: int) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() != 3 or x.shape[-1] != dim:
        got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"x must be [B, T, dim={dim}], got {got}")


class SelfAttention(nn.Module):
    """Multi-head self-attention over ``[B, T, dim]``; ``dim`` must divide by ``heads``."""

    def __init__(self, dim: int, heads: int, dropout: float = 0.0):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim must be divisible by heads, got dim={dim}, heads={heads}")
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.dropout = dropout
        self.resid_drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None,
                causal: bool = False) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        if mask is not None and mask.dim() == 3:
            mask = mask[:, None]                        # [B, 1, T, T]: the same for every head
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=causal and mask is None,
            dropout_p=self.dropout if self.training else 0.0)
        return self.resid_drop(self.proj(y.transpose(1, 2).reshape(b, t, d)))


class MLP(nn.Module):
    """``Linear(dim, mlp_ratio * dim) -> GELU -> Linear -> Dropout``."""

    def __init__(self, dim: int, mlp_ratio: float = 4, dropout: float = 0.0):
        super().__init__()
        hidden = int(mlp_ratio * dim)
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim),
                                 nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Block(nn.Module):
    """A pre-norm transformer block: ``x + attn(ln(x))``, then ``x + mlp(ln(x))``.

    Args:
        dim: token width.
        heads: attention heads (``dim % heads == 0``).
        mlp_ratio: hidden width of the MLP over ``dim``.
        dropout: dropout on attention weights and residual branches.
        causal: attend only to keys ``j <= i``; else every token sees every token.

    Shapes:
        ``forward(x, mask=None)``: ``x`` ``[B, T, dim]`` -> ``[B, T, dim]``. ``mask``,
        boolean ``[T, T]`` or ``[B, T, T]`` (True: may attend), replaces ``causal``
        when given.
    """

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4, dropout: float = 0.0,
                 causal: bool = False):
        super().__init__()
        self.dim = dim
        self.causal = causal
        self.ln1 = nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, heads, dropout)
        self.ln2 = nn.LayerNorm(dim)
        self.mlp = MLP(dim, mlp_ratio, dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        _check_tokens(x, self.dim)
        if mask is not None:
            t = x.shape[1]
            if mask.dtype != torch.bool or tuple(mask.shape[-2:]) != (t, t) or mask.dim() not in (2, 3):
                raise ValueError(f"mask must be a torch.bool [T, T] or [B, T, T] with T={t}, "
                                 f"got {mask.dtype} {tuple(mask.shape)}")
        x = x + self.attn(self.ln1(x), mask, self.causal)
        return x + self.mlp(self.ln2(x))


class Transformer(nn.Module):
    """``depth`` :class:`Block` s and a final LayerNorm: ``[B, T, dim] -> [B, T, dim]``.

    Example (bidirectional blocks over 32 latent tokens)::

        trunk = Transformer(dim=128, depth=4, heads=4)          # causal=False
        out = trunk(torch.randn(8, 32, 128))                    # [8, 32, 128]
    """

    def __init__(self, dim: int, depth: int, heads: int, mlp_ratio: float = 4,
                 dropout: float = 0.0, causal: bool = False):
        super().__init__()
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_ratio, dropout, causal) for _ in range(depth))
        self.ln = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        for block in self.blocks:
            x = block(x, mask)
        return self.ln(x)


def _init(module: nn.Module) -> None:
    # GPT-2's initialisation: small normal weights, zero biases
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)


class _CodeModel(nn.Module):
    def __init__(self, num_codes, length, vocab, dim, depth, heads, dropout, causal):
        super().__init__()
        if num_codes < 1 or length < 1:
            raise ValueError(f"num_codes and length must be >= 1, got {num_codes}, {length}")
        self.num_codes = int(num_codes)
        self.length = int(length)
        self.tok = nn.Embedding(vocab, dim)
        self.pos = nn.Parameter(torch.zeros(1, length, dim))
        self.drop = nn.Dropout(dropout)
        self.trunk = Transformer(dim, depth, heads, dropout=dropout, causal=causal)
        self.head = nn.Linear(dim, num_codes)
        self.apply(_init)
        nn.init.normal_(self.pos, std=0.02)

    def _check(self, codes, high, what):
        if not isinstance(codes, torch.Tensor) or codes.dim() != 2 or codes.dtype != torch.long:
            got = (f"{codes.dtype} {tuple(codes.shape)}" if isinstance(codes, torch.Tensor)
                   else type(codes).__name__)
            raise ValueError(f"codes must be a torch.long tensor [B, t], got {got}")
        if codes.shape[1] > self.length:
            raise ValueError(f"at most length={self.length} codes, got {codes.shape[1]}")
        if codes.numel() and (codes.min() < 0 or codes.max() > high):
            raise ValueError(f"codes must lie in [0, {high}] ({what}), got values in "
                             f"[{codes.min().item()}, {codes.max().item()}]")

    def _run(self, tokens):
        t = tokens.shape[1]
        return self.head(self.trunk(self.drop(self.tok(tokens) + self.pos[:, :t])))


class CodePrior(_CodeModel):
    """An autoregressive transformer (GPT) over sequences of codes, BOS included.

    ``forward(codes)`` maps codes ``[B, t]`` (``t <= length``, values in
    ``[0, K)``) to logits ``[B, t, K]`` where ``logits[:, i]`` scores code ``i``
    given ``codes[:, :i]``: the model prepends its BOS token (id ``K``) and drops
    the last code, so ``logits[:, i]`` never sees ``codes[:, i:]``. Hence the
    training loss is simply ``cross_entropy(model(codes), codes)``, and a
    sampler asks for position ``i`` with ``model(prefix)[:, i]`` where
    ``prefix = codes[:, :i + 1]`` (the value at ``i`` is not read).

    Args:
        num_codes: ``K``, the tokenizer's codebook size.
        length: ``L``, codes per image (``h * w`` in raster order).
        dim, depth, heads, dropout: width, blocks, heads and dropout of the trunk.
    """

    def __init__(self, num_codes: int, length: int, dim: int = 128, depth: int = 4, heads: int = 4,
                 dropout: float = 0.0):
        super().__init__(num_codes, length, num_codes + 1, dim, depth, heads, dropout, causal=True)
        self.bos_id = self.num_codes

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        self._check(codes, self.num_codes - 1, "code indices")
        bos = torch.full_like(codes[:, :1], self.bos_id)
        return self._run(torch.cat([bos, codes[:, :-1]], dim=1))


class MaskedCodePrior(_CodeModel):
    """The bidirectional MaskGIT prior: every position sees every position.

    ``forward(tokens)`` maps ``[B, L]`` tokens in ``[0, K]``, where
    ``mask_id = K`` marks an unknown position, to logits ``[B, L, K]`` over the
    codes of every position (only the masked ones are trained).

    Args: as :class:`CodePrior`.
    """

    def __init__(self, num_codes: int, length: int, dim: int = 128, depth: int = 4, heads: int = 4,
                 dropout: float = 0.0):
        super().__init__(num_codes, length, num_codes + 1, dim, depth, heads, dropout, causal=False)
        self.mask_id = self.num_codes

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        self._check(tokens, self.mask_id, "codes or mask_id")
        return self._run(tokens)
