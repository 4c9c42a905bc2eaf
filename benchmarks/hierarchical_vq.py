"""Benchmark: rate against distortion for one, residual, product and two-level codebooks (phase 4).

As the training cell of ``04_hierarchical_vq`` trains the learner's layers, with
the reference ones from ``dvl_helpers.hierarchical`` (same seed, data order,
steps, learning rate, codebooks of ``K = cfg.num_codes`` codes):

- ``VQ``: ``models.VQVAE`` with phase 1's ``VectorQuantizer`` (one codebook);
- ``residual``: ``ResidualVectorQuantizer(L, K, D)`` (``L = 8``; 4 in smoke),
  trained with quantizer dropout (``make_residual_step``) and evaluated from its
  first ``n`` stages for every ``n``;
- ``product``: ``ProductVectorQuantizer(4, K, D)``;
- ``two-level``: ``VQVAE2`` (EMA quantizers with restarts), also decoded from its
  top codes alone.

Evaluates on the whole test split: normalised MSE, PSNR, the share of codes used
per codebook (stage, chunk or level), bits per image; writes them, wall times,
the machine and the command to the ``## Phase 4 — hierarchical VQ`` section of
``docs/results.md`` after every run (so a long run leaves partial results)::

    python benchmarks/hierarchical_vq.py                  # cpu preset
    python benchmarks/hierarchical_vq.py --preset smoke   # a quick run of the script itself
    python benchmarks/hierarchical_vq.py --steps 500 --no-write
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
from dvl_helpers import hierarchical as hvq  # noqa: E402
from dvl_helpers.models import from_preset  # noqa: E402
from dvl_helpers.quantizers import VectorQuantizer  # noqa: E402

SECTION = "## Phase 4 — hierarchical VQ"
RUNS = ("VQ", "residual", "product", "two-level")


def build(run, cfg, num_stages, num_chunks):
    torch.manual_seed(0)
    k, d = cfg.num_codes, cfg.code_dim
    if run == "VQ":
        return from_preset(cfg, VectorQuantizer(k, d))
    if run == "residual":
        return from_preset(cfg, hvq.ResidualVectorQuantizer(num_stages, k, d))
    if run == "product":
        return from_preset(cfg, hvq.ProductVectorQuantizer(num_chunks, k, d))
    return hvq.VQVAE2(3, cfg.hidden, cfg.res_hidden, cfg.num_res_blocks, num_codes=k, code_dim=d)


def render(r: dict) -> str:
    cfg = r["cfg"]
    k, grid = cfg.num_codes, r["grid"]
    rows = []
    for run, v in r["runs"].items():
        if run == "residual":
            for n, s in v["depths"].items():
                rows.append(f"| residual, first {n} of {r['stages']} stages | {s['bits']:.0f} | {s['nmse']:.4f} | "
                            f"{s['psnr']:.2f} dB | {' / '.join(f'{u:.0%}' for u in s['codes_used'])} | "
                            f"{duration(v['train_s']) if n == r['stages'] else ''} |")
            continue
        used = " / ".join(f"{u:.0%}" for u in v["codes_used"].values())
        rows.append(f"| {run} | {v['bits']:.0f} | {v['nmse']:.4f} | {v['psnr']:.2f} dB | {used} | "
                    f"{duration(v['train_s'])} |")
        if run == "two-level":
            t = v["top_only"]
            rows.append(f"| two-level, top codes only (bottom set to 0) | {v['top_bits']:.0f} | "
                        f"{t['nmse']:.4f} | {t['psnr']:.2f} dB | | |")
    missing = [run for run in RUNS if run not in r["runs"]]
    pending = f"\n- Not yet measured (run in progress or stopped): {', '.join(missing)}." if missing else ""
    steps_note = ("" if cfg.steps == r["preset_steps"] else
                  f" (the preset's {r['preset_steps']} steps cut to {cfg.steps})")
    return f"""{SECTION}

