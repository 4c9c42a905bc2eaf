"""Inside a grading kernel: undo what a notebook did to the kernel before and after each test.

A notebook runs in the same Python as the tests that grade it, so it can
change how later cells run: register an IPython input or AST transformer
that rewrites the hidden tests into no-ops, a custom exception handler or
display hook that hides a failure, replace ``builtins``, the import machinery
or a module of ``grader``. The grading kernel is started by
:mod:`grader.sandbox`, which calls :func:`install` before any cell runs; it
records the pristine state and wraps the kernel's ``do_execute`` so that the
grader can ask, with a request that never reaches IPython's cell machinery
(no transformer sees it)::

    #dvl-kernel-guard before <nonce>    before a test cell: restore; re-import grader's
                                        modules if the notebook touched them
    #dvl-kernel-guard after <nonce>     after it: restore again; what had to be undone
                                        was changed *while the test ran*

The reply carries ``dvl_guard = {"nonce", "changed"}``; ``changed`` lists what
was restored. A reply without it means the guard itself was removed.

This is a guard against the usual ways a notebook changes the kernel, not a
proof against code written to defeat this module (it runs in the same process).
"""
from __future__ import annotations

import builtins
import importlib
import importlib.util
import inspect
import os
import sys
import threading
import types

PREFIX = "#dvl-kernel-guard"
# Packages whose event callbacks (matplotlib's figure flushing, widgets) a test may register.
_TRUSTED = ("matplotlib_inline", "matplotlib", "ipykernel", "IPython", "ipywidgets", "comm")
# The shell's machinery, as attributes or traits of the instance (methods replaced on the
# instance are found as new callables of its __dict__, methods of the class by _classes).
_SHELL_ATTRS = ("compile", "displayhook", "display_pub", "display_trap", "builtin_trap",
                "input_transformer_manager", "prefilter_manager", "events", "InteractiveTB",
                "SyntaxTB")
_CLASS_MODULES = ("IPython.", "ipykernel.", "jupyter_client.", "traitlets.")
_IGNORED_BUILTINS = {"_", "__doc__", "__spec__", "__loader__", "__package__", "__name__"}

_state: "_Snapshot | None" = None
_MISSING = object()


def _trusted(fn) -> bool:
    """A callback defined in an installed package of :data:`_TRUSTED` (not in a notebook)."""
    fn = getattr(fn, "__func__", fn)
    module = getattr(fn, "__module__", "") or ""
    if module.split(".")[0] not in _TRUSTED:
        return False
    code = getattr(fn, "__code__", None)
    if code is None:
        return False
    top = sys.modules.get(module.split(".")[0])
    home = os.path.dirname(getattr(top, "__file__", "") or "") if top else ""
    return bool(home) and os.path.realpath(code.co_filename).startswith(os.path.realpath(home))


def _shell_attr(shell, name):
    """An attribute of the shell instance (its __dict__ or its trait values), else _MISSING."""
    if name in vars(shell):
        return vars(shell)[name]
    return getattr(shell, "_trait_values", {}).get(name, _MISSING)


def _is_method_of(obj, name: str) -> bool:
    """Whether ``name`` is a method of ``obj``'s class (so an instance attribute overrides it)."""
    return any(isinstance(vars(c).get(name), (types.FunctionType, staticmethod, classmethod))
               for c in type(obj).__mro__)


def _classes(*objects) -> list[type]:
    return [c for o in objects for c in type(o).__mro__
            if (c.__module__ or "").startswith(_CLASS_MODULES)]


class _Snapshot:
    """What the kernel looks like before the notebook runs."""

    def __init__(self, shell, kernel):
        self.shell, self.kernel = shell, kernel
        self.cwd = os.path.realpath(os.getcwd())
        tm = shell.input_transformer_manager
        self.manager = {a: list(getattr(tm, a)) for a in
                        ("cleanup_transforms", "line_transforms", "token_transformers")}
        self.post = list(shell.input_transformers_post)
        self.ast = list(shell.ast_transformers)
        pm = shell.prefilter_manager
        self.prefilter = {a: list(getattr(pm, a)) for a in ("_transformers", "_checkers")}
        self.events = {k: list(v) for k, v in shell.events.callbacks.items()}
        self.shell_attrs = {a: _shell_attr(shell, a) for a in _SHELL_ATTRS}
        self.custom_exceptions = shell.custom_exceptions
        self.shell_dict = set(vars(shell))
        self.kernel_dict = dict(vars(kernel))
        self.handlers = dict(kernel.shell_handlers)
        self.classes = {c: dict(vars(c)) for c in _classes(shell, kernel)}
        self.builtins = dict(vars(builtins))
        self.sys = {a: getattr(sys, a) for a in ("displayhook", "excepthook", "unraisablehook")}
        self.meta_path, self.path_hooks, self.path = list(sys.meta_path), list(sys.path_hooks), list(sys.path)
        self.modules = dict(sys.modules)
        self.importlib = {m.__name__: dict(vars(m)) for m in (importlib, importlib.util)}
        self.checks = _grader_state()  # updated around each test


