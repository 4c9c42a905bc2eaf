"""Phase 8 benchmark: priors over VQ-VAE codes (held-out bits per code, sampling speed).

Trains, as notebook ``08_priors`` does, the reference VQ-VAE (EMA codebook with
dead-code restarts) on the grey digits of the preset (7x7 codes of 28-pixel
images), then an autoregressive prior (``CodePrior``) and a MaskGIT prior
(``MaskedCodePrior``) on the training codes. Reports the held-out bits per code
of the autoregressive prior (against a uniform and a unigram guess), samples
per second of the reference autoregressive sampler and of MaskGIT at 8 steps
(with and without MaskGIT's Gumbel noise on the confidences, choice temperature 4.5),
and a Fréchet distance in the feature space of a small digit classifier.
Writes the section ``## Phase 8 — priors`` of ``docs/results.md``.

    .venv/bin/python benchmarks/priors.py                  # cpu preset
    .venv/bin/python benchmarks/priors.py --prior-steps 500 --no-write
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from benchmarks._common import RESULTS, command, duration, machine, now, write_section  # noqa: E402

SECTION = "## Phase 8 — priors"


def _timed(fn, repeats=1):
    start = time.perf_counter()
    for _ in range(repeats):
        out = fn()
    return out, (time.perf_counter() - start) / repeats


def run(args) -> dict:
    import dvl_helpers as dvl
    from dvl_helpers import priors
    from dvl_helpers.models import VQVAE, make_vqvae_step
    from dvl_helpers.quantizers import EMAVectorQuantizer
    from dvl_helpers.transformer import CodePrior, MaskedCodePrior

    cfg = dvl.setup(seed=0, preset=args.preset, verbose=False)
    size, ds = 28, 4
    train_set = dvl.data.load(cfg.dataset_gray, "train", image_size=size)
    test_set = dvl.data.load(cfg.dataset_gray, "test", image_size=size)
    side = size // ds
    grid, length, k = (side, side), side * side, cfg.num_codes
    out = {"cfg": cfg, "length": length, "train_n": len(train_set), "test_n": len(test_set)}

    torch.manual_seed(0)
    tokenizer = VQVAE(EMAVectorQuantizer(k, cfg.code_dim, decay=0.95, dead_threshold=1.0), in_channels=1,
                      hidden=cfg.hidden, res_hidden=cfg.res_hidden, num_res_blocks=cfg.num_res_blocks,
                      downsample=ds, code_dim=cfg.code_dim)
    hist, out["tok_s"] = _timed(lambda: dvl.train(tokenizer, dvl.data.loader(train_set, 64), make_vqvae_step(),
                                                  steps=args.tok_steps, lr=2e-3, progress=False))
    out["tok_rec"] = float(hist["rec"][-20:].mean())
    train_codes = priors.encode_codes(tokenizer, train_set.images)
    test_codes = priors.encode_codes(tokenizer, test_set.images)
    out["codes_used"] = int(train_codes.unique().numel())

    loader = dvl.data.loader(torch.utils.data.TensorDataset(train_codes), 64)
    width = dict(dim=args.dim, depth=args.depth, heads=4, dropout=args.dropout)
    torch.manual_seed(0)
    ar = CodePrior(k, length, **width)
    _, out["ar_s"] = _timed(lambda: dvl.train(ar, loader, priors.ar_step, steps=args.prior_steps, lr=1e-3,
                                              progress=False))
    torch.manual_seed(0)
    mg = MaskedCodePrior(k, length, **width)
    _, out["mg_s"] = _timed(lambda: dvl.train(mg, loader, priors.make_maskgit_step("cosine"),
                                              steps=args.prior_steps, lr=1e-3, progress=False))
    ar.eval(), mg.eval()
    out["params"] = sum(p.numel() for p in ar.parameters())

    counts = torch.bincount(train_codes.flatten(), minlength=k).double() + 1.0
    out["unigram"] = -(torch.log2(counts / counts.sum())[test_codes.flatten()]).mean().item()
    out["uniform"] = math.log2(k)
    out["bits"] = priors.bits_per_code(ar, test_codes)
    out["bits_train"] = priors.bits_per_code(ar, train_codes)

    n = args.samples
    gen = torch.Generator().manual_seed(0)
    samples = {}
    samples["autoregressive"], t_ar = _timed(lambda: priors.sample_autoregressive(ar, n, length, generator=gen))
    samples["MaskGIT, 8 steps"], t_mg = _timed(lambda: priors.maskgit_generate(mg, n, length, 8, generator=gen))
    samples["MaskGIT, 8 steps, choice noise 4.5"], t_mgn = _timed(
        lambda: priors.maskgit_generate(mg, n, length, 8, generator=gen, choice_temperature=4.5))
    out["speed"] = {"autoregressive": (n / t_ar, length), "MaskGIT, 8 steps": (n / t_mg, 8),
                    "MaskGIT, 8 steps, choice noise 4.5": (n / t_mgn, 8)}

    torch.manual_seed(0)
    clf = priors.DigitClassifier()
    dvl.train(clf, dvl.data.loader(train_set, 64), priors.classifier_step, steps=args.clf_steps, lr=3e-3,
              progress=False)
    real, probs = priors.classifier_features(clf, test_set.images)
    out["clf_acc"] = float((probs.argmax(1) == test_set.labels.numpy()).mean())
    rows = {"tokenizer reconstructions (test)": test_codes,
            "random codes": torch.randint(0, k, (n, length), generator=torch.Generator().manual_seed(1)),
            **samples}
    out["fd"] = {name: priors.frechet_distance(
        priors.classifier_features(clf, priors.decode_codes(tokenizer, c, grid))[0], real)
        for name, c in rows.items()}
    return out


def section(r, args, load, total_s) -> str:
    cfg = r["cfg"]
    speed = "\n".join(f"| {name} | {calls} | {sps:.1f} |" for name, (sps, calls) in r["speed"].items())
    fd = "\n".join(f"| {name} | {v:.2f} |" for name, v in r["fd"].items())
    return f"""{SECTION}

