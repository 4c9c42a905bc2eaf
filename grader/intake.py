"""What a submitted notebook is, and making it gradable: before any code runs.

A learner's notebook reaches the grader in every state: edited or deleted test
cells, a graded cell pasted twice, nbgrader metadata lost (the cells copied into
a new notebook), another kernel, another assignment's notebook under this
one's name. :func:`inspect_notebook` repairs what can be repaired, so nbgrader
grades the learner's answers, and says what it did in notes; it recognises
what cannot be graded at all (:class:`Unfit`).
"""
from __future__ import annotations

import copy

from nbformat.notebooknode import NotebookNode

from .notebooks import grade_id, is_answer_cell, is_test_cell

# The nbgrader metadata that decides grading (checksums and locks nbgrader restores itself).
_GRADING_KEYS = ("grade", "solution", "task", "points", "grade_id")


class Unfit(ValueError):
    """A notebook that cannot be graded as this assignment (its message is the status)."""


def tampering_notes(submitted: NotebookNode, release: NotebookNode, nb_id: str) -> list[str]:
    """Locked cells of the release that the submission changed or deleted."""
    theirs = {grade_id(c): c for c in submitted.cells if grade_id(c)}
    notes = []
    for cell in release.cells:
        gid = grade_id(cell)
        if not gid or not cell.metadata["nbgrader"].get("locked"):
            continue
        what = "test cell" if is_test_cell(cell) else "locked cell"
        restored = "restored" if is_test_cell(cell) or gid in theirs else "not restored"
        if gid not in theirs:
            notes.append(f"{what} {gid} of {nb_id} was deleted ({restored})")
        elif theirs[gid].source.strip() != cell.source.strip():
            notes.append(f"{what} {gid} of {nb_id} was edited (restored)")
    return notes


def repair_metadata(nb: NotebookNode, release: NotebookNode) -> list[str]:
    """Give cells the nbgrader metadata of the release, in place; returns the cells changed.

    A learner cannot legitimately change it, and nbgrader fails on a whole
    submission for a pasted copy of a graded cell (duplicate ``grade_id``), an
    old schema or a malformed field. A cell that lost its metadata but kept its
    cell id (copied into a new notebook) gets it back from the release cell with
    that id. Cells whose ``grade_id`` is unknown or repeated become plain cells;
    cells deleted altogether are nbgrader's to add back.
    """
    reference = {grade_id(c): c.metadata["nbgrader"] for c in release.cells if grade_id(c)}
    by_cell_id = {c.get("id"): (grade_id(c), c.cell_type) for c in release.cells
                  if grade_id(c) and c.get("id")}
    present = {grade_id(c) for c in nb.cells}
    seen, changed = set(), []
    for i, cell in enumerate(nb.cells):
        meta = cell.get("metadata", {}).get("nbgrader")
        if meta is None:
            gid, kind = by_cell_id.get(cell.get("id"), (None, None))
            if gid and gid not in present and gid not in seen and cell.cell_type == kind:
                seen.add(gid)
                cell.metadata["nbgrader"] = copy.deepcopy(reference[gid])
                changed.append(gid)
            continue
        gid = grade_id(cell)
        if gid in reference and gid not in seen:
            seen.add(gid)
            if any(meta.get(k) != reference[gid].get(k) for k in _GRADING_KEYS):
                changed.append(gid)
            cell.metadata["nbgrader"] = copy.deepcopy(reference[gid])
        else:
            del cell.metadata["nbgrader"]
            changed.append(str(gid) if gid else f"#{i + 1}")
    return changed


def _defines(cell: NotebookNode, name: str) -> bool:
    src = cell.get("source", "") if cell.cell_type == "code" else ""
    return any(line.startswith((f"def {name}(", f"class {name}(", f"class {name}:"))
               for line in src.splitlines())


def restore_missing_cells(nb: NotebookNode, release: NotebookNode) -> None:
    """Put back graded cells (tests, written answers) the notebook lacks, in place.

    Each goes after the cell that defines the answer it tests (found by its
    ``grade_id`` or, metadata lost, by a ``def <name>(``), else after the last
    graded cell before it, else at the end. (nbgrader adds missing cells too,
    but fails on the whole submission when the answer cell before a test is
    gone as well.) The restored test carries the release's visible part;
    nbgrader replaces it with the source, hidden tests included.
    """
    owner = None
    for cell in release.cells:
        gid = grade_id(cell)
        if is_answer_cell(cell):
            owner = gid
        if not gid or not (is_test_cell(cell) or cell.metadata["nbgrader"].get("grade")):
            continue
        if any(grade_id(c) == gid for c in nb.cells):
            continue
        order = [grade_id(c) for c in release.cells if grade_id(c)]
        earlier = set(order[:order.index(gid)])
        defining, before = None, None
        for i, c in enumerate(nb.cells):
            if owner and (grade_id(c) == owner or grade_id(c) is None and _defines(c, owner)):
                defining = i
            if grade_id(c) in earlier:
                before = i
        at = defining if defining is not None else before
        missing = copy.deepcopy(cell)
        ids = {c.get("id") for c in nb.cells}
        if "id" in missing and missing["id"] in ids:
            missing["id"] = f"{missing['id']}-restored"
        elif "id" not in missing and nb.get("nbformat_minor", 0) >= 5:
            missing["id"] = f"{gid}-restored"
        if "id" in missing and nb.get("nbformat_minor", 0) < 5:
            del missing["id"]
        nb.cells.insert(len(nb.cells) if at is None else at + 1, missing)


def which_assignment(nb: NotebookNode, releases: dict[str, NotebookNode]) -> str | None:
    """The assignment whose answer cells ``nb`` has most of (``releases``: id -> a release notebook)."""
    ids = {grade_id(c) for c in nb.cells if grade_id(c)}
    best, hits = None, 0
    for assignment, release in releases.items():
        answers = {grade_id(c) for c in release.cells if is_answer_cell(c)}
        n = len(ids & answers)
        if n > hits:
            best, hits = assignment, n
    return best


def inspect_notebook(nb: NotebookNode, release: NotebookNode, nb_id: str, assignment: str,
                     others: dict[str, NotebookNode] | None = None) -> list[str]:
    """Make ``nb`` gradable as notebook ``nb_id`` of ``assignment``, in place; returns notes.

    Args:
        release: the release of that notebook (what the learner started from).
        others: release notebooks of the other assignments (id -> notebook), to
            recognise a notebook handed in under the wrong assignment.

    Raises:
        Unfit: the notebook is another assignment's (it would only score zero,
            after running someone else's training).
    """
    ours = {grade_id(c) for c in release.cells if is_answer_cell(c)}
    theirs = {grade_id(c) for c in nb.cells if grade_id(c)}
    if others and not ours & theirs:
        other = which_assignment(nb, {a: r for a, r in others.items() if a != assignment})
        if other:
            raise Unfit(f"notebook of another assignment ({other}), not of {assignment}")
    repaired = repair_metadata(nb, release)
    notes = tampering_notes(nb, release, nb_id)
    if repaired:
        notes.append(f"nbgrader metadata of {nb_id} repaired in cells {', '.join(repaired)}")
    restore_missing_cells(nb, release)
    spec = nb.metadata.get("kernelspec", {})
    name = spec.get("name") if isinstance(spec, dict) else None
    if name and not str(name).startswith("python"):
        notes.append(f"the notebook asks for kernel {name!r}; graded with the grader's Python")
    return notes
