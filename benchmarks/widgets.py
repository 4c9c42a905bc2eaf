"""Benchmark: how long the widgets take to answer a control change.

Drives each control of :func:`dvl_helpers.widgets.quantizer_playground` the way the
browser does (set a value, click a button: the kernel-side callback runs and
re-renders the picture), from a realistic state (400 steps trained from the random
start, K = 32), and times every change: the wall-clock time a learner waits and the
CPU time the kernel spends (all threads). The other explorers' main controls are
timed the same way for comparison. The browser adds a message round trip and
decoding a ~60 kB PNG on top, a few milliseconds on localhost.

Writes the ``## Widgets — playground responsiveness`` section of
``docs/results.md`` (replacing an older version of that section, leaving the
others alone)::

    python benchmarks/widgets.py                  # about a minute on 2 cores
    python benchmarks/widgets.py --repeats 5 --no-write
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import matplotlib
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._common import RESULTS, command, cpu_model, now, write_section  # noqa: E402
from dvl_helpers.training import History  # noqa: E402
from dvl_helpers.widgets import (codebook_explorer, fsq_grid_explorer, gumbel_explorer,  # noqa: E402
                                 quantizer_playground)

SECTION = "## Widgets — playground responsiveness"
BUDGET_MS = 300


def timed(change, repeats: int) -> tuple[np.ndarray, np.ndarray]:
    """``(wall_ms, cpu_ms)`` of ``change(i)`` for ``i`` in ``range(repeats)``."""
    wall, cpu = [], []
    for i in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        change(i)
        wall.append(time.perf_counter() - w0)
        cpu.append(time.process_time() - c0)
    return np.array(wall) * 1e3, np.array(cpu) * 1e3


def playground_changes():
    """``[(control, what it does, change(i))]`` over one playground, alternating values."""
    w = quantizer_playground(num_codes=32, steps=200, seed=0)
    w.train_button.click()
    w.train_button.click()

    def setter(control, values):
        return lambda i: setattr(control, "value", values[i % len(values)])

    def train(i):
        if w.toy.step > 2000:          # keep the history (and its curve) at a realistic length
            w.restart_button.click()
        w.train_button.click()

    return w, [
        ("train button (200 steps)", "trains, redraws", train),
        ("codes K slider", "restarts, redraws", setter(w.num_codes, [24, 32])),
        ("init toggle", "restarts (k-means or random), redraws", setter(w.init, ["k-means", "random"])),
        ("restart button", "restarts, redraws", lambda i: w.restart_button.click()),
        ("new data button", "new mixture, restarts, redraws", lambda i: w.data_button.click()),
        ("β slider", "setting, status line", setter(w.beta, [0.5, 0.25])),
        ("EMA checkbox", "setting, status line", setter(w.ema, [True, False])),
        ("decay slider", "setting, status line", setter(w.decay, [0.95, 0.99])),
        ("restart threshold slider", "setting, status line", setter(w.dead_threshold, [1.0, 0.0])),
        ("steps dropdown", "button label", setter(w.steps, [100, 200])),
    ]


def other_changes():
    rng = np.random.default_rng(0)
    runs = {}
    for name, collapse in (("vanilla", True), ("EMA", False)):
        h = History()
        for t in range(30):
            alive = max(64 - (2 * t if collapse else 0), 4)
            p = np.r_[rng.dirichlet(np.ones(alive)), np.zeros(64 - alive)]
            h.log(50 * (t + 1), usage=rng.multinomial(4000, p).astype(float))
        runs[name] = h
    explorer = codebook_explorer(runs)
    gumbel = gumbel_explorer([2.0, 1.0, 0.5, 0.0, -1.0, 0.3, -0.5, 1.5])
    fsq3 = fsq_grid_explorer(levels=(8, 5, 5))
    fsq2 = fsq_grid_explorer(levels=(8, 5))
    steps = list(range(50, 1501, 50))
    def setter(control, values):
        return lambda i: setattr(control, "value", values[i % len(values)])

    return [
        ("codebook_explorer: step slider (2 runs, K = 64)", setter(explorer.slider, steps[::7])),
        ("gumbel_explorer: τ slider (K = 8, 1000 samples)", setter(gumbel.tau, [0.1, 1.0, 5.0])),
        ("fsq_grid_explorer: z slider, 3-D grid", setter(fsq3.z_sliders[0], [-1.0, 0.5, 2.0])),
        ("fsq_grid_explorer: z slider, 2-D grid", setter(fsq2.z_sliders[0], [-1.0, 0.5, 2.0])),
        ("fsq_grid_explorer: L slider, 3-D grid", setter(fsq3.level_sliders[0], [6, 8])),
    ]


def run(repeats: int) -> dict:
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    _, changes = playground_changes()
    rows = [(name, what, *timed(change, repeats)) for name, what, change in changes]
    others = [(name, *timed(change, repeats)) for name, change in other_changes()]
    return {
        "rows": rows, "others": others, "repeats": repeats,
        "seconds": time.perf_counter() - started,
        "machine": (f"{os.cpu_count()} cores ({cpu_model()}), Python {platform.python_version()}, "
                    f"NumPy {np.__version__}, Matplotlib {matplotlib.__version__} (Agg)"),
        "load": (load_before, os.getloadavg()[0]),
        "command": command(),
        "date": now(),
    }


def render(r: dict) -> str:
    def ms(values):
        return tuple(f"{v:.0f}" if v >= 1 else "< 1" for v in (np.median(values), np.percentile(values, 90)))

    lines = [
        SECTION, "",
        "Time from a control change to the callback's return in the kernel (the new picture",
        "rendered, or the status line updated), for `quantizer_playground()` in a realistic state",
        "(K = 32, 1000 points, after 400 steps from the random start). *Wall* is what a learner",
        "waits, *CPU* what the kernel spends (all threads): wall above CPU means other processes",
        f"had the cores. The course's budget is {BUDGET_MS} ms per control change on 2 cores.",
        f"Median and 90th percentile of {r['repeats']} changes each.", "",
        "| control | effect | wall median (ms) | wall p90 (ms) | CPU median (ms) | CPU p90 (ms) |",
        "|---|---|---|---|---|---|",
    ]
    for name, what, wall, cpu in r["rows"]:
        lines.append(f"| {name} | {what} | {' | '.join(ms(wall))} | {' | '.join(ms(cpu))} |")
    worst = max(np.median(wall) for _, _, wall, _ in r["rows"])
    worst_cpu = max(np.median(cpu) for _, _, _, cpu in r["rows"])
    lines += [
        "",
        f"- Slowest control, median: {worst:.0f} ms wall, {worst_cpu:.0f} ms CPU "
        f"({'within' if worst_cpu < BUDGET_MS else 'over'} the {BUDGET_MS} ms budget in CPU time, "
        f"{'within' if worst < BUDGET_MS else 'over'} it in wall time under this load).",
        "- The other explorers, same measure:", "",
        "| explorer: control | wall median (ms) | wall p90 (ms) | CPU median (ms) | CPU p90 (ms) |",
        "|---|---|---|---|---|",
    ]
    for name, wall, cpu in r["others"]:
        lines.append(f"| {name} | {' | '.join(ms(wall))} | {' | '.join(ms(cpu))} |")
    lines += [
        "",
        f"- Machine: {r['machine']}; load average {r['load'][0]:.1f} at the start, {r['load'][1]:.1f} at the end",
        "  (other processes share the cores when it is above 0).",
        f"- Command: `{r['command']}` ({r['date']}, {r['seconds']:.0f} s).",
    ]
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=15, help="changes timed per control (default: 15)")
    parser.add_argument("--results", type=Path, default=RESULTS,
                        help="markdown file to update (default: docs/results.md)")
    parser.add_argument("--no-write", action="store_true", help="print the section instead of writing it")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    section = render(run(args.repeats))
    print(section)
    if not args.no_write:
        write_section(args.results, SECTION, section)
        print(f"updated {os.path.relpath(args.results)}")


if __name__ == "__main__":
    main()
