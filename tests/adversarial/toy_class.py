"""An adversarial class for ``dvl grade``: hostile and broken submissions of the toy assignments.

:func:`build` returns the class, each :class:`Submission` with the total it
must score and the status it must get. The toy course (tests/fixtures/course)
has ``99_toy`` (``add``: 1 point, ``scale``: 2 points, a written answer) and
``98_tensor_toy`` (``mse`` on tensors: 2 points, checked with
``grader.checks._common``). Attacks that try to earn points have wrong
answers, so any point they get is a point stolen; attacks that only try to
break the grader (kill the kernel, exhaust memory, flood the output) have right
answers, so any point lost is a point the grader lost.

Markers: processes an attack leaves behind, or code it smuggles into the
grader, write ``<marks>/<name>`` files; none may exist after grading.
"""
from __future__ import annotations

import copy
import json
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
from nbformat.notebooknode import NotebookNode

from grader.notebooks import grade_id, read_notebook
from grader.synthetic import learner_source

TOY, TENSOR = "99_toy", "98_tensor_toy"


@dataclass
class Submission:
    """One member of the class.

    Attributes:
        name: the student id.
        assignment: the folder it is handed in as.
        files: file name -> notebook or raw text (the submission folder).
        score: the total it must get; ``None``: not graded (unknown assignment).
        status: ``"ok"``, or a phrase the status must contain.
        message: a phrase some failed test's message must contain.
        note: a phrase one of the result's notes must contain.
        what: one line for the table.
    """
    name: str
    assignment: str
    files: dict[str, NotebookNode | str]
    score: float | None
    status: str = "ok"
    message: str = ""
    note: str = ""
    what: str = ""
    honest: bool = False
    extra: dict = field(default_factory=dict)


def _code(src: str) -> NotebookNode:
    return nbformat.v4.new_code_cell(textwrap.dedent(src).strip())


class _Toy:
    """Notebooks of one toy assignment: the release with answers filled in, plain cells added."""

    def __init__(self, root: Path, assignment: str):
        self.assignment = assignment
        self.release = read_notebook(root / "course" / assignment / f"{assignment}.ipynb")
        self.solution = read_notebook(root / "solutions" / assignment / f"{assignment}.ipynb")

    def notebook(self, answers: dict[str, str] | None = None, after: dict[str, str] | None = None,
                 right: bool = True) -> NotebookNode:
        """The release with every answer right (or left as stubs if not ``right``), ``answers``
        replacing some, and plain cells with ``after[grade_id]`` inserted after those cells."""
        sol = {grade_id(c): c for c in self.solution.cells if grade_id(c)}
        nb = copy.deepcopy(self.release)
        cells = []
        for cell in nb.cells:
            gid = grade_id(cell)
            if answers and gid in answers:
                cell.source = textwrap.dedent(answers[gid]).strip()
            elif right and gid in sol and cell.metadata["nbgrader"].get("solution"):
                cell.source = learner_source(sol[gid].source)
            cells.append(cell)
            if after and gid in after:
                cells.append(_code(after[gid]))
        nb.cells = cells
        return nb


WRONG = {"add": "def add(a, b):\n    return 0", "scale": "def scale(xs, k):\n    return []"}

ATTACKS_WHAT = {
    "input_transformer": "registers input transformers that turn every later cell into `pass`",
    "ast_transformer": "registers an AST transformer that removes asserts and raises",
    "exception_handler": "a custom exception handler, a silenced traceback and excepthook",
    "guard_disabled": "replaces the kernel's do_execute to answer the grader's guard itself",
}
ATTACKS = {
    "input_transformer": """
        ip = get_ipython()  # every later cell, hidden tests included, becomes `pass`
        ip.input_transformers_cleanup.append(lambda lines: ["pass\\n"])
        ip.input_transformers_post.append(lambda lines: ["pass\\n"])
        """,
    "ast_transformer": """
        import ast

        class Gut(ast.NodeTransformer):  # asserts and raises vanish from every later cell
            def visit_Assert(self, node):
                return ast.Pass()

            def visit_Raise(self, node):
                return ast.Pass()

        get_ipython().ast_transformers.append(Gut())
        """,
    "exception_handler": """
        import sys

        def swallow(shell, etype, value, tb, tb_offset=None):
            return []

        get_ipython().set_custom_exc((BaseException,), swallow)
        get_ipython()._showtraceback = lambda *args, **kwargs: None
        sys.excepthook = lambda *args: None
        """,
    "guard_disabled": """
        kernel = get_ipython().kernel
        original = kernel.do_execute

        async def do_execute(code, silent, *args, **kwargs):  # answer the grader's guard itself
            if code.startswith("#dvl-kernel-guard"):
                return {"status": "ok", "execution_count": 0, "user_expressions": {}, "payload": []}
            return await original(code, silent, *args, **kwargs)

        kernel.do_execute = do_execute
        get_ipython().input_transformers_cleanup.append(lambda lines: ["pass\\n"])
        """,
}


