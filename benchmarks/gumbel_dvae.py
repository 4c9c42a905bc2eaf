"""Benchmark: the dVAE of phase 3 (``03_gumbel_dvae``) against the VQ-VAE of phase 1, same budget.

``dvl_helpers.models.VQVAE`` (the VQ-VAE paper's network, sized by the preset) on the
grayscale dataset of the preset (``cfg.dataset_gray``: scikit-learn digits for ``smoke``
and ``cpu``, MNIST for ``gpu``) with two bottlenecks, trained with the same seed, data
order, steps and learning rate, as the notebook's training cell trains them:

- ``dVAE``: the reference ``GumbelQuantizer`` (soft Gumbel-softmax samples), the loss
  ``mse + kl_weight * KL / pixels``, the temperature annealed exponentially from 1 to 1/16
  over the run (``make_dvae_step``);
- ``VQ-VAE``: the reference ``VectorQuantizer`` of phase 1 (codebook + commitment loss).

Evaluates both on the whole test split (eval mode: the dVAE takes its most likely code)
and writes normalised MSE, PSNR, SSIM, perplexity, the share of codes used, the dVAE's
soft-sample error at the final temperature, wall times, the machine and the command to
the ``## Phase 3 — Gumbel-softmax dVAE`` section of ``docs/results.md`` (replacing an older
version of that section, leaving the others alone)::

    python benchmarks/gumbel_dvae.py                  # cpu preset
    python benchmarks/gumbel_dvae.py --preset smoke --no-write
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import shlex
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._common import RESULTS, duration, machine, python, write_section  # noqa: E402
import dvl_helpers as dvl  # noqa: E402
from dvl_helpers.gumbel import GumbelQuantizer, make_dvae_step  # noqa: E402
from dvl_helpers.models import VQVAE, evaluate_vqvae, make_vqvae_step  # noqa: E402
from dvl_helpers.quantizers import VectorQuantizer  # noqa: E402

SECTION = "## Phase 3 — Gumbel-softmax dVAE"


def build(cfg, quantizer):
    torch.manual_seed(0)
    return VQVAE(quantizer, in_channels=1, hidden=cfg.hidden, res_hidden=cfg.res_hidden,
                 num_res_blocks=cfg.num_res_blocks, downsample=4, code_dim=cfg.code_dim).to(cfg.device)


def run(cfg, kl_weight, tau_end):
    train_set = dvl.data.load(cfg.dataset_gray, "train", image_size=cfg.image_size,
                              max_images=cfg.max_train_images)
    test_set = dvl.data.load(cfg.dataset_gray, "test", image_size=cfg.image_size)
    variance = train_set.images.var().item()
    results = {}
    for name in ("dVAE", "VQ-VAE"):
        if name == "dVAE":
            model = build(cfg, GumbelQuantizer(cfg.num_codes, cfg.code_dim, cfg.code_dim))
            step_fn = make_dvae_step(kl_weight=kl_weight, tau_start=1.0, tau_end=tau_end,
                                     anneal_steps=cfg.steps)
        else:
            model = build(cfg, VectorQuantizer(cfg.num_codes, cfg.code_dim))
            step_fn = make_vqvae_step()
        torch.manual_seed(0)
        start = time.perf_counter()
        dvl.train(model, dvl.data.loader(train_set, cfg.batch_size, seed=0), step_fn,
                  steps=cfg.steps, lr=cfg.lr, progress=False)
        train_s = time.perf_counter() - start
        scores = evaluate_vqvae(model, dvl.data.loader(test_set, 256, shuffle=False),
                                data_variance=variance)
        scores["train_s"] = train_s
        if name == "dVAE":
            x = test_set.images.to(cfg.device)
            with torch.no_grad():
                model.train()
                x_soft, _, _ = model(x)
                model.eval()
            scores["soft_nmse"] = (x_soft.clamp(0, 1) - x).pow(2).mean().item() / variance
        results[name] = scores
    return {"results": results, "n_train": len(train_set), "n_test": len(test_set)}


def render(cfg, r, kl_weight, tau_end, total_s, load, command, preset_steps):
    steps_note = ("" if cfg.steps == preset_steps else
                  f" (the preset's {preset_steps} steps cut to {cfg.steps} to fit the time available on "
                  "this machine: the models are not trained to convergence)")
    rows = []
    for name, s in r["results"].items():
        soft = f"{s['soft_nmse']:.4f}" if "soft_nmse" in s else "—"
        rows.append(f"| {name} | {s['nmse']:.4f} | {s['psnr']:.2f} dB | {s['ssim']:.4f} | "
                    f"{s['perplexity']:.1f} | {s['codes_used']:.1%} | {soft} | {duration(s['train_s'])} |")
    return f"""{SECTION}

`dvl_helpers.models.VQVAE` (sized by the `{cfg.name}` preset: hidden {cfg.hidden}, res_hidden {cfg.res_hidden},
{cfg.num_res_blocks} residual blocks) on `{cfg.dataset_gray}` ({r['n_train']} training / {r['n_test']} test images, 32x32,
8x8 codes), K = {cfg.num_codes} codes of dimension {cfg.code_dim}, {cfg.steps} steps{steps_note} × batch {cfg.batch_size}, Adam lr
{cfg.lr:g}, the same seed and data order for both models, as the notebook `03_gumbel_dvae` trains them:

- **dVAE**: reference `GumbelQuantizer` (1x1 conv to K logits, soft Gumbel-softmax samples in training,
  the most likely code in eval), loss MSE + {kl_weight:g} · KL(q ‖ uniform) / pixels, τ annealed
  exponentially from 1 to {tau_end:g} over the run;
- **VQ-VAE**: reference `VectorQuantizer` of phase 1 (codebook + 0.25 · commitment loss, straight-through).

Metrics over the whole test split, both models in eval mode; nMSE divides by the variance of the training
pixels; perplexity and codes used pool the hard codes of the test split. "soft nMSE" is the dVAE's error
in training mode: a random, relaxed sample at the final temperature instead of the most likely codes.

| {cfg.name} preset | test nMSE | test PSNR | test SSIM | test perplexity | codes used | soft nMSE | train time |
|---|---|---|---|---|---|---|---|
{chr(10).join(rows)}

- Machine: {machine()}; device {cfg.device}; load average {load[0]:.1f} at the start, {load[1]:.1f} at the
  end (other processes shared the cores); whole run {duration(total_s)}.
- Command: `{command}` (seed 0, {dt.date.today().isoformat()}).
"""


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--kl-weight", type=float, default=1.0)
    parser.add_argument("--tau-end", type=float, default=1 / 16)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    cfg = dvl.get_preset(args.preset)
    preset_steps = cfg.steps
    if args.steps:
        cfg = cfg.replace(steps=args.steps)
    dvl.seed_everything(0)
    load0 = os.getloadavg()[0]
    start = time.perf_counter()
    r = run(cfg, args.kl_weight, args.tau_end)
    total_s = time.perf_counter() - start
    command = " ".join([python(), "benchmarks/gumbel_dvae.py", *map(shlex.quote, argv or sys.argv[1:])])
    text = render(cfg, r, args.kl_weight, args.tau_end, total_s, (load0, os.getloadavg()[0]), command,
                  preset_steps)
    print(text)
    if not args.no_write:
        write_section(RESULTS, SECTION, text)


if __name__ == "__main__":
    main()
