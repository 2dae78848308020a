"""The Python API for embedding diagc: compile a source to module text, or load a .diag as a module.

>>> import compiler
>>> text = compiler.compile_source("diagram dot(a: vec, b: vec) -> s: scalar { s = a[i] b[i] }")
>>> ops = compiler.load("diagrams/products.diag")      # doctest: +SKIP
>>> ops.cross(a, b)                                    # doctest: +SKIP
"""

from __future__ import annotations

import itertools
import os
import stat
import tempfile
import types
from pathlib import Path

from .ir.check import Verdict, check_program
from .errors import OutputError
from .ir.program import Program
from .frontend.lower import lower_source
from .targets import TARGETS as _REGISTRY
from .targets import generate, get_target

#: the names ``--target`` accepts (the registry of :mod:`compiler.targets`)
TARGETS = tuple(_REGISTRY)


def read_source(path: str | os.PathLike) -> str:
    """The text of a .diag file, or an OutputError saying why it cannot be read."""
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    except UnicodeDecodeError as exc:
        raise OutputError(f"cannot read {os.fspath(path)}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise OutputError(f"cannot read {os.fspath(path)}: {exc.strerror or exc}") from None


def check_source(source: str, filename: str = "<string>") -> list[Verdict]:
    """Verdicts for every diagram of a source; raises DiagError for ill-formed input."""
    return check_program(lower_source(source, filename))


def checked_program(source: str, filename: str = "<string>") -> Program:
    """The lowered program, raising the first EquivarianceError if a diagram is not equivariant."""
    program = lower_source(source, filename)
    for verdict in check_program(program):
        if verdict.error is not None:
            raise verdict.error
    return program


def compile_source(source: str, filename: str = "<string>", target: str = "numpy") -> str:
    """Compile .diag text to the text of a standalone module for ``target``."""
    get_target(target)  # an unknown target is refused before anything is parsed
    return generate(checked_program(source, filename), target)


def compile_file(path: str | os.PathLike, target: str = "numpy") -> str:
    """Compile a .diag file to module text."""
    return compile_source(read_source(path), os.fspath(path), target)


def module_from_text(text: str, name: str, filename: str | None = None) -> types.ModuleType:
    """Execute module text as a fresh module called ``name`` (not added to sys.modules);
    ``filename`` (default ``<name>``) is what tracebacks show and the module's ``__file__``."""
    module = types.ModuleType(name)
    module.__file__ = filename or f"<{name}>"
    exec(compile(text, module.__file__, "exec"), module.__dict__)
    return module


def load(path: str | os.PathLike, name: str | None = None) -> types.ModuleType:
    """Compile a .diag file and import the result as a module (see :func:`_module`)."""
    return _module(compile_file(path), name or Path(path).stem, f"<diagc:{os.fspath(path)}>")


def load_source(source: str, name: str = "diagc_module") -> types.ModuleType:
    """Compile .diag text and import the result as a module."""
    return _module(compile_source(source, f"<{name}>"), name, f"<diagc:{name}>")


_LOADED = itertools.count()


def _module(text: str, name: str, filename: str) -> types.ModuleType:
    """The module of ``text`` (:func:`module_from_text`), registered in sys.modules under a private
    name made of ``name``, a hash of the text and a count of the loads (``_diagc_<name>_<hash>_<n>``):
    torch.compile finds an emitted function's globals through its module's name, so an unregistered
    module cannot be compiled, and two loads of the same text must not share a name (torch.compile's
    guards would read the other module's globals)."""
    import hashlib
    import sys

    key = f"_diagc_{name}_{hashlib.sha256(text.encode()).hexdigest()[:12]}_{next(_LOADED)}"
    module = module_from_text(text, key, filename)
    sys.modules[key] = module
    return module


def enumerate_basis(inputs, output, group: str = "O3", output_name: str = "Y", total=None):
    """Every independent equivariant contraction (:mod:`compiler.tools.enumeration`), from Python.

    ``inputs``: ``(name, type, degrees)`` triples, the type a TensorType or its text (``"2e"``,
    ``"sym2"``), the degrees an int or an iterable of ints; ``output``: a type or its text;
    ``total``: keep only the combinations of these total degrees (MACE's correlation orders).
    Returns a :class:`compiler.tools.enumeration.BasisSet` (``elements``, ``dimension``, ``expected``);
    :func:`compiler.tools.enumeration.element_formula` writes an element as a .diag right-hand side.

    >>> found = enumerate_basis([("x", "1o", 2)], "2e")
    >>> found.dimension, compiler.tools.enumeration.element_formula(found.elements[0])   # doctest: +SKIP
    (1, 'x[j] x[k] cg(1,1,2)[j,k,i]')
    """
    from .tools.enumeration import enumerate_degrees
    from .ir.types import TensorType

    def as_type(t):
        return t if isinstance(t, TensorType) else TensorType.parse(t)

    specs = [(name, as_type(t), (d,) if isinstance(d, int) else tuple(d)) for name, t, d in inputs]
    return enumerate_degrees(specs, as_type(output), group, output_name,
                             total=None if total is None else ((total,) if isinstance(total, int) else tuple(total)))


def current_umask() -> int:
    """The process's file-creation mask, read without changing it where the system allows
    (/proc/self/status on Linux); elsewhere set and restored at once."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def new_file_mode(path: str | os.PathLike) -> int:
    """The permission bits a plain ``open(path, "w")`` would leave: an existing file keeps its own,
    a new one gets 0o666 less the umask (0o644 under umask 022)."""
    try:
        st = os.stat(path)
        if stat.S_ISREG(st.st_mode):
            return stat.S_IMODE(st.st_mode)
    except OSError:
        pass
    return 0o666 & ~current_umask()


def write_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder and a rename, so a
    failure never leaves a partial file; OutputError if the folder is missing or not writable.
    The file gets the mode a plain open() would give it (:func:`new_file_mode`), not the private
    0o600 of the temporary file."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise OutputError(f"cannot write {path}: folder {folder} does not exist")
    if path.is_dir():
        raise OutputError(f"cannot write {path}: it is a folder")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(text)
        os.chmod(tmp, new_file_mode(path))
        os.replace(tmp, path)
    except OSError as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
