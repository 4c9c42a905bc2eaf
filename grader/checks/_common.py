"""What every phase's checks share.

- :func:`check` decorates a ``check_<name>`` function: no output, no warnings,
  the global random state left as it was, gradients on, autocast off.
- :func:`call` runs the learner's code: output swallowed, exceptions turned
  into ``AssertionError`` naming the call, and calls into a forbidden
  reference module (``dvl_helpers.quantizers`` ...) detected while it runs.
- :func:`assert_own_implementation` finds the same reference use statically,
  in the answer's bytecode, globals, closures and base classes.
- :func:`expect_tensor`, :func:`expect_scalar`, :func:`assert_close`,
  :func:`to_f64`: type, shape and value assertions. Answers are tensors, so
  everything they return is checked with ``type(x) is torch.Tensor`` and
  copied to CPU float64 through functions captured when this module is
  imported (from ``torch._C``, under ``DisableTorchFunction``), so an answer
  that patches ``torch.allclose``, ``Tensor.__eq__`` or ``Tensor.sub`` cannot
  change the verdict. Results are never compared with ``==`` on the
  learner's objects.
- :class:`OpRecorder`: records every tensor op that a call dispatches (a
  ``TorchDispatchMode``), with the size of the largest tensor it allocates
  and how many ops it runs: the tool for memory rules such as "no
  ``[N, K, D]`` tensor" and "no Python loop over rows".
"""
from __future__ import annotations

import contextlib
import dis
import functools
import io
import os
import sys
import types
import warnings

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

# --------------------------------------------------------------------------
# Captured at import: answers may monkeypatch torch.* or torch.Tensor.*, but
# not these references (TensorBase is the C base class of torch.Tensor).
_Tensor = torch.Tensor
_Parameter = torch.nn.Parameter
_Module = torch.nn.Module
_TB = torch._C.TensorBase
_VF = torch._C._VariableFunctions
_detach = _TB.detach
_to = _TB.to
_item = _TB.item
_tolist = _TB.tolist
_size = _TB.size
_dtype_of = _TB.__dict__["dtype"].__get__
_requires_grad_of = _TB.__dict__["requires_grad"].__get__
_is_floating_point = _TB.is_floating_point
_numel = _TB.numel
_sub = _VF.sub
_abs = _VF.abs
_amax = _VF.amax
_isfinite = _VF.isfinite
_all = _VF.all
_any = _VF.any
_grad = torch.autograd.grad
_no_torch_function = torch._C.DisableTorchFunction
_float64 = torch.float64
_long = torch.long
_type = type
_isinstance = isinstance
_tuple = tuple
_float = float
_int = int
_len = len
_getprofile = sys.getprofile
_setprofile = sys.setprofile

_MISSING = object()


# --------------------------------------------------------------------------
# Running checks and answers

@contextlib.contextmanager
def quiet():
    """Swallow stdout, stderr and warnings (a test cell that writes to stderr scores 0)."""
    sink = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(sink), \
            contextlib.redirect_stderr(sink):
        warnings.simplefilter("ignore")
        yield


def check(fn):
    """Decorator for ``check_<name>(answer)`` functions.

    Runs the check quietly, with gradients on and autocast off, and restores
    the global random state afterwards (constructing a learner's module draws
    from it). Before and after, it asserts that torch has not been modified
    (see :func:`assert_torch_untouched`): a check passes only if the verdict
    was reached with the real torch.
    """
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        assert_torch_untouched()
        threads = torch.get_num_threads()
        try:
            # the checks' tensors are tiny: one thread avoids pool wake-ups
            # that cost milliseconds per op on a busy machine
            torch.set_num_threads(1)
            with quiet(), torch.random.fork_rng(devices=[]), torch.enable_grad(), \
                    torch.autocast("cpu", enabled=False):
                result = fn(*args, **kwargs)
        finally:
            torch.set_num_threads(threads)
        assert_torch_untouched()
        return result
    return wrapper


