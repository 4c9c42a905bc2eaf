"""Benchmark: ``dvl grade`` on a synthetic class of Phase-1 (``01_vqvae``) submissions.

Builds a class of ``--students`` submissions from the solution and release of
``01_vqvae`` with :mod:`grader.synthetic` (right, partly wrong, untouched,
noisy, tests edited, deleted or pasted, a killed kernel, a file that is not a
notebook; one endless loop in every 100), grades it with ``dvl grade`` (smoke
preset, as grading always runs) once per ``--jobs`` value, and records
submissions per minute and the peak memory of the grader and everything it
started (sum of PSS, sampled every half second), then writes the
``## Grading throughput`` section of ``docs/results.md``::

    python benchmarks/grading.py                        # 200 submissions, --jobs 1 and 2
    python benchmarks/grading.py --students 20 --no-write
    nice python benchmarks/grading.py --students 40 --jobs 1 2 > grading.log 2>&1 &

Each run's grades are checked against the class's expectations, so a fast but
wrong grader cannot post a number.
"""
from __future__ import annotations

import argparse
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._common import RESULTS, cpu_model, now, write_section  # noqa: E402
from grader.notebooks import read_notebook  # noqa: E402
from grader.synthetic import build_class, write_class  # noqa: E402

SECTION = "## Grading throughput"
PHASE = "01_vqvae"


def make_class(n: int, submitted: Path) -> dict[str, tuple[str, str]]:
    """``n`` submissions; returns student id -> (kind of submission, expected status phrase)."""
    solution = read_notebook(ROOT / "solutions" / PHASE / f"{PHASE}.ipynb")
    release = read_notebook(ROOT / "course" / PHASE / f"{PHASE}.ipynb")
    members = {m.name: m for m in build_class(solution, release)}
    common = [k for k in members if k != "infinite_loop"]
    plan = {}
    for i in range(n):
        kind = "infinite_loop" if i % 100 == 99 else common[i % len(common)]
        member = members[kind]
        member_copy = type(member)(**{**member.__dict__, "name": f"s{i:03d}_{kind}"})
        write_class([member_copy], submitted, PHASE)
        plan[member_copy.name] = (kind, member.status)
    return plan


def _pss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _tree(pid: int) -> set[int]:
    """``pid`` and its descendants, from /proc (kernels keep the grader as an ancestor)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, todo = set(), [pid]
    while todo:
        p = todo.pop()
        if p not in found:
            found.add(p)
            todo += children.get(p, [])
    return found


def grade(submitted: Path, out: Path, jobs: int, timeout: int) -> dict:
    """Run ``dvl grade`` in a subprocess; wall time and peak memory of its process tree."""
    cmd = [sys.executable, "-m", "grader.cli", "grade", str(submitted), "--out", str(out),
           "--root", str(ROOT), "--jobs", str(jobs), "--timeout", str(timeout)]
    peak, stop = [0], threading.Event()
    load = os.getloadavg()[0]
    start = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)

    def sample():
        while not stop.wait(0.5):
            peak[0] = max(peak[0], sum(_pss(p) for p in _tree(proc.pid)))

    watcher = threading.Thread(target=sample, daemon=True)
    watcher.start()
    output, _ = proc.communicate()
    seconds = time.monotonic() - start
    stop.set()
    watcher.join()
    return {"jobs": jobs, "seconds": seconds, "peak": peak[0], "code": proc.returncode,
            "output": output, "load": (load, os.getloadavg()[0])}


def check(out: Path, plan: dict) -> list[str]:
    """Grades that differ from what the synthetic class expects."""
    import csv
    with open(out / "grades.csv", newline="") as f:
        rows = {r["student"]: r for r in csv.DictReader(f)}
    bad = []
    for student, (kind, status) in plan.items():
        row = rows.get(student)
        if row is None:
            bad.append(f"{student}: no grade")
        elif kind in ("correct", "noisy_correct", "test_deleted", "test_pasted") and row["total"] != row["max"]:
            bad.append(f"{student}: {row['total']}/{row['max']} ({row['status']})")
        elif status != "ok" and status not in row["status"]:
            bad.append(f"{student}: status {row['status']!r}, expected {status!r}")
    return bad


def machine() -> str:
    """Cores, CPU, memory and Python: grading runs no torch, so not :func:`benchmarks._common.machine`."""
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} cores ({cpu_model()}), {mem:.0f} GiB RAM, Python {platform.python_version()}"


def render(n: int, runs: list[dict], target: int, meta: dict) -> str:
    rows = "\n".join(
        f"| {r['jobs']} | {n} | {r['seconds'] / 60:.1f} min | {60 * n / r['seconds']:.1f} | "
        f"{r['seconds'] / n:.1f} s | {r['peak'] / 2**30:.2f} GiB | "
        f"{target / (60 * n / r['seconds']):.0f} min | {r['load'][0]:.1f} → {r['load'][1]:.1f} |"
        for r in runs)
    scaled = "" if n == target else (
        f"\n- {n} submissions were graded, not {target}: the last column extrapolates linearly\n"
        f"  (grading is one job per submission, so time grows with the class; memory does not).")
    return f"""{SECTION}

