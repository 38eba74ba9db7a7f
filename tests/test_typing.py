"""The public API's type hints, the engine's stub and the ``py.typed`` marker.

* Every public callable of every public module (``lstmfast`` and each submodule whose dotted name
  has no part starting with ``_``) annotates every parameter but self/cls, ``*args`` and
  ``**kwargs``, and its return.
* ``lstmfast/_core.pyi`` names exactly the members of the compiled ``lstmfast._core``, each
  function with the parameters the binding declares (names, order, defaults) and its return type.
* ``py.typed`` lies in the package directory (PEP 561: type checkers read an installed package's
  hints only then), and mypy, run like a user would, checks a typical program against them.
"""
import ast
import importlib
import inspect
import os
import pkgutil
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import lstmfast
from lstmfast import _core

PACKAGE_DIR = Path(lstmfast.__file__).resolve().parent

# Public callables allowed to lack hints: none (an entry that gains them must leave this set).
UNANNOTATED_ELSEWHERE: set = set()


def public_modules() -> list:
    names = ["lstmfast"] + [m.name for m in pkgutil.walk_packages(lstmfast.__path__, "lstmfast.")
                            if not any(part.startswith("_") for part in m.name.split(".")[1:])]
    return [importlib.import_module(name) for name in names]


def public_members(module) -> list:
    """``__all__``'s objects, or else the public names the module defines itself (not its imports)."""
    names = getattr(module, "__all__", None)
    if names is None:
        names = [n for n, obj in vars(module).items()
                 if not n.startswith("_") and getattr(obj, "__module__", None) == module.__name__]
    return [getattr(module, n) for n in names]


def class_functions(cls) -> list:
    """The public methods (and ``__init__``, ``__call__``, property accessors) of ``cls`` and of its
    lstmfast base classes, private ones included: their methods are the public class's API."""
    out = []
    for klass in cls.__mro__:
        if not klass.__module__.startswith("lstmfast"):
            continue
        for name, member in vars(klass).items():
            if name.startswith("_") and name not in ("__init__", "__call__"):
                continue
            if isinstance(member, (staticmethod, classmethod)):
                member = member.__func__
            if isinstance(member, property):
                out += [f for f in (member.fget, member.fset) if f is not None]
            elif inspect.isfunction(member):
                out.append(member)
    return out


def missing_hints(fn) -> list:
    """What ``fn`` leaves unannotated: parameter names, and "return"."""
    fn = inspect.unwrap(fn)  # functools.wraps: the optimizers' Keras 2 keyword shim, contextmanager
    annotations = fn.__annotations__
    missing = [p.name for p in inspect.signature(fn).parameters.values()
               if p.name not in ("self", "cls") and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
               and p.name not in annotations]
    return missing + ([] if "return" in annotations else ["return"])


def unannotated() -> dict:
    """``{"module.qualname": [what lacks a hint]}`` over every public callable."""
    found, seen = {}, set()

    def check(fn) -> None:
        fn = inspect.unwrap(fn)
        if id(fn) in seen or not getattr(fn, "__module__", "").startswith("lstmfast"):
            return
        seen.add(id(fn))
        missing = missing_hints(fn)
        if missing:
            found[f"{fn.__module__}.{fn.__qualname__}"] = missing

    for module in public_modules():
        for obj in public_members(module):
            if inspect.isclass(obj):
                if id(obj) not in seen:
                    seen.add(id(obj))
                    for fn in class_functions(obj):
                        check(fn)
            elif inspect.isfunction(obj):
                check(obj)
    return found


def test_public_callables_are_annotated():
    found = unannotated()
    offenders = sorted(f"{name}: {', '.join(what)}" for name, what in found.items()
                       if name not in UNANNOTATED_ELSEWHERE)
    assert not offenders, "public callables without complete type hints:\n" + "\n".join(offenders)
    annotated_now = sorted(UNANNOTATED_ELSEWHERE - set(found))
    assert not annotated_now, f"these are annotated (or gone) now: remove them from UNANNOTATED_ELSEWHERE: " \
                              f"{annotated_now}"


def test_the_walk_sees_the_api():
    # The check above is only as good as its walk: it must reach the callables users call.
    from lstmfast.layers import LSTM
    from lstmfast.models import Model
    from lstmfast.optimizers import Adam
    seen = {f"{fn.__module__}.{fn.__qualname__}" for module in public_modules() for obj in public_members(module)
            if inspect.isclass(obj) for fn in map(inspect.unwrap, class_functions(obj))}
    for fn in (Model.fit, Model.predict, LSTM.__init__, LSTM.forward, Adam.__init__):
        assert f"{fn.__module__}.{inspect.unwrap(fn).__qualname__}" in seen

    def bare(a, b=1, *args, **kwargs):
        pass

    assert missing_hints(bare) == ["a", "b", "return"]


# ---- the engine's stub ------------------------------------------------------------------------------

def split_top_level(text: str) -> list:
    """``text`` split at the commas outside brackets."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[start:i].strip())
            start = i + 1
    if text[start:].strip():
        parts.append(text[start:].strip())
    return parts


def runtime_signature(fn) -> tuple:
    """``([(name, default text or None)], return text)`` from the first line of a pybind11
    function's docstring: ``name(a: T, b: U = default) -> R``."""
    first = (fn.__doc__ or "").splitlines()[0]
    match = re.fullmatch(rf"{fn.__name__}\((.*)\) -> (.+)", first)
    assert match, f"_core.{fn.__name__}: no pybind11 signature in its docstring: {first!r}"
    params = []
    for part in split_top_level(match.group(1)):
        name, _, rest = part.partition(":")
        default = rest.partition("=")[2].strip() if "=" in rest else None
        params.append((name.strip(), default))
    return params, match.group(2).strip()