# Namespaces whose functions the checks (and their references) rely on. Torch
# itself wraps some of them (dynamo patches nn.Module.__init__), so the test
# is where a function comes from, not whether it changed: anything defined
# outside torch (a lambda in the notebook) is foreign.
_GUARDED = (
    ("torch", torch), ("torch.Tensor", torch.Tensor), ("torch.nn.functional", torch.nn.functional),
    ("torch.linalg", torch.linalg), ("torch.special", torch.special),
    ("torch.autograd", torch.autograd), ("torch.nn.Module", torch.nn.Module),
    ("torch.nn.Parameter", torch.nn.Parameter),
)
_FOREIGN_OK = ("torch", "collections", "typing", "typing_extensions", "builtins", "functools")
_BUILTINS_USED = ("abs", "all", "any", "bool", "dict", "float", "getattr", "id", "int",
                  "isinstance", "issubclass", "len", "list", "max", "min", "next", "range",
                  "round", "set", "sorted", "str", "sum", "tuple", "type", "zip")


def _origin(value):
    if _isinstance(value, (staticmethod, classmethod)):
        value = value.__func__
    elif _isinstance(value, property):
        value = value.fget
    elif _isinstance(value, functools.partial):
        value = value.func
    elif _isinstance(value, types.MethodType):
        value = value.__func__
    if _isinstance(value, (types.FunctionType, type)):
        return getattr(value, "__module__", None) or "?"
    return None


def tampered():
    """Names in torch (and the builtins the checks use) replaced by foreign code."""
    import builtins
    found = []
    for label, namespace in _GUARDED:
        for key, value in list(vars(namespace).items()):
            if key.startswith("_") and not (key.startswith("__") and key.endswith("__")):
                continue
            origin = _origin(value)
            if origin is not None and not origin.split(".")[0] in _FOREIGN_OK:
                found.append(f"{label}.{key}")
    for key in _BUILTINS_USED:
        value = getattr(builtins, key, None)
        if getattr(value, "__module__", None) != "builtins":
            found.append(f"builtins.{key}")
    from torch.overrides import _get_current_function_mode_stack
    for mode in _get_current_function_mode_stack():
        if not (_type(mode).__module__ or "").startswith("torch."):
            found.append(f"an active {_type(mode).__name__} (TorchFunctionMode)")
    if torch._C._len_torch_dispatch_stack():
        found.append("an active TorchDispatchMode")
    return found


def assert_torch_untouched():
    """Fail if the notebook has monkeypatched torch or pushed a torch mode."""
    found = tampered()
    if found:
        more = f" (and {_len(found) - 1} more)" if _len(found) > 1 else ""
        raise AssertionError(
            f"the notebook has replaced {found[0]}{more}; checks cannot run on a modified "
            "torch: remove that code and restart the kernel")


def generator(seed):
    """A fresh CPU ``torch.Generator`` (checks never touch the global one)."""
    return torch.Generator().manual_seed(int(seed))


def randn(gen, *shape, scale=1.0, dtype=torch.float32):
    """Normal samples from ``gen`` (CPU)."""
    return torch.randn(*shape, generator=gen, dtype=dtype) * scale


def noncontiguous(t):
    """The same values in non-contiguous memory, as a leaf with the same ``requires_grad``.

    ``[..., n]`` tensors are cut from ``[..., n + 1]`` rows (like a slice of
    a wider tensor), so ``.view`` across dims fails on them as it would on a
    learner's real non-contiguous latents; 1-D tensors take every other
    element of a longer one.
    """
    shape = _tuple(t.shape)
    if _len(shape) >= 2:
        # rows padded by one element: no two dims can be merged by .view
        big = torch.zeros(shape[:-1] + (shape[-1] + 1,), dtype=t.dtype)
        with torch.no_grad():
            big[..., :shape[-1]] = t
        out = big[..., :shape[-1]]
    elif _len(shape) == 1 and shape[0] > 1:
        big = torch.zeros(2 * shape[0], dtype=t.dtype)
        with torch.no_grad():
            big[::2] = t
        out = big[::2]
    else:
        out = t.detach().clone()
    return out.requires_grad_(t.requires_grad)


