"""What the benchmark scripts share: the machine, the command, and writing one section of ``docs/results.md``.

Each script owns one ``## ...`` section of the results file and replaces only
that one, re-reading the file right before writing so that sections written by
other scripts in the meantime are kept.
"""
from __future__ import annotations

import datetime as dt
import os
import platform
import re
import shlex
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results.md"

HEADER = "# Results\n\nBenchmark and training-quality numbers of the course; each section says how it was made.\n"


def cpu_model() -> str:
    """The CPU's model name from ``/proc/cpuinfo`` (the platform's machine type where there is none)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    found = re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE)
    return found.group(1).strip() if found else platform.machine()


def machine() -> str:
    """Cores, CPU, torch and its threads, Python, and the GPU if there is one."""
    import torch  # here, so that the scripts that do not train (grading) need not import it

    gpu = f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""
    return (f"{os.cpu_count()} cores ({cpu_model()}), torch {torch.__version__} "
            f"with {torch.get_num_threads()} threads, Python {platform.python_version()}{gpu}")


def python() -> str:
    """The interpreter as typed from the repository root: ``.venv/bin/python`` for the course's venv."""
    exe = Path(sys.executable)
    return os.path.relpath(exe, ROOT) if exe.is_relative_to(ROOT) else "python"


def duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def command(argv: list[str] | None = None) -> str:
    """The command line as typed from the repository root."""
    argv = sys.argv if argv is None else argv
    script = os.path.relpath(os.path.abspath(argv[0]), ROOT)
    return shlex.join([python(), script, *argv[1:]])


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _section_pattern(title: str) -> re.Pattern:
    """The section headed ``title``: its heading line and all up to the next ``## `` heading or the end."""
    return re.compile(rf"^{re.escape(title)}[ \t]*\n.*?(?=^## |\Z)", re.MULTILINE | re.DOTALL)


def replace_section(text: str, title: str, section: str) -> str:
    """``text`` with the section headed ``title`` replaced by ``section`` (appended if absent)."""
    pattern = _section_pattern(title)
    section = section.rstrip("\n") + "\n\n"
    if pattern.search(text):
        return pattern.sub(lambda _: section, text, count=1).rstrip("\n") + "\n"
    if not text.strip():
        text = HEADER
    return text.rstrip("\n") + "\n\n" + section.rstrip("\n") + "\n"


def read_section(path: Path, title: str) -> str:
    """The current text of the section headed ``title`` in ``path`` ('' when absent)."""
    if not path.exists():
        return ""
    found = _section_pattern(title).search(path.read_text())
    return found.group(0) if found else ""


def write_section(path: Path, title: str, section: str) -> None:
    """Replace the section ``title`` of ``path`` by ``section``, leaving every other section as it is now."""
    path.parent.mkdir(parents=True, exist_ok=True)
    old = path.read_text() if path.exists() else ""
    path.write_text(replace_section(old, title, section))
