"""The course's nbgrader preprocessors: running a submission safely, and feedback.

- :class:`GuardedExecute` replaces nbgrader's ``Execute`` in ``autograde``: it runs
  the notebook on the grader's own Python, survives a kernel that dies (the fatal
  cell is skipped and the notebook re-run, so the other tests keep their points)
  and enforces a wall-clock budget per notebook on top of nbgrader's per-cell
  timeout.
- :class:`HideHiddenTests` and :class:`ShortTracebacks` remove hidden tests
  from feedback, and shorten errors of test cells to their last line (a
  traceback would quote the hidden tests).

``grader/nbgrader_config.py`` wires them in.
"""
from __future__ import annotations

import copy
import sys
from time import monotonic

from jupyter_client.kernelspec import KernelSpec, KernelSpecManager
from nbclient.exceptions import CellTimeoutError, DeadKernelError
from nbconvert.preprocessors import Preprocessor
from nbformat.notebooknode import NotebookNode
from nbgrader.preprocessors import ClearHiddenTests, Execute
from traitlets import Bool, Integer, Unicode

from .notebooks import CELL_TIMEOUT, KERNEL_DIED, NOT_RUN, is_test_cell

SKIP_TAG = "skip-execution"  # nbclient's default ``skip_cells_with_tag``