def channels_last(t):
    """A ``[B, C, H, W]`` tensor in channels-last memory (what conv nets often emit)."""
    out = t.detach().contiguous(memory_format=torch.channels_last)
    return out.requires_grad_(t.requires_grad)


def _short(text, limit=300):
    text = " ".join(str(text).split())
    return text if _len(text) <= limit else text[:limit - 3] + "..."


def call(fn, *args, what, forbid=None, **kwargs):
    """Call the learner's ``fn(*args, **kwargs)`` quietly and return its result.

    Args:
        what: how to name the call in messages, e.g. ``"quantize(z_e, codebook)"``.
        forbid: ``(module, names)`` of a reference implementation the answer
            must not call (``names`` None: anything in the module).

    Raises:
        AssertionError: the call raised, or it ran code of ``forbid``.
    """
    watch = ReferenceWatch(*forbid) if forbid else contextlib.nullcontext()
    error = None
    try:
        with quiet(), watch:
            out = fn(*args, **kwargs)
    except Exception as err:   # the learner's code may raise anything
        error = err
    if forbid and watch.used:
        raise AssertionError(_reference_message(what.split("(")[0], watch.used))
    if error is not None:
        raise AssertionError(
            f"{what} raised {_type(error).__name__}: {_short(error)}") from error
    return out


# --------------------------------------------------------------------------
# Types, shapes, values

def kind(x):
    """Short description of what an answer returned, for messages."""
    if _type(x) is _Tensor:
        return f"a tensor of shape {_tuple(_size(x))}"
    if _isinstance(x, _Tensor):
        return f"a {_type(x).__name__} (a tensor subclass)"
    if _isinstance(x, (tuple, list)):
        return f"a {_type(x).__name__} of length {_len(x)}"
    if x is None:
        return "None"
    return f"a {_type(x).__name__}"


def expect_tensor(x, name, *, shape=None, dims=None, dtype=None, floating=False):
    """Assert ``x`` is a plain ``torch.Tensor`` with the given shape and dtype.

    Args:
        shape: the expected shape (tuple); ``dims`` names it, e.g. ``"[B, H, W]"``.
        dtype: the exact dtype required (e.g. ``torch.long``).
        floating: require a floating-point dtype.
    """
    if _type(x) is not _Tensor:
        raise AssertionError(f"{name} must be a torch.Tensor, got {kind(x)}")
    got = _tuple(_size(x))
    if shape is not None and got != _tuple(shape):
        label = f"{dims} = {_tuple(shape)}" if dims else f"{_tuple(shape)}"
        raise AssertionError(f"{name} must have shape {label}, got {got}")
    if dtype is not None and _dtype_of(x) is not dtype:
        raise AssertionError(f"{name} must have dtype {dtype}, got {_dtype_of(x)}")
    if floating and not _is_floating_point(x):
        raise AssertionError(
            f"{name} must be a floating-point tensor, got dtype {_dtype_of(x)}")
    return x


def expect_scalar(x, name, *, allow_number=False):
    """Assert ``x`` is a 0-dim floating tensor (or a real number if allowed); return a float."""
    if allow_number and _type(x) in (float, int):
        value = _float(x)
    else:
        if _type(x) is not _Tensor:
            raise AssertionError(f"{name} must be a scalar torch.Tensor, got {kind(x)}")
        if _tuple(_size(x)) != ():
            raise AssertionError(
                f"{name} must be a scalar (0-dim) tensor, got shape {_tuple(_size(x))}")
        if not _is_floating_point(x):
            raise AssertionError(
                f"{name} must be a floating-point tensor, got dtype {_dtype_of(x)}")
        value = _float(_item(to_f64(x)))
    if value != value or value in (float("inf"), float("-inf")):
        raise AssertionError(f"{name} must be finite, got {value}")
    return value


def expect_pair(x, name):
    """Assert ``x`` is a tuple (or list) of two items; return them."""
    if _type(x) not in (tuple, list) or _len(x) != 2:
        raise AssertionError(f"{name} must return a tuple of 2 items, got {kind(x)}")
    return x[0], x[1]


