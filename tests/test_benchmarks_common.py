"""benchmarks/_common.py: each benchmark script replaces its own section of docs/results.md and no other."""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks._common import (HEADER, command, duration, python, read_section,  # noqa: E402
                                replace_section, write_section)

TEXT = """# Results

Intro.

## Phase 1 — VQ-VAE (reference)

old phase 1
| a | b |

## Phase 2 — stable VQ

phase 2 stays

## Phase 3 — Gumbel-softmax dVAE

phase 3 stays
"""


def test_replace_section_replaces_only_its_section():
    new = replace_section(TEXT, "## Phase 1 — VQ-VAE (reference)",
                          "## Phase 1 — VQ-VAE (reference)\n\nnew phase 1\n")
    assert new == TEXT.replace("old phase 1\n| a | b |\n", "new phase 1\n")
    assert "old phase 1" not in new


def test_replace_section_keeps_the_others_in_their_place():
    new = replace_section(TEXT, "## Phase 2 — stable VQ", "## Phase 2 — stable VQ\n\nnew phase 2\n\n\n")
    assert new.startswith("# Results\n\nIntro.\n\n## Phase 1 — VQ-VAE (reference)\n\nold phase 1\n")
    assert "\n## Phase 2 — stable VQ\n\nnew phase 2\n\n## Phase 3 — Gumbel-softmax dVAE\n\nphase 3 stays\n" in new
    assert new.endswith("phase 3 stays\n")
    # the last section too, and a trailing-space heading counts as the same heading
    last = replace_section(TEXT.replace("## Phase 3 — Gumbel-softmax dVAE\n", "## Phase 3 — Gumbel-softmax dVAE  \n"),
                           "## Phase 3 — Gumbel-softmax dVAE", "## Phase 3 — Gumbel-softmax dVAE\n\nnew 3")
    assert last == TEXT.replace("phase 3 stays", "new 3")


def test_replace_section_appends_when_absent():
    new = replace_section(TEXT, "## Phase 4 — hierarchical VQ", "## Phase 4 — hierarchical VQ\n\nphase 4\n")
    assert new == TEXT + "\n## Phase 4 — hierarchical VQ\n\nphase 4\n"


def test_replace_section_starts_an_empty_file_with_the_header():
    for empty in ("", "\n\n"):
        assert replace_section(empty, "## A", "## A\n\na\n") == HEADER + "\n## A\n\na\n"


def test_a_title_is_matched_literally_and_whole():
    text = "# Results\n\n## Phase 1 — VQ-VAE (reference) extra\n\nkeep\n"
    new = replace_section(text, "## Phase 1 — VQ-VAE (reference)", "## Phase 1 — VQ-VAE (reference)\n\nx\n")
    assert new.startswith(text)                     # another heading that merely starts alike is kept
    assert new.endswith("\n## Phase 1 — VQ-VAE (reference)\n\nx\n")


def test_write_and_read_section(tmp_path):
    path = tmp_path / "docs" / "results.md"
    assert read_section(path, "## A") == ""
    write_section(path, "## A", "## A\n\na\n")
    write_section(path, "## B", "## B\n\nb\n")
    write_section(path, "## A", "## A\n\na again\n")
    assert path.read_text() == HEADER + "\n## A\n\na again\n\n## B\n\nb\n"
    assert read_section(path, "## A") == "## A\n\na again\n\n"
    assert read_section(path, "## B") == "## B\n\nb\n"
    assert read_section(path, "## C") == ""


def test_duration_and_command():
    assert duration(59.4) == "59 s"
    assert duration(119.4) == "119 s"
    assert duration(150) == "2.5 min"
    line = command([str(ROOT / "benchmarks" / "vqvae.py"), "--steps", "3", "--note", "a b"])
    assert line == f"{python()} benchmarks/vqvae.py --steps 3 --note 'a b'"