def _writes(gradebook: Path, targets: list[Path]) -> str:
    return f"""
        import os
        written = []
        for path in {[str(t) for t in targets]!r} + [os.path.join(os.getcwd(), "mine.txt")]:
            try:
                with open(path, "a") as f:
                    f.write("written by a submission")
                written.append(path)
            except OSError:
                pass
        try:
            with open({str(gradebook)!r}, "r+b") as f:
                f.write(b"not a gradebook any more")
            written.append("gradebook")
        except OSError:
            pass
        print("uid", os.getuid())
        print("written", written)
        """


def _background(marks: Path, gradebook: Path, name: str) -> str:
    later = (f"import time, os\ntime.sleep(4)\nopen({str(marks / name)!r}, 'w').write('alive')\n"
             f"try:\n    open({str(gradebook)!r}, 'r+b').write(b'0' * 4096)\nexcept OSError:\n    pass\n")
    return f"""
        import os, subprocess, sys
        later = {later!r}
        # in a session of its own, then a double fork with an empty environment
        subprocess.Popen(["setsid", sys.executable, "-c", later], start_new_session=True,
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        pid = os.fork()
        if pid == 0:
            os.setsid()
            if os.fork() == 0:
                os.execve(sys.executable, [sys.executable, "-c", later], {{}})
            os._exit(0)
        os.waitpid(pid, 0)
        """


def _shadow_grader(marks: Path) -> dict[str, str]:
    """A ``grader`` package handed in with the notebook: no-op checks, a launcher that marks."""
    mark = f"open({str(marks / 'shadow_grader_ran')!r}, 'w').write('ran')\n"
    return {
        "grader/__init__.py": mark,
        "grader/sandbox.py": mark + "import os\nos.execv('/bin/sh', ['/bin/sh'])\n",
        "grader/checks/__init__.py": mark,
        "grader/checks/_common.py": mark + "\n".join(
            f"def {f}(*a, **k):\n    return 0.0\n" for f in
            ("assert_close", "assert_own_implementation", "expect_scalar", "generator", "randn",
             "to_f64")) + "def call(fn, *a, what='', forbid=None, **k):\n    return fn(*a, **k)\n"
            "def check(fn):\n    return lambda *a, **k: None\n",
    }