def to_f64(x):
    """A detached CPU float64 copy of a tensor, made without the learner's overrides."""
    with _no_torch_function():
        return _to(_detach(x), device="cpu", dtype=_float64, copy=True)


def to_long(x):
    """A detached CPU int64 copy of an integer tensor."""
    with _no_torch_function():
        return _to(_detach(x), device="cpu", dtype=_long, copy=True)


def all_finite(x):
    """Whether every element of a tensor is finite."""
    with _no_torch_function():
        return _numel(x) == 0 or _bool(_all(_isfinite(to_f64(x))))


def _bool(t):
    return bool(_item(t))


def max_abs(x):
    """``max |x|`` as a Python float (0 for an empty tensor)."""
    with _no_torch_function():
        x = to_f64(x)
        return _float(_item(_amax(_abs(x)))) if _numel(x) else 0.0


def max_excess(actual, expected, atol):
    """``max(|actual - expected| - atol)`` over all elements (float64, Python float).

    ``atol`` is a number or a float64 tensor broadcastable to ``expected``.
    """
    with _no_torch_function():
        diff = _sub(_abs(_sub(to_f64(actual), to_f64(expected))), atol)
        return _float(_item(_amax(diff))) if _numel(diff) else float("-inf")


def assert_close(actual, expected, what, *, atol=1e-6, rtol=1e-5, hint=""):
    """Assert ``|actual - expected| <= atol + rtol * |expected|`` everywhere, in float64.

    ``actual`` is a learner tensor (already type- and shape-checked);
    ``expected`` a float64 reference. NaN and inf always fail.
    """
    if not all_finite(actual):
        raise AssertionError(f"{what} contains NaN or inf{hint}")
    with _no_torch_function():
        expected = to_f64(expected)
        tol = _abs(expected) * rtol + atol
        excess = max_excess(actual, expected, tol)
        if excess > 0:
            err = _float(_item(_amax(_abs(_sub(to_f64(actual), expected)))))
            raise AssertionError(f"{what} is wrong (largest error {err:.3g}){hint}")


def assert_unchanged(before, after, what):
    """Assert an input tensor still holds its values (answers must not modify inputs)."""
    if max_excess(after, before, 0.0) > 0 or not all_finite(after) and all_finite(before):
        raise AssertionError(f"{what} must not modify its inputs in place")


def grads(output, inputs):
    """Gradients of ``output`` (scalar tensor) w.r.t. ``inputs``; None where unreached.

    An output that is not connected to the graph gives all None.
    """
    result = [None] * _len(inputs)
    if _type(output) is not _Tensor or not _requires_grad_of(output):
        return result
    wanted = [i for i, t in enumerate(inputs) if _requires_grad_of(t)]
    if not wanted:
        return result
    try:
        found = _grad(output, [inputs[i] for i in wanted], allow_unused=True, retain_graph=True)
    except RuntimeError:
        return result
    for i, g in zip(wanted, found):
        result[i] = g
    return result


def is_zero_grad(g):
    """True if a gradient is absent (None) or all zeros."""
    return g is None or max_abs(g) == 0.0


# --------------------------------------------------------------------------
# Answers that call the course's reference implementation

def _reference_message(label, used):
    return (f"{label} calls the course's reference implementation {used}; "
            "the answer must implement it, not call it")


def _forbidden_table(module, names):
    """``{id(obj): qualified name}`` of what ``module`` defines (restricted to ``names``)."""
    mod = sys.modules.get(module)
    table = {}
    if mod is None:
        return None, table
    for key, value in list(vars(mod).items()):
        if getattr(value, "__module__", None) == module and (names is None or key in names):
            table[id(value)] = f"{module}.{key}"
    return mod, table