def _has(items, x) -> bool:
    return any(y is x for y in items)  # identity: a notebook's object may say it equals anything


def _restore_list(target: list, pristine: list, what: str, changed: list[str],
                  keep=lambda x: False) -> None:
    """Make ``target`` hold ``pristine`` again, plus the additions ``keep`` accepts."""
    added = [x for x in target if not _has(pristine, x)]
    extra = [x for x in added if not keep(x)]
    if extra or any(not _has(target, x) for x in pristine):
        changed.append(what if len(extra) < 2 else f"{what} ({len(extra)})")
        target[:] = pristine + [x for x in added if keep(x)]


def restore() -> list[str]:
    """Put the kernel back as :func:`install` found it; returns what had to be undone."""
    s, changed = _state, []
    if s is None:
        return ["the kernel guard was never installed"]
    ip = s.shell
    for attr, value in s.shell_attrs.items():  # objects replaced on the shell
        if value is not _MISSING and _shell_attr(ip, attr) is not value:
            changed.append(f"IPython's {attr}")
            setattr(ip, attr, value)
    for key in set(vars(ip)) - s.shell_dict:  # methods of the shell replaced on the instance
        if _is_method_of(ip, key):
            changed.append(f"IPython's {key}")
            delattr(ip, key)
    tm = ip.input_transformer_manager
    for attr, pristine in s.manager.items():
        _restore_list(getattr(tm, attr), pristine, "an input transformer", changed)
    _restore_list(ip.input_transformers_post, s.post, "an input transformer", changed)
    _restore_list(ip.ast_transformers, s.ast, "an AST transformer", changed)
    for attr, pristine in s.prefilter.items():
        _restore_list(getattr(ip.prefilter_manager, attr), pristine, "an IPython prefilter", changed)
    if ip.custom_exceptions != s.custom_exceptions:
        changed.append("a custom exception handler")
        ip.custom_exceptions = s.custom_exceptions
    for event, callbacks in ip.events.callbacks.items():
        _restore_list(callbacks, s.events.get(event, []), f"a {event} callback", changed,
                      keep=_trusted)
    for attr, value in s.sys.items():
        if getattr(sys, attr) is not value:
            changed.append(f"sys.{attr}")
            setattr(sys, attr, value)
    _restore_objects(s, changed)
    return changed


def _restore_objects(s: _Snapshot, changed: list[str]) -> None:
    """Kernel and shell classes, builtins, the import machinery, modules replaced in sys.modules."""
    for key, value in list(vars(s.kernel).items()):  # methods of the kernel replaced on it
        if not _is_method_of(s.kernel, key) or s.kernel_dict.get(key, _MISSING) is value:
            continue
        changed.append(f"the kernel's {key}")
        if key in s.kernel_dict:
            setattr(s.kernel, key, s.kernel_dict[key])
        else:
            delattr(s.kernel, key)
    handlers = s.kernel.shell_handlers
    if set(handlers) != set(s.handlers) or any(handlers[k] is not v for k, v in s.handlers.items()):
        changed.append("the kernel's message handlers")
        s.kernel.shell_handlers.clear()
        s.kernel.shell_handlers.update(s.handlers)
    for cls, pristine in s.classes.items():  # methods only: classes keep caches too
        methods = {k: v for k, v in pristine.items() if _is_function(v)}
        for key, value in list(vars(cls).items()):
            if key not in pristine and _is_function(value):
                changed.append(f"{cls.__name__}.{key}")
                delattr(cls, key)
        for key, value in methods.items():
            if vars(cls).get(key, _MISSING) is not value:
                changed.append(f"{cls.__name__}.{key}")
                setattr(cls, key, value)
    _restore_namespace(builtins, s.builtins, "builtins.", changed, ignore=_IGNORED_BUILTINS)
    for mod in (importlib, importlib.util):
        _restore_namespace(mod, s.importlib[mod.__name__], f"{mod.__name__}.", changed)
    # import hooks: libraries add theirs too; those the notebook defined go
    _restore_list(sys.meta_path, s.meta_path, "sys.meta_path", changed,
                  keep=lambda x: not _from_notebook(x))
    _restore_list(sys.path_hooks, s.path_hooks, "sys.path_hooks", changed,
                  keep=lambda x: not _from_notebook(x))
    for name, module in s.modules.items():  # put back silently: some libraries swap modules
        if name in sys.modules and sys.modules[name] is not module and \
                name.split(".")[0] in ("builtins", "importlib", "sys", "IPython", "ipykernel"):
            sys.modules[name] = module
    if sys.gettrace() is not None or threading._trace_hook is not None:
        changed.append("a trace function")
        sys.settrace(None)
        threading.settrace(None)
    if sys.getprofile() is not None or threading._profile_hook is not None:
        changed.append("a profile function")
        sys.setprofile(None)
        threading.setprofile(None)


