"""The Python API for embedding diagc: compile a source to module text, or load a .diag as a module.

>>> import compiler
>>> text = compiler.compile_source("diagram dot(a: vec, b: vec) -> s: scalar { s = a[i] b[i] }")
>>> ops = compiler.load("diagrams/products.diag")      # doctest: +SKIP
>>> ops.cross(a, b)                                    # doctest: +SKIP
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import os
import stat
import sys
import tempfile
import types
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import OutputError
from .targets import TARGETS as _REGISTRY
from .targets import generate, get_target

if TYPE_CHECKING:
    from .ir.check import Verdict
    from .ir.program import Program

#: imported at first use (sympy and networkx take about a second): a module loaded from the module
#: cache (:func:`load`) needs none of them
_LAZY = {"lower_source": ".frontend.lower", "check_program": ".ir.check", "Verdict": ".ir.check",
         "Program": ".ir.program"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __package__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

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
    from .frontend.lower import lower_source
    from .ir.check import check_program

    return check_program(lower_source(source, filename))


def checked_program(source: str, filename: str = "<string>") -> Program:
    """The lowered program, raising the first EquivarianceError if a diagram is not equivariant."""
    from .frontend.lower import lower_source
    from .ir.check import check_program

    program = lower_source(source, filename)
    for verdict in check_program(program):
        if verdict.error is not None:
            raise verdict.error
    return program


def compile_source(source: str, filename: str = "<string>", target: str = "numpy", *, staging: bool = True) -> str:
    """Compile .diag text to the text of a standalone module for ``target``. ``staging`` (default):
    the Python module runs channel mixing scaled per channel in stages (:mod:`compiler.planning.staging`)
    and has no one-call code for such a diagram; False: every diagram runs as one call, as written
    (the ``cuda`` target always writes the diagrams as written)."""
    get_target(target)  # an unknown target is refused before anything is parsed
    return generate(checked_program(source, filename), target, staging)


def compile_file(path: str | os.PathLike, target: str = "numpy", *, staging: bool = True) -> str:
    """Compile a .diag file to module text (``staging``: as :func:`compile_source`)."""
    return compile_source(read_source(path), os.fspath(path), target, staging=staging)


def module_from_text(text: str, name: str, filename: str | None = None) -> types.ModuleType:
    """Execute module text as a fresh module called ``name`` (not added to sys.modules);
    ``filename`` (default ``<name>``) is what tracebacks show and the module's ``__file__``."""
    module = types.ModuleType(name)
    module.__file__ = filename or f"<{name}>"
    exec(compile(text, module.__file__, "exec"), module.__dict__)
    return module


def load(path: str | os.PathLike, name: str | None = None, *, cache: bool = True,
         staging: bool = True) -> types.ModuleType:
    """Compile a .diag file and import the result as a module (see :func:`_module`).

    With ``cache`` (default) the module text is kept in the module cache (:func:`cached_compile`):
    a later load of the same text by the same diagc reads it back instead of compiling again.
    ``staging``: as :func:`compile_source` (False: every diagram as one call, no stages)."""
    source = read_source(path)
    compile_text = cached_compile if cache else compile_source
    text = compile_text(source, os.fspath(path), staging=staging)
    return _module(text, name or Path(path).stem, f"<diagc:{os.fspath(path)}>")


def load_source(source: str, name: str = "diagc_module", *, cache: bool = True,
                staging: bool = True) -> types.ModuleType:
    """Compile .diag text and import the result as a module (``cache``, ``staging``: as :func:`load`)."""
    compile_text = cached_compile if cache else compile_source
    text = compile_text(source, f"<{name}>", staging=staging)
    return _module(text, name, f"<diagc:{name}>")


