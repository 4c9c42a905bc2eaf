"""Phase 7 benchmark: 32 tokens as a 1-D sequence (TiTok) or a 2-D grid, and VQ on frozen features.

Trains, as notebook ``07_modern_tokenizers`` does (the same sizes in the cpu
preset), with the reference code of ``dvl_helpers.tokenizers``:

- a TiTok-style tokenizer (``LatentTokenEncoder`` / ``LatentTokenDecoder``, 32
  latent tokens) and a 2-D grid tokenizer (``GridTokenizer``, a 4x8 grid of 32
  tokens) over the same 4x4-pixel patches of 32x32 grey digits, with the same
  transformer width and depth and the same EMA quantizer (K codes of dimension
  ``--code-dim``, dead-code restarts);
- VQ on frozen features: a ViT pretrained here by masked image modelling
  (SimMIM), frozen, its 8x8 grid of features quantized by an EMA codebook with
  k-means initialisation and decoded by a ViT (``FrozenEncoderVQ``).

Reports, on the test split, PSNR and SSIM of the discrete round trip, codebook
usage and perplexity, and where one token acts (the share of the image holding
half of a token's influence, ``token_influence``). Writes the section
``## Phase 7 — modern tokenizers`` of ``docs/results.md``.

    .venv/bin/python benchmarks/modern_tokenizers.py                 # cpu preset
    .venv/bin/python benchmarks/modern_tokenizers.py --steps 20 --mim-steps 10 --vq-steps 20 --no-write
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from benchmarks._common import RESULTS, command, duration, machine, now, write_section  # noqa: E402

SECTION = "## Phase 7 — modern tokenizers"
IMAGE, PATCH, TOKENS, GRID = 32, 4, 32, (4, 8)


def half_mass_area(maps: torch.Tensor) -> torch.Tensor:
    """``[L]``: the smallest share of the pixels holding half of each influence map's total."""
    flat = maps.flatten(1).sort(dim=1, descending=True).values
    cumulative = flat.cumsum(1) / flat.sum(1, keepdim=True).clamp_min(1e-12)
    return ((cumulative < 0.5).sum(1) + 1).float() / flat.shape[1]


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def run(args) -> dict:
    import dvl_helpers as dvl
    from dvl_helpers import tokenizers as T
    from dvl_helpers.models import make_vqvae_step
    from dvl_helpers.quantizers import EMAVectorQuantizer

    cfg = dvl.setup(seed=0, preset=args.preset, verbose=False)
    k = cfg.num_codes
    train_set = dvl.data.load(cfg.dataset_gray, "train", image_size=IMAGE)
    test_set = dvl.data.load(cfg.dataset_gray, "test", image_size=IMAGE)
    loader = dvl.data.loader(train_set, args.batch, seed=0)
    width = dict(dim=args.dim, depth=args.depth, heads=args.heads)
    progress = not args.no_progress

    def train(model, step, steps, desc):
        return _timed(lambda: dvl.train(model, loader, step, steps=steps, lr=args.lr, progress=progress,
                                        desc=desc))

    models, seconds, histories = {}, {}, {}
    torch.manual_seed(0)
    models["2-D grid (4x8)"] = T.GridTokenizer(
        EMAVectorQuantizer(k, args.code_dim, decay=0.95, dead_threshold=1.0), image_size=IMAGE, patch=PATCH,
        grid=GRID, code_dim=args.code_dim, in_channels=1, **width)
    torch.manual_seed(0)
    models["1-D latent tokens (TiTok)"] = T.TiTokTokenizer(
        T.LatentTokenEncoder(IMAGE, PATCH, num_latent_tokens=TOKENS, in_channels=1, **width),
        EMAVectorQuantizer(k, args.code_dim, decay=0.95, dead_threshold=1.0),
        T.LatentTokenDecoder(IMAGE, PATCH, num_latent_tokens=TOKENS, in_channels=1, **width),
        code_dim=args.code_dim)
    for name, model in models.items():
        histories[name], seconds[name] = train(model, make_vqvae_step(), args.steps, name)

    torch.manual_seed(0)
    mim = T.MaskedImageModel(image_size=IMAGE, patch=PATCH, in_channels=1, mask_ratio=0.5, **width)
    mim_history, seconds["pretraining (SimMIM)"] = train(mim, T.mim_step, args.mim_steps, "SimMIM")
    torch.manual_seed(0)
    frozen = T.FrozenEncoderVQ(mim.features(),
                               EMAVectorQuantizer(k, args.dim, decay=0.95, dead_threshold=1.0, kmeans_init=True),
                               T.ViTDecoder((8, 8), args.dim, image_size=IMAGE, out_channels=1, **width))
    name = "VQ on frozen features (8x8)"
    models[name] = frozen
    histories[name], seconds[name] = train(frozen, make_vqvae_step(), args.vq_steps, name)

    reports, areas = {}, {}
    for name, model in models.items():
        reports[name] = T.evaluate_tokenizer(model, test_set.images)
        maps = T.token_influence(model, test_set.images[:args.influence_images],
                                 generator=torch.Generator().manual_seed(0))
        areas[name] = half_mass_area(maps)
    params = {name: sum(p.numel() for p in model.parameters() if p.requires_grad)
              for name, model in models.items()}
    return {"cfg": cfg, "reports": reports, "areas": areas, "seconds": seconds, "params": params,
            "train_n": len(train_set), "test_n": len(test_set),
            "rec": {name: float(h["rec"][-20:].mean()) for name, h in histories.items()},
            "mim_loss": float(mim_history["loss"][-20:].mean())}


