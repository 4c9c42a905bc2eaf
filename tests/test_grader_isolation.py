"""The grader's defences, one at a time and without running notebooks: output caps, notebook
intake, the kernel guard, the sandbox's process tracking, atomic gradebook writes."""
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
from nbformat.notebooknode import NotebookNode

from grader import kernel_guard, sandbox
from grader.autograde import CellResult, SubmissionResult
from grader.course import InputError, prepare_course
from grader.grade import in_range, parse_students
from grader.intake import Unfit, inspect_notebook, repair_metadata, restore_missing_cells
from grader.notebooks import grade_id, read_notebook
from grader.outputs import OutputBudget, cap_output
from grader.preprocessors import kernel_environment
from grader.records import load_result, record, save_result
from grader.release import release

FIXTURE = Path(__file__).parent / "fixtures" / "course"
TOY = "99_toy"


# --- output caps ---------------------------------------------------------------------------

def test_a_huge_line_and_a_huge_image_are_cut():
    stream = NotebookNode(output_type="stream", name="stdout", text="x" * 5_000_000)
    cap_output(stream, text=20_000, image=500_000)
    assert len(stream.text) < 20_100 and "more characters not kept" in stream.text
    image = NotebookNode(output_type="display_data", metadata={},
                         data={"image/png": "A" * 3_000_000, "text/plain": "<Figure>"})
    cap_output(image, text=20_000, image=500_000)
    assert "image/png" not in image.data and image.data["text/plain"] == "<Figure>"
    small = NotebookNode(output_type="display_data", metadata={}, data={"image/png": "A" * 1000})
    cap_output(small, text=20_000, image=500_000)
    assert small.data == {"image/png": "A" * 1000}, "small images stay"


def test_a_cell_over_its_budget_keeps_one_note():
    budget, outs = OutputBudget(text=100, cell=250, notebook=10_000), []
    for _ in range(10):
        out = NotebookNode(output_type="stream", name="stdout", text="y" * 100)
        outs.append(out)
        budget.admit(outs, out, cell_index=3)
    texts = [o.text for o in outs]
    assert texts[:2] == ["y" * 100] * 2 and len(texts) == 3 and "not kept" in texts[2]
    error = NotebookNode(output_type="error", ename="E", evalue="v" * 10_000,
                         traceback=["line"] * 1000)
    cap_output(error, text=100, image=10)
    assert len(error.evalue) < 200 and len(error.traceback) < 100


# --- intake --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("toy") / "course"
    shutil.copytree(FIXTURE, root)
    release(root, None)
    return root


def _release(root, assignment=TOY):
    return read_notebook(root / "course" / assignment / f"{assignment}.ipynb")


def test_metadata_stripped_but_ids_kept_is_put_back(toy):
    rel = _release(toy)
    nb = nbformat.from_dict(rel)
    for cell in nb.cells:
        cell.metadata.pop("nbgrader", None)
    changed = repair_metadata(nb, rel)
    assert {grade_id(c) for c in nb.cells} == {grade_id(c) for c in rel.cells}
    assert "test_add" in changed and "add" in changed


def test_tests_lost_with_their_metadata_come_back_after_their_answer(toy):
    rel = _release(toy)
    nb = nbformat.from_dict(rel)
    nb.cells = [c for c in nb.cells if not grade_id(c) or not grade_id(c).startswith("test_")]
    for i, cell in enumerate(nb.cells):
        cell.metadata.pop("nbgrader", None)
        cell["id"] = f"new-{i}"
    for cell in nb.cells:
        if cell.cell_type == "code" and "def add(" in cell.source:
            cell.source = "def add(a, b):\n    return a + b"
    restore_missing_cells(nb, rel)
    ids = [grade_id(c) for c in nb.cells]
    at = next(i for i, c in enumerate(nb.cells) if "def add(" in c.source)
    assert ids[at + 1] == "test_add" and "test_scale" in ids and "explain" in ids
    assert len({c.id for c in nb.cells}) == len(nb.cells), "cell ids stay unique"