def find_reference_use(obj, module, names=None):
    """Name the reference object that ``obj`` uses, or None.

    Looks, without running anything, at: ``obj`` itself; its base classes;
    ``functools.partial``/``__wrapped__``/bound-method wrappers; and the
    bytecode of every function and method reachable from it (imports of
    ``module``, globals and attribute chains such as ``dvl.quantizers.quantize``
    resolved in the function's globals, closure cells and defaults, nested
    functions, and other functions of the same notebook it calls). Runtime
    routes that escape this are caught by :class:`ReferenceWatch`.
    """
    mod, table = _forbidden_table(module, names)
    parts = module.split(".")

    def forbidden(value):
        hit = table.get(id(value))
        if hit is not None:
            return hit
        if mod is not None and value is mod and names is None:
            return module
        if id(_type(value)) in table and not _isinstance(value, type):
            return table[id(_type(value))]
        return None

    def code_objects(code):
        yield code
        for const in code.co_consts:
            if _isinstance(const, types.CodeType):
                yield from code_objects(const)

    def scan_code(code, globals_, home, queue):
        co_names = set(code.co_names)
        chain = _MISSING       # the value an attribute chain (dvl.quantizers.x) has reached
        pending = None         # the module was reached: name what is taken from it, if anything
        imported = None        # the module named by the last IMPORT_NAME
        for ins in dis.get_instructions(code):
            op, arg = ins.opname, ins.argval
            if op in ("CACHE", "PRECALL", "EXTENDED_ARG", "NOP"):
                continue
            if op == "IMPORT_NAME":
                if pending:
                    return pending
                imported = arg
                chain = _MISSING
                if (arg == module or arg.startswith(module + ".")) and names is None:
                    pending = module
                continue
            if op == "IMPORT_FROM" and imported is not None:
                full = f"{imported}.{arg}"
                if imported == module and (names is None or arg in names):
                    return f"{module}.{arg}"
                if (full == module or full.startswith(module + ".")) and names is None:
                    return module
                continue
            if op in ("LOAD_ATTR", "LOAD_METHOD") and chain is not _MISSING:
                if _isinstance(chain, types.ModuleType) and _isinstance(arg, str):
                    value = vars(chain).get(arg, _MISSING)
                    chain = value
                    if value is not _MISSING:
                        hit = forbidden(value)
                        if hit and hit != module:
                            return hit
                        if hit:
                            pending = hit
                            continue
                else:
                    chain = _MISSING
                if pending:
                    return pending
                continue
            if pending:
                return pending
            if op in ("STORE_FAST", "STORE_NAME", "STORE_GLOBAL", "STORE_DEREF", "POP_TOP"):
                chain = _MISSING
                continue        # keep `imported` across `from m import a, b`
            imported = None
            chain = _MISSING
            if op in ("LOAD_GLOBAL", "LOAD_NAME") and _isinstance(arg, str):
                value = globals_.get(arg, _MISSING)
                chain = value
                if value is not _MISSING:
                    hit = forbidden(value)
                    if hit and hit != module:
                        return hit
                    if hit:
                        pending = hit
                        continue
                    # other functions and classes of the same notebook/module
                    if _isinstance(value, (types.FunctionType, type)) and \
                            getattr(value, "__module__", None) == home:
                        queue.append(value)
        if pending:
            return pending
        # routes the walk above cannot follow: a local alias of the package,
        # importlib.import_module("dvl_helpers.quantizers")
        wanted = names is None or bool(co_names & set(names))
        for const in code.co_consts:
            if _isinstance(const, str) and (const == module or const.startswith(module + ".")) \
                    and wanted:
                return module
        if all(p in co_names for p in parts) and wanted:
            return module
        return None

    queue = [obj]
    seen = set()
    while queue:
        o = queue.pop()
        if id(o) in seen:
            continue
        seen.add(id(o))
        hit = forbidden(o)
        if hit:
            return hit
        if _isinstance(o, functools.partial):
            queue += [o.func, *o.args, *o.keywords.values()]
            continue
        if _isinstance(o, types.MethodType):
            queue.append(o.__func__)
            continue
        if _isinstance(o, (staticmethod, classmethod)):
            queue.append(o.__func__)
            continue
        if _isinstance(o, property):
            queue += [f for f in (o.fget, o.fset, o.fdel) if f is not None]
            continue
        if _isinstance(o, type):
            for base in o.__mro__:
                hit = forbidden(base)
                if hit:
                    return hit
            for klass in o.__mro__:
                if (klass.__module__ or "").split(".")[0] in ("torch", "builtins"):
                    continue
                queue += list(vars(klass).values())
            continue
        wrapped = getattr(o, "__wrapped__", None) if _isinstance(o, types.FunctionType) else None
        if wrapped is not None:
            queue.append(wrapped)
        if _isinstance(o, types.FunctionType):
            for value in (o.__defaults__ or ()) + _tuple((o.__kwdefaults__ or {}).values()):
                queue.append(value)
            for cell in o.__closure__ or ():
                try:
                    queue.append(cell.cell_contents)
                except ValueError:      # empty cell
                    pass
            for code in code_objects(o.__code__):
                hit = scan_code(code, o.__globals__, o.__module__, queue)
                if hit:
                    return hit
    return None


