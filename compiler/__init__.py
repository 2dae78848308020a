"""diagc: a compiler for rotation-equivariant tensor operations.

The Python API (see :mod:`compiler.api`)::

    compile_source(text, filename="<string>", target="numpy", *, staging=True) -> str   # module text
    compile_file(path, target="numpy") -> str
    load(path) -> module          # compile a .diag file and import it in one call
    load_source(text) -> module
    check_source(text, filename) -> [Verdict]
    enumerate_basis([("x", "1o", 2)], "2e") -> BasisSet   # every equivariant contraction
"""

__version__ = "0.1.0"

from .api import check_source, compile_file, compile_source, enumerate_basis, load, load_source  # noqa: E402
from .errors import DiagError, EquivarianceError  # noqa: E402

__all__ = ["__version__", "check_source", "compile_file", "compile_source", "enumerate_basis", "load", "load_source",
           "DiagError", "EquivarianceError"]
