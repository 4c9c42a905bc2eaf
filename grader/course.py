"""The course on disk, and nbgrader driven through its Python API.

A *course root* is a directory with ``solutions/<id>/<id>.ipynb`` (nbgrader's
source). Every command takes the root as a parameter; :func:`find_root` supplies
the default. nbgrader itself never runs in the repository: each command builds a
working course elsewhere (:func:`prepare_course`), with its own gradebook, and
runs nbgrader's converters there with the configuration of
``grader/nbgrader_config.py`` (:func:`load_config`).
"""
from __future__ import annotations

import logging
import os
import shutil
import sys
from pathlib import Path

os.environ.setdefault("JUPYTER_PLATFORM_DIRS", "1")  # before jupyter_core is imported
# nbgrader creates a gradebook by running the `alembic` script of its environment:
# make it findable when `dvl` runs from a venv that is not activated.
_BIN = os.path.dirname(sys.executable)
if _BIN not in os.environ.get("PATH", "").split(os.pathsep):
    os.environ["PATH"] = os.pathsep.join([_BIN, os.environ.get("PATH", "")])

from traitlets.config import Config  # noqa: E402
from traitlets.config.loader import PyFileConfigLoader  # noqa: E402

CONFIG_FILE = Path(__file__).with_name("nbgrader_config.py")
SOURCE = "solutions"
RELEASE = "course"

# Files of a source assignment that are never released nor copied into submissions.
IGNORE = [".ipynb_checkpoints", "*.pyc", "__pycache__", "feedback", ".DS_Store",
          "checkpoints", "*.pt", "*.pth", "*.ckpt"]


class GraderError(RuntimeError):
    """The grader could not do its job (as opposed to a submission scoring low)."""


class InputError(GraderError):
    """The grader was asked something impossible: unknown assignment, no course, no submissions."""


# --- finding the course -----------------------------------------------------------------

def find_root(start: str | Path | None = None) -> Path:
    """The course root: the first directory from ``start`` (default: cwd) upwards that
    holds ``solutions/``, else the repository this package is installed from.

    Raises:
        InputError: when neither has a ``solutions/`` directory.
    """
    start = Path(start or Path.cwd()).resolve()
    for d in [start, *start.parents]:
        if (d / SOURCE).is_dir():
            return d
    installed = Path(__file__).resolve().parents[1]
    if (installed / SOURCE).is_dir():
        return installed
    raise InputError(f"no course found: no '{SOURCE}/' directory in {start} or its parents, "
                      f"nor in {installed}; pass --root DIR")


def assignment_ids(root: str | Path) -> list[str]:
    """Assignment ids of a course: the folders of ``solutions/`` that hold a notebook."""
    src = Path(root) / SOURCE
    if not src.is_dir():
        return []
    return sorted(d.name for d in src.iterdir() if d.is_dir() and any(d.glob("*.ipynb")))


def source_notebooks(root: str | Path, assignment: str) -> list[Path]:
    """The source notebooks of one assignment, sorted by name."""
    return sorted((Path(root) / SOURCE / assignment).glob("*.ipynb"))


def match_assignment(path: str | Path, ids: list[str]) -> str | None:
    """Which assignment a learner's notebook belongs to, from its folder or file name.

    ``.../01_vqvae/anything.ipynb`` and ``01_vqvae-mine.ipynb`` both give
    ``01_vqvae``: the folder name when it is an id, else the longest id that
    starts the file name. ``None`` if nothing matches.
    """
    path = Path(path)
    if path.parent.name in ids:
        return path.parent.name
    hits = [i for i in ids if path.stem.startswith(i)]
    return max(hits, key=len) if hits else None


def copy_tree(src: Path, dst: Path) -> None:
    """Copy a directory, leaving out :data:`IGNORE`; replaces ``dst``."""
    if dst.exists() or dst.is_symlink():
        shutil.rmtree(dst) if dst.is_dir() and not dst.is_symlink() else dst.unlink()
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(*IGNORE))


# --- nbgrader -----------------------------------------------------------------------------

def load_config(root: str | Path, *, db_url: str | None = None, cell_timeout: int | None = None,
                notebook_timeout: int | None = None, kernel_pid_file: str | None = None) -> Config:
    """The nbgrader configuration of ``grader/nbgrader_config.py``, for a course at ``root``.

    Args:
        root: course root nbgrader works in (absolute after this call).
        db_url: gradebook URL; default ``sqlite:///<root>/gradebook.db``.
        cell_timeout: seconds a cell may run before it is interrupted.
        notebook_timeout: seconds one run of a notebook may take.
        kernel_pid_file: file that collects the pids of grading kernels.
    """
    root = Path(root).resolve()
    cfg = PyFileConfigLoader(CONFIG_FILE.name, path=str(CONFIG_FILE.parent)).load_config()
    cfg.CourseDirectory.root = str(root)
    cfg.CourseDirectory.db_url = db_url or f"sqlite:///{root / 'gradebook.db'}"
    if cell_timeout is not None:
        cfg.Execute.timeout = int(cell_timeout)
    if notebook_timeout is not None:
        cfg.GuardedExecute.notebook_timeout = int(notebook_timeout)
    if kernel_pid_file is not None:
        cfg.GuardedExecute.kernel_pid_file = str(kernel_pid_file)
    return cfg


