"""Benchmark: the course's reference quantizers against vector-quantize-pytorch.

Forward + backward time and peak memory of each quantizer family of the course
against the class of lucidrains' vector-quantize-pytorch that does the same
thing, with the options matched as far as they go (decay 0.99, commitment
weight 0.25; the library's rotation trick, k-means init and dead-code
replacement off):

========== ========================================== ==========================================
family     course (``dvl_helpers``)                   vector-quantize-pytorch
========== ========================================== ==========================================
VQ         ``quantizers.VectorQuantizer``             ``VectorQuantize(ema_update=False, learnable_codebook=True)``
EMA VQ     ``quantizers.EMAVectorQuantizer``          ``VectorQuantize(decay=0.99)``
residual   ``hierarchical.ResidualVectorQuantizer``   ``ResidualVQ(num_quantizers=4, decay=0.99)``
FSQ        ``fsq.FSQ``                                ``FSQ``
LFQ        ``fsq.LFQ``                                ``LFQ``
========== ========================================== ==========================================

Input: a batch of 64 latent maps of 32x32 (N = 65,536 vectors) of D = 64
channels (VQ families), or of ``len(levels)`` / ``log2 K`` channels (FSQ, LFQ,
whose codebooks are implicit), for K in {512, 8192, 65536}. The backward pass
starts from ``mean(z_q^2) + loss``. Each (family, K) case runs in its own
child process holding both implementations; they alternate, one call each per
round, after a warm-up round, and the medians are reported with the ratio
course / library. Peak memory is the child's peak resident memory during a
call (Linux ``VmHWM``, reset before every call) minus its resident memory just
before the call; on a GPU, ``torch.cuda.max_memory_allocated``. VQ and EMA VQ
start from the same codebook in both libraries, so the first call also shows
whether both pick the same indices. The VQ case also times the floor: the
distance matrix product plus argmin alone, in 4096-row chunks.

Before a case starts, the library's memory need is estimated from its
``[N, K]`` matrices; when the free memory (``MemAvailable``) is below that
plus a margin, the library is left out of the case ("not run: needs ~X GiB").
A watchdog stops a child whose resident memory grows past the free memory
minus the margin. A family whose course module does not exist yet is
reported as "not yet available". The results replace the
``## Quantizers against vector-quantize-pytorch`` section of
``docs/results.md`` after every case::

    python benchmarks/quantizers.py                                    # all families, K = 512, 8192, 65536
    python benchmarks/quantizers.py --tiny --no-write                  # seconds: checks the script
    nice -n 5 python benchmarks/quantizers.py --families vq ema_vq --codes 512 > q.log 2>&1 &
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._common import RESULTS, command, machine, now, write_section  # noqa: E402

SECTION = "## Quantizers against vector-quantize-pytorch"
FAMILIES = {  # key: (label, course class, library class)
    "vq": ("VQ", "`quantizers.VectorQuantizer`", "`VectorQuantize` (EMA off, learnable codebook)"),
    "ema_vq": ("EMA VQ", "`quantizers.EMAVectorQuantizer`", "`VectorQuantize` (EMA, decay 0.99)"),
    "residual_vq": ("residual VQ, 4 stages", "`hierarchical.ResidualVectorQuantizer`", "`ResidualVQ` (EMA, decay 0.99)"),
    "fsq": ("FSQ", "`fsq.FSQ`", "`FSQ`"),
    "lfq": ("LFQ", "`fsq.LFQ`", "`LFQ` (entropy loss weight 0.1)"),
}
STAGES = 4                      # residual VQ depth
CHUNK = 4096                    # rows per distance block of the floor
GiB = 2 ** 30
#: FSQ levels per implicit codebook size (product = K)
FSQ_LEVELS = {512: [8, 8, 8], 8192: [8, 8, 8, 4, 4], 65536: [8, 8, 8, 8, 4, 4],
              64: [4, 4, 4], 256: [8, 8, 4]}


class Unavailable(Exception):
    """The course has no such module yet (or it cannot be built)."""


def mem_available() -> int:
    """Bytes the kernel could still hand out without swapping (``MemAvailable``)."""
    try:
        text = Path("/proc/meminfo").read_text()
        return int(re.search(r"^MemAvailable:\s+(\d+) kB", text, re.MULTILINE).group(1)) * 1024
    except (OSError, AttributeError):
        import psutil
        return psutil.virtual_memory().available


def library_need(family: str, n: int, k: int) -> int:
    """Estimated peak bytes of the library on one case.

    The library holds several ``[N, K]`` float32 matrices at once (``cdist``,
    the negated distances, the one-hot assignment and its einsum): measured at
    N = 65,536, K = 8192, its EMA VectorQuantize peaks at 12.9 GiB, 6.5 of them.
    """
    nk = n * k * 4
    if family == "vq":
        return int(7.5 * nk) + GiB // 2           # the one-hot is also kept for the backward pass
    if family == "ema_vq":
        return int(6.5 * nk) + GiB // 2
    if family == "residual_vq":
        return int((6.5 + STAGES - 1) * nk) + GiB // 2
    if family == "lfq":
        return int(6 * nk) + GiB // 2             # the entropy loss over all 2^d codes
    return GiB // 2                               # FSQ: no codebook matrix at all


# --------------------------------------------------------------------------- child process


def _rss(key: str = "VmRSS", pid: str = "self") -> int:
    text = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(rf"^{key}:\s+(\d+) kB", text, re.MULTILINE).group(1)) * 1024


def _reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")   # resets VmHWM to the current RSS


def _course(family: str, k: int, d: int):
    """The course's module for ``family``, and a function mapping its output to ``(z_q, loss, indices)``."""
    try:
        if family == "vq":
            from dvl_helpers.quantizers import VectorQuantizer
            return VectorQuantizer(k, d, beta=0.25), lambda out: (out[0], out[1], out[2]["indices"])
        if family == "ema_vq":
            from dvl_helpers.quantizers import EMAVectorQuantizer
            return EMAVectorQuantizer(k, d, beta=0.25, decay=0.99), lambda out: (out[0], out[1], out[2]["indices"])
        if family == "residual_vq":
            from dvl_helpers.hierarchical import ResidualVectorQuantizer
            module = ResidualVectorQuantizer(STAGES, k, d, beta=0.25, decay=0.99)
            return module, lambda out: (out[0], out[1], out[2]["indices"])
        if family == "fsq":
            from dvl_helpers.fsq import FSQ
            return FSQ(FSQ_LEVELS[k]), lambda out: (out[0], out[1], out[2]["indices"])
        if family == "lfq":
            from dvl_helpers.fsq import LFQ
            module = LFQ(int(math.log2(k)), entropy_weight=0.1, commitment_weight=0.25)
            return module, lambda out: (out[0], out[1], out[2]["indices"])
    except (ImportError, AttributeError) as error:
        raise Unavailable(f"not yet available ({type(error).__name__}: {error})") from None
    except TypeError as error:
        raise Unavailable(f"cannot be built ({error})") from None
    raise ValueError(f"unknown family {family!r}")