def test_a_notebook_of_another_assignment_is_recognised(toy):
    other = _release(toy, "98_tensor_toy")
    with pytest.raises(Unfit, match=r"another assignment \(98_tensor_toy\)"):
        inspect_notebook(nbformat.from_dict(other), _release(toy), TOY, TOY,
                         {"98_tensor_toy": other, TOY: _release(toy)})
    nb = nbformat.from_dict(_release(toy))
    nb.metadata["kernelspec"] = {"name": "julia-1.9", "display_name": "Julia"}
    notes = inspect_notebook(nb, _release(toy), TOY, TOY, {"98_tensor_toy": other})
    assert any("kernel 'julia-1.9'" in n for n in notes)


# --- the kernel guard (in this process, with IPython's shell and a stand-in kernel) ---------

class _Kernel:
    execution_count = 0

    def __init__(self):
        self.shell_handlers = {"execute_request": self.execute_request}

    def execute_request(self, *args):
        return None

    async def do_execute(self, code, silent, store_history=True, user_expressions=None,
                         allow_stdin=False):
        return {"status": "ok", "ran": code}


def test_the_guard_removes_hooks_and_answers_without_running_the_cell(tmp_path, monkeypatch):
    import asyncio
    import builtins

    from IPython.core.interactiveshell import InteractiveShell
    ip = InteractiveShell.instance()
    kernel = _Kernel()
    monkeypatch.chdir(tmp_path)  # a kernel's working directory holds the submission, not the grader
    kernel_guard.install(ip, kernel)
    real_len = builtins.len
    try:
        class Yes:  # an object equal to everything must still be found
            def __eq__(self, other):
                return True
        ip.input_transformers_cleanup.append(lambda lines: ["pass\n"])
        ip.ast_transformers.append(Yes())
        ip.events.register("pre_run_cell", lambda info: None)
        ip.set_custom_exc((Exception,), lambda *a, **k: [])
        builtins.len = lambda x: 0
        changed = kernel_guard.restore()
        assert builtins.len is real_len
        for what in ("an input transformer", "an AST transformer", "a pre_run_cell callback",
                     "a custom exception handler", "builtins.len"):
            assert what in changed, (what, changed)
        assert ip.ast_transformers == [] and ip.custom_exceptions == ()
        assert kernel_guard.restore() == [], "restored: nothing left to undo"
        reply = asyncio.run(kernel.do_execute("#dvl-kernel-guard after n0nce", True))
        assert reply["dvl_guard"] == {"nonce": "n0nce", "changed": []} and "ran" not in reply
        assert asyncio.run(kernel.do_execute("1 + 1", False))["ran"] == "1 + 1"
    finally:
        builtins.len = real_len
        kernel_guard._state = None


# --- processes -------------------------------------------------------------------------------

def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_kill_job_finds_processes_that_left_their_session_by_their_token():
    box = sandbox.Sandbox.new()
    env = {**os.environ, sandbox.ENV_TOKEN: box.token}
    # a daemon: its own session, its parent gone, a grandchild of the shell
    shell = subprocess.Popen(["sh", "-c", "setsid sleep 300 & sleep 300"], env=env,
                             start_new_session=True)
    other = subprocess.Popen(["sleep", "300"])  # not the job's
    try:
        deadline = time.monotonic() + 10
        while len(sandbox.job_pids(box)) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        pids = sandbox.job_pids(box)
        assert shell.pid in pids and len(pids) >= 3, pids
        assert sandbox.kill_job(box)
        shell.wait(timeout=10)
        assert not any(_alive(p) for p in pids if p != shell.pid)
        assert _alive(other.pid), "a process of another job survives"
    finally:
        other.kill()
        other.wait()


