"""Benchmark: VQ-VAE against VQGAN (phase 5, ``05_vqgan``) on the same data and steps.

Trains the three runs of the notebook's training cell, with the same models,
seed, data order, steps and learning rate:

- ``VQ-VAE``: ``dvl_helpers.models.VQVAE`` with the reference EMA quantizer
  (k-means start, dead-code restarts), pixel MSE + VQ loss, ``dvl.train``;
- ``VQGAN``: the same autoencoder trained by ``dvl_helpers.vqgan.train_vqgan``:
  L1 + perceptual (``FeatureNet``) + VQ loss, and from ``disc_start`` = half the
  steps on the adaptive-weighted hinge GAN loss of a ``PatchDiscriminator``;
- ``VQGAN, no warm-up``: the same with ``disc_start = 1``.

Evaluates each on the whole test split (PSNR, SSIM, the FID-style Fréchet
distance in the feature network's space, codebook perplexity) and writes the
``## Phase 5 — VQGAN`` section of ``docs/results.md`` (replacing an older version
of that section, leaving the others alone)::

    python benchmarks/vqgan.py                  # cpu preset
    python benchmarks/vqgan.py --preset smoke   # a quick run of the script itself
    python benchmarks/vqgan.py --steps 300 --no-write
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._common import RESULTS, command, duration, machine, now, write_section  # noqa: E402
import dvl_helpers as dvl  # noqa: E402
from dvl_helpers.models import evaluate_vqvae, from_preset, make_vqvae_step, reconstruct  # noqa: E402
from dvl_helpers.quantizers import EMAVectorQuantizer  # noqa: E402
from dvl_helpers.vqgan import FeatureNet, PatchDiscriminator, frechet_feature_distance, train_vqgan  # noqa: E402

SECTION = "## Phase 5 — VQGAN"


def build(cfg):
    """The notebook's autoencoder: the same initial weights for every run."""
    torch.manual_seed(0)
    return from_preset(cfg, EMAVectorQuantizer(cfg.num_codes, cfg.code_dim, kmeans_init=True,
                                               dead_threshold=1.0))


