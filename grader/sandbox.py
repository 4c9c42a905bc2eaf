"""Where and as whom a submission's kernels run, how much they may take, and leaving nothing behind.

Every grading job has a :class:`Sandbox`:

- a *token*, put in the environment of its kernels (``DVL_GRADING_JOB``), which
  every process they start inherits, so :func:`kill_job` finds them even when
  they left their session (``setsid``) and their parent died;
- a *memory limit*: ``RLIMIT_DATA`` on every kernel process (a huge allocation
  fails with ``MemoryError`` in the cell, the kernel survives) and a watchdog in
  the grading process (:func:`memory_used`) that kills the job when its
  processes together hold more (shared memory, many processes);
- when the grader runs as root, a *user id of its own* (no account needed,
  leased by :class:`UidLease` so parallel runs never share one): kernels drop
  to it before any notebook code runs, so they cannot write outside their
  working directory (and the world-writable ``/tmp``-like directories, cleaned
  by :func:`clean_shared_dirs`), cannot signal the grader, and
  :func:`kill_job` kills every process of that user.

Kernels start as ``python -I -m grader.sandbox -f CONNECTION_FILE`` (see
:func:`kernel_argv`): this module's :func:`main` applies the limits, drops
privileges, then runs ipykernel in the same process with
:mod:`grader.kernel_guard` installed before the first cell. The grader's side
prepares the kernel's directories (:func:`prepare_kernel_dir`,
:func:`prepare_home`, :func:`release_kernel_dir`).
"""
from __future__ import annotations

import ctypes
import json
import os
import resource
import secrets
import shutil
import signal
import stat
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ENV_TOKEN = "DVL_GRADING_JOB"
ENV_SANDBOX = "DVL_SANDBOX"
DEFAULT_UID = 64000          # kernels' user ids, when grading as root, are leased from here up
SHARED_DIRS = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock", "/var/lock")
_NPROC = 256                 # processes and threads of one job's user
_FSIZE = 1 << 30             # largest file a kernel may write (1 GiB)
_CAP_DAC_READ_SEARCH = 2


@dataclass
class Sandbox:
    """How one job's kernels run.

    Attributes:
        token: marks the job's processes (environment variable :data:`ENV_TOKEN`).
        memory_mb: memory of the whole job, in MiB (0: unlimited).
        uid, gid: identity of the kernels (``None``: the grader's own).
        keep_read: keep ``CAP_DAC_READ_SEARCH`` after dropping to ``uid``, for
            when the Python installation is not readable by other users; the
            kernel can then read any file, but still writes nowhere else.
        home: the kernels' home directory (``HOME``, ``TMPDIR``); owned by ``uid``.
        ipython_dir: ``IPYTHONDIR`` of the kernels, not writable by them.
    """
    token: str
    memory_mb: int = 0
    uid: int | None = None
    gid: int | None = None
    keep_read: bool = False
    home: str = ""
    ipython_dir: str = ""

    @classmethod
    def new(cls, **kwargs) -> "Sandbox":
        return cls(token=secrets.token_hex(8), **kwargs)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "Sandbox":
        return cls(**json.loads(text))


# --- the grader's side ------------------------------------------------------------------------

def is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


class UidLease:
    """User ids for the kernels of one grading run, no other run on this machine uses meanwhile.

    Takes the first ``count`` ids from ``base`` up that are no account of the
    machine and whose lock file (``<tmp>/dvl-kernel-users/<uid>.lock``) no other
    run holds; processes a crashed run left under those ids are killed.
    Release with :meth:`close` (or use it as a context manager).
    """

    def __init__(self, base: int, count: int, span: int = 1000):
        import fcntl
        import pwd
        import tempfile
        folder = Path(tempfile.gettempdir()) / "dvl-kernel-users"
        folder.mkdir(mode=0o700, exist_ok=True)
        self.uids: list[int] = []
        self._files = []
        for uid in range(base, base + span):
            if len(self.uids) == count:
                break
            try:
                pwd.getpwuid(uid)
                continue  # an account
            except KeyError:
                pass
            f = open(folder / f"{uid}.lock", "w")
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                f.close()
                continue
            self._files.append(f)
            self.uids.append(uid)
            kill_job(Sandbox(token="-", uid=uid, gid=uid))
        if len(self.uids) < count:
            self.close()
            raise OSError(f"no {count} free user ids from {base} to {base + span - 1}")

    def close(self) -> None:
        for f in self._files:
            f.close()
        self._files = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def check_user(uid: int) -> None:
    """Fail clearly if this system cannot run processes as ``uid`` (a user namespace that
    maps fewer ids, a seccomp filter).

    Raises:
        OSError: naming the user id and what to do.
    """
    import subprocess
    try:
        subprocess.run(["/bin/sh", "-c", "exit 0"], user=uid, group=uid, extra_groups=[], cwd="/",
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=30, check=True)
    except (OSError, subprocess.SubprocessError) as e:
        raise OSError(f"cannot run kernels as user {uid} ({e}); pass --kernel-uid with a user id "
                      "this system allows, or -1 to run them as root") from None