class CurrentPythonKernelSpecManager(KernelSpecManager):
    """Every kernel name resolves to ``python -m ipykernel_launcher`` of *this* interpreter.

    A ``python3`` kernelspec elsewhere on the machine (``~/.local/share/jupyter``,
    a conda base) must not decide which Python grades: the grader's own
    environment has ``grader`` and ``dvl_helpers`` installed.
    """

    def get_kernel_spec(self, kernel_name: str) -> KernelSpec:
        return KernelSpec(
            argv=[sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            name=kernel_name, display_name="Python 3 (grader)", language="python",
            metadata={"debugger": False})


def _error_output(ename: str, evalue: str) -> NotebookNode:
    return NotebookNode(output_type="error", ename=ename, evalue=evalue,
                        traceback=[f"{ename}: {evalue}"])


class GuardedExecute(Execute):
    """nbgrader's ``Execute`` that survives dead kernels and bounds a notebook's time.

    - Kernel: always the current interpreter (:class:`CurrentPythonKernelSpecManager`).
    - Dead kernel (``os._exit``, a segfault, the OOM killer), or a kernel that no
      longer answers after a timeout interrupt: the cell it was running gets a
      ``KernelDied`` (or ``CellTimeoutError``) error, so a test cell scores zero,
      and the notebook is re-run from the start with that cell skipped, at most
      ``max_kernel_restarts`` times; after that the remaining cells are marked
      ``NotRun``.
    - ``notebook_timeout``: wall-clock seconds for one run of the notebook's cells
      (kernel start-up excluded); each cell's timeout is capped by what is left,
      and cells reached after the budget is spent are not run (``NotRun`` error,
      so their tests score zero).
    - ``kernel_pid_file``: every kernel's pid is appended there, so a supervisor
      that kills this process can kill the kernel too (kernels run in their own
      session).
    """

    notebook_timeout = Integer(
        600, allow_none=True,
        help="Wall-clock seconds for one run of a notebook (None or 0: unlimited).",
    ).tag(config=True)
    max_kernel_restarts = Integer(
        2, help="How many times a notebook is re-run after its kernel died.",
    ).tag(config=True)
    kernel_pid_file = Unicode(
        "", help="File to which the pid of every kernel started is appended.",
    ).tag(config=True)

    _deadline: float | None = None
    _index: int | None = None

    def create_kernel_manager(self):
        self.kernel_name = "python3"
        self.km = self.kernel_manager_class(
            kernel_name=self.kernel_name, kernel_spec_manager=CurrentPythonKernelSpecManager(),
            config=self.config)
        return self.km

    def start_new_kernel(self, **kwargs):  # the sync entry ExecutePreprocessor.preprocess uses
        super().start_new_kernel(**kwargs)
        pid = getattr(getattr(self.km, "provisioner", None), "pid", None)
        if self.kernel_pid_file and pid:
            with open(self.kernel_pid_file, "a") as f:
                f.write(f"{pid}\n")

    def _get_timeout(self, cell):
        timeout = super()._get_timeout(cell)
        if cell is None:  # waiting for a new kernel's first reply: start-up, not the notebook
            return max(timeout or 0, self.startup_timeout) or None
        if self._deadline is not None:
            left = max(1, int(self._deadline - monotonic()) + 1)
            timeout = left if timeout is None else min(timeout, left)
        return timeout

    async def _async_handle_timeout(self, timeout, cell=None):
        if self._deadline is not None and monotonic() >= self._deadline - 1:
            why = f"the notebook used up its {self.notebook_timeout} s time limit in this cell"
        else:
            why = f"the cell ran longer than {timeout} s"
        self.error_on_timeout = {"ename": CELL_TIMEOUT, "evalue": f"{why} and was interrupted",
                                 "traceback": [f"{CELL_TIMEOUT}: {why} and was interrupted"]}
        return await super()._async_handle_timeout(timeout, cell)

    def preprocess_cell(self, cell, resources, index):
        self._index = index
        if self._deadline is None and self.notebook_timeout:  # the clock starts with the cells
            self._deadline = monotonic() + self.notebook_timeout
        runnable = cell.cell_type == "code" and cell.source.strip() and \
            SKIP_TAG not in cell.metadata.get("tags", [])
        if runnable and self._deadline is not None and monotonic() >= self._deadline:
            cell.outputs = [_error_output(
                NOT_RUN, f"not run: the notebook used up its {self.notebook_timeout} s time limit")]
            cell.execution_count = None
            return cell, self.resources
        return super().preprocess_cell(cell, resources, index)

    def preprocess(self, nb, resources=None, km=None):
        original = copy.deepcopy(nb)
        fatal: dict[int, str] = {}  # cell index -> exception that lost the kernel
        for attempt in range(self.max_kernel_restarts + 1):
            work = copy.deepcopy(original)
            for i in fatal:
                work.cells[i].metadata.setdefault("tags", []).append(SKIP_TAG)
            self._index = None
            self._deadline = None
            try:
                work, resources = super().preprocess(work, resources, km)
            except (DeadKernelError, CellTimeoutError) as e:
                if self._index is None:  # the kernel never ran a cell: not the submission's fault
                    raise
                self.log.warning("Kernel lost in cell %d (%s); re-running without it",
                                 self._index, type(e).__name__)
                fatal[self._index] = type(e).__name__
                if attempt < self.max_kernel_restarts:
                    continue
                work = self.nb  # partly executed: keep what ran, mark the rest
                for cell in work.cells[self._index + 1:]:
                    if cell.cell_type == "code" and cell.source.strip():
                        cell.outputs = [_error_output(
                            NOT_RUN, "not run: the kernel died too many times in this notebook")]
                        cell.execution_count = None
            self._mark_fatal(work, fatal)
            return work, resources
        raise AssertionError("unreachable")

    def _mark_fatal(self, nb, fatal: dict[int, str]) -> None:
        for i, why in fatal.items():
            cell = nb.cells[i]
            tags = cell.metadata.get("tags", [])
            while SKIP_TAG in tags:
                tags.remove(SKIP_TAG)
            if "tags" in cell.metadata and not tags:
                del cell.metadata["tags"]
            if why == "CellTimeoutError":  # nbclient gave up on a kernel that ignored the interrupt
                out = _error_output(CELL_TIMEOUT, (
                    f"the cell ran longer than {self.timeout} s and did not stop when interrupted; "
                    "the notebook was re-run without it"))
            else:
                out = _error_output(KERNEL_DIED, (
                    "the kernel died while running this cell (os._exit, a crash or out of memory); "
                    "the notebook was re-run without it"))
            cell.outputs = [out]
            cell.execution_count = None


class HideHiddenTests(ClearHiddenTests):
    """Feedback: remove the hidden-test regions of test cells.

    Test cells were restored from the source before grading, so their regions are
    well formed; answer cells are the learner's own text and are left alone.
    """

    def preprocess_cell(self, cell, resources, index):
        if is_test_cell(cell):
            self._remove_hidden_test_region(cell)
        return cell, resources


class ShortTracebacks(Preprocessor):
    """Feedback: errors of test cells keep only their last line (``AssertionError: ...``).

    Tracebacks of a test cell quote the hidden tests and the checks in
    ``grader.checks``; the exception's message is what the learner needs.
    """

    enabled = Bool(True, help="Whether to shorten tracebacks.").tag(config=True)

    def preprocess_cell(self, cell, resources, index):
        if is_test_cell(cell):
            for out in cell.get("outputs", []):
                if out.get("output_type") == "error":
                    line = f"{out.get('ename', 'Error')}: {out.get('evalue', '')}".rstrip(": ")
                    out["traceback"] = [line]
        return cell, resources
