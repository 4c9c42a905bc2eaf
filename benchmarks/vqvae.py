"""Benchmark: the reference VQ-VAE of phase 1 (``01_vqvae``).

``dvl_helpers.models.VQVAE`` (the VQ-VAE paper's CIFAR-10 network, sized by the
preset) around the reference ``dvl_helpers.quantizers.VectorQuantizer``
(``beta = 0.25``, codebook uniform in ``(-1/K, 1/K)``), trained exactly as the
notebook's training cell trains the learner's layer: MSE + VQ loss, Adam,
``cfg.steps`` steps. It is what a correct notebook should reach, and the
baseline that phase 2 (EMA, k-means, restarts) improves on.

Evaluates on the whole test split and writes normalised MSE, PSNR, SSIM,
perplexity, the share of codes used, wall time, the machine and the command to
the ``## Phase 1 — VQ-VAE (reference)`` section of ``docs/results.md``
(replacing an older version of that section, leaving the others alone)::

    python benchmarks/vqvae.py                 # cpu preset, about 10 minutes on 2 cores
    python benchmarks/vqvae.py --preset smoke  # a quick run of the script itself
    python benchmarks/vqvae.py --steps 300 --no-write
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
from dvl_helpers.models import evaluate_vqvae, from_preset, make_vqvae_step  # noqa: E402
from dvl_helpers.quantizers import VectorQuantizer  # noqa: E402

SECTION = "## Phase 1 — VQ-VAE (reference)"


def render(r: dict) -> str:
    cfg = r["cfg"]
    curve = ", ".join(f"{s}: {n:.3f} / {p:.1f}" for s, n, p in r["eval_curve"])
    return f"""{SECTION}

`dvl_helpers.models.VQVAE` (the paper's CIFAR-10 network, sized by the preset) with the
reference `dvl_helpers.quantizers.VectorQuantizer` (beta 0.25, codebook uniform in
(-1/K, 1/K)), trained as the notebook's training cell trains the learner's layer:
MSE + codebook loss + beta x commitment loss, Adam. Metrics over the whole test split
(photographs never seen in training); nMSE divides by the variance of the training
images (1.0 = predicting the mean); perplexity and codes used pool the code counts of
the whole test split. Compare with the continuous autoencoder of the same preset above:
the gap is what the bottleneck costs, and the unused codes are what phase 2 recovers.

| preset | data (train / test) | steps × batch | lr | hidden / res_hidden / blocks | K × D | test nMSE | test PSNR | test SSIM | perplexity | codes used | train time |
|---|---|---|---|---|---|---|---|---|---|---|---|
| {cfg.name} | {cfg.dataset} {cfg.image_size}x{cfg.image_size} ({r['n_train']} / {r['n_test']}) | {cfg.steps} × {cfg.batch_size} | {cfg.lr:g} | {cfg.hidden} / {cfg.res_hidden} / {cfg.num_res_blocks} | {cfg.num_codes} × {cfg.code_dim} | {r['nmse']:.4f} | {r['psnr']:.2f} dB | {r['ssim']:.4f} | {r['perplexity']:.1f} of {cfg.num_codes} | {r['codes_used']:.0%} | {duration(r['train_s'])} |

- Training, mean of the first / last {r['k']} steps: reconstruction MSE {r['rec_first']:.5f} / {r['rec_last']:.5f},
  VQ loss {r['vq_first']:.5f} / {r['vq_last']:.5f}, batch perplexity {r['ppl_first']:.1f} / {r['ppl_last']:.1f};
  test MSE {r['mse']:.5f}; {r['params'] / 1e6:.3f} M parameters; {r['train_s'] / cfg.steps * 1000:.0f} ms per step;
  whole run (data, training, evaluation) {duration(r['total_s'])}.
- Test nMSE / perplexity during training (on {cfg.eval_batches} test batches), by step: {curve or 'not evaluated'}.
- Machine: {r['machine']}; device {r['device']}; load average {r['load'][0]:.1f} at the start,
  {r['load'][1]:.1f} at the end (other processes share the cores when it is above 0).
- Command: `{r['command']}` (seed 0, {r['date']}).
"""


def run(args) -> dict:
    t0 = time.perf_counter()
    load_before = os.getloadavg()[0]
    cfg = dvl.get_preset(args.preset)
    if args.steps is not None:
        cfg = cfg.replace(steps=args.steps, eval_every=min(cfg.eval_every, args.steps))
    dvl.seed_everything(0)
    device = torch.device(cfg.device)

    train_set = dvl.data.load(cfg.dataset, "train", image_size=cfg.image_size, max_images=cfg.max_train_images)
    test_set = dvl.data.load(cfg.dataset, "test", image_size=cfg.image_size)
    data_variance = train_set.images.var().item()

    def test_loader():
        return dvl.data.loader(test_set, 256, shuffle=False)

    def eval_fn(model):
        out = evaluate_vqvae(model, dvl.data.loader(test_set, cfg.batch_size, shuffle=False),
                             max_batches=cfg.eval_batches, data_variance=data_variance)
        return {"nmse": out["nmse"], "perplexity": out["perplexity"]}

    model = from_preset(cfg, VectorQuantizer(cfg.num_codes, cfg.code_dim), in_channels=train_set.image_shape[0])
    t_train = time.perf_counter()
    history = dvl.train(model, dvl.data.loader(train_set, cfg.batch_size, seed=0), make_vqvae_step(),
                        steps=cfg.steps, lr=cfg.lr, device=device, eval_fn=eval_fn,
                        eval_every=cfg.eval_every, progress=args.progress, desc=f"VQ-VAE ({cfg.name})")
    train_s = time.perf_counter() - t_train

    scores = evaluate_vqvae(model, test_loader(), data_variance=data_variance)
    k = max(1, min(50, cfg.steps // 4))

    def first_last(name):
        values = history[name]
        return float(values[:k].mean()), float(values[-k:].mean())

    (rec_first, rec_last), (vq_first, vq_last), (ppl_first, ppl_last) = map(
        first_last, ("rec", "vq_loss", "perplexity"))
    return {
        "cfg": cfg, **{key: v for key, v in scores.items() if key != "usage"},
        "k": k, "n_train": len(train_set), "n_test": len(test_set),
        "params": sum(p.numel() for p in model.parameters()),
        "rec_first": rec_first, "rec_last": rec_last, "vq_first": vq_first, "vq_last": vq_last,
        "ppl_first": ppl_first, "ppl_last": ppl_last,
        "eval_curve": list(zip(history.steps("eval_nmse").tolist(), history["eval_nmse"].tolist(),
                               history["eval_perplexity"].tolist())),
        "train_s": train_s, "total_s": time.perf_counter() - t0,
        "machine": machine(), "device": str(device),
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