`benchmarks/hierarchical_vq.py`: the four bottlenecks of the notebook `04_hierarchical_vq`, with the
reference layers of `dvl_helpers.hierarchical`, on {cfg.dataset} ({r['n_train']} training / {r['n_test']} test
images), `{cfg.name}` preset: the encoder and decoder of `dvl.models.from_preset` (hidden {cfg.hidden}),
K = {k} codes of dimension {cfg.code_dim} per codebook, the same seed and data order, {cfg.steps} steps{steps_note}
× batch {cfg.batch_size}, Adam lr {cfg.lr}, beta 0.25. The residual model ({r['stages']} stages) is trained with
quantizer dropout (a depth drawn uniformly at every step) and evaluated from its first n stages; product VQ
uses {r['chunks']} chunks of {cfg.code_dim // r['chunks']} channels; the two-level model uses EMA quantizers
(decay 0.99) with restarts (threshold 1). Bits per image: positions × codebooks per position × log2 K
({grid}×{grid} positions; the two-level top grid is {grid // 2}×{grid // 2}). Metrics over the whole test
split; nMSE divides the MSE by the variance of the training pixels; "codes used" is the share of each
codebook's K codes (per stage, chunk or level) chosen at least once on the test split.

![Test PSNR against bits per image](figures/rate_distortion_{cfg.name}.png)

| model | bits per image | test nMSE | test PSNR | codes used (per codebook) | train time |
|---|---|---|---|---|---|
{chr(10).join(rows)}
{pending}
- Machine: {r['machine']}; device {cfg.device}; load average {r['load_start']:.1f} at the start
  (other processes share the cores when it is above 0); whole run so far {duration(r['elapsed'])}.
- Command: `{r['command']}` (seed 0, {r['date']} UTC).
"""


def plot(r: dict, path: Path) -> None:
    """Rate against distortion: test PSNR [dB] against bits per image, one marker per model,
    the residual model as a curve over its depths."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for run, v in r["runs"].items():
        if run == "residual":
            depths = list(v["depths"].values())
            ax.plot([d["bits"] for d in depths], [d["psnr"] for d in depths], "o-", label="residual, by depth")
            continue
        ax.plot(v["bits"], v["psnr"], "s", markersize=8, label=run)
        if run == "two-level":
            ax.plot(v["top_bits"], v["top_only"]["psnr"], "x", markersize=8, label="two-level, top codes only")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("bits per image")
    ax.set_ylabel("test PSNR [dB]")
    ax.set_title(f"Rate against distortion ({r['cfg'].name} preset, {r['cfg'].dataset})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--steps", type=int, default=None, help="training steps per run (default: the preset's)")
    parser.add_argument("--no-write", action="store_true", help="print the section instead of writing it")
    parser.add_argument("--results", default=str(RESULTS), help="markdown file to update")
    args = parser.parse_args(argv)

    cfg = dvl.get_preset(args.preset)
    dvl.seed_everything(0)
    preset_steps = cfg.steps
    if args.steps:
        cfg = cfg.replace(steps=args.steps)
    stages = 4 if cfg.name == "smoke" else 8
    chunks = 4
    train_set = dvl.data.load(cfg.dataset, "train", max_images=cfg.max_train_images)
    test_set = dvl.data.load(cfg.dataset, "test")
    variance = train_set.images.var().item()
    test_loader = dvl.data.loader(test_set, 256, shuffle=False)
    grid = cfg.image_size // 4
    k = cfg.num_codes
    r = {"cfg": cfg, "preset_steps": preset_steps, "stages": stages, "chunks": chunks, "grid": grid,
         "n_train": len(train_set), "n_test": len(test_set), "machine": machine(),
         "load_start": os.getloadavg()[0], "runs": {},
         "command": " ".join([python(), "benchmarks/hierarchical_vq.py", *map(shlex.quote, argv or sys.argv[1:])]),
         "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M")}
    start = time.perf_counter()
    for run in RUNS:
        model = build(run, cfg, stages, chunks).to(cfg.device)
        step = hvq.make_residual_step(stages) if run == "residual" else hvq.vqvae2_step
        t0 = time.perf_counter()
        dvl.train(model, dvl.data.loader(train_set, cfg.batch_size, seed=0), step, steps=cfg.steps,
                  lr=cfg.lr, progress=False, device=cfg.device)
        out = {"train_s": time.perf_counter() - t0}
        if run == "residual":
            out["depths"] = hvq.evaluate_depths(model, test_loader, range(1, stages + 1), variance)
        else:
            out.update(hvq.evaluate_model(model, test_loader, variance, k))
            per_position = {"VQ": 1, "product": chunks}.get(run)
            if per_position:
                out["bits"] = hvq.bits_per_image(grid * grid, k, per_position)
            else:
                out["top_bits"] = hvq.bits_per_image((grid // 2) ** 2, k)
                out["bits"] = out["top_bits"] + hvq.bits_per_image(grid * grid, k)
                out["top_only"] = hvq.evaluate_model(model, test_loader, variance, k, top_only=True)
        r["runs"][run] = out
        r["elapsed"] = time.perf_counter() - start
        section = render(r)
        if args.no_write:
            continue
        path = Path(args.results)
        plot(r, path.parent / "figures" / f"rate_distortion_{cfg.name}.png")
        write_section(path, SECTION, section)
    if args.no_write:
        print(render(r))


if __name__ == "__main__":
    main()
