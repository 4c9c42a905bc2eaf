"""Benchmark: VQ, FSQ and LFQ bottlenecks (phase 6, ``06_fsq_lfq``) at matched codebook sizes.

``dvl_helpers.models.VQVAE`` (the VQ-VAE paper's CIFAR-10 network, sized by the
preset) with three bottlenecks at ``K ~ 2^b`` codes, each trained with the same
seed, data order, steps and learning rate, as the notebook trains them:

- ``VQ``: the reference ``VectorQuantizer`` of phase 1, ``K = 2^b`` codes of ``cfg.code_dim``;
- ``FSQ``: ``dvl_helpers.fsq.FSQ`` with the FSQ paper's levels for ``2^b``
  (``[8, 6, 5]``, ``[8, 5, 5, 5]``, ``[7, 5, 5, 5, 5]``), code dimension ``len(levels)``,
  behind ``Standardized(scale=FSQ_SCALE)`` (each channel at zero mean and standard deviation 1.5
  before the bound);
- ``LFQ``: ``dvl_helpers.fsq.LFQ(b, tau=LFQ_TAU)`` (entropy weight 0.1, commitment 0.25), code dimension ``b``.

Evaluates each on the whole test split and writes normalised MSE, PSNR, the
share of codes used (on the test and on the training split), perplexity, wall times, the machine and the command to the
``## Phase 6 — FSQ and LFQ`` section of ``docs/results.md`` (replacing an older
version of that section, leaving the others alone). The section is rewritten
after every run, so an interrupted benchmark leaves the runs it finished::

    python benchmarks/fsq_lfq.py                        # cpu preset, b = 8, 10, 12
    python benchmarks/fsq_lfq.py --bits 10 --steps 500  # one size, shorter
    python benchmarks/fsq_lfq.py --preset smoke --no-write
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import re
import shlex
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import dvl_helpers as dvl  # noqa: E402
from dvl_helpers.fsq import FSQ, LFQ, RECOMMENDED_LEVELS, Standardized  # noqa: E402
from dvl_helpers.models import evaluate_vqvae, from_preset, make_vqvae_step  # noqa: E402
from dvl_helpers.quantizers import VectorQuantizer  # noqa: E402

SECTION = "## Phase 6 — FSQ and LFQ"
RESULTS = ROOT / "docs" / "results.md"
KINDS = ("VQ", "FSQ", "LFQ")
#: LFQ's softmax temperature here: MAGVIT-2's 0.01 saturates p_n and the entropy term loses its gradient
LFQ_TAU = 1.0
#: the standard deviation of FSQ's input: 1.0, 1.5, 2.0 use 93.9%, 98.3%, 99.7% of 2^10 codes (training split)
FSQ_SCALE = 1.5


def cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    found = re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE)
    return found.group(1).strip() if found else platform.machine()


def machine() -> str:
    gpu = f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""
    return (f"{os.cpu_count()} cores ({cpu_model()}), torch {torch.__version__} "
            f"with {torch.get_num_threads()} threads, Python {platform.python_version()}{gpu}")


def python() -> str:
    exe = Path(sys.executable)
    return os.path.relpath(exe, ROOT) if exe.is_relative_to(ROOT) else "python"


def duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def replace_section(text: str, section: str) -> str:
    """``text`` with the section under :data:`SECTION` replaced by ``section`` (appended if absent)."""
    pattern = re.compile(rf"^{re.escape(SECTION)}[ \t]*\n.*?(?=^## |\Z)", re.MULTILINE | re.DOTALL)
    section = section.rstrip("\n") + "\n\n"
    if pattern.search(text):
        return pattern.sub(lambda _: section, text, count=1).rstrip("\n") + "\n"
    return text.rstrip("\n") + "\n\n" + section.rstrip("\n") + "\n"


def bottleneck(kind: str, bits: int, code_dim: int) -> tuple[torch.nn.Module, int]:
    """The quantizer and the encoder's output channels for ``K ~ 2^bits``."""
    if kind == "VQ":
        return VectorQuantizer(2 ** bits, code_dim), code_dim
    if kind == "FSQ":
        levels = RECOMMENDED_LEVELS[bits]
        return Standardized(FSQ(levels), len(levels), scale=FSQ_SCALE), len(levels)
    return LFQ(bits, tau=LFQ_TAU), bits