Two priors over the codes of the reference VQ-VAE (EMA codebook, dead-code restarts; K = {cfg.num_codes},
D = {cfg.code_dim}, hidden {cfg.hidden}) trained for {args.tok_steps} steps on {cfg.dataset_gray}
28x28 ({r['train_n']} train / {r['test_n']} test images): {r['length']} codes per image (7x7),
{r['codes_used']} of {cfg.num_codes} codes used by the training set, reconstruction MSE {r['tok_rec']:.4f}.
Both priors are `dvl_helpers.transformer` models of width {args.dim}, depth {args.depth}, 4 heads,
dropout {args.dropout} ({r['params'] / 1e6:.2f} M parameters), trained {args.prior_steps} steps × 64 sequences with Adam (lr 1e-3):
`CodePrior` with the next-code cross-entropy, `MaskedCodePrior` with MaskGIT's masked cross-entropy
(cosine schedule).

**Held-out bits per code** (test images' codes; lower is better):

| model | bits per code |
|---|---|
| uniform guess, log2 K | {r['uniform']:.2f} |
| unigram (code frequencies of the training set) | {r['unigram']:.2f} |
| autoregressive prior, test codes | {r['bits']:.2f} |
| autoregressive prior, training codes | {r['bits_train']:.2f} |

**Sampling speed** (reference samplers of `dvl_helpers.priors`, {args.samples} sequences per call,
CPU, temperature 1):

| sampler | model calls | samples per second |
|---|---|---|
{speed}

**Sample quality**: Fréchet distance to the test images in the 64-d feature space of
`DigitClassifier` trained {args.clf_steps} steps (test accuracy {r['clf_acc']:.1%}); {args.samples} samples each:

| codes from | Fréchet distance |
|---|---|
{fd}

- Training time: tokenizer {duration(r['tok_s'])}, autoregressive prior {duration(r['ar_s'])},
  MaskGIT prior {duration(r['mg_s'])}; whole run {duration(total_s)}.
- Machine: {machine()}; load average {load[0]:.1f} at the start, {load[1]:.1f} at the end
  (other processes shared the cores).
- Command: `{command()}` (preset {cfg.name}, seed 0, {now()}).
"""


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--tok-steps", type=int, default=1500)
    parser.add_argument("--prior-steps", type=int, default=2000)
    parser.add_argument("--clf-steps", type=int, default=600)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--depth", type=int, default=2)
    parser.add_argument("--dropout", type=float, default=0.1)
    parser.add_argument("--samples", type=int, default=500)
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
