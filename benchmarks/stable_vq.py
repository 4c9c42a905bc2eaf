"""Benchmark: the four codebooks of phase 2 (``02_stable_vq``) on the same budget.

``dvl_helpers.models.VQVAE`` (the VQ-VAE paper's CIFAR-10 network, sized by the
preset) with ``K`` codes (512 by default) and four bottlenecks, each trained
with the same seed, data order, steps and learning rate, as the notebook's
training cell trains the learner's layers:

- ``vanilla``: the reference ``VectorQuantizer`` of phase 1 (codebook loss, gradient);
- ``EMA``: the reference ``EMAVectorQuantizer`` (EMA codebook, Laplace smoothing);
- ``EMA + restarts``: the same with ``dead_threshold`` (1.0 by default);
- ``EMA + restarts + k-means``: the same, codebook first fitted by k-means to the
  first training batch (``kmeans_init=True``).

Evaluates each on the whole test split and writes normalised MSE, PSNR, SSIM,
perplexity, the share of codes used, the codes used during training, wall
times, the machine and the command to the ``## Phase 2 — stable VQ`` section of
``docs/results.md`` (replacing an older version of that section, leaving the
others alone)::

    python benchmarks/stable_vq.py                  # cpu preset, K = 512
    python benchmarks/stable_vq.py --preset smoke   # a quick run of the script itself
    python benchmarks/stable_vq.py --steps 300 --variants ema_restarts --no-write
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._common import RESULTS, command, duration, machine, now, write_section  # noqa: E402
import dvl_helpers as dvl  # noqa: E402
from dvl_helpers.models import evaluate_vqvae, from_preset, make_vqvae_step  # noqa: E402
from dvl_helpers.quantizers import EMAVectorQuantizer, VectorQuantizer  # noqa: E402

SECTION = "## Phase 2 — stable VQ"
VARIANTS = {  # key: (label, description)
    "vanilla": ("vanilla", "reference `VectorQuantizer`, codebook uniform in (-1/K, 1/K), trained by the codebook loss"),
    "ema": ("EMA", "`EMAVectorQuantizer(decay=0.99, eps=1e-5)`, codebook `randn`"),
    "ema_restarts": ("EMA + restarts", "the same with `dead_threshold`"),
    "ema_restarts_kmeans": ("EMA + restarts + k-means", "the same with `kmeans_init=True` (k-means++ and 10 Lloyd iterations on the first batch)"),
}


def quantizer(variant: str, num_codes: int, code_dim: int, dead_threshold: float) -> torch.nn.Module:
    if variant == "vanilla":
        return VectorQuantizer(num_codes, code_dim)
    if variant == "ema":
        return EMAVectorQuantizer(num_codes, code_dim)
    return EMAVectorQuantizer(num_codes, code_dim, dead_threshold=dead_threshold,
                              kmeans_init=variant == "ema_restarts_kmeans")


def render(r: dict) -> str:
    cfg = r["cfg"]
    rows = []
    for key, v in r["variants"].items():
        label = VARIANTS[key][0]
        rows.append(f"| {label} | {v['nmse']:.4f} | {v['psnr']:.2f} dB | {v['ssim']:.4f} | "
                    f"{v['perplexity']:.1f} | {v['codes_used']:.1%} | {v['train_used']:.1%} | "
                    f"{v['window_used']:.1%} | {duration(v['train_s'])} |")
    curves = "\n".join(
        f"  - {VARIANTS[key][0]}: " + ", ".join(f"{s}: {u:.0%}" for s, u in v["used_curve"])
        for key, v in r["variants"].items())
    described = "\n".join(f"- **{VARIANTS[key][0]}**: {VARIANTS[key][1]}." for key in r["variants"])
    steps_note = ("" if cfg.steps == r["preset_steps"] else
                  f" (the preset's {r['preset_steps']} steps cut to {cfg.steps} so that the four runs "
                  "fit in the benchmark's time budget on this machine)")
    target = r["variants"].get("ema_restarts")
    verdict = ("" if target is None else
               f"\n- EMA + restarts uses {target['train_used']:.1%} of the {cfg.num_codes} codes on the "
               f"training split and {target['codes_used']:.1%} on the test split (target: at least 90%; "
               f"{'met on both' if min(target['train_used'], target['codes_used']) >= 0.9 else 'met on the training split only' if target['train_used'] >= 0.9 else 'NOT met'}). "
               "The test split holds crops of other photographs than the training split: codes "
               "that specialise in content of the training photographs find nothing to encode there.")
    return f"""{SECTION}