def run(args) -> dict:
    cfg = dvl.setup(seed=0, preset=args.preset, verbose=False)
    if args.steps:
        cfg = cfg.replace(steps=args.steps)
    load_before = os.getloadavg()[0]
    start_all = time.perf_counter()
    train_set = dvl.data.load(cfg.dataset, "train", max_images=cfg.max_train_images)
    test_set = dvl.data.load(cfg.dataset, "test")
    feature_net = FeatureNet(seed=0).to(cfg.device)
    disc_start = cfg.steps // 2
    rows = []
    for name, gan_start in (("VQ-VAE", None), ("VQGAN", disc_start), ("VQGAN, no warm-up", 1)):
        model = build(cfg)
        loader = dvl.data.loader(train_set, cfg.batch_size, seed=0)
        t0 = time.perf_counter()
        if gan_start is None:
            history = dvl.train(model, loader, make_vqvae_step(), steps=cfg.steps, lr=cfg.lr,
                                device=cfg.device, progress=args.progress, desc=name)
        else:
            torch.manual_seed(1)
            disc = PatchDiscriminator(3, hidden=min(cfg.hidden, 64), num_layers=2)
            history = train_vqgan(model, disc, loader, steps=cfg.steps, feature_net=feature_net, lr=cfg.lr,
                                  disc_start=gan_start, device=cfg.device, progress=args.progress, desc=name)
        seconds = time.perf_counter() - t0
        x = test_set.images
        recs = torch.cat([reconstruct(model, xb) for xb in x.split(256)]).cpu()
        scores = evaluate_vqvae(model, dvl.data.loader(test_set, 256, shuffle=False))
        row = {"name": name, "psnr": dvl.metrics.psnr(recs, x).item(), "ssim": dvl.metrics.ssim(recs, x).item(),
               "fid": frechet_feature_distance(feature_net, x, recs), "perplexity": scores["perplexity"],
               "codes_used": scores["codes_used"], "seconds": seconds}
        if "adaptive_weight" in history:
            tail = max(len(history["adaptive_weight"]) // 5, 1)
            row["lambda"] = float(history["adaptive_weight"][-tail:].mean())
            row["logits"] = (float(history["logits_real"][-tail:].mean()),
                             float(history["logits_fake"][-tail:].mean()))
        rows.append(row)
    return {"cfg": cfg, "rows": rows, "n_test": len(test_set), "n_train": len(train_set),
            "feature_net": feature_net.kind, "disc_start": disc_start, "machine": machine(),
            "load": (load_before, os.getloadavg()[0]), "total_s": time.perf_counter() - start_all,
            "command": command(), "date": now()}


def render(r: dict) -> str:
    cfg = r["cfg"]
    lines = [f"| {cfg.name} preset, {cfg.dataset} ({r['n_train']} / {r['n_test']}), {cfg.steps} steps | "
             "test PSNR | test SSIM | FID-style (lower is better) | test perplexity | codes used | "
             "last-20% λ | last-20% logits real / fake | train time |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in r["rows"]:
        lam = f"{row['lambda']:.3g}" if "lambda" in row else "–"
        logits = f"{row['logits'][0]:+.2f} / {row['logits'][1]:+.2f}" if "logits" in row else "–"
        lines.append(f"| {row['name']} | {row['psnr']:.2f} dB | {row['ssim']:.4f} | {row['fid']:.3f} | "
                     f"{row['perplexity']:.1f} | {row['codes_used']:.1%} | {lam} | {logits} | "
                     f"{duration(row['seconds'])} |")
    table = "\n".join(lines)
    return f"""{SECTION}

The three runs of the notebook `05_vqgan` (`benchmarks/vqgan.py`): `dvl_helpers.models.VQVAE` sized by the
preset (hidden {cfg.hidden}, K = {cfg.num_codes} codes of dimension {cfg.code_dim}) with the reference
`EMAVectorQuantizer` (k-means start, dead-code threshold 1), the same seed, data order, {cfg.steps} steps ×
batch {cfg.batch_size} and learning rate {cfg.lr}:

- **VQ-VAE**: pixel MSE + VQ loss (`dvl.train`, Adam).
- **VQGAN**: `train_vqgan`: L1 + perceptual distance (feature network: {r['feature_net']}) + VQ loss, and from
  step {r['disc_start']} (`disc_start`) the hinge GAN loss with the adaptive weight λ and discriminator
  updates (`PatchDiscriminator`, 2 stride-2 layers, 34 × 34 receptive field; Adam β = (0.5, 0.9)).
- **VQGAN, no warm-up**: the same with `disc_start = 1`.

Metrics on the whole test split; the FID-style distance is the Fréchet distance between Gaussians fitted to the
pooled last-layer features of the same feature network (test images against their reconstructions).

{table}

- Machine: {r['machine']}; device {cfg.device}; load average {r['load'][0]:.1f} at the start,
  {r['load'][1]:.1f} at the end (other processes share the cores when it is above 0); whole run {duration(r['total_s'])}.
- Command: `{r['command']}` (seed 0, {r['date']}).
"""


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="cpu", choices=dvl.presets.PRESET_NAMES,
                        help="sizes of data, model and training (default: cpu)")
    parser.add_argument("--steps", type=int, default=None, help="override the preset's number of steps")
    parser.add_argument("--results", type=Path, default=RESULTS,
                        help="markdown file to update (default: docs/results.md)")
    parser.add_argument("--no-write", action="store_true", help="print the section instead of writing it")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=sys.stderr.isatty(),
                        help="show a progress bar (default: when stderr is a terminal)")
    args = parser.parse_args(argv)
    if args.steps is not None and args.steps < 1:
        parser.error(f"--steps must be >= 1, got {args.steps}")
    section = render(run(args))
    print(section)
    if not args.no_write:
        write_section(args.results, SECTION, section)
        print(f"updated {os.path.relpath(args.results)}")


if __name__ == "__main__":
    main()
