"""Training quality: the reference model of a phase, trained for a fixed budget, against a published baseline.

Trains the reference model of ``--phase`` with the sizes of ``--preset`` and
records, in the ``## Training quality`` section of ``docs/results.md``, its
normalised MSE, PSNR, perplexity, share of codes used and wall time, next to
the baseline of the Sonnet VQ-VAE example (CIFAR-10, 10,000 steps at batch 32,
K = 512, D = 64, EMA codebook: normalised reconstruction error 0.056,
perplexity about 326). Each (phase, preset) row replaces its older version; the
other rows and the other sections of the file are kept::

    python benchmarks/train_quality.py --phase 02_stable_vq --preset cpu
    python benchmarks/train_quality.py --phase 02_stable_vq --preset gpu     # on a GPU: CIFAR-10, the Sonnet budget
    python benchmarks/train_quality.py --phase 01_vqvae --preset smoke --no-write

The models (``dvl_helpers.models.VQVAE`` sized by the preset):

- ``01_vqvae``: the reference ``VectorQuantizer`` (codebook trained by the codebook loss);
- ``02_stable_vq``: the reference ``EMAVectorQuantizer`` with dead-code restarts
  (decay 0.99, ``dead_threshold`` 1), the quantizer later phases train with.

As in the Sonnet example, the reconstruction term of the loss is the MSE
divided by the variance of the training images (``--plain-mse`` trains with
the plain MSE, as the notebooks do).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import dvl_helpers as dvl  # noqa: E402
from benchmarks._common import RESULTS, command, duration, machine, now, read_section, write_section  # noqa: E402
from dvl_helpers.models import evaluate_vqvae, from_preset, make_vqvae_step  # noqa: E402
from dvl_helpers.fsq import FSQ, RECOMMENDED_LEVELS  # noqa: E402
from dvl_helpers.quantizers import EMAVectorQuantizer, VectorQuantizer  # noqa: E402

SECTION = "## Training quality"
#: phase -> (model description, quantizer factory(K, D))
PHASES = {
    "01_vqvae": ("VQ-VAE, reference `VectorQuantizer` (beta 0.25)",
                 lambda k, d: VectorQuantizer(k, d, beta=0.25)),
    "02_stable_vq": ("VQ-VAE, `EMAVectorQuantizer` (decay 0.99, beta 0.25) + dead-code restarts (threshold 1)",
                     lambda k, d: EMAVectorQuantizer(k, d, beta=0.25, decay=0.99, dead_threshold=1.0)),
    # an implicit codebook of 1000 codes whatever K the preset names; the row reports the 1000
    "06_fsq_lfq": (f"VQ-VAE, `FSQ({list(RECOMMENDED_LEVELS[10])}, dim=D)` (1000 implicit codes, no codebook loss)",
                   lambda k, d: FSQ(RECOMMENDED_LEVELS[10], dim=d)),
}
#: the phases whose gpu preset must match the Sonnet baseline (a "not run" row until it is run)
SONNET_PHASES = ("01_vqvae", "02_stable_vq")
LATER_PHASES = ("00_vae", "03_gumbel_dvae", "04_hierarchical_vq", "05_vqgan",
                "07_modern_tokenizers", "08_priors")
SONNET = {"nmse": 0.056, "perplexity": 326.0, "steps": 10_000, "batch": 32, "K": 512, "D": 64}
_DATA = re.compile(r"<!-- train_quality rows: (.*?) -->", re.DOTALL)


def train_and_evaluate(phase: str, preset: str, steps: int | None = None, plain_mse: bool = False,
                       progress: bool = False) -> dict:
    """Train the reference model of ``phase`` in ``preset``; returns the row to record."""
    t0 = time.perf_counter()
    load_before = os.getloadavg()[0]
    cfg = dvl.get_preset(preset)
    preset_steps = cfg.steps
    if steps is not None:
        cfg = cfg.replace(steps=steps)
    device = torch.device(cfg.device)
    train_set = dvl.data.load(cfg.dataset, "train", image_size=cfg.image_size, max_images=cfg.max_train_images)
    test_set = dvl.data.load(cfg.dataset, "test", image_size=cfg.image_size)
    data_variance = train_set.images.var().item()

    dvl.seed_everything(0)
    model = from_preset(cfg, PHASES[phase][1](cfg.num_codes, cfg.code_dim), in_channels=train_set.image_shape[0])
    usage_every = max(cfg.steps // 10, 1)
    step_fn = make_vqvae_step(usage_every, data_variance=None if plain_mse else data_variance)
    t_train = time.perf_counter()
    history = dvl.train(model, dvl.data.loader(train_set, cfg.batch_size, seed=0), step_fn,
                        steps=cfg.steps, lr=cfg.lr, device=device, progress=progress,
                        desc=f"{phase} ({cfg.name})")
    if device.type == "cuda":
        torch.cuda.synchronize()
    train_s = time.perf_counter() - t_train
    test = evaluate_vqvae(model, dvl.data.loader(test_set, 256, shuffle=False), data_variance=data_variance)
    train = evaluate_vqvae(model, dvl.data.loader(train_set, 256, shuffle=False), data_variance=data_variance)
    rec = history["rec"]
    last = rec[-min(100, len(rec)):]
    # the Sonnet number is the normalised training error of the last steps
    train_rec_nmse = float(last.mean()) if not plain_mse else float(last.mean() / data_variance)
    return {
        "phase": phase, "preset": cfg.name, "model": PHASES[phase][0],
        "data": f"{cfg.dataset} {cfg.image_size}x{cfg.image_size} ({len(train_set)} / {len(test_set)})",
        "steps": cfg.steps, "preset_steps": preset_steps, "batch": cfg.batch_size, "lr": cfg.lr,
        "K": model.num_codes, "D": cfg.code_dim,
        "loss": "MSE" if plain_mse else "MSE / Var(train)",
        "train_nmse_last100": train_rec_nmse,
        "test_nmse": test["nmse"], "test_psnr": test["psnr"], "test_perplexity": test["perplexity"],
        "test_used": test["codes_used"], "train_nmse": train["nmse"],
        "train_perplexity": train["perplexity"], "train_used": train["codes_used"],
        "train_s": train_s, "step_ms": 1000 * train_s / cfg.steps, "total_s": time.perf_counter() - t0,
        "machine": machine(), "device": str(device),
        "load": [load_before, os.getloadavg()[0]],
        "command": command(), "date": now(),
    }


def recorded_rows(path: Path) -> list[dict]:
    """Rows recorded by earlier runs (kept in an HTML comment of the section)."""
    found = _DATA.search(read_section(path, SECTION))
    if not found:
        return []
    try:
        return json.loads(found.group(1).replace("\\u002d\\u002d", "--"))
    except json.JSONDecodeError:
        return []


def merge(rows: list[dict], row: dict) -> list[dict]:
    """``rows`` with ``row`` replacing the one of the same phase and preset."""
    kept = [r for r in rows if (r["phase"], r["preset"]) != (row["phase"], row["preset"])]
    order = {p: i for i, p in enumerate(list(PHASES) + list(LATER_PHASES))}
    presets = {"smoke": 0, "cpu": 1, "gpu": 2}
    return sorted(kept + [row], key=lambda r: (order.get(r["phase"], 99), presets.get(r["preset"], 9)))


def _verdict(r: dict) -> str:
    if r["preset"] != "gpu":
        return "— (smaller budget)"
    ok = r["train_nmse_last100"] <= SONNET["nmse"] and r["test_perplexity"] >= SONNET["perplexity"]
    return "matches or beats both" if ok else "**below the baseline**"


def render(rows: list[dict]) -> str:
    s = SONNET
    lines = [
        "| phase | preset | data (train / test) | steps × batch | K × D | train nMSE (last 100 steps) "
        "| test nMSE | test PSNR | test perplexity | codes used (test) | train time | against Sonnet |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
        f"| Sonnet VQ-VAE example (published) | — | CIFAR-10 (50000 / 10000) | {s['steps']} × {s['batch']} "
        f"| {s['K']} × {s['D']} | {s['nmse']} | — | — | ~{s['perplexity']:.0f} (training) | — | — | baseline |",
    ]
    have_gpu = {r["phase"] for r in rows if r["preset"] == "gpu"}
    for r in rows:
        lines.append(
            f"| {r['phase']} | {r['preset']} | {r['data']} | {r['steps']} × {r['batch']} | {r['K']} × {r['D']} "
            f"| {r['train_nmse_last100']:.4f} | {r['test_nmse']:.4f} | {r['test_psnr']:.2f} dB "
            f"| {r['test_perplexity']:.1f} of {r['K']} | {r['test_used']:.1%} | {duration(r['train_s'])} "
            f"| {_verdict(r)} |")
    for phase in SONNET_PHASES:
        if phase not in have_gpu:
            lines.append(f"| {phase} | gpu | CIFAR-10 (50000 / 10000) | 10000 × 32 | 512 × 64 "
                         "| not run (no GPU) | — | — | — | — | — | — |")
    notes = []
    for r in rows:
        cut = "" if r["steps"] == r["preset_steps"] else f" (the preset's {r['preset_steps']} steps cut to {r['steps']})"
        notes.append(
            f"- **{r['phase']}, {r['preset']}**: {r['model']}; Adam lr {r['lr']:g}, loss {r['loss']} + the "
            f"quantizer's loss, {r['steps']} steps{cut}, {r['step_ms']:.0f} ms per step; on the training split "
            f"(eval mode, after training) nMSE {r['train_nmse']:.4f}, perplexity {r['train_perplexity']:.1f}, "
            f"codes used {r['train_used']:.1%}. Machine: {r['machine']}; device {r['device']}; load average "
            f"{r['load'][0]:.1f} at the start, {r['load'][1]:.1f} at the end; whole run {duration(r['total_s'])}. "
            f"Command: `{r['command']}` (seed 0, {r['date']}).")
    data = json.dumps(rows).replace("--", "\\u002d\\u002d")
    return f"""{SECTION}