def build(root: Path, marks: Path, gradebook: Path, protected: list[Path]) -> list[Submission]:
    """The class, for a released toy course at ``root``.

    Args:
        marks: folder where leftovers of an attack would leave files.
        gradebook: the run's gradebook, which attacks try to write.
        protected: paths outside the run's output that attacks try to write.
    """
    toy, tensor = _Toy(root, TOY), _Toy(root, TENSOR)
    nb = toy.notebook
    S = Submission
    members = [
        S("honest_correct", TOY, {}, 3, what="every answer right", honest=True,
          extra={"nb": nb()}),
        S("honest_partly", TOY, {}, 1, what="scale wrong", honest=True,
          extra={"nb": nb({"scale": "def scale(xs, k):\n    return [k * x for x in xs][:1]"})}),
        S("honest_tensor", TENSOR, {}, 2, what="mse right", honest=True,
          extra={"nb": tensor.notebook()}),
    ]
    # --- attacks that try to earn points (every answer wrong) ---------------------------------
    for name, src in ATTACKS.items():
        status = "kernel changed during test" if name == "guard_disabled" else "ok"
        members.append(S(name, TOY, {}, 0, status=status, what=ATTACKS_WHAT[name],
                         extra={"nb": nb(WRONG, {"setup": src})}))
    members += [
        S("displayhook_credit", TOY, {}, 0, what="answers display a number (nbgrader's partial credit)",
          extra={"nb": nb({"add": "import sys\ndef add(a, b):\n    sys.displayhook(1.0)\n    return 0",
                           "scale": "import sys\ndef scale(xs, k):\n    sys.displayhook(2.0)\n    return []"})}),
        S("always_equal", TOY, {}, 0, message="add must handle negative numbers",
          what="answers return an object whose == always holds",
          extra={"nb": nb({"add": "class Anything:\n    def __eq__(self, other):\n        return True\n\n"
                                  "def add(a, b):\n    return Anything()",
                           "scale": "def scale(xs, k):\n    return Anything()"})}),
        S("equal_subclasses", TOY, {}, 0, message="add must handle negative numbers",
          what="answers return int and list subclasses whose == always holds",
          extra={"nb": nb({"add": "class Int(int):\n    __eq__ = lambda self, other: True\n\n"
                                  "def add(a, b):\n    return Int(7)",
                           "scale": "class List(list):\n    __eq__ = lambda self, other: True\n\n"
                                    "def scale(xs, k):\n    return List([7])"})}),
        S("tensor_subclass", TENSOR, {}, 0, message="tensor subclass",
          what="mse returns a torch.Tensor subclass whose comparisons always hold",
          extra={"nb": tensor.notebook({"mse": """
              class Yes(torch.Tensor):
                  def __eq__(self, other):
                      return True
                  __float__ = lambda self: 1.0

              def mse(x_rec, x):
                  return torch.tensor(1.0).as_subclass(Yes)"""})}),
        S("patched_torch", TENSOR, {}, 0, message="has replaced torch",
          what="patches torch.allclose and Tensor.__sub__, returns a constant",
          extra={"nb": tensor.notebook({"mse": """
              torch.allclose = lambda *args, **kwargs: True
              torch.Tensor.__sub__ = lambda self, other: torch.zeros_like(self)

              def mse(x_rec, x):
                  return torch.tensor(1.0)"""})}),
        S("patched_checks", TENSOR, {}, 0, what="replaces grader.checks._common's asserts by no-ops",
          extra={"nb": tensor.notebook({"mse": """
              import grader.checks._common as common
              for name in ("assert_close", "assert_own_implementation", "expect_scalar"):
                  setattr(common, name, lambda *args, **kwargs: 0.0)

              def mse(x_rec, x):
                  return torch.tensor(1.0)"""})}),
        S("patched_import", TENSOR, {}, 0,
          what="builtins.__import__ and sys.meta_path serve a fake grader.checks._common",
          extra={"nb": tensor.notebook({"mse": """
              import builtins, sys, types
              fake = types.ModuleType("grader.checks._common")
              for name in ("assert_close", "assert_own_implementation", "expect_scalar",
                           "generator", "randn", "to_f64"):
                  setattr(fake, name, lambda *args, **kwargs: 0.0)
              fake.call = lambda fn, *args, what="", forbid=None, **kwargs: fn(*args, **kwargs)
              fake.check = lambda fn: (lambda *args, **kwargs: None)
              _import = builtins.__import__

              def lying_import(name, globals=None, locals=None, fromlist=(), level=0):
                  if name.startswith("grader.checks"):
                      return fake
                  return _import(name, globals, locals, fromlist, level)

              class Finder:
                  def find_spec(self, name, path=None, target=None):
                      if name.startswith("grader"):
                          import importlib.util
                          return importlib.util.spec_from_loader(name, loader=None)
                      return None

              builtins.__import__ = lying_import
              sys.meta_path.insert(0, Finder())
              sys.modules["grader.checks._common"] = fake

              def mse(x_rec, x):
                  return torch.tensor(1.0)"""})}),
        S("reference_call", TENSOR, {}, 0, message="calls the course's reference implementation",
          what="mse calls dvl_helpers.metrics.mse",
          extra={"nb": tensor.notebook({"mse": """
              import dvl_helpers.metrics as metrics

              def mse(x_rec, x):
                  return metrics.mse(x_rec, x)"""})}),
        S("shadow_grader", TENSOR, _shadow_grader(marks), 0,
          what="hands in a grader/ package (no-op checks, a launcher) with a wrong mse",
          extra={"nb": tensor.notebook({"mse": "def mse(x_rec, x):\n    return torch.tensor(1.0)"})}),
        S("background_writer", TOY, {}, 0,
          what="leaves processes (setsid, double fork, empty env) that write the gradebook later",
          extra={"nb": nb(WRONG, {"setup": _background(marks, gradebook, "background_writer")})}),
        S("writes_outside", TOY, {}, 3, what="writes to the course, the submissions, the gradebook",
          extra={"nb": nb(after={"setup": _writes(gradebook, protected)})}),
        # --- attacks on the grader itself (every answer right) --------------------------------
        S("kernel_killer", TOY, {}, 3, status="kernel died in cell #", what="os._exit(1) in a plain cell",
          extra={"nb": nb(after={"test_add": "import os\nos._exit(1)"})}),
        S("memory_hog", TOY, {}, 3, status="memory limit in cell #",
          what="allocates 64 GiB at once",
          extra={"nb": nb(after={"test_add": "block = bytearray(64 * 2**30)"})}),
        S("shared_memory_hog", TOY, {}, 3, status="memory limit in cell #",
          what="fills 6 GiB of shared memory, page by page (not counted by RLIMIT_DATA)",
          extra={"nb": nb(after={"test_add": """
              import mmap
              m = mmap.mmap(-1, 6 * 2**30)
              chunk = b"x" * 2**26
              for i in range(0, len(m), len(chunk)):
                  m[i:i + len(chunk)] = chunk"""})}),
        S("interrupt_ignored", TOY, {}, 3, status="timeout in cell #",
          what="loops forever, catching KeyboardInterrupt",
          extra={"nb": nb(after={"test_add": """
              import time
              while True:
                  try:
                      time.sleep(0.05)
                  except KeyboardInterrupt:
                      pass"""})}),
        S("fork_bomb", TOY, {}, 3, what="forks until it cannot",
          extra={"nb": nb(after={"test_add": """
              import os, time
              children = 0
              try:
                  for _ in range(400):
                      if os.fork() == 0:
                          time.sleep(600)
                          os._exit(0)
                      children += 1
              except OSError:
                  pass"""})}),
        S("output_flood", TOY, {}, 3, what="prints a 5 MB line and displays a 3 MB image",
          extra={"nb": nb(after={"test_add": """
              import base64, os
              from IPython.display import display
              print("x" * 5_000_000)
              display({"image/png": base64.b64encode(os.urandom(3 * 2**20)).decode()}, raw=True)"""})}),
    ]
    # --- malformed input ----------------------------------------------------------------------
    stripped = nb()
    for cell in stripped.cells:
        cell.metadata.pop("nbgrader", None)
    renumbered = copy.deepcopy(stripped)
    for i, cell in enumerate(renumbered.cells):
        cell["id"] = f"fresh-{i}"
    duplicated = nb()
    at = next(i for i, c in enumerate(duplicated.cells) if grade_id(c) == "add")
    duplicated.cells.insert(at, copy.deepcopy(duplicated.cells[at]))   # an old attempt, kept above
    duplicated.cells[at].source = "def add(a, b):\n    return 'old attempt'"
    duplicated.cells[at]["id"] = "add-old"
    test = next(i for i, c in enumerate(duplicated.cells) if grade_id(c) == "test_add")
    twin = copy.deepcopy(duplicated.cells[test])
    twin["id"] = "test-add-pasted"
    duplicated.cells.insert(test + 1, twin)
    other_kernel = nb()
    other_kernel.metadata["kernelspec"] = {"name": "ir", "display_name": "R", "language": "R"}
    other_kernel.metadata["language_info"] = {"name": "R"}
    nbformat3 = json.dumps({"nbformat": 3, "nbformat_minor": 0, "metadata": {}, "worksheets": []})
    members += [
        S("invalid_json", TOY, {f"{TOY}.ipynb": '{"cells": [ not json'}, 0,
          status="invalid notebook: not valid JSON", what="not JSON"),
        S("empty_file", TOY, {f"{TOY}.ipynb": ""}, 0, status="invalid notebook: empty file",
          what="an empty file"),
        S("old_format", TOY, {f"{TOY}.ipynb": nbformat3}, 0, status="invalid notebook: nbformat 3",
          what="an nbformat 3 notebook"),
        S("other_assignment", TOY, {f"{TOY}.ipynb": tensor.notebook()}, 0,
          status="notebook of another assignment (98_tensor_toy)",
          what="98_tensor_toy's notebook handed in as 99_toy"),
        S("wrong_file_name", TOY, {"homework (1).ipynb": nb()}, 3, note="graded homework (1).ipynb",
          what="the right notebook under another name"),
        S("stripped_metadata", TOY, {}, 3, note="repaired", what="every cell's nbgrader metadata removed",
          extra={"nb": stripped}),
        S("stripped_and_renumbered", TOY, {}, 3, note="deleted (restored)",
          what="metadata removed and new cell ids (copied into a new notebook)",
          extra={"nb": renumbered}),
        S("duplicated_metadata", TOY, {}, 3, note="repaired",
          what="an answer cell and a test cell pasted twice (same grade_id)",
          extra={"nb": duplicated}),
        S("other_kernel", TOY, {}, 3, note="kernel 'ir'", what="asks for an R kernel",
          extra={"nb": other_kernel}),
        S("unknown_assignment", "42_nope", {"42_nope.ipynb": nb()}, None,
          status="unknown assignment", what="a folder that is no assignment"),
    ]
    for m in members:
        if "nb" in m.extra:
            m.files[f"{m.assignment}.ipynb"] = m.extra.pop("nb")
    return sorted(members, key=lambda m: m.name)


def write(members: list[Submission], submitted: Path) -> None:
    """``submitted/<name>/<assignment>/<files>``."""
    for m in members:
        folder = submitted / m.name / m.assignment
        for name, content in m.files.items():
            path = folder / name
            path.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, str):
                path.write_text(content, encoding="utf-8")
            else:
                nbformat.write(content, str(path))
