"""The course's nbgrader preprocessors: running a submission safely, and feedback.

- :class:`GuardedExecute` replaces nbgrader's ``Execute`` in ``autograde``: it runs
  the notebook on the grader's own Python in the job's sandbox
  (:mod:`grader.sandbox`: own user when root, memory limit, nothing left
  behind), undoes what the notebook did to the kernel before and after each
  test cell (:mod:`grader.kernel_guard`), survives a kernel that dies or stops
  answering (the fatal cell is skipped and the notebook re-run, so the other
  tests keep their points), enforces a wall-clock budget per notebook on top of
  nbgrader's per-cell timeout, and caps outputs (:mod:`grader.outputs`).
- :class:`HideHiddenTests` and :class:`ShortTracebacks` remove hidden tests
  from feedback, and shorten errors of test cells to their last line (a
  traceback would quote the hidden tests).

``grader/nbgrader_config.py`` wires them in.
"""
from __future__ import annotations

import copy
import os
import secrets
import threading
from queue import Empty
from time import monotonic

from jupyter_client.kernelspec import KernelSpec, KernelSpecManager
from jupyter_core.utils import ensure_async, run_sync
from nbclient.exceptions import CellTimeoutError, DeadKernelError
from nbconvert.preprocessors import Preprocessor
from nbformat.notebooknode import NotebookNode
from nbgrader.preprocessors import ClearHiddenTests, Execute
from traitlets import Bool, Integer, Unicode

from . import sandbox
from .kernel_guard import PREFIX as GUARD_PREFIX
from .notebooks import CELL_TIMEOUT, KERNEL_DIED, KERNEL_TAMPERED, MEMORY_LIMIT, NOT_RUN, is_test_cell
from .outputs import OutputBudget

SKIP_TAG = "skip-execution"  # nbclient's default ``skip_cells_with_tag``
GUARD_NOTES = "dvl_guard"    # notebook metadata: what the kernel guard undid before the tests


class SandboxKernelSpecManager(KernelSpecManager):
    """Every kernel name resolves to *this* interpreter, started through :mod:`grader.sandbox`.

    A ``python3`` kernelspec elsewhere on the machine (``~/.local/share/jupyter``,
    a conda base), or the kernel a notebook names (``ir``, ``python2``), must not
    decide which Python grades: the grader's own environment has ``grader`` and
    ``dvl_helpers`` installed.
    """

    def __init__(self, box: sandbox.Sandbox, **kwargs):
        super().__init__(**kwargs)
        self.box = box

    def get_kernel_spec(self, kernel_name: str) -> KernelSpec:
        return KernelSpec(argv=sandbox.kernel_argv(), env=sandbox.kernel_env(self.box),
                          name=kernel_name, display_name="Python 3 (grader)", language="python",
                          metadata={"debugger": False})


# What of the grader's environment a kernel sees: no credentials, no paths of the grading run.
_KERNEL_ENV = ("PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "TERM", "TMPDIR",
               "LD_LIBRARY_PATH", "VIRTUAL_ENV", "CONDA_PREFIX", "MPLBACKEND", "PYTHONHASHSEED",
               "PYTHONDONTWRITEBYTECODE", "JUPYTER_PLATFORM_DIRS", "SSL_CERT_FILE", "SSL_CERT_DIR")
_KERNEL_ENV_PREFIXES = ("LC_", "CUDA_", "NVIDIA_", "OMP_", "MKL_", "OPENBLAS_", "DVL_")
_KERNEL_ENV_HIDDEN = ("DVL_GRADING_DIR",)


def kernel_environment(env: dict) -> dict:
    """The part of ``env`` (the grading process's) that a kernel gets."""
    return {k: v for k, v in env.items() if k not in _KERNEL_ENV_HIDDEN and
            (k in _KERNEL_ENV or k.startswith(_KERNEL_ENV_PREFIXES))}


def _error_output(ename: str, evalue: str) -> NotebookNode:
    return NotebookNode(output_type="error", ename=ename, evalue=evalue,
                        traceback=[f"{ename}: {evalue}"])


class _MemoryWatch(threading.Thread):
    """Kills a job's processes when together they hold more than ``limit`` bytes."""

    def __init__(self, box: sandbox.Sandbox, limit: int, interval: float = 0.25):
        super().__init__(daemon=True, name="dvl-memory-watch")
        self.box, self.limit, self.interval = box, limit, interval
        self.ancestor = os.getpid()  # the grading process: a subreaper, every kernel descends from it
        self.fired = False
        self._stop_event = threading.Event()

    def run(self):
        while not self._stop_event.wait(self.interval):
            if sandbox.memory_used(sandbox.job_pids(self.box, self.ancestor)) > self.limit:
                self.fired = True
                sandbox.kill_job(self.box, ancestor=self.ancestor)
                return

    def stop(self):
        self._stop_event.set()