The reference model of a phase trained for a fixed budget (`benchmarks/train_quality.py`), against the
baseline of the Sonnet VQ-VAE example (van den Oord et al.'s CIFAR-10 model, EMA codebook): after
10,000 steps at batch 32 with K = 512, D = 64 its normalised reconstruction error on training batches is
0.056 and its perplexity about 326. nMSE is the MSE divided by the variance of the training images (1.0 =
predicting the mean), as in that example; "train nMSE (last 100 steps)" is its training-batch number, the
one the baseline reports; the test columns use the whole test split. The `gpu` preset has the baseline's
data, budget and sizes and must match or beat both numbers; `cpu` is a smaller model on the offline
photographs, for a quick look.

{chr(10).join(lines)}

{chr(10).join(notes)}

<!-- train_quality rows: {data} -->
"""


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--phase", required=True, choices=list(PHASES) + list(LATER_PHASES),
                        help="whose reference model to train")
    parser.add_argument("--preset", default="cpu", choices=dvl.presets.PRESET_NAMES,
                        help="sizes of data, model and training (default: cpu)")
    parser.add_argument("--steps", type=int, default=None, help="override the preset's number of steps")
    parser.add_argument("--plain-mse", action="store_true",
                        help="train on the plain MSE instead of the MSE over the data variance")
    parser.add_argument("--results", type=Path, default=RESULTS, help="markdown file to update")
    parser.add_argument("--no-write", action="store_true", help="print the section instead of writing it")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=sys.stderr.isatty(),
                        help="show a progress bar (default: when stderr is a terminal)")
    args = parser.parse_args(argv)
    if args.phase not in PHASES:
        parser.error(f"phase {args.phase} has no reference model to benchmark yet; "
                     f"available: {', '.join(PHASES)}")
    if args.steps is not None and args.steps < 1:
        parser.error(f"--steps must be >= 1, got {args.steps}")

    row = train_and_evaluate(args.phase, args.preset, args.steps, args.plain_mse, args.progress)
    section = render(merge(recorded_rows(args.results), row))
    print(section)
    if not args.no_write:
        # re-read right before writing: other scripts update other sections meanwhile
        section = render(merge(recorded_rows(args.results), row))
        write_section(args.results, SECTION, section)
        print(f"updated {os.path.relpath(args.results)}")


if __name__ == "__main__":
    main()
