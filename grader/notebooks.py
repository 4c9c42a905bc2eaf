"""Notebook files as the grader sees them: reading, cleaning, nbgrader cell kinds, messages.

Every command (``release``, ``check``, ``grade``) reads notebooks through
:func:`read_notebook`, so a file that is not a notebook always produces the same
clear :class:`NotebookError`.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import nbformat
from nbformat.notebooknode import NotebookNode

# Output names the grader gives to cells it could not run normally (see ``preprocessors``).
KERNEL_DIED = "KernelDied"
CELL_TIMEOUT = "CellTimeoutError"
NOT_RUN = "NotRun"
MEMORY_LIMIT = "MemoryLimitExceeded"
KERNEL_TAMPERED = "KernelTampered"

# Cell metadata that records how and when a notebook ran: never committed.
_VOLATILE_CELL_METADATA = ("execution", "ExecuteTime", "collapsed", "scrolled")
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class NotebookError(ValueError):
    """A file that cannot be graded as a notebook (not JSON, not nbformat 4, invalid)."""


def read_notebook(path: str | Path) -> NotebookNode:
    """Read and validate a notebook, as nbformat 4.

    Raises:
        NotebookError: naming the file and what is wrong with it.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise NotebookError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise NotebookError(f"{path}: is a directory, expected a .ipynb file") from None
    except UnicodeDecodeError as e:
        raise NotebookError(f"{path}: not a text file ({e.reason})") from None
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as e:
        raise NotebookError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
    if not isinstance(raw, dict) or "nbformat" not in raw:
        raise NotebookError(f"{path}: JSON but not a Jupyter notebook (no 'cells' / 'nbformat')")
    if raw.get("nbformat") != 4:
        raise NotebookError(f"{path}: nbformat {raw.get('nbformat')!r}, expected 4")
    if "cells" not in raw:
        raise NotebookError(f"{path}: JSON but not a Jupyter notebook (no 'cells' / 'nbformat')")
    try:
        nb = nbformat.reads(text, as_version=4)
        nbformat.validate(nb)
    except Exception as e:  # nbformat raises several types; all mean "invalid"
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise NotebookError(f"{path}: invalid notebook ({first})") from None
    return nb


def write_notebook(nb: NotebookNode, path: str | Path) -> None:
    """Write ``nb`` the way nbformat does (sorted keys, one-space indent, final newline)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = nbformat.writes(nb)
    if not text.endswith("\n"):
        text += "\n"
    path.write_text(text, encoding="utf-8")


def clean_notebook(nb: NotebookNode) -> NotebookNode:
    """Strip what running a notebook leaves behind, in place; returns ``nb``.

    Removes outputs, execution counts, widget state and timing metadata, and gives
    cells without an id a deterministic one, so that the same source always
    produces byte-identical files.
    """
    nb.metadata.pop("widgets", None)
    seen: set[str] = set()
    for index, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
        for key in _VOLATILE_CELL_METADATA:
            cell.metadata.pop(key, None)
        if nb.nbformat_minor >= 5:
            cid = cell.get("id") or grade_id(cell) or f"cell-{index}"
            while cid in seen:
                cid = f"{cid}-{index}"
            cell["id"] = cid
            seen.add(cid)
    return nb


# --- nbgrader cell kinds -------------------------------------------------------------

def _nbgrader(cell: NotebookNode) -> dict:
    meta = cell.get("metadata", {}).get("nbgrader")
    return meta if isinstance(meta, dict) else {}  # a submission may hold anything here


def grade_id(cell: NotebookNode) -> str | None:
    """The nbgrader ``grade_id`` of a cell, or ``None`` for a plain cell."""
    gid = _nbgrader(cell).get("grade_id")
    return gid if isinstance(gid, str) and gid else None


def is_test_cell(cell: NotebookNode) -> bool:
    """An autograded test: a graded code cell that is not itself an answer."""
    m = _nbgrader(cell)
    return cell.cell_type == "code" and bool(m.get("grade")) and not m.get("solution")


def is_answer_cell(cell: NotebookNode) -> bool:
    """An autograded answer: a code cell the learner fills, scored by the tests after it."""
    m = _nbgrader(cell)
    return cell.cell_type == "code" and bool(m.get("solution")) and not m.get("grade")


def is_manual_cell(cell: NotebookNode) -> bool:
    """A manually graded answer (a written question): graded and filled by the learner."""
    m = _nbgrader(cell)
    return bool(m.get("grade")) and bool(m.get("solution"))


@dataclass(frozen=True)
class GradedCell:
    """One graded cell of an assignment's source notebook.

    Attributes:
        grade_id: the nbgrader id (``test_<name>`` for tests).
        kind: ``"test"`` (autograded) or ``"manual"`` (graded by hand).
        max_score: its points.
    """
    grade_id: str
    kind: str
    max_score: float


def graded_cells(nb: NotebookNode) -> list[GradedCell]:
    """The tests and manually graded cells of ``nb``, in notebook order."""
    out = []
    for cell in nb.cells:
        if is_test_cell(cell):
            kind = "test"
        elif is_manual_cell(cell):
            kind = "manual"
        else:
            continue
        out.append(GradedCell(grade_id(cell), kind, float(_nbgrader(cell).get("points", 0))))
    return out


def cell_label(nb: NotebookNode, index: int) -> str:
    """How messages name a cell: its ``grade_id``, else ``#<position>`` (1-based)."""
    return grade_id(nb.cells[index]) or f"#{index + 1}"


def error_outputs(cell: NotebookNode) -> list[NotebookNode]:
    """The ``error`` outputs of a code cell (none for markdown)."""
    return [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]


def error_message(cell: NotebookNode) -> str:
    """``"<ename>: <evalue>"`` of the cell's first error, the traceback's last line; ``""`` if none.

    The first error is what the cell raised; the grader may add one after it
    (``KernelTampered``). Only the exception is shown, never the traceback:
    tracebacks of a test cell quote the hidden tests.
    """
    errors = error_outputs(cell)
    if not errors:
        return ""
    err = errors[0]
    ename, evalue = err.get("ename", "Error"), _ANSI.sub("", str(err.get("evalue", ""))).strip()
    return f"{ename}: {evalue}" if evalue else ename