def python_readable_by(uid: int, gid: int) -> bool:
    """Whether ``uid`` can run this Python: the interpreter and its libraries are readable."""
    import shlex
    import subprocess
    import sysconfig
    paths = [os.path.realpath(sys.executable), sysconfig.get_paths()["stdlib"],
             sysconfig.get_paths()["purelib"], os.path.dirname(os.path.abspath(__file__))]
    test = " && ".join(f"test -r {shlex.quote(p)}" + (f" -a -x {shlex.quote(p)}" if os.path.isdir(p) else "")
                       for p in paths)
    try:
        done = subprocess.run(["/bin/sh", "-c", test], user=uid, group=gid, extra_groups=[],
                              cwd="/", stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0


def kernel_env(box: Sandbox) -> dict[str, str]:
    """Environment variables added to the kernels' (the launcher reads :data:`ENV_SANDBOX`)."""
    return {ENV_TOKEN: box.token, ENV_SANDBOX: box.to_json(), "PYTHONNOUSERSITE": "1"}


def kernel_argv() -> list[str]:
    """The kernel command: this interpreter, through :func:`main`.

    ``-I``: the working directory (the submission's files) is not on ``sys.path``
    while the launcher runs, possibly as root, so a ``grader/`` handed in with a
    notebook cannot replace this module; IPython puts it back for the notebook.
    """
    return [sys.executable, "-I", "-m", "grader.sandbox", "-f", "{connection_file}"]


def _proc_status(pid: str) -> dict[str, str]:
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                out[key] = value.strip()
    except OSError:
        pass
    return out


def _has_token(pid: str, token: bytes) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return token in f.read().split(b"\0")
    except OSError:
        return False


def job_pids(box: Sandbox, ancestor: int | None = None) -> set[int]:
    """Live processes of a job: those of its user, those whose environment has its token
    and, given ``ancestor`` (a subreaper: see :func:`become_subreaper`), its descendants.

    Zombies are left out (they are dead; their parent reaps them).
    """
    token = f"{ENV_TOKEN}={box.token}".encode()
    me = os.getpid()
    found, parents = set(), {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        status = _proc_status(entry)
        if not status or status.get("State", "").startswith(("Z", "X")):
            continue
        parents[int(entry)] = int(status.get("PPid", "0") or 0)
        uids = status.get("Uid", "").split()
        if box.uid is not None and str(box.uid) in uids[:2]:
            found.add(int(entry))
        elif _has_token(entry, token):
            found.add(int(entry))
    if ancestor is not None:
        for pid in parents:
            p, seen = pid, 0
            while p in parents and seen < 64:
                p, seen = parents[p], seen + 1
                if p == ancestor:
                    found.add(pid)
                    break
    return found


def become_subreaper() -> None:
    """Orphans among this process's descendants become its children, not init's (Linux), so
    a daemon a kernel leaves behind (double fork, empty environment) is still found by
    :func:`job_pids` with ``ancestor=os.getpid()``."""
    if sys.platform.startswith("linux"):
        _prctl(36, 1)  # PR_SET_CHILD_SUBREAPER


def kill_job(box: Sandbox, rounds: int = 100, ancestor: int | None = None) -> bool:
    """SIGKILL every process of a job (see :func:`job_pids`), until none is left; ``False``
    if some survived."""
    for i in range(rounds):
        pids = job_pids(box, ancestor)
        if not pids:
            return True
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        time.sleep(min(0.01 * (i + 1), 0.2))
    return not job_pids(box, ancestor)


def _memory_of(pid: int) -> int:
    """Bytes of anonymous and shared memory of one process, pages shared with other
    processes counted in proportion (``Pss_Anon + Pss_Shmem``; forked workers share
    their parent's pages), else ``RssAnon + RssShmem`` on kernels without ``smaps_rollup``."""
    fields = {}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                key, _, value = line.partition(":")
                fields[key] = value
        keys = ("Pss_Anon", "Pss_Shmem")
    except OSError:
        fields = _proc_status(str(pid))
        keys = ("RssAnon", "RssShmem")
    total = 0
    for key in keys:
        value = fields.get(key, "0 kB").split()
        total += int(value[0]) * 1024 if value and value[0].isdigit() else 0
    return total


def memory_used(pids) -> int:
    """Bytes of memory held by the processes ``pids`` together (see :func:`_memory_of`)."""
    return sum(_memory_of(pid) for pid in pids)


def clean_shared_dirs(uid: int, dirs=SHARED_DIRS) -> None:
    """Remove what user ``uid`` left in world-writable directories (``/tmp``, ``/dev/shm``, ...)."""
    for top in dirs:
        try:
            entries = list(os.scandir(top))
        except OSError:
            continue
        for e in entries:
            try:
                if e.stat(follow_symlinks=False).st_uid != uid:
                    continue
                if e.is_dir(follow_symlinks=False):
                    shutil.rmtree(e.path, ignore_errors=True)
                else:
                    os.unlink(e.path)
            except OSError:
                pass


def prepare_kernel_dir(path: str | Path, box: Sandbox) -> None:
    """Make ``path`` (the kernel's working directory) safe to hand to the kernel.

    Files nbgrader hard-linked from the assignment's source become copies (a
    kernel writing to them would change the source). With a kernel user: what is
    there stays the grader's and read-only to the kernel; directories become
    sticky and group-writable for the kernel, which may add files (checkpoints)
    but not replace those of the assignment; files the kernel made in an earlier
    run of the notebook are removed.
    """
    path = Path(path)
    for dirpath, dirnames, filenames in os.walk(path):
        for name in filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            if box.uid is not None and st.st_uid == box.uid:
                p.unlink()
            elif stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
                tmp = p.with_name(p.name + ".dvl-copy")
                shutil.copy2(p, tmp)
                os.replace(tmp, p)
        for name in list(dirnames):
            p = Path(dirpath) / name
            if box.uid is not None and p.lstat().st_uid == box.uid:
                shutil.rmtree(p, ignore_errors=True)
                dirnames.remove(name)
    if box.uid is None:
        return
    for dirpath, dirnames, filenames in os.walk(path):
        os.chown(dirpath, 0, box.gid)
        os.chmod(dirpath, 0o1770)
        for name in filenames:
            p = os.path.join(dirpath, name)
            if not os.path.islink(p):
                os.chmod(p, os.stat(p).st_mode & 0o755)


def release_kernel_dir(path: str | Path, box: Sandbox) -> None:
    """After the last run: the kernel's working directory becomes the grader's alone again
    (it is moved into the output folder)."""
    if box.uid is None:
        return
    for dirpath, dirnames, filenames in os.walk(path):
        os.chown(dirpath, 0, 0)
        os.chmod(dirpath, 0o755)
        for name in filenames:
            p = os.path.join(dirpath, name)
            if not os.path.islink(p) and os.lstat(p).st_uid == box.uid:
                os.chown(p, 0, 0)


def prepare_home(box: Sandbox) -> None:
    """A fresh home for the kernel (its user's), and a fresh IPython directory (not its)."""
    for d in (box.home, box.ipython_dir):
        if d and os.path.lexists(d):
            shutil.rmtree(d)
    if box.ipython_dir:  # pre-made so IPython writes nothing there: no startup file can be planted
        for sub in ("startup", "log", "pid", "security", "db"):
            os.makedirs(os.path.join(box.ipython_dir, "profile_default", sub), mode=0o755)
    if box.home:
        os.makedirs(os.path.join(box.home, "tmp"), mode=0o700)
        if box.uid is not None:
            for d in (box.home, os.path.join(box.home, "tmp")):
                os.chown(d, box.uid, box.gid)


def die_with_parent() -> None:
    """Be killed when the parent process dies (Linux), so no grading outlives the grader."""
    if sys.platform.startswith("linux"):
        _prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


# --- the kernel's side --------------------------------------------------------------------------

_libc = None


def _prctl(*args) -> int:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc.prctl(*[ctypes.c_ulong(a) for a in args] + [ctypes.c_ulong(0)] * (5 - len(args)))


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


def _drop_privileges(box: Sandbox) -> None:
    """Become ``box.uid`` (keeping only the read capability if ``keep_read``); no way back."""
    PR_SET_KEEPCAPS, PR_CAPBSET_DROP, PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE = 8, 24, 47, 2
    keep = 1 << _CAP_DAC_READ_SEARCH if box.keep_read else 0
    for cap in range(64):  # nothing can be regained by running a set-user-id program
        if not keep >> cap & 1:
            _prctl(PR_CAPBSET_DROP, cap)
    if keep:
        _prctl(PR_SET_KEEPCAPS, 1)
    os.setgroups([])
    os.setgid(box.gid)
    os.setuid(box.uid)
    if keep:
        data = (_CapData * 2)()
        data[0].effective = data[0].permitted = data[0].inheritable = keep
        if _libc.capset(ctypes.byref(_CapHeader(0x20080522, 0)), data) != 0:
            raise OSError(ctypes.get_errno(), "capset failed")
        _prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, _CAP_DAC_READ_SEARCH)  # for python subprocesses
        _prctl(PR_SET_KEEPCAPS, 0)
    if os.getuid() != box.uid or os.geteuid() != box.uid:
        raise OSError(f"could not become user {box.uid}")


def _limit(kind: int, value: int) -> None:
    soft, hard = resource.getrlimit(kind)
    if hard != resource.RLIM_INFINITY:
        value = min(value, hard)
    resource.setrlimit(kind, (value, value))


def main(argv: list[str] | None = None) -> None:
    """The kernel launcher: limits, identity, then ipykernel with the kernel guard."""
    argv = list(sys.argv[1:] if argv is None else argv)
    sys.dont_write_bytecode = True  # -I ignores PYTHONDONTWRITEBYTECODE
    box = Sandbox.from_json(os.environ.pop(ENV_SANDBOX, "") or json.dumps({"token": "none"}))
    if box.memory_mb:
        _limit(resource.RLIMIT_DATA, box.memory_mb << 20)
    _limit(resource.RLIMIT_CORE, 0)
    _limit(resource.RLIMIT_FSIZE, _FSIZE)
    if box.uid is not None:
        _limit(resource.RLIMIT_NPROC, _NPROC)  # counts the processes of the kernel's user only
        i = argv.index("-f") + 1
        private = os.path.join(box.home, "kernel.json")  # the kernel cannot read the grader's copy
        shutil.copyfile(argv[i], private)
        os.chown(private, box.uid, box.gid)
        os.chmod(private, 0o600)
        argv[i] = private
        _drop_privileges(box)
        os.environ.update(USER=f"dvl{box.uid}", LOGNAME=f"dvl{box.uid}",
                          JUPYTER_RUNTIME_DIR=os.path.join(box.home, "runtime"))
    if box.home:
        os.environ.update(HOME=box.home, TMPDIR=os.path.join(box.home, "tmp"))
    if box.ipython_dir:
        os.environ["IPYTHONDIR"] = box.ipython_dir
    _prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: die with the grading process (after setuid)
    _prctl(38, 1)              # PR_SET_NO_NEW_PRIVS
    if os.getppid() == 1:      # the grading process died before the line above
        os._exit(1)

    from ipykernel.kernelapp import IPKernelApp

    from grader import kernel_guard
    app = IPKernelApp.instance()
    app.initialize(argv)
    kernel_guard.install(app.shell, app.kernel)
    app.start()


if __name__ == "__main__":
    main()