def assert_own_implementation(obj, label, module, names=None):
    """Fail if ``obj`` is, subclasses, wraps or calls ``module``'s reference code."""
    used = find_reference_use(obj, module, names)
    if used:
        raise AssertionError(_reference_message(label, used))


class ReferenceWatch:
    """Context manager: did any code of ``module`` (restricted to ``names``) run?

    Uses ``sys.setprofile`` for the duration: every Python function called is
    matched by its file (``.../dvl_helpers/quantizers.py``) and its top-level
    name, so the reference is caught however it was reached (aliases,
    ``importlib``, objects hidden in containers). ``used`` holds the first
    qualified name seen, else None.
    """

    def __init__(self, module, names=None):
        self.module = module
        self.names = None if names is None else set(names)
        self.used = None
        rel = module.replace(".", os.sep)
        self._suffixes = (os.sep + rel + ".py", os.sep + rel + os.sep + "__init__.py")
        if os.sep != "/":
            rel = module.replace(".", "/")
            self._suffixes += ("/" + rel + ".py", "/" + rel + "/__init__.py")
        self._previous = None

    def _profile(self, frame, event, arg):
        if event != "call" or self.used is not None:
            return
        code = frame.f_code
        if not code.co_filename.endswith(self._suffixes):
            return
        top = getattr(code, "co_qualname", code.co_name).split(".")[0]
        if self.names is None or top in self.names:
            self.used = f"{self.module}.{top}" if top != "<module>" else self.module

    def __enter__(self):
        self._previous = _getprofile()
        _setprofile(self._profile)
        return self

    def __exit__(self, *exc):
        previous = self._previous
        if previous is None or callable(previous):
            _setprofile(previous)
        else:
            # a C-level profiler (cProfile) cannot be passed back to setprofile;
            # enable() reinstalls it
            _setprofile(None)
            enable = getattr(previous, "enable", None)
            if enable is not None:
                enable()
        return False


# --------------------------------------------------------------------------
# Recording the ops a call runs

class OpRecorder(TorchDispatchMode):
    """Records every aten op run inside it: how many, and the largest allocation.

    ``largest`` is the element count of the largest storage among op
    outputs (views share their base's storage, so a broadcast ``expand`` of
    an input costs nothing, while ``a[:, None] - b[None]`` shows its full
    ``[N, K, D]`` result); ``largest_op``/``largest_shape`` say where it came
    from; ``count`` is the number of ops (a Python loop over rows shows up as
    a count that grows with the number of rows).
    """

    @classmethod
    def _should_skip_dynamo(cls):
        # by default torch wraps __torch_dispatch__ in dynamo's disable(), whose
        # first use imports torch._dynamo (seconds); nothing here is compiled
        return False

    def __init__(self):
        super().__init__()
        self.count = 0
        self.largest = 0
        self.largest_op = None
        self.largest_shape = None

    def __torch_dispatch__(self, func, types_, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.count += 1
        for t in tree_flatten(out)[0]:
            if _isinstance(t, _Tensor):
                try:
                    n = t.untyped_storage().nbytes() // max(t.element_size(), 1)
                except Exception:   # storage-less tensors (rare): count their elements
                    n = t.numel()
                if n > self.largest:
                    self.largest = n
                    self.largest_op = str(func)
                    self.largest_shape = _tuple(t.shape)
        return out
