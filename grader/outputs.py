"""Caps on what a graded notebook may print or display, so feedback files stay small.

nbgrader's ``LimitOutput`` counts lines: a single 5 MB line, or a 20 MB image,
goes through. :class:`OutputBudget` caps each output as it arrives from the
kernel (:meth:`OutputBudget.admit`, used by
:class:`~grader.preprocessors.GuardedExecute`): text values are cut to
``text`` characters, images larger than ``image`` characters (base64) are
replaced by a note, and once a cell or the notebook has used up its budget
further outputs are dropped, leaving one note.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from nbformat.notebooknode import NotebookNode

_TEXT_MIMES = ("text/", "application/javascript", "image/svg+xml")
_TRACEBACK_LINES = 60


@dataclass
class OutputBudget:
    """Limits, in characters, and what each cell has used so far.

    Attributes:
        text: one text value (a stream chunk, ``text/plain``, ``text/html``, an error message).
        image: one image, base64-encoded.
        cell: all outputs of one cell.
        notebook: all outputs of one run of the notebook.
    """
    text: int = 20_000
    image: int = 500_000
    cell: int = 300_000
    notebook: int = 2_000_000
    used: dict[int, int] = field(default_factory=dict)
    total: int = 0
    dropped: set[int] = field(default_factory=set)

    def reset(self) -> None:
        self.used.clear()
        self.dropped.clear()
        self.total = 0

    def admit(self, outs: list, out: NotebookNode, cell_index: int) -> None:
        """Cap ``out``, the last output appended to ``outs`` (a cell's outputs), in place."""
        cap_output(out, self.text, self.image)
        size = output_size(out)
        if self.used.get(cell_index, 0) + size > self.cell or self.total + size > self.notebook:
            for i in range(len(outs) - 1, -1, -1):  # by identity: equal outputs are not this one
                if outs[i] is out:
                    del outs[i]
                    break
            if cell_index not in self.dropped:
                self.dropped.add(cell_index)
                outs.append(_note(f"[further output of this cell not kept: more than "
                                  f"{min(self.cell, self.notebook):,} characters]"))
            return
        self.used[cell_index] = self.used.get(cell_index, 0) + size
        self.total += size

    def cap_data(self, data: dict) -> None:
        """Cap a mime bundle in place (``update_display_data`` replaces an earlier output's data)."""
        _cap_bundle(data, self.text, self.image)


def _note(text: str) -> NotebookNode:
    return NotebookNode(output_type="stream", name="stdout", text=text + "\n")


def _cut(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[:limit] + f"\n... [{len(text) - limit:,} more characters not kept]\n"


def _cap_bundle(data: dict, text: int, image: int) -> None:
    for mime in list(data):
        value = data[mime]
        if isinstance(value, list):  # nbformat allows multi-line strings as lists
            value = data[mime] = "".join(map(str, value))
        if not isinstance(value, str):
            if len(str(value)) > text:  # JSON outputs: too big to keep
                data[mime] = f"[{mime} output not kept: more than {text:,} characters]"
            continue
        if mime.startswith(_TEXT_MIMES):
            data[mime] = _cut(value, text)
        elif len(value) > image:
            del data[mime]
            data.setdefault("text/plain", f"[{mime} output not kept: {len(value):,} characters "
                                          f"(more than {image:,})]")


def cap_output(out: NotebookNode, text: int, image: int) -> None:
    """Cut the text values of one output and drop its images larger than ``image``."""
    kind = out.get("output_type")
    if kind == "stream":
        out["text"] = _cut("".join(out.get("text", "")), text)
    elif kind in ("display_data", "execute_result", "update_display_data"):
        _cap_bundle(out.get("data", {}), text, image)
    elif kind == "error":
        out["ename"] = _cut(str(out.get("ename", "")), 200)
        out["evalue"] = _cut(str(out.get("evalue", "")), text)
        tb = [_cut(str(line), text) for line in out.get("traceback", [])]
        if len(tb) > _TRACEBACK_LINES:
            tb = tb[:_TRACEBACK_LINES // 2] + ["..."] + tb[-_TRACEBACK_LINES // 2:]
        out["traceback"] = tb


def output_size(out: NotebookNode) -> int:
    """Characters of an output, as it would be stored."""
    kind = out.get("output_type")
    if kind == "stream":
        return len(out.get("text", ""))
    if kind == "error":
        return len(out.get("evalue", "")) + sum(len(str(x)) for x in out.get("traceback", []))
    return sum(len(v) if isinstance(v, str) else len(str(v)) for v in out.get("data", {}).values())
