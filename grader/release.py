"""``dvl release``: regenerate ``course/<id>/`` from ``solutions/<id>/``.

nbgrader's ``generate_assignment`` (always ``--force``) runs in a temporary
course; only the release comes back to the repository, cleaned of outputs,
execution counts and widget state, so the committed files are deterministic:
the same source always gives byte-identical files. No gradebook is left in the
repository.
"""
from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .course import RELEASE, GraderError, InputError, assignment_ids, prepare_course
from .notebooks import clean_notebook, read_notebook, write_notebook


@dataclass
class Released:
    """What :func:`release_assignment` wrote.

    Attributes:
        assignment: the assignment id.
        directory: ``<root>/course/<id>``.
        notebooks: the release notebooks written.
        files: the other files copied (data, helper files of the assignment).
    """
    assignment: str
    directory: Path
    notebooks: list[Path]
    files: list[Path]


def release_assignment(root: str | Path, assignment: str) -> Released:
    """Rebuild ``<root>/course/<assignment>/`` from ``<root>/solutions/<assignment>/``.

    Raises:
        GraderError: unknown assignment, or nbgrader rejected the source
            (e.g. two cells with the same ``grade_id``).
    """
    root = Path(root).resolve()
    dest = root / RELEASE / assignment
    with tempfile.TemporaryDirectory(prefix="dvl-release-") as tmp:
        prepare_course(root, tmp, [assignment])
        built = Path(tmp) / RELEASE / assignment
        if not built.is_dir():
            raise GraderError(f"nbgrader wrote no release for {assignment!r}")
        staged = Path(tmp) / "staged"
        shutil.copytree(built, staged)
        notebooks, files = [], []
        for path in sorted(staged.rglob("*")):
            if path.suffix == ".ipynb":
                write_notebook(clean_notebook(read_notebook(path)), path)
                notebooks.append(dest / path.relative_to(staged))
            elif path.is_file():
                files.append(dest / path.relative_to(staged))
        if dest.exists():
            shutil.rmtree(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(staged, dest, copy_function=shutil.copyfile)
    return Released(assignment, dest, notebooks, files)


def release(root: str | Path, assignments: list[str] | None = None) -> list[Released]:
    """Release ``assignments`` (default: every assignment in ``solutions/``)."""
    ids = assignments or assignment_ids(root)
    if not ids:
        raise InputError(f"nothing to release: no assignment in {Path(root) / 'solutions'}")
    return [release_assignment(root, a) for a in ids]
