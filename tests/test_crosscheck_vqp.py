"""The reference quantizers agree with vector-quantize-pytorch on the same inputs.

Not a benchmark (that is ``benchmarks/quantizers.py``): on the same vectors and
codebook the course's VQ picks the same codes as the library's
``VectorQuantize`` (EMA and rotation trick off), and the course's FSQ gives the
same codes and indices as the library's ``FSQ`` for odd, even and mixed levels.
"""
import importlib.util

import pytest
import torch

vqp = pytest.importorskip("vector_quantize_pytorch")

from dvl_helpers.quantizers import VectorQuantizer, nearest_code  # noqa: E402

HAS_FSQ = importlib.util.find_spec("dvl_helpers.fsq") is not None


def _library_vq(codebook):
    """The library's plain VQ (no EMA, no rotation trick) holding ``codebook`` [K, D]."""
    k, d = codebook.shape
    vq = vqp.VectorQuantize(dim=d, codebook_size=k, ema_update=False, learnable_codebook=True,
                            rotation_trick=False, kmeans_init=False, threshold_ema_dead_code=0,
                            commitment_weight=0.25, accept_image_fmap=True)
    with torch.no_grad():
        vq._codebook.embed.copy_(codebook[None])
    return vq


def _clear_rows(z, codebook, gap=1e-3):
    """Rows whose nearest code is ahead of the second by more than ``gap`` (float64 distances).

    Both libraries compute distances in float32 by different formulas
    (the library adds ``||z||^2`` and takes a square root), so a near tie may
    legitimately go either way; every other row must agree exactly.
    """
    d = torch.cdist(z.double(), codebook.double()).pow(2)
    two = d.topk(2, dim=1, largest=False).values
    return (two[:, 1] - two[:, 0]) > gap


@pytest.mark.parametrize("k, d", [(64, 8), (512, 64), (1000, 3)])
def test_nearest_codes_match_vector_quantize(k, d):
    g = torch.Generator().manual_seed(k + d)
    codebook = torch.randn(k, d, generator=g)
    z_e = torch.randn(4, d, 16, 16, generator=g) * 1.2
    ours = VectorQuantizer(k, d)
    with torch.no_grad():
        ours.codebook.copy_(codebook)
    lib = _library_vq(codebook)
    for mode in ("eval", "train"):
        ours.train(mode == "train")
        lib.train(mode == "train")
        z_q, _, info = ours(z_e)
        lib_q, lib_idx, _ = lib(z_e)
        flat = z_e.permute(0, 2, 3, 1).reshape(-1, d)
        clear = _clear_rows(flat, codebook)
        assert clear.float().mean() > 0.95, "the test inputs hold too many near ties to be informative"
        assert lib_idx.shape == info["indices"].shape == (4, 16, 16)
        agree = info["indices"].reshape(-1) == lib_idx.reshape(-1)
        assert agree[clear].all(), (
            f"{mode}: {int((~agree[clear]).sum())} of {int(clear.sum())} clear-cut vectors "
            "got another code than vector-quantize-pytorch")
        rows = agree.view(4, 16, 16)
        assert ((z_q - lib_q).abs().amax(dim=1)[rows] < 1e-5).all(), "the same code must give the same vector"
        # the chunked search gives the same codes whatever the block size
        assert torch.equal(nearest_code(flat, codebook, chunk_size=7), info["indices"].reshape(-1))


# ---------------------------------------------------------------------- FSQ

LEVELS = {"odd": [5, 5, 5], "even": [8, 8, 4], "mixed": [8, 5, 5, 5], "mixed_small": [7, 6, 3, 4]}


def _grid(levels, n=2000, seed=0):
    """Random inputs over the range where the bound is not saturated, plus large values and exact zeros."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, len(levels), generator=g) * 2.0
    z[:50] *= 20
    z[50:60] = 0.0
    return z


@pytest.mark.skipif(not HAS_FSQ, reason="dvl_helpers.fsq is not written yet")
@pytest.mark.parametrize("kind", list(LEVELS))
def test_fsq_codes_and_indices_match_library(kind):
    from dvl_helpers import fsq
    levels = LEVELS[kind]
    lib = vqp.FSQ(levels)
    z = _grid(levels, seed=len(kind))
    codes = fsq.fsq_quantize(z, levels)
    lib_codes = lib.quantize(z)
    assert torch.allclose(codes, lib_codes, atol=1e-6), \
        f"{kind} levels {levels}: codes differ from the library's by {float((codes - lib_codes).abs().max()):.3g}"
    indices = fsq.fsq_codes_to_indices(codes, levels)
    lib_indices = lib.codes_to_indices(lib_codes)
    assert indices.dtype == torch.long
    assert torch.equal(indices, lib_indices.long()), f"{kind} levels {levels}: indices differ from the library's"
    # the inverse map over the whole implicit codebook
    every = torch.arange(int(torch.tensor(levels).prod()))
    assert torch.allclose(fsq.fsq_indices_to_codes(every, levels), lib.indices_to_codes(every), atol=1e-6)


@pytest.mark.skipif(not HAS_FSQ, reason="dvl_helpers.fsq is not written yet")
@pytest.mark.parametrize("kind", ["odd", "even", "mixed"])
def test_fsq_module_matches_library_forward(kind):
    from dvl_helpers import fsq
    levels = LEVELS[kind]
    z = _grid(levels, n=256, seed=1).reshape(4, 8, 8, len(levels)).permute(0, 3, 1, 2)   # [B, d, H, W]
    out = fsq.FSQ(levels)(z)
    lib_out, lib_indices = vqp.FSQ(levels, channel_first=True)(z)
    assert torch.allclose(out[0], lib_out, atol=1e-6)
    assert torch.equal(out[2]["indices"].reshape(-1), lib_indices.reshape(-1).long())
