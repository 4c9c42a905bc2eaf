"""Benchmark: the course's conv autoencoder, without a quantizer.

The encoder and decoder of ``dvl_helpers.nn`` (the VQ-VAE paper's CIFAR-10
network, sized by the preset) with a continuous ``code_dim``-channel bottleneck,
a sigmoid output and an MSE loss. It is the ceiling for every quantized model
built on the same backbone in the same preset: a VQ-VAE can only lose
information at the bottleneck, never gain it.

Trains on the preset's RGB dataset, evaluates on the whole test split and
writes PSNR, SSIM, normalised MSE, wall time, the machine and the command to
the ``## Foundation — conv autoencoder`` section of ``docs/results.md``
(replacing an older version of that section, leaving the others alone)::

    python benchmarks/autoencoder.py                 # cpu preset, about 10 minutes on 2 cores
    python benchmarks/autoencoder.py --preset smoke  # a quick run of the script itself
    python benchmarks/autoencoder.py --steps 300 --no-write
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._common import RESULTS, command, duration, machine, now, write_section  # noqa: E402
import dvl_helpers as dvl  # noqa: E402
from dvl_helpers import metrics  # noqa: E402
from dvl_helpers.nn import Decoder, Encoder  # noqa: E402

SECTION = "## Foundation — conv autoencoder"


class AutoEncoder(nn.Module):
    """``[B, C, H, W]`` images -> ``[B, D, H/4, W/4]`` latents -> ``[B, C, H, W]`` in ``(0, 1)``."""

    def __init__(self, cfg: dvl.Preset, channels: int = 3):
        super().__init__()
        widths = dict(hidden=cfg.hidden, res_hidden=cfg.res_hidden, num_res_blocks=cfg.num_res_blocks)
        self.encoder = Encoder(channels, out_channels=cfg.code_dim, **widths)
        self.decoder = Decoder(cfg.code_dim, channels, **widths)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.decoder(self.encoder(x)))


def step_fn(model: nn.Module, batch) -> dict:
    x, _ = batch
    return {"loss": F.mse_loss(model(x), x)}


@torch.no_grad()
def reconstruct(model: nn.Module, images: torch.Tensor, device, batch_size: int = 256) -> torch.Tensor:
    model.eval()
    out = [model(images[i:i + batch_size].to(device)).cpu() for i in range(0, len(images), batch_size)]
    model.train()
    return torch.cat(out)


def render(r: dict) -> str:
    cfg = r["cfg"]
    evals = ", ".join(f"{s}: {v:.2f}" for s, v in r["eval_curve"])
    return f"""{SECTION}

The conv encoder/decoder of `dvl_helpers.nn` (the VQ-VAE paper's CIFAR-10 network,
sized by the preset) with a continuous bottleneck instead of a quantizer: sigmoid
output, MSE loss, Adam. It is the ceiling for the quantized models that use the same
backbone and preset. Metrics are over the whole test split (photographs never seen
in training); nMSE divides by the variance of the training images, as the VQ-VAE
paper's example does (1.0 = predicting the mean).

| preset | data (train / test) | steps × batch | lr | hidden / res_hidden / blocks / D | test PSNR | test SSIM | test nMSE | train time |
|---|---|---|---|---|---|---|---|---|
| {cfg.name} | {cfg.dataset} {cfg.image_size}x{cfg.image_size} ({r['n_train']} / {r['n_test']}) | {cfg.steps} × {cfg.batch_size} | {cfg.lr:g} | {cfg.hidden} / {cfg.res_hidden} / {cfg.num_res_blocks} / {cfg.code_dim} | {r['psnr']:.2f} dB | {r['ssim']:.4f} | {r['nmse']:.4f} | {duration(r['train_s'])} |

- Training loss (MSE), mean of the first / last {r['k']} steps: {r['loss_first']:.5f} / {r['loss_last']:.5f};
  test MSE {r['mse']:.5f}; {r['params'] / 1e6:.3f} M parameters; {r['train_s'] / cfg.steps * 1000:.0f} ms per step;
  whole run (data, training, evaluation) {duration(r['total_s'])}.
- Test PSNR during training (dB, on {cfg.eval_batches} test batches), by step: {evals or 'not evaluated'}.
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
    train_loader = dvl.data.loader(train_set, cfg.batch_size, seed=0)
    data_variance = train_set.images.var().item()
    eval_images = test_set.images[: cfg.eval_batches * cfg.batch_size]

    def eval_fn(model):
        return {"psnr": metrics.psnr(reconstruct(model, eval_images, device), eval_images)}

    model = AutoEncoder(cfg, channels=train_set.image_shape[0])
    t_train = time.perf_counter()
    history = dvl.train(model, train_loader, step_fn, steps=cfg.steps, lr=cfg.lr, device=device,
                        eval_fn=eval_fn, eval_every=cfg.eval_every, progress=args.progress,
                        desc=f"autoencoder ({cfg.name})")
    train_s = time.perf_counter() - t_train

    x = test_set.images
    report = metrics.reconstruction_report(reconstruct(model, x, device), x, data_variance=data_variance)
    loss = history["loss"]
    k = max(1, min(50, len(loss) // 4))
    return {
        "cfg": cfg, **report,
        "k": k, "n_train": len(train_set), "n_test": len(test_set),
        "params": sum(p.numel() for p in model.parameters()),
        "loss_first": float(loss[:k].mean()), "loss_last": float(loss[-k:].mean()),
        "eval_curve": list(zip(history.steps("eval_psnr").tolist(), history["eval_psnr"].tolist())),
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