@pytest.mark.skipif(not sandbox.is_root(), reason="kernel users exist only when grading as root")
def test_uid_leases_do_not_overlap_and_kill_by_user():
    with sandbox.UidLease(sandbox.DEFAULT_UID, 2) as a, sandbox.UidLease(sandbox.DEFAULT_UID, 1) as b:
        assert len(set(a.uids + b.uids)) == 3
        uid = b.uids[0]
        as_uid = dict(user=uid, group=uid, extra_groups=[], cwd="/")
        procs = [subprocess.Popen(["sleep", "300"], **as_uid),
                 subprocess.Popen(["sleep", "300"], start_new_session=True, **as_uid)]
        box = sandbox.Sandbox(token="-", uid=uid, gid=uid)  # found by user, whatever the session
        deadline = time.monotonic() + 10
        while len(sandbox.job_pids(box)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sandbox.job_pids(box) == {p.pid for p in procs}
        assert sandbox.kill_job(box)
        for p in procs:
            p.wait(timeout=10)
        assert not sandbox.job_pids(box)


def test_memory_of_this_process_is_counted():
    assert sandbox.memory_used([os.getpid()]) > 1 << 20


def test_kernels_see_no_credentials_nor_the_grading_paths():
    env = kernel_environment({"PATH": "/bin", "AWS_SECRET_ACCESS_KEY": "s3cr3t", "GITHUB_TOKEN": "t",
                              "DVL_PRESET": "smoke", "DVL_GRADING_DIR": "/srv/grading",
                              "LC_ALL": "C.UTF-8", "PWD": "/srv/grading/out"})
    assert env == {"PATH": "/bin", "DVL_PRESET": "smoke", "LC_ALL": "C.UTF-8"}


# --- records -------------------------------------------------------------------------------

def _result(student, scores):
    cells = [CellResult(TOY, "test_add", "test", scores[0], 1.0),
             CellResult(TOY, "test_scale", "test", scores[1], 2.0),
             CellResult(TOY, "explain", "manual", None, 1.0, answered=True)]
    return SubmissionResult(student, TOY, cells=cells)


def test_a_result_is_recorded_whole_or_not_at_all(toy, tmp_path, monkeypatch):
    from nbgrader.api import Gradebook, MissingEntry
    db = prepare_course(toy, tmp_path / "out", [TOY]).CourseDirectory.db_url
    record(db, _result("ana", (1.0, 2.0)))
    calls = []
    original = Gradebook.find_grade

    def flaky(self, *args):
        calls.append(args)
        if len(calls) == 2:
            raise OSError("disk gone")
        return original(self, *args)

    monkeypatch.setattr(Gradebook, "find_grade", flaky)
    with pytest.raises(OSError):
        record(db, _result("bob", (1.0, 0.0)))
    calls.clear()
    with pytest.raises(OSError):
        record(db, _result("ana", (0.0, 0.0)))
    monkeypatch.undo()
    with Gradebook(db) as gb:
        with pytest.raises(MissingEntry):
            gb.find_submission(TOY, "bob")  # nothing of bob's half-written result
        assert gb.find_submission(TOY, "ana").score == 3.0, "ana's grades untouched"
    save_result(tmp_path / "out", _result("ana", (1.0, 2.0)), "d1")
    assert load_result(tmp_path / "out", "ana", TOY, "d1").score == 3.0
    assert load_result(tmp_path / "out", "ana", TOY, "other digest") is None
    assert not list((tmp_path / "out" / "results").rglob("*.tmp*"))


def test_student_ranges():
    assert parse_students(None) == (None, None)
    assert parse_students("b:d") == ("b", "d") and parse_students(":m") == (None, "m")
    assert [s for s in "abcde" if in_range(s, parse_students("b:d"))] == ["b", "c", "d"]
    for bad in ("b", "d:b", "a:b:c"):
        with pytest.raises(InputError):
            parse_students(bad)


def test_the_kernel_launcher_ignores_the_working_directory(tmp_path):
    """A ``grader/`` handed in next to the notebook never replaces the launcher (which may be root)."""
    (tmp_path / "grader").mkdir()
    (tmp_path / "grader" / "__init__.py").write_text("raise SystemExit('shadowed')\n")
    argv = [a for a in sandbox.kernel_argv() if a not in ("-f", "{connection_file}")]
    done = subprocess.run([*argv[:2], "-c", "import grader, sys; print(grader.__file__)"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and str(tmp_path) not in done.stdout, done.stdout + done.stderr
    assert sys.executable == argv[0] and argv[1] == "-I"