def render(r: dict) -> str:
    cfg = r["cfg"]
    lines = []
    for (kind, bits), s in r["runs"].items():
        what = {"VQ": f"VQ, {s['num_codes']} × {cfg.code_dim}",
                "FSQ": f"FSQ {list(RECOMMENDED_LEVELS[bits])}",
                "LFQ": f"LFQ, {bits} bits"}[kind]
        lines.append(f"| 2^{bits} | {what} | {s['num_codes']} | {s['nmse']:.4f} | {s['psnr']:.2f} dB | "
                     f"{s['codes_used']:.1%} | {s['train_used']:.1%} | {s['perplexity']:.1f} | "
                     f"{s['window_used']:.1%} | "
                     f"{duration(s['train_s'])} |")
    planned = len(r["bits"]) * len(r["kinds"])
    status = ("" if len(r["runs"]) == planned else
              f"\n**Partial:** {len(r['runs'])} of the {planned} planned runs finished when this was written.\n")
    fsq10 = r["runs"].get(("FSQ", 10))
    target = ""
    if fsq10 is not None:
        met = "met" if fsq10["train_used"] >= 0.95 else "not met"
        target = (f"- FSQ at 2^10 ({fsq10['num_codes']} codes) uses {fsq10['train_used']:.1%} of its implicit "
                  f"codebook on the training split (target: at least 95%; {met}) and "
                  f"{fsq10['codes_used']:.1%} on the test split.\n")
    return f"""{SECTION}

`dvl_helpers.models.VQVAE` (the paper's CIFAR-10 network, sized by the preset) with three bottlenecks at
matched codebook sizes K ≈ 2^b, each trained with the same seed, data order, {cfg.steps} steps × batch
{cfg.batch_size}, Adam lr {cfg.lr}, as the notebook `06_fsq_lfq` trains them (MSE + the quantizer's loss):
**VQ** the reference `VectorQuantizer` (K = 2^b codes of dimension {cfg.code_dim}, beta 0.25); **FSQ**
`dvl_helpers.fsq.FSQ` with the FSQ paper's levels (code dimension = number of levels, loss 0) behind
`Standardized(scale={FSQ_SCALE})` (a batch norm without learned scale and shift: each channel enters the
bound at zero mean and standard deviation {FSQ_SCALE}); **LFQ** `dvl_helpers.fsq.LFQ(b, tau={LFQ_TAU})` (entropy weight 0.1, commitment 0.25, gamma 1).
Metrics over the whole test split ({r['n_test']} images, {r['n_test'] * 64} code positions); nMSE divides by the
variance of the training images; "codes used" is the share of the K codes chosen at least once on the test
split and on the training split ({r['n_train']} images, {r['n_train'] * 64} positions, eval mode), perplexity
that of the pooled test counts, "last window" the share used in the last {r['usage_every']} training steps.
{status}
| {cfg.name} preset, photos ({r['n_train']} / {r['n_test']}) | bottleneck | K | test nMSE | test PSNR | codes used (test) | codes used (train) | test perplexity | last window | train time |
|---|---|---|---|---|---|---|---|---|---|
{chr(10).join(lines)}

{target}- Machine: {r['machine']}; device {r['device']}; load average {r['load'][0]:.1f} at the start,
  {r['load'][1]:.1f} at the end (other processes share the cores when it is above 0); whole run {duration(r['total_s'])}.
- Command: `{r['command']}` (seed 0, {r['date']}).
"""


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="cpu", choices=dvl.presets.PRESET_NAMES)
    parser.add_argument("--steps", type=int, default=None, help="override the preset's number of steps")
    parser.add_argument("--bits", type=int, nargs="+", default=[8, 10, 12], choices=sorted(RECOMMENDED_LEVELS),
                        help="codebook sizes 2^b (default: 8 10 12)")
    parser.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS)
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--no-write", action="store_true", help="print the section instead of writing it")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=sys.stderr.isatty())
    args = parser.parse_args(argv)
    if args.steps is not None and args.steps < 1:
        parser.error(f"--steps must be >= 1, got {args.steps}")

    t0 = time.perf_counter()
    load_before = os.getloadavg()[0]
    cfg = dvl.get_preset(args.preset)
    if args.steps is not None:
        cfg = cfg.replace(steps=args.steps)
    device = torch.device(cfg.device)
    train_set = dvl.data.load(cfg.dataset, "train", image_size=cfg.image_size, max_images=cfg.max_train_images)
    test_set = dvl.data.load(cfg.dataset, "test", image_size=cfg.image_size)
    variance = train_set.images.var().item()
    usage_every = max(cfg.steps // 15, 1)
    report = {"cfg": cfg, "bits": args.bits, "kinds": args.kinds, "runs": {}, "usage_every": usage_every,
              "n_train": len(train_set), "n_test": len(test_set), "machine": machine(), "device": str(device),
              "command": shlex.join([python(), os.path.relpath(sys.argv[0], ROOT), *sys.argv[1:]])}
    for bits in args.bits:
        for kind in args.kinds:
            dvl.seed_everything(0)
            quantizer, code_dim = bottleneck(kind, bits, cfg.code_dim)
            model = from_preset(cfg.replace(code_dim=code_dim), quantizer, in_channels=train_set.image_shape[0])
            t_train = time.perf_counter()
            history = dvl.train(model, dvl.data.loader(train_set, cfg.batch_size, seed=0),
                                make_vqvae_step(usage_every), steps=cfg.steps, lr=cfg.lr, device=device,
                                progress=args.progress, desc=f"{kind}, 2^{bits}")
            train_s = time.perf_counter() - t_train
            scores = evaluate_vqvae(model, dvl.data.loader(test_set, 256, shuffle=False), data_variance=variance)
            last = history["usage"][-1]
            seen = evaluate_vqvae(model, dvl.data.loader(train_set, 256, shuffle=False), data_variance=variance)
            report["runs"][(kind, bits)] = {**{k: v for k, v in scores.items() if k != "usage"},
                                            "train_used": seen["codes_used"],
                                            "num_codes": model.num_codes, "train_s": train_s,
                                            "window_used": float((last > 0).mean())}
            report.update(total_s=time.perf_counter() - t0, load=(load_before, os.getloadavg()[0]),
                          date=dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))
            section = render(report)
            if args.no_write:
                continue
            old = args.results.read_text() if args.results.exists() else ""
            args.results.write_text(replace_section(old, section))
    print(render(report))


if __name__ == "__main__":
    main()