class GuardedExecute(Execute):
    """nbgrader's ``Execute`` that survives dead kernels, guards the tests and bounds a notebook.

    - Kernel: always the current interpreter, started in the sandbox given by
      ``sandbox`` (:class:`SandboxKernelSpecManager`); before each run of the
      notebook the job's leftover processes are killed and the kernel's
      working directory is prepared (:func:`grader.sandbox.prepare_kernel_dir`).
    - Tests: before each test cell, the hooks a notebook can register (input
      and AST transformers, exception handlers, display hooks, patched
      builtins or IPython methods) are removed and ``grader``'s modules are
      re-imported; after it, anything found changed *during* the test makes
      the test fail (``KernelTampered``). A result the test cell displays
      (``execute_result``) never counts as nbgrader's partial credit.
    - Dead kernel (``os._exit``, a segfault, the memory watchdog), or a kernel
      that no longer answers after a timeout interrupt (a loop that catches
      ``KeyboardInterrupt``): the cell it was running gets a ``KernelDied``,
      ``MemoryLimitExceeded`` or ``CellTimeoutError`` error, so a test cell
      scores zero, and the notebook is re-run from the start with that cell
      skipped, at most ``max_kernel_restarts`` times; after that the remaining
      cells are marked ``NotRun``.
    - ``notebook_timeout``: wall-clock seconds for one run of the notebook's
      cells (kernel start-up excluded); each cell's timeout is capped by what
      is left, and cells reached after the budget is spent are not run
      (``NotRun`` error, so their tests score zero).
    - Outputs are capped as they arrive (:class:`grader.outputs.OutputBudget`).
    - ``kernel_pid_file``: every kernel's pid is appended there.
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
    sandbox = Unicode(
        "", help="The grader.sandbox.Sandbox of the kernels, as JSON (default: a token only).",
    ).tag(config=True)
    guard_tests = Bool(
        True, help="Undo the notebook's changes to the kernel around each test cell.",
    ).tag(config=True)
    guard_timeout = Integer(
        30, help="Seconds the kernel has to answer the guard around a test cell.",
    ).tag(config=True)

    _deadline: float | None = None
    _index: int | None = None
    _box: sandbox.Sandbox | None = None
    _watch: _MemoryWatch | None = None

    def _sandbox(self) -> sandbox.Sandbox:
        if self._box is None:
            self._box = sandbox.Sandbox.from_json(self.sandbox) if self.sandbox else \
                sandbox.Sandbox.new()
        return self._box

    def create_kernel_manager(self):
        self.kernel_name = "python3"
        self.km = self.kernel_manager_class(
            kernel_name=self.kernel_name, config=self.config,
            kernel_spec_manager=SandboxKernelSpecManager(self._sandbox()))
        return self.km

    def start_new_kernel(self, **kwargs):  # the sync entry ExecutePreprocessor.preprocess uses
        kwargs.setdefault("env", kernel_environment(dict(os.environ)))
        super().start_new_kernel(**kwargs)
        pid = getattr(getattr(self.km, "provisioner", None), "pid", None)
        if self.kernel_pid_file and pid:
            with open(self.kernel_pid_file, "a") as f:
                f.write(f"{pid}\n")
        box = self._sandbox()
        if box.memory_mb:
            self._watch = _MemoryWatch(box, box.memory_mb << 20)
            self._watch.start()

    # --- time --------------------------------------------------------------------------------

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

    # --- outputs -------------------------------------------------------------------------------

    def output(self, outs, msg, display_id, cell_index):
        out = super().output(outs, msg, display_id, cell_index)
        if out is not None:
            self._budget.admit(outs, out, cell_index)
        return out

    def _update_display_id(self, display_id, msg):
        self._budget.cap_data(msg.get("content", {}).get("data", {}))
        return super()._update_display_id(display_id, msg)

    @property
    def _budget(self) -> OutputBudget:
        if not hasattr(self, "_output_budget"):
            self._output_budget = OutputBudget()
        return self._output_budget

    # --- the guard around test cells ----------------------------------------------------------

    async def _async_guard(self, kind: str) -> dict | None:
        """Ask the kernel guard to restore the kernel; its reply content, ``None`` if no reply."""
        nonce = secrets.token_hex(6)
        msg_id = await ensure_async(self.kc.execute(f"{GUARD_PREFIX} {kind} {nonce}", silent=True,
                                                    store_history=False))
        deadline = monotonic() + self.guard_timeout
        while True:
            left = deadline - monotonic()
            if left <= 0:
                return None
            try:
                msg = await ensure_async(self.kc.shell_channel.get_msg(timeout=left))
            except Empty:
                return None
            if msg["parent_header"].get("msg_id") == msg_id:
                content = msg["content"]
                guard = content.get("dvl_guard")
                if not isinstance(guard, dict) or guard.get("nonce") != nonce:
                    content["dvl_guard"] = None
                return content

    _guard = run_sync(_async_guard)

    def _guarded_test(self, cell, resources, index):
        before = self._guard("before")
        if before is None:  # the kernel is stuck (a loop that ignores interrupts) or dead
            run_sync(self._async_check_alive)()
            raise CellTimeoutError("the kernel did not answer before a test cell")
        cell, resources = super().preprocess_cell(cell, resources, index)
        after = self._guard("after")
        problem = None
        if after is None:  # busy with something the test left running, or dead
            problem = "the kernel did not answer after this test"
        elif before["dvl_guard"] is None or after["dvl_guard"] is None:
            problem = "the notebook disabled the grader's kernel guard"
        elif after["dvl_guard"]["changed"]:
            what = ", ".join(after["dvl_guard"]["changed"][:3])
            problem = f"the kernel was changed while this test ran ({what})"
        if problem:
            cell.outputs.append(_error_output(
                KERNEL_TAMPERED, f"{problem}; a test only counts when it runs as written"))
        elif before["dvl_guard"]["changed"]:
            notes = self.nb.metadata.setdefault(GUARD_NOTES, [])
            notes.extend(x for x in before["dvl_guard"]["changed"] if x not in notes)
        for out in cell.outputs:  # nbgrader reads a displayed number as partial credit
            if out.get("output_type") == "execute_result":
                out["output_type"] = "display_data"
                out.pop("execution_count", None)
        return cell, resources

    # --- running the notebook -------------------------------------------------------------------

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
        if runnable and self.guard_tests and is_test_cell(cell):
            return self._guarded_test(cell, resources, index)
        return super().preprocess_cell(cell, resources, index)

    def _prepare_run(self, resources) -> None:
        """Before a kernel starts: nothing of an earlier run alive, a fresh working directory."""
        box = self._sandbox()
        sandbox.kill_job(box, ancestor=os.getpid())
        if box.uid is not None:
            sandbox.clean_shared_dirs(box.uid)
        sandbox.prepare_kernel_dir(self._kernel_dir(resources), box)
        sandbox.prepare_home(box)
        self._budget.reset()

    @staticmethod
    def _kernel_dir(resources) -> str:
        return (resources or {}).get("metadata", {}).get("path") or "."

    def _end_run(self) -> bool:
        """After a run: stop the watchdog, kill what is left; whether the watchdog fired."""
        fired = False
        if self._watch is not None:
            self._watch.stop()
            fired = self._watch.fired
            self._watch = None
        sandbox.kill_job(self._sandbox(), ancestor=os.getpid())
        return fired

    def preprocess(self, nb, resources=None, km=None):
        original = copy.deepcopy(nb)
        fatal: dict[int, str] = {}  # cell index -> what lost the kernel
        for attempt in range(self.max_kernel_restarts + 1):
            work = copy.deepcopy(original)
            for i in fatal:
                work.cells[i].metadata.setdefault("tags", []).append(SKIP_TAG)
            self._index = None
            self._deadline = None
            self._prepare_run(resources)
            try:
                work, resources = super().preprocess(work, resources, km)
                self._end_run()
            except (DeadKernelError, CellTimeoutError) as e:
                memory = self._end_run()
                if self._index is None:  # the kernel never ran a cell: not the submission's fault
                    raise
                why = MEMORY_LIMIT if memory else type(e).__name__
                self.log.warning("Kernel lost in cell %d (%s); re-running without it", self._index, why)
                fatal[self._index] = why
                if attempt < self.max_kernel_restarts:
                    continue
                work = self.nb  # partly executed: keep what ran, mark the rest
                for cell in work.cells[self._index + 1:]:
                    if cell.cell_type == "code" and cell.source.strip():
                        cell.outputs = [_error_output(
                            NOT_RUN, "not run: the kernel died too many times in this notebook")]
                        cell.execution_count = None
            except BaseException:
                self._end_run()
                sandbox.release_kernel_dir(self._kernel_dir(resources), self._sandbox())
                raise
            self._mark_fatal(work, fatal)
            sandbox.release_kernel_dir(self._kernel_dir(resources), self._sandbox())
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
            elif why == MEMORY_LIMIT:
                limit = self._sandbox().memory_mb
                out = _error_output(MEMORY_LIMIT, (
                    f"the notebook's processes used more than {limit} MiB of memory in this cell "
                    "and were stopped; the notebook was re-run without it"))
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