def _channels_last(inner):
    """``inner`` (taking ``[B, N, D]``) as a module taking and returning ``[B, D, H, W]`` latents."""
    import torch

    class ChannelsLast(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = inner

        def forward(self, z):
            b, d, h, w = z.shape
            z_q, indices, loss = self.inner(z.permute(0, 2, 3, 1).reshape(b, h * w, d))
            return z_q.reshape(b, h, w, d).permute(0, 3, 1, 2), indices.reshape(b, h, w, -1), loss

    return ChannelsLast()


def _library(family: str, k: int, d: int):
    """vector-quantize-pytorch's module for ``family`` and its output adapter."""
    import torch
    import vector_quantize_pytorch as vqp
    common = dict(commitment_weight=0.25, rotation_trick=False, kmeans_init=False, threshold_ema_dead_code=0,
                  accept_image_fmap=True)
    if family == "vq":
        module = vqp.VectorQuantize(dim=d, codebook_size=k, ema_update=False, learnable_codebook=True, **common)
        return module, lambda out: (out[0], out[2], out[1])
    if family == "ema_vq":
        module = vqp.VectorQuantize(dim=d, codebook_size=k, decay=0.99, **common)
        return module, lambda out: (out[0], out[2], out[1])
    if family == "residual_vq":
        # its accept_image_fmap path fails in this version (a shape error when it stacks the
        # residuals), so it gets its native [B, H*W, D] and the result is turned back
        common["accept_image_fmap"] = False
        module = _channels_last(vqp.ResidualVQ(dim=d, num_quantizers=STAGES, codebook_size=k, decay=0.99, **common))
        return module, lambda out: (out[0], out[2].sum(), out[1])
    if family == "fsq":
        module = vqp.FSQ(FSQ_LEVELS[k], channel_first=True)
        return module, lambda out: (out[0], torch.zeros(()), out[1])
    if family == "lfq":
        module = vqp.LFQ(codebook_size=k, dim=int(math.log2(k)), entropy_loss_weight=0.1,
                         commitment_loss_weight=0.25, channel_first=True)
        return module, lambda out: (out[0], out[2], out[1])
    raise ValueError(f"unknown family {family!r}")


def _share_codebook(family, course, library):
    """Give the library the course's starting codebook (VQ, EMA VQ), so both pick the same codes."""
    import torch
    if family not in ("vq", "ema_vq"):
        return False
    with torch.no_grad():
        book = library._codebook
        book.embed.copy_(course.codebook.detach()[None])
        if hasattr(book, "embed_avg"):
            book.embed_avg.copy_(course.codebook.detach()[None])
            book.cluster_size.fill_(1.0)
    return True


def _floor(z, codebook, sync, repeats):
    """Median seconds of the chunked distance product plus argmin alone."""
    import torch
    flat = z.detach().permute(0, 2, 3, 1).reshape(-1, z.shape[1])
    e_sq = codebook.pow(2).sum(1)
    cb_t = codebook.t()
    times = []
    for _ in range(repeats + 1):
        sync()
        t = time.perf_counter()
        with torch.no_grad():
            for s in range(0, flat.shape[0], CHUNK):
                torch.addmm(e_sq, flat[s:s + CHUNK], cb_t, alpha=-2.0).argmin(1)
        sync()
        times.append(time.perf_counter() - t)
    return statistics.median(times[1:])


def child(spec: dict) -> dict:
    """Run one (family, K) case; returns times, memory and agreement."""
    import torch
    torch.set_num_threads(spec["threads"])
    device = torch.device(spec["device"])
    cuda = device.type == "cuda"

    def sync():
        if cuda:
            torch.cuda.synchronize()

    family, k, d = spec["family"], spec["K"], spec["D"]
    if family == "fsq":
        d = len(FSQ_LEVELS[k])
    elif family == "lfq":
        d = int(math.log2(k))
    torch.manual_seed(0)
    z0 = torch.randn(spec["batch"], d, spec["side"], spec["side"], device=device)
    impls, result = {}, {"family": family, "K": k, "D": d, "N": z0.shape[0] * z0.shape[2] * z0.shape[3]}
    try:
        impls["course"] = _course(family, k, d)
    except Unavailable as error:
        result["course_error"] = str(error)
    if spec["run_library"]:
        try:
            impls["library"] = _library(family, k, d)
        except Exception as error:  # noqa: BLE001 - report whatever the library says
            result["library_error"] = f"{type(error).__name__}: {error}"
    for name, (module, _) in impls.items():
        module.to(device).train()
    if "course" in impls and "library" in impls:
        result["shared_codebook"] = _share_codebook(family, impls["course"][0], impls["library"][0])

    def call(name):
        module, adapt = impls[name]
        z = z0.clone().requires_grad_(True)
        for p in module.parameters():
            p.grad = None
        sync()
        if cuda:
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        else:
            base = _rss()
            _reset_peak()
        t, cpu = time.perf_counter(), time.process_time()
        z_q, loss, indices = adapt(module(z))
        total = z_q.float().square().mean()
        if isinstance(loss, torch.Tensor) and loss.requires_grad:
            total = total + loss.float().sum()
        total.backward()
        sync()
        seconds, cpu = time.perf_counter() - t, time.process_time() - cpu
        peak = torch.cuda.max_memory_allocated() - base if cuda else _rss("VmHWM") - base
        return seconds, cpu, peak, indices

    times = {name: [] for name in impls}
    cpu_times = {name: [] for name in impls}
    peaks = {name: 0 for name in impls}
    first = {}
    deadline = time.perf_counter() + spec["max_seconds"]
    for round_ in range(spec["repeats"] + 1):          # round 0 warms up
        for name in impls:
            seconds, cpu, peak, indices = call(name)
            peaks[name] = max(peaks[name], peak)
            if round_ == 0:
                first[name] = None if indices is None else indices.detach().reshape(-1).cpu()
            else:
                times[name].append(seconds)
                cpu_times[name].append(cpu)
        if round_ >= 1 and time.perf_counter() > deadline:
            break                                      # keep the slow cases within the budget
    for name in impls:
        result[name] = {"seconds": statistics.median(times[name]), "runs": len(times[name]),
                        "all_seconds": times[name], "peak_bytes": peaks[name],
                        "cpu_seconds": statistics.median(cpu_times[name])}
    comparable = result.get("shared_codebook") or family in ("fsq", "lfq")   # the same (implicit) codebook
    if comparable and first.get("course") is not None and first.get("library") is not None:
        a, b = first["course"], first["library"]
        if a.shape == b.shape:
            result["indices_agree"] = float((a == b).float().mean())
        elif a.numel() == b.numel():
            result["indices_agree"] = float((a == b.reshape(a.shape)).float().mean())
    if family == "vq" and "course" in impls:
        result["floor_seconds"] = _floor(z0, impls["course"][0].codebook.detach(), sync, min(spec["repeats"], 3))
    return result


# --------------------------------------------------------------------------- parent


def run_case(spec: dict, margin: int, log) -> dict:
    """Run one case in a child process with a memory watchdog."""
    available = mem_available()
    need = library_need(spec["family"], spec["batch"] * spec["side"] ** 2, spec["K"])
    spec = dict(spec)
    skipped = None
    if spec["device"] == "cpu" and need + margin > available:
        spec["run_library"] = False
        skipped = f"not run: needs ~{need / GiB:.1f} GiB, {available / GiB:.1f} GiB free"
    cap = available - margin
    proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--child", json.dumps(spec)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak_seen, killed = 0, None
    while proc.poll() is None:
        try:
            rss = _rss("VmRSS", str(proc.pid))
        except (OSError, AttributeError):
            rss = 0
        peak_seen = max(peak_seen, rss)
        if rss > cap:
            proc.kill()
            killed = f"stopped at {rss / GiB:.1f} GiB resident (free memory {available / GiB:.1f} GiB)"
            break
        time.sleep(0.2)
    out, err = proc.communicate()
    if killed or proc.returncode != 0:
        reason = killed or f"failed (exit {proc.returncode}): {err.strip().splitlines()[-1] if err.strip() else ''}"
        log(f"{spec['family']} K={spec['K']}: {reason}")
        return {"family": spec["family"], "K": spec["K"], "error": reason, "library_skipped": skipped}
    result = json.loads(out.strip().splitlines()[-1])
    result["library_skipped"] = skipped
    result["library_need"] = need
    result["child_peak_rss"] = peak_seen
    return result


def parse_log(path: Path, dim: int) -> list[dict]:
    """The cases recorded in the log of a run (one line per case, as ``main`` writes them; the last wins)."""
    results = {}
    for line in path.read_text().splitlines():
        found = re.match(r"^(\w+) K=(\d+): \d+ s: (\{.*\})$", line)
        if not found:
            continue
        family, k = found.group(1), int(found.group(2))
        data = {key: value for key, value in json.loads(found.group(3)).items() if value is not None}
        d = len(FSQ_LEVELS[k]) if family == "fsq" else int(math.log2(k)) if family == "lfq" else dim
        results[family, k] = {"family": family, "K": k, "D": d, **data}
    return list(results.values())


def _fmt_s(x):
    return f"{x * 1000:.0f} ms" if x < 1 else f"{x:.2f} s"


def _fmt_b(x):
    return f"{x / GiB:.2f} GiB" if x >= GiB / 4 else f"{x / 2 ** 20:.0f} MiB"


def render(results: list[dict], meta: dict, families: list[str], codes: list[int]) -> str:
    rows = []
    by_key = {(r["family"], r["K"]): r for r in results}
    for family in families:
        label = FAMILIES[family][0]
        for k in codes:
            r = by_key.get((family, k))
            if r is None:
                rows.append(f"| {label} | {k} | (pending) |" + " |" * 10)
                continue
            if "error" in r:
                rows.append(f"| {label} | {k} | {r['error']} |" + " |" * 10)
                continue
            if "course" not in r:
                course_cells = [r.get("course_error", "not yet available"), "—"]
            else:
                c = r["course"]
                course_cells = [_fmt_s(c["seconds"]), _fmt_b(c["peak_bytes"])]
            if "library" in r:
                lib = r["library"]
                lib_cells = [_fmt_s(lib["seconds"]), _fmt_b(lib["peak_bytes"])]
            else:
                lib_cells = [r.get("library_skipped") or r.get("library_error") or "—", "—"]
            ratio = (f"{r['course']['seconds'] / r['library']['seconds']:.2f}"
                     if "course" in r and "library" in r else "—")
            cpu = [_fmt_s(r[n]["cpu_seconds"]) if "cpu_seconds" in r.get(n, {}) else "—" for n in ("course", "library")]
            cpu_ratio = (f"{r['course']['cpu_seconds'] / r['library']['cpu_seconds']:.2f}"
                         if "cpu_seconds" in r.get("course", {}) and "cpu_seconds" in r.get("library", {}) else "—")
            agree = f"{r['indices_agree']:.2%}" if "indices_agree" in r else "—"
            floor = _fmt_s(r["floor_seconds"]) if "floor_seconds" in r else ""
            runs = r["course"]["runs"] if "course" in r else (r["library"]["runs"] if "library" in r else 0)
            name = label if family in ("vq", "ema_vq", "residual_vq") else f"{label} (d = {r['D']})"
            rows.append(f"| {name} | {k} | {course_cells[0]} | {lib_cells[0]} | {ratio} | {cpu[0]} | {cpu[1]} "
                        f"| **{cpu_ratio}** | {course_cells[1]} | {lib_cells[1]} | {agree} | {floor} | {runs} |")
    described = "\n".join(f"- **{FAMILIES[f][0]}**: course {FAMILIES[f][1]} against {FAMILIES[f][2]}." for f in families)
    gpu = ("" if meta["device"] != "cpu" else
           "\n- GPU: not run (no GPU on this machine); run `python benchmarks/quantizers.py --device cuda` on one.")
    return f"""{SECTION}

Forward + backward time and peak memory of the course's reference quantizers against
vector-quantize-pytorch {meta['vqp_version']} (`benchmarks/quantizers.py`), options matched as far as they go
(decay 0.99, commitment weight 0.25; the library's rotation trick, k-means init and dead-code
replacement off), on N = {meta['N']:,} vectors (a batch of {meta['batch']} latent maps of {meta['side']}×{meta['side']}),
D = {meta['D']} for the VQ families (FSQ and LFQ get as many channels as their levels or bits). Both run in
one process per case, alternating, after a warm-up call; medians of the timed calls. *Wall* is elapsed
time, *CPU* the CPU time of the process over the call (both torch threads): when other processes share
the cores, wall times stretch by how long the process waited, CPU times much less, so the ratio of CPU
times is the fairer comparison then. Ratio = course / library (target: at most 1.0). Peak memory is the extra resident memory during one call (peak minus what the
process held before it). "Same indices" compares the first call's codes, both starting from the same
codebook. "Floor" is the chunked distance product plus argmin alone (4096-row blocks), the least any
nearest-code search can cost.

{described}

| family ({meta['device']}) | K | course wall | library wall | ratio (wall) | course CPU | library CPU | ratio (CPU) | course peak | library peak | same indices | floor (wall) | timed calls |
|---|---|---|---|---|---|---|---|---|---|---|---|---|
{chr(10).join(rows)}
{gpu}
- The library is left out of a case when the estimate of its memory (several N×K float32 matrices:
  ~{library_need('ema_vq', meta['N'], 8192) / GiB:.1f} GiB for EMA VQ at K = 8192, ~{library_need('ema_vq', meta['N'], 65536) / GiB:.0f} GiB at K = 65,536) plus a margin of {meta['margin'] / GiB:.0f} GiB
  exceeds the free memory (`MemAvailable`) when the case starts.
- Machine: {meta['machine']}; load average {meta['load'][0]:.1f} at the start, {meta['load'][1]:.1f} now
  (other processes share the cores when it is above 0); run {meta['started']}.
- Command: `{meta['command']}`.
""" + "".join(f"- {note}\n" for note in meta.get("notes", []))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--families", nargs="+", default=list(FAMILIES), choices=list(FAMILIES))
    parser.add_argument("--codes", nargs="+", type=int, default=[512, 8192, 65536], help="codebook sizes K")
    parser.add_argument("--batch", type=int, default=64, help="latent maps per batch (default 64)")
    parser.add_argument("--side", type=int, default=32, help="side of a latent map (default 32)")
    parser.add_argument("--dim", type=int, default=64, help="D of the VQ families (default 64)")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per implementation (default 5)")
    parser.add_argument("--max-seconds", type=float, default=240.0,
                        help="stop repeating a case after this long (at least one timed call each)")
    parser.add_argument("--margin-gib", type=float, default=4.0,
                        help="free memory kept for the rest of the machine (default 4 GiB)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--stop-after", type=float, default=None,
                        help="minutes after which no new case starts (those left are marked not run)")
    parser.add_argument("--tiny", action="store_true", help="a few seconds: batch 2 of 8x8, K 64 and 256")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--no-write", action="store_true", help="print the section instead of writing it")
    parser.add_argument("--from-log", type=Path, default=None,
                        help="re-render the section from the log (stderr) of an earlier run; cases "
                             "missing from it are marked as not run")
    parser.add_argument("--started", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--load", nargs=2, type=float, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--logged-command", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--note", action="append", default=[], help="a line to add under the table")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    import torch
    import vector_quantize_pytorch  # noqa: F401 - fail early when the library is missing
    from importlib.metadata import version
    if args.tiny:
        args.batch, args.side, args.codes, args.repeats = 2, 8, [64, 256], 2
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda asked for, but torch sees no GPU")
    threads = args.threads or torch.get_num_threads()
    margin = int(args.margin_gib * GiB)
    meta = {"vqp_version": version("vector-quantize-pytorch"), "N": args.batch * args.side ** 2,
            "batch": args.batch, "side": args.side, "D": args.dim, "device": args.device,
            "machine": machine(),
            "load": [os.getloadavg()[0], os.getloadavg()[0]], "margin": margin,
            "started": now(), "command": command([sys.argv[0], *(argv if argv is not None else sys.argv[1:])])}

    if args.from_log:
        results = parse_log(args.from_log, args.dim)
        done = {(r["family"], r["K"]) for r in results}
        for k in args.codes:
            for family in args.families:
                if (family, k) not in done:
                    results.append({"family": family, "K": k,
                                    "error": "not run: the run's time budget was spent"})
        meta["started"] = args.started or meta["started"]
        meta["load"] = args.load or meta["load"]
        meta["command"] = args.logged_command or meta["command"]
        meta["notes"] = args.note
        section = render(results, meta, args.families, args.codes)
        if not args.no_write:
            write_section(args.results, SECTION, section)
        print(section)
        return

    def log(message):
        print(message, file=sys.stderr, flush=True)

    results = []
    t_start = time.perf_counter()
    for k in args.codes:
        for family in args.families:
            spec = {"family": family, "K": k, "D": args.dim, "batch": args.batch, "side": args.side,
                    "repeats": args.repeats, "device": args.device, "threads": threads, "run_library": True,
                    "max_seconds": args.max_seconds}
            t = time.perf_counter()
            if args.stop_after is not None and t - t_start > 60 * args.stop_after:
                result = {"family": family, "K": k,
                          "error": f"not run: the run's time budget ({args.stop_after:g} min) was spent"}
            else:
                result = run_case(spec, margin, log)
            log(f"{family} K={k}: {time.perf_counter() - t:.0f} s: "
                + json.dumps({key: result.get(key) for key in ("course", "library", "indices_agree",
                                                                 "floor_seconds", "library_skipped",
                                                                 "course_error", "error")}))
            results.append(result)
            meta["load"][1] = os.getloadavg()[0]
            if not args.no_write:
                write_section(args.results, SECTION, render(results, meta, args.families, args.codes))
    print(render(results, meta, args.families, args.codes))


if __name__ == "__main__":
    main()