def section(r, args, load, total_s) -> str:
    cfg = r["cfg"]
    rows = "\n".join(
        f"| {name} | {rep['tokens']} | {rep['psnr']:.2f} | {rep['ssim']:.3f} | {rep['used']} / {cfg.num_codes} "
        f"| {rep['perplexity']:.1f} | {r['areas'][name].mean():.0%} | {r['params'][name] / 1e3:.0f} k "
        f"| {duration(r['seconds'][name])} |"
        for name, rep in r["reports"].items())
    return f"""{SECTION}

Three tokenizers of {cfg.dataset_gray} 32x32 ({r['train_n']} train / {r['test_n']} test images), trained as
notebook `07_modern_tokenizers` trains them with the reference code of `dvl_helpers.tokenizers`: MSE +
the quantizer's loss, Adam (lr {args.lr}), batch {args.batch}. All use EMA codebooks of K = {cfg.num_codes}
codes with dead-code restarts and transformers of width {args.dim}, depth {args.depth}, {args.heads} heads over
4x4-pixel patches. The TiTok-style tokenizer (32 learned latent tokens) and the 2-D grid tokenizer (4x8
tokens, each merging two patch outputs) train {args.steps} steps with {args.code_dim}-dimensional codes; VQ on
frozen features quantizes the 8x8 grid of {args.dim}-dimensional features of a ViT pretrained
{args.mim_steps} steps by masked image modelling (SimMIM, masked-patch MSE {r['mim_loss']:.4f}) and then frozen
(codebook by k-means on the first batch, a ViT decoder), trained {args.vq_steps} steps.

Test split, discrete round trip (encode to indices, decode); "half-mass area" is the share of the image
holding half of a token's influence (`token_influence` on {args.influence_images} test images: swap a
token's code, decode, mean |difference|), averaged over the tokens (a 4x8-grid region is 3% of the image):

| tokenizer | tokens | PSNR (dB) | SSIM | codes used | perplexity | half-mass area | trained parameters | training time |
|---|---|---|---|---|---|---|---|---|
{rows}

- Training MSE (last 20 steps): {", ".join(f"{name} {v:.4f}" for name, v in r['rec'].items())};
  pretraining of the frozen encoder {duration(r['seconds']['pretraining (SimMIM)'])}; whole run {duration(total_s)}.
- Machine: {machine()}; load average {load[0]:.1f} at the start, {load[1]:.1f} at the end
  (other processes shared the cores).
- Command: `{command()}` (preset {cfg.name}, seed 0, {now()}).
"""


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--steps", type=int, default=1000, help="steps of each 32-token tokenizer")
    parser.add_argument("--mim-steps", type=int, default=500)
    parser.add_argument("--vq-steps", type=int, default=800)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--depth", type=int, default=2)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--code-dim", type=int, default=8)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--influence-images", type=int, default=64)
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    start_load = os.getloadavg()[0]
    start = time.perf_counter()
    r = run(args)
    total = time.perf_counter() - start
    text = section(r, args, (start_load, os.getloadavg()[0]), total)
    if args.no_write:
        print(text)
    else:
        write_section(RESULTS, SECTION, text)


if __name__ == "__main__":
    main()