`dvl grade` on a synthetic class of Phase-1 (`01_vqvae`) submissions (`benchmarks/grading.py`):
right, partly wrong, untouched, noisy, tests edited, deleted or pasted, a killed kernel, a file
that is not a notebook, an endless loop in every 100. Smoke preset (as grading always runs),
the default limits of `dvl grade` except `--timeout {meta['timeout']}`; every grade was checked
against the class's expectations. Peak memory: the sum of PSS of `dvl grade` and every process
it started, sampled every 0.5 s.

| `--jobs` | submissions | wall time | submissions / min | per submission | peak memory | {target} submissions | load average |
|---|---|---|---|---|---|---|---|
{rows}

- Machine: {meta['machine']}.
  The load average (1 min, at the start and the end of each run) counts the grader's own
  processes too; above `--jobs`, other work shared the cores and the run was slower than on
  an idle machine.{scaled}
- Command: `{meta['command']}` ({meta['date']}).
"""


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--students", type=int, default=200, help="size of the class (default 200)")
    parser.add_argument("--target", type=int, default=200,
                        help="class size the last column extrapolates to (default 200)")
    parser.add_argument("--jobs", type=int, nargs="+", default=[1, 2], help="--jobs values (default 1 2)")
    parser.add_argument("--timeout", type=int, default=30, help="--timeout of dvl grade (default 30 s)")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--no-write", action="store_true", help="print the section, leave docs/ alone")
    parser.add_argument("--keep", type=Path, default=None, help="keep the class and outputs here")
    args = parser.parse_args(argv)
    if args.students < 1 or any(j < 1 for j in args.jobs):
        parser.error("--students and --jobs must be >= 1")

    base = args.keep or Path(tempfile.mkdtemp(prefix="dvl-grading-bench-"))
    base.mkdir(parents=True, exist_ok=True)
    submitted = base / "submitted"
    plan = make_class(args.students, submitted)
    runs = []
    for jobs in args.jobs:
        out = base / f"out-jobs{jobs}"
        shutil.rmtree(out, ignore_errors=True)
        run = grade(submitted, out, jobs, args.timeout)
        bad = check(out, plan) if run["code"] == 0 else [run["output"][-2000:]]
        if bad:
            sys.exit(f"--jobs {jobs}: grades differ from the expectation:\n" + "\n".join(bad[:20]))
        print(f"--jobs {jobs}: {args.students} submissions in {run['seconds']:.0f} s, "
              f"peak {run['peak'] / 2**30:.2f} GiB", flush=True)
        runs.append(run)
    meta = {"machine": machine(), "timeout": args.timeout,
            "command": shlex.join(["python", os.path.relpath(sys.argv[0], ROOT), *sys.argv[1:]]),
            "date": now()}
    section = render(args.students, runs, args.target, meta)
    print(section)
    if not args.no_write:
        write_section(args.results, SECTION, section)
    if not args.keep:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