def cache_folder() -> Path:
    """Where diagc keeps what it builds at run time: ``DIAGC_CACHE``, else ``~/.cache/diagc`` (the
    emitted modules' host loops use the same folder)."""
    return Path(os.environ.get("DIAGC_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "diagc"))


def _package_files() -> list[tuple[str, Path]]:
    """Every file the generators read: the package's sources (and the grammar) and the templates
    (installed as ``compiler.templates``, else beside the package in the source tree)."""
    here = Path(__file__).resolve().parent
    files = [(p.relative_to(here).as_posix(), p) for p in here.rglob("*")
             if p.suffix in (".py", ".lark", ".j2") and p.is_file() and "__pycache__" not in p.parts]
    if not (here / "templates").is_dir():  # an editable or source-tree install: templates/ beside
        tree = here.parent / "templates"
        files += [("templates/" + p.relative_to(tree).as_posix(), p) for p in tree.rglob("*.j2") if p.is_file()]
    return sorted(files)


def _package_stats() -> tuple:
    """(name, mtime, size) of every file of :func:`_package_files`: what changes when one is edited."""
    out = []
    for rel, path in _package_files():
        try:
            st = path.stat()
        except OSError:
            st = None
        out.append((rel, st.st_mtime_ns if st else None, st.st_size if st else None))
    return tuple(out)


#: the generator's files as this process found them when it imported this module: a cached text is
#: read or written only while they are unchanged, so a process never stores what its (older) code
#: compiled under the fingerprint of edited files, nor reads by a fingerprint its code does not match
_STATS_AT_IMPORT = _package_stats()


@functools.lru_cache(maxsize=1)
def generator_fingerprint() -> str:
    """A hash of what decides a module's text besides its source: every file of the generator
    (:func:`_package_files`), the Python version and the versions of the libraries it computes
    with. Computed once per process."""
    from importlib import metadata

    h = hashlib.sha256()
    for rel, path in _package_files():
        h.update(hashlib.sha256(rel.encode()).digest() + hashlib.sha256(path.read_bytes()).digest())
    h.update(repr(sys.version_info[:2]).encode())
    for dist in ("sympy", "mpmath", "numpy", "jinja2", "lark", "networkx", "opt_einsum", "python-flint"):
        try:
            h.update(f"{dist} {metadata.version(dist)}\n".encode())
        except metadata.PackageNotFoundError:
            h.update(f"{dist} absent\n".encode())
    return h.hexdigest()


#: the first line of a cached module: the sha256 of the rest (a damaged file is compiled again)
_CACHE_HEADER = "# diagc module cache, sha256 of the text below: "


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def cached_compile(source: str, filename: str = "<string>", target: str = "numpy", *, staging: bool = True) -> str:
    """:func:`compile_source`, through the module cache: ``modules/`` in :func:`cache_folder`, one
    file per (source text, file name, target, ``staging``, :func:`generator_fingerprint`), written atomically
    after a compile, its first line the sha256 of the text (a file whose text does not match is
    compiled again and replaced). The cache is not used while the generator's files differ from
    what this process imported (:data:`_STATS_AT_IMPORT`). A folder that cannot be created or
    written only means no caching; a source that does not compile raises as compile_source does,
    and nothing is written. Code that changes the generator's settings at run time (a module
    constant patched) must compile with :func:`compile_source` (or ``load(..., cache=False)``)."""
    if _package_stats() != _STATS_AT_IMPORT:
        return compile_source(source, filename, target, staging=staging)
    parts = (generator_fingerprint(), target, "staged" if staging else "unstaged", filename, source)
    key = hashlib.sha256(b"".join(bytes.fromhex(_digest(part)) for part in parts)).hexdigest()
    folder = cache_folder() / "modules"
    path = folder / f"{key}{get_target(target).suffix}"
    try:
        with open(path, encoding="utf-8", newline="") as fh:
            header, _, text = fh.read().partition("\n")
        if header == _CACHE_HEADER + _digest(text):
            return text
    except (OSError, UnicodeDecodeError):
        pass
    text = compile_source(source, filename, target, staging=staging)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        write_atomic(path, _CACHE_HEADER + _digest(text) + "\n" + text)
    except (OSError, OutputError, UnicodeEncodeError):
        pass
    return text


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
            fh.flush()
            os.fsync(fh.fileno())
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
