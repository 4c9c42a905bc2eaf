"""What the benchmark scripts share: the machine, the command, and writing one section of ``docs/results.md``.

Each script owns one ``## ...`` section of the results file and replaces only
that one, re-reading the file right before writing so that sections written by
other scripts in the meantime are kept.
"""
from __future__ import annotations

import datetime as dt
import os
import re
import shlex
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results.md"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.stable_vq import cpu_model, duration, machine, python  # noqa: E402,F401

HEADER = "# Results\n\nBenchmark and training-quality numbers of the course; each section says how it was made.\n"


def command(argv: list[str] | None = None) -> str:
    """The command line as typed from the repository root."""
    argv = sys.argv if argv is None else argv
    script = os.path.relpath(os.path.abspath(argv[0]), ROOT)
    return shlex.join([python(), script, *argv[1:]])


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def replace_section(text: str, title: str, section: str) -> str:
    """``text`` with the section headed ``title`` replaced by ``section`` (appended if absent)."""
    pattern = re.compile(rf"^{re.escape(title)}[ \t]*\n.*?(?=^## |\Z)", re.MULTILINE | re.DOTALL)
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
    pattern = re.compile(rf"^{re.escape(title)}[ \t]*\n.*?(?=^## |\Z)", re.MULTILINE | re.DOTALL)
    found = pattern.search(path.read_text())
    return found.group(0) if found else ""


def write_section(path: Path, title: str, section: str) -> None:
    """Replace the section ``title`` of ``path`` by ``section``, leaving every other section as it is now."""
    path.parent.mkdir(parents=True, exist_ok=True)
    old = path.read_text() if path.exists() else ""
    path.write_text(replace_section(old, title, section))