def _restore_namespace(obj, pristine: dict, label: str, changed: list[str],
                       ignore=frozenset()) -> None:
    """Put back what ``obj`` (a module) had: names added since are left (submodules register
    themselves on their package; a new name replaces nothing)."""
    current = vars(obj)
    for key, value in pristine.items():
        if key in ignore or isinstance(value, types.ModuleType):
            continue
        if current.get(key, _MISSING) is not value:
            changed.append(f"{label}{key}")
            setattr(obj, key, value)


def _from_notebook(obj) -> bool:
    """Whether ``obj`` (a function, a class, an instance of one) was defined by the notebook:
    in a cell (no source file, or ``__main__``) or in a file of its working directory."""
    target = obj if isinstance(obj, (types.FunctionType, type)) else type(obj)
    cwd = (_state.cwd if _state else os.path.realpath(os.getcwd())) + os.sep
    if isinstance(target, type):
        if target.__module__ == "__main__":
            return True
        module = sys.modules.get(target.__module__)
        if module is None:
            return True
        path = getattr(module, "__file__", None)
        return path is not None and os.path.realpath(path).startswith(cwd)
    code = getattr(target, "__code__", None)
    if code is None:
        return False
    return not os.path.isfile(code.co_filename) or \
        os.path.realpath(code.co_filename).startswith(cwd)


def _is_function(value) -> bool:
    return isinstance(value, (types.FunctionType, staticmethod, classmethod, property,
                              types.BuiltinFunctionType))


def _grader_modules() -> dict:
    return {n: m for n, m in list(sys.modules.items()) if n == "grader" or n.startswith("grader.")}


def _grader_state() -> dict:
    """``grader``'s modules and their namespaces, to compare with later."""
    return {n: (m, dict(vars(m))) for n, m in _grader_modules().items()}


def _grader_changes(s: _Snapshot) -> list[str]:
    """How ``grader``'s modules differ from ``s.checks``: modules replaced or loaded from
    elsewhere (a ``grader/`` in the working directory), names rebound or removed, functions
    or classes of the notebook put into them."""
    home = os.path.dirname(os.path.realpath(__file__)) + os.sep
    found = []
    for name, module in _grader_modules().items():
        file = os.path.realpath(getattr(module, "__file__", None) or "/nonexistent")
        old = s.checks.get(name)
        if not file.startswith(home) or old is not None and old[0] is not module:
            found.append(f"module {name}")
            continue
        current = vars(module)
        for key, value in (old[1].items() if old else ()):
            if current.get(key, _MISSING) is not value:
                found.append(f"{name}.{key}")
        for key, value in list(current.items()):
            if (old is None or key not in old[1]) and isinstance(value, (types.FunctionType, type)) \
                    and _from_notebook(value):
                found.append(f"{name}.{key}")
    return found


def _reload_grader(s: _Snapshot) -> None:
    """Forget ``grader``'s modules and import ``grader.checks`` again from the installed package,
    with the working directory off ``sys.path``; the test imports its checks afresh."""
    for name in _grader_modules():
        del sys.modules[name]
    importlib.invalidate_caches()
    saved = list(sys.path)
    try:
        sys.path[:] = [p for p in s.path if p not in ("", ".") and
                       os.path.realpath(p or ".") != s.cwd]
        importlib.import_module("grader.checks")
    finally:
        sys.path[:] = saved


def _handle(kind: str) -> list[str]:
    """A guard request: ``before`` or ``after`` a test cell."""
    s = _state
    changed = restore()
    grader = _grader_changes(s)
    if kind == "before" and grader:
        _reload_grader(s)
    s.checks = _grader_state()
    return changed + [f"grader's {x}" for x in grader]


def install(shell, kernel) -> None:
    """Record the kernel's pristine state and answer the grader's guard requests.

    Called by :mod:`grader.sandbox` after the kernel is initialised, before any cell.
    """
    global _state
    original = kernel.do_execute

    async def do_execute(code, silent, store_history=True, user_expressions=None,
                         allow_stdin=False, **kwargs):
        if isinstance(code, str) and code.startswith(PREFIX):
            _, kind, nonce = (code.split() + ["", "", ""])[:3]
            try:
                changed = _handle(kind)
            except Exception as e:  # noqa: BLE001 - report, never crash the kernel
                changed = [f"the guard failed ({type(e).__name__}: {e})"]
            return {"status": "ok", "execution_count": kernel.execution_count,
                    "user_expressions": {}, "payload": [],
                    "dvl_guard": {"nonce": nonce, "changed": changed}}
        return await original(code, silent, store_history, user_expressions, allow_stdin, **kwargs)

    do_execute.__signature__ = inspect.signature(original)
    kernel.do_execute = do_execute
    _state = _Snapshot(shell, kernel)
    _state.checks = _grader_state()  # with _state itself set