def stub_members() -> dict:
    """``{name: ([(parameter, default text or None)], return text) or None}`` of ``_core.pyi``
    (None for a variable); names starting with one ``_`` are the stub's own aliases."""
    tree = ast.parse((PACKAGE_DIR / "_core.pyi").read_text())
    members = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            args = node.args
            positional = args.posonlyargs + args.args
            defaults = [None] * (len(positional) - len(args.defaults)) + [ast.unparse(d) for d in args.defaults]
            params = list(zip([a.arg for a in positional], defaults))
            params += [(a.arg, None if d is None else ast.unparse(d))
                       for a, d in zip(args.kwonlyargs, args.kw_defaults)]
            members[node.name] = (params, ast.unparse(node.returns) if node.returns else None)
        elif isinstance(node, (ast.AnnAssign, ast.Assign)):
            for target in (node.targets if isinstance(node, ast.Assign) else [node.target]):
                members[target.id] = None
    return {name: v for name, v in members.items() if not (name.startswith("_") and not name.startswith("__"))}


def test_core_stub_matches_the_engine():
    stub = stub_members()
    runtime = {name for name in dir(_core) if not name.startswith("_")} | {"__version__"}
    assert set(stub) == runtime, (f"_core.pyi lacks {sorted(runtime - set(stub))}, "
                                  f"names what the engine lacks {sorted(set(stub) - runtime)}")
    for name in sorted(runtime - {"__version__"}):
        assert stub[name] is not None, f"_core.{name} is a function, the stub declares a variable"
        assert stub[name] == runtime_signature(getattr(_core, name)), f"_core.{name}: stub and binding differ"
    assert stub["__version__"] is None and isinstance(_core.__version__, str)


def test_binding_signatures_parse():
    params, returns = runtime_signature(_core.gemm_f32)
    assert params[-1] == ("accumulate", "False") and returns == "None"
    assert [p for p, _ in params] == ["trans_a", "trans_b", "A", "B", "C", "accumulate"]


# ---- py.typed and a type checker --------------------------------------------------------------------

def test_py_typed_marks_the_package():
    assert (PACKAGE_DIR / "py.typed").is_file(), f"{PACKAGE_DIR / 'py.typed'} is missing"


USER_PROGRAM = """
import numpy as np

import lstmfast
from lstmfast.callbacks import EarlyStopping
from lstmfast.layers import LSTM, Dense, Dropout, Input
from lstmfast.models import Model, Sequential

x = np.random.rand(64, 10, 3).astype("float32")
y = np.random.rand(64, 1).astype("float32")
model = Sequential([LSTM(16, input_shape=(10, 3)), Dropout(0.1), Dense(1)])
model.compile(optimizer="adam", loss="mse", metrics=["mae"])
history = model.fit(x, y, batch_size=16, epochs=2, verbose=0, validation_split=0.25,
                    callbacks=[EarlyStopping(patience=1)])
losses = history.history["loss"]
pred = model.predict(x[:4], verbose=0)
score = model.evaluate(x, y, verbose=0)
inputs = Input(shape=(10, 3))
functional = Model(inputs, Dense(1)(LSTM(8)(inputs)))
functional.compile(optimizer=lstmfast.optimizers.Adam(learning_rate=1e-3), loss="mse")
print(losses, pred, score, functional.count_params(), lstmfast.build_info())
"""

# The same calls with wrong types: mypy must see lstmfast's hints to reject them.
WRONG_PROGRAM = """
import numpy as np

from lstmfast.layers import Dense
from lstmfast.models import Sequential

model = Sequential([Dense(units="4")])
model.fit(np.zeros((4, 3)), np.zeros((4, 4)), epochs="2")
"""


def test_mypy_checks_a_user_program_against_the_hints(tmp_path):
    pytest.importorskip("mypy", reason="mypy is in the test extra (pip install -e .[test])")
    (tmp_path / "user_program.py").write_text(textwrap.dedent(USER_PROGRAM))
    (tmp_path / "wrong_program.py").write_text(textwrap.dedent(WRONG_PROGRAM))
    env = {k: v for k, v in os.environ.items() if k not in ("MYPYPATH", "PYTHONPATH")}
    # Run as a user would: lstmfast found where it is installed (so py.typed counts), no config file,
    # no cache left behind; errors only for the two programs, not for lstmfast's own code.
    run = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--follow-imports=silent", "--config-file=",
                          "--cache-dir", os.devnull, "--no-error-summary", "--hide-error-context",
                          "user_program.py", "wrong_program.py"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    lines = [line for line in run.stdout.splitlines() if line.strip()]
    assert not [line for line in lines if not line.startswith("wrong_program.py")], run.stdout + run.stderr
    wrong = {(int(line.split(":")[1]), line.rsplit("[", 1)[-1].rstrip("]")) for line in lines}
    assert wrong == {(7, "arg-type"), (8, "arg-type")}, run.stdout + run.stderr