`dvl_helpers.models.VQVAE` (the paper's CIFAR-10 network, sized by the preset) with K = {cfg.num_codes}
codes of dimension {cfg.code_dim} and four bottlenecks from `dvl_helpers.quantizers`, each trained with the same seed,
data order, {cfg.steps} steps{steps_note} × batch {cfg.batch_size}, Adam lr {cfg.lr:g}, beta 0.25, as the notebook
`02_stable_vq` trains them (MSE + the quantizer's loss; the EMA codebooks get no gradient):

{described}

Dead-code threshold {r['dead_threshold']:g} (EMA count in vectors per batch; a batch holds
{cfg.batch_size * 64} vectors, {cfg.batch_size * 64 / cfg.num_codes:.0f} per code on average). Metrics over the whole
test split ({r['n_test']} images, {r['n_test'] * 64} code positions); nMSE divides by the variance of the training images
(1.0 = predicting the mean); perplexity and "codes used (test)" pool the code counts of the whole test split,
"codes used (train)" those of the whole training split (eval mode, after training), and "last window" is the
share of codes chosen at least once in the last {r['usage_every']} training steps.

| {cfg.name} preset, {cfg.dataset} ({r['n_train']} / {r['n_test']}), K = {cfg.num_codes} | test nMSE | test PSNR | test SSIM | test perplexity | codes used (test) | codes used (train) | last window | train time |
|---|---|---|---|---|---|---|---|---|
{chr(10).join(rows)}

- Share of codes used per window of {r['usage_every']} training steps, by step:
{curves}{verdict}
- Machine: {r['machine']}; device {r['device']}; load average {r['load'][0]:.1f} at the start,
  {r['load'][1]:.1f} at the end (other processes share the cores when it is above 0); whole run {duration(r['total_s'])}.
- Command: `{r['command']}` (seed 0, {r['date']}).
"""


def run(args) -> dict:
    t0 = time.perf_counter()
    load_before = os.getloadavg()[0]
    cfg = dvl.get_preset(args.preset).replace(num_codes=args.num_codes)
    preset_steps = cfg.steps
    if args.steps is not None:
        cfg = cfg.replace(steps=args.steps)
    device = torch.device(cfg.device)
    train_set = dvl.data.load(cfg.dataset, "train", image_size=cfg.image_size, max_images=cfg.max_train_images)
    test_set = dvl.data.load(cfg.dataset, "test", image_size=cfg.image_size)
    data_variance = train_set.images.var().item()
    usage_every = max(cfg.steps // 15, 1)

    results = {}
    for key in args.variants:
        dvl.seed_everything(0)
        model = from_preset(cfg, quantizer(key, cfg.num_codes, cfg.code_dim, args.dead_threshold),
                            in_channels=train_set.image_shape[0])
        t_train = time.perf_counter()
        history = dvl.train(model, dvl.data.loader(train_set, cfg.batch_size, seed=0),
                            make_vqvae_step(usage_every), steps=cfg.steps, lr=cfg.lr, device=device,
                            progress=args.progress, desc=f"{VARIANTS[key][0]} ({cfg.name})")
        train_s = time.perf_counter() - t_train
        scores = evaluate_vqvae(model, dvl.data.loader(test_set, 256, shuffle=False), data_variance=data_variance)
        on_train = evaluate_vqvae(model, dvl.data.loader(train_set, 256, shuffle=False),
                                  data_variance=data_variance)
        usage = np.asarray(history["usage"])
        used = (usage > 0).mean(axis=1)
        results[key] = {
            **{k: v for k, v in scores.items() if k != "usage"},
            "window_used": float(used[-1]),
            "train_used": on_train["codes_used"], "train_perplexity": on_train["perplexity"],
            "used_curve": list(zip(history.steps("usage").tolist()[::3], used.tolist()[::3])),
            "train_s": train_s,
        }
    return {
        "cfg": cfg, "preset_steps": preset_steps, "variants": results, "usage_every": usage_every,
        "dead_threshold": args.dead_threshold, "n_train": len(train_set), "n_test": len(test_set),
        "total_s": time.perf_counter() - t0, "machine": machine(), "device": str(device),
        "load": (load_before, os.getloadavg()[0]),
        "command": command(),
        "date": now(),
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="cpu", choices=dvl.presets.PRESET_NAMES,
                        help="sizes of data, model and training (default: cpu)")
    parser.add_argument("--steps", type=int, default=None, help="override the preset's number of steps")
    parser.add_argument("--num-codes", type=int, default=512, help="codebook size K (default: 512)")
    parser.add_argument("--dead-threshold", type=float, default=1.0,
                        help="restart codes whose EMA count falls below this (default: 1.0)")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS),
                        help="which bottlenecks to train (default: all four)")
    parser.add_argument("--results", type=Path, default=RESULTS,
                        help="markdown file to update (default: docs/results.md)")
    parser.add_argument("--no-write", action="store_true", help="print the section instead of writing it")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=sys.stderr.isatty(),
                        help="show a progress bar (default: when stderr is a terminal)")
    args = parser.parse_args(argv)
    if args.steps is not None and args.steps < 1:
        parser.error(f"--steps must be >= 1, got {args.steps}")
    if args.num_codes < 1:
        parser.error(f"--num-codes must be >= 1, got {args.num_codes}")

    section = render(run(args))
    print(section)
    if not args.no_write:
        write_section(args.results, SECTION, section)
        print(f"updated {os.path.relpath(args.results)}")


if __name__ == "__main__":
    main()
