"""A synthetic class of submissions, to test the grader on any assignment.

:func:`build_class` turns an assignment's solution and release notebooks into
the submissions an instructor meets in practice (correct, untouched, partly
wrong, tests edited, deleted or pasted twice, an infinite loop, a kernel
killed, a noisy correct answer, a file that is not a notebook), each with the grades the grader
must give it. :func:`write_class` lays them out as ``dvl grade`` expects and
:func:`problems` compares a grading result with the expectation::

    cls = build_class(read_notebook(solution), read_notebook(release))
    write_class(cls, tmp / "submitted", "01_vqvae")
    report = grade_submissions(tmp / "submitted", root, tmp / "out")
    for member, result in zip(cls, report.results):   # both sorted by student
        assert not problems(member, result)

Which tests must score what follows the notebook anatomy: a test cell belongs
to the answer cell before it; tests above an answer cannot depend on it.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path

from nbformat.notebooknode import NotebookNode

from .notebooks import grade_id, is_answer_cell, is_manual_cell, is_test_cell, write_notebook

FULL, ZERO = "full", "zero"

LOOP = ["while True:  # never ends", "    pass"]
DIE = ["import os", "os._exit(1)  # kills the kernel"]
NOISE = ["import sys, warnings",
         "print('warning: this answer prints to stderr', file=sys.stderr)",
         "warnings.warn('this answer also warns', UserWarning)"]


@dataclass
class Member:
    """One synthetic submission and what grading it must give.

    Attributes:
        name: the student id (also says what is special about it).
        content: the notebook, or raw text for a file that is not one.
        expect: test ``grade_id`` -> ``"full"`` or ``"zero"``; tests not listed may score anything.
        status: ``"ok"``, else a phrase the grading status must contain.
        restored: test cells the grader must restore from the source.
        description: one line for humans.
    """
    name: str
    content: NotebookNode | str
    expect: dict[str, str]
    status: str = "ok"
    restored: list[str] = field(default_factory=list)
    description: str = ""


def learner_source(solution_source: str, inject: list[str] | None = None) -> str:
    """A solution cell as a learner would write it: solution delimiters dropped, and
    ``inject`` lines placed where the solution starts (at its indentation)."""
    out, injected = [], False
    for line in solution_source.splitlines():
        if "BEGIN SOLUTION" in line:
            indent = line[: len(line) - len(line.lstrip())]
            out.extend(indent + extra for extra in inject or [])
            injected = True
        elif "END SOLUTION" not in line:
            out.append(line)
    if inject and not injected:
        out = list(inject) + out
    return "\n".join(out)


def _owners(release: NotebookNode) -> dict[str, str | None]:
    """Test ``grade_id`` -> the answer cell above it (``None`` above every answer)."""
    owner, out = None, {}
    for cell in release.cells:
        if is_answer_cell(cell):
            owner = grade_id(cell)
        elif is_test_cell(cell):
            out[grade_id(cell)] = owner
    return out


def build_class(solution: NotebookNode, release: NotebookNode, *,
                wrong: dict[str, str] | None = None) -> list[Member]:
    """The synthetic class of an assignment, sorted by name.

    Args:
        solution: the source notebook (``solutions/<id>/<id>.ipynb``).
        release: its release (``course/<id>/<id>.ipynb``), the learner's starting point.
        wrong: answer ``grade_id`` -> a wrong but running source; the last answer's entry
            makes ``partly_wrong`` (default: the release's unanswered stub).

    Raises:
        ValueError: the release has no answer cell followed by a test cell.
    """
    sol = {grade_id(c): c for c in solution.cells if grade_id(c)}
    owners = _owners(release)
    order = [grade_id(c) for c in release.cells if is_test_cell(c)]
    answers = [grade_id(c) for c in release.cells if is_answer_cell(c)]
    tested = [a for a in answers if a in owners.values()]
    if not tested:
        raise ValueError("the release has no answer cell followed by a test cell")
    first, last = tested[0], tested[-1]
    first_test = next(t for t in order if owners[t] == first)

    def before(answer):  # tests above an answer cell
        return [t for t in order[: order.index(next(x for x in order if owners[x] == answer))]]

    def submission(inject: dict[str, list[str]] | None = None, stub: tuple = (),
                   sources: dict[str, str] | None = None) -> NotebookNode:
        nb = copy.deepcopy(release)
        for cell in nb.cells:
            gid = grade_id(cell)
            if gid in stub or not (is_answer_cell(cell) or is_manual_cell(cell)):
                continue
            if sources and gid in sources:
                cell.source = sources[gid]
            else:
                cell.source = learner_source(sol[gid].source, (inject or {}).get(gid))
        return nb

    def expect(full=(), zero=()) -> dict[str, str]:
        return {**{t: FULL for t in full}, **{t: ZERO for t in zero}}

    owned_by_last = [t for t in order if owners[t] == last]
    keeps = before(last)
    members = [
        Member("correct", submission(), expect(full=order), description="every answer right"),
        Member("empty", copy.deepcopy(release),
               expect(full=[t for t in order if owners[t] is None],
                      zero=[t for t in order if owners[t] is not None]),
               description="the release, untouched"),
        Member("partly_wrong", submission(stub=() if wrong and last in wrong else (last,),
                                          sources={last: wrong[last]} if wrong and last in wrong
                                          else None),
               expect(full=keeps, zero=owned_by_last),
               description=f"{last} wrong, the rest right"),
        Member("infinite_loop", submission(inject={last: LOOP}), expect(full=keeps, zero=owned_by_last),
               status="timeout in cell", description=f"{last} never returns"),
        Member("kernel_dies", submission(inject={last: DIE}), expect(full=keeps, zero=owned_by_last),
               status="kernel died in cell", description=f"{last} calls os._exit(1)"),
        Member("noisy_correct", submission(inject={first: NOISE}), expect(full=order),
               description=f"right, but {first} prints to stderr and warns"),
        Member("not_a_notebook", '{"cells": [ this is not JSON', expect(zero=order),
               status="invalid notebook", description="a file that is not a notebook"),
    ]
    edited = submission(stub=(first,))
    for cell in edited.cells:
        if grade_id(cell) == first_test:
            cell.source = "pass"
    members.append(Member("test_edited", edited, expect(full=before(first), zero=[first_test]),
                          restored=[first_test],
                          description=f"{first} unanswered and {first_test} replaced by `pass`"))
    deleted = submission()
    deleted.cells = [c for c in deleted.cells if grade_id(c) != first_test]
    members.append(Member("test_deleted", deleted, expect(full=order), restored=[first_test],
                          description=f"right, but {first_test} deleted"))
    pasted = submission()
    at = next(i for i, c in enumerate(pasted.cells) if grade_id(c) == first_test)
    twin = copy.deepcopy(pasted.cells[at])
    if "id" in twin:
        twin["id"] = f"{twin['id']}-copy"
    pasted.cells.insert(at + 1, twin)
    members.append(Member("test_pasted", pasted, expect(full=order),
                          description=f"right, with a pasted copy of {first_test} (same grade_id)"))
    return sorted(members, key=lambda m: m.name)


def write_class(members: list[Member], submitted: str | Path, assignment: str,
                notebook: str | None = None) -> Path:
    """Write ``submitted/<member>/<assignment>/<notebook>.ipynb`` for every member.

    Returns:
        ``submitted``.
    """
    submitted = Path(submitted)
    for m in members:
        path = submitted / m.name / assignment / f"{notebook or assignment}.ipynb"
        if isinstance(m.content, str):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(m.content, encoding="utf-8")
        else:
            write_notebook(m.content, path)
    return submitted


def problems(member: Member, result, autograded: NotebookNode | None = None,
             solution: NotebookNode | None = None) -> list[str]:
    """How a grading result differs from what ``member`` must get; ``[]`` when as expected.

    Args:
        result: the member's :class:`~grader.autograde.SubmissionResult`.
        autograded, solution: when given, also checks that the ``restored`` test
            cells of the autograded notebook carry the source version (hidden tests included).
    """
    found = []
    scores = {t.grade_id: t for t in result.tests}
    for gid, want in member.expect.items():
        t = scores.get(gid)
        if t is None:
            found.append(f"{member.name}: no grade for {gid}")
        elif want == FULL and t.score != t.max_score:
            found.append(f"{member.name}: {gid} scored {t.score:g}/{t.max_score:g}, expected full "
                         f"marks ({t.message or 'no message'})")
        elif want == ZERO and t.score != 0:
            found.append(f"{member.name}: {gid} scored {t.score:g}, expected 0")
    if member.status == "ok" and result.status != "ok":
        found.append(f"{member.name}: status {result.status!r}, expected 'ok'")
    elif member.status != "ok" and member.status not in result.status:
        found.append(f"{member.name}: status {result.status!r} does not say {member.status!r}")
    if autograded is not None and solution is not None:
        graded = {grade_id(c): c for c in autograded.cells if grade_id(c)}
        source = {grade_id(c): c for c in solution.cells if grade_id(c)}
        for gid in member.restored:
            if gid not in graded:
                found.append(f"{member.name}: {gid} was not restored")
            elif source[gid].source.strip() not in graded[gid].source:
                found.append(f"{member.name}: {gid} does not carry the source version")
    return found