def quiet_logger(name: str, path: str | Path | None = None) -> logging.Logger:
    """A logger for nbgrader's converters: to ``path`` when given, else nowhere."""
    log = logging.getLogger(f"dvl.grader.{name}")
    log.propagate = False
    log.setLevel(logging.INFO)
    for h in list(log.handlers):
        log.removeHandler(h)
        h.close()
    if path is not None:
        h = logging.FileHandler(path, encoding="utf-8")
        h.setFormatter(logging.Formatter("[%(levelname)s] %(message)s"))
        log.addHandler(h)
    else:
        log.addHandler(logging.NullHandler())
    return log


class _Capture(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record):
        self.records.append(record)

    def errors(self) -> str:
        """nbgrader's error messages, each traceback cut to its last line."""
        lines: list[str] = []
        for r in self.records:
            if r.levelno < logging.ERROR:
                continue
            msg = r.getMessage().strip()
            if "Traceback (most recent call last)" in msg:
                msg = msg.splitlines()[-1].strip()
            for line in msg.splitlines():
                if line.strip() and line.strip() not in lines and not line.startswith("Please see"):
                    lines.append(line.strip())
        return "\n".join(lines)


def _alembic_head() -> str:
    """The gradebook schema version nbgrader stamps on a new gradebook, read in-process.

    nbgrader asks a subprocess (the ``alembic`` script) for it, which costs seconds
    per new gradebook; the answer is the head revision of nbgrader's own migrations.
    """
    import nbgrader.api
    from alembic.config import Config as AlembicConfig
    from alembic.script import ScriptDirectory

    global _ALEMBIC_HEAD
    if _ALEMBIC_HEAD is None:
        cfg = AlembicConfig()
        cfg.set_main_option("script_location", str(Path(nbgrader.api.__file__).with_name("alembic")))
        _ALEMBIC_HEAD = ScriptDirectory.from_config(cfg).get_current_head()
    return _ALEMBIC_HEAD


_ALEMBIC_HEAD: str | None = None


def run_converter(kind: str, config: Config, *, assignment: str, student: str = "*",
                  log: logging.Logger | None = None, **traits) -> None:
    """Run one nbgrader step (``generate_assignment``, ``autograde``, ``generate_feedback``).

    Raises:
        GraderError: with nbgrader's error messages when the step failed.
    """
    import nbgrader.api
    from nbgrader.converters import Autograde, GenerateAssignment, GenerateFeedback
    from nbgrader.coursedir import CourseDirectory

    nbgrader.api.get_alembic_version = _alembic_head

    cls = {"generate_assignment": GenerateAssignment, "autograde": Autograde,
           "generate_feedback": GenerateFeedback}[kind]
    log = log or quiet_logger(kind)
    capture = _Capture()
    log.addHandler(capture)
    try:
        coursedir = CourseDirectory(config=config, log=log)
        coursedir.assignment_id = assignment
        if kind != "generate_assignment":
            coursedir.student_id = student
        converter = cls(coursedir=coursedir, config=config, log=log)
        converter.force = True
        for name, value in traits.items():
            setattr(converter, name, value)
        try:
            converter.start()
        except Exception as e:
            detail = capture.errors() or f"{type(e).__name__}: {e}"
            raise GraderError(f"nbgrader {kind} failed for {assignment!r}: {detail}") from e
    finally:
        log.removeHandler(capture)


def prepare_course(root: str | Path, workdir: str | Path, assignments: list[str], *,
                   log: logging.Logger | None = None) -> Config:
    """Build a working nbgrader course in ``workdir`` for ``assignments`` of ``root``.

    Copies ``solutions/<id>/`` and runs ``generate_assignment`` there, which
    records the source notebooks (tests, hidden tests, points) in
    ``workdir/gradebook.db`` and writes the release to ``workdir/course/<id>/``.

    Returns:
        The nbgrader configuration of the working course.

    Raises:
        InputError: unknown assignment.
        GraderError: nbgrader failed on the source.
    """
    root, workdir = Path(root).resolve(), Path(workdir).resolve()
    known = assignment_ids(root)
    for a in assignments:
        if a not in known:
            raise InputError(f"unknown assignment {a!r}; known: {', '.join(known) or 'none'} "
                              f"(in {root / SOURCE})")
    workdir.mkdir(parents=True, exist_ok=True)
    config = load_config(workdir)
    for a in assignments:
        copy_tree(root / SOURCE / a, workdir / SOURCE / a)
        run_converter("generate_assignment", config, assignment=a, log=log)
    return config
