"""Exact evaluation of equations on symbolic inputs (polynomials over the rationals).

Used by the checker to *decide* properties that the structure of a term alone does not settle:
that a declared output symmetry holds, and how a term with mixed-parity (graded) tensors behaves
under the inversion -I. Inputs are arrays of independent polynomial variables with their declared
symmetry built in (a ``sym2t`` input has X[j,i] = X[i,j] and X[2,2] = -X[0,0] - X[1,1]), so the
input symmetries are used when deciding.

When the inputs an equation uses have more than ``MAX_VARIABLES`` independent entries (high-rank
tensors), the identity is instead checked at ``RANDOM_TRIALS`` random integer points in exact
arithmetic; a nonzero polynomial of degree D vanishes at such a point with probability at most
D / 2**20 (Schwartz-Zippel), and the checker's record says which way each check was decided.

Channel axes get as many entries as there are distinct channel labels of that axis in the equation:
every pattern of equal and distinct channel values then occurs, so an identity found here holds for
every channel size.
"""

from __future__ import annotations

import itertools
from functools import lru_cache

import numpy as np
from sympy import EX, QQ
from sympy.polys.rings import ring

from ..math.constants import DELTA, constant_array
from ..math.einsum import Exact, evaluate_term as _evaluate_term
from ..math.surds import Surds, surd_parts
from .program import Equation, TensorNetwork
from ..math.stf import free_monomials, is_stf, stf_fill, stf_from_array
from .types import Channel, TensorType

MAX_VARIABLES = 3000
RANDOM_TRIALS = 3


def channel_sizes(equations: list[Equation]) -> dict[Channel, int]:
    """Entries per channel axis (a name or a fixed size): the number of distinct labels running over it
    (at least 1)."""
    labels: dict[Channel, set[str]] = {}
    for eq in equations:
        for term in eq.terms:
            for index, kind in term.kinds:
                if kind.kind == "channel":
                    labels.setdefault(kind.dim, set()).add(index)
    return {dim: max(1, len(ls)) for dim, ls in sorted(labels.items(), key=lambda kv: str(kv[0]))}


def shape(typ: TensorType, sizes: dict[Channel, int]) -> tuple[int, ...]:
    return tuple(sizes.get(c, 1) for c in typ.channels) + typ.geometric_dims


def _used_inputs(diagram, equation: Equation):
    used = {n.name for t in equation.terms for n in t.nodes if n.kind == "input"}
    return [t for t in diagram.inputs if t.name in used]


def _n_entries(inputs, sizes) -> int:
    return sum(int(np.prod(shape(t.type, sizes))) for t in inputs)


class _SurdRing:
    """The ring R (polynomials over QQ) as the evaluation lifts numbers into it, with the square roots
    of cg and P tables as :class:`~compiler.math.surds.Surds` over R: called on a table entry (a
    sympy number) it gives sum_s R(c_s) sqrt(s), on anything else R's own element."""

    def __init__(self, R):
        self.R = R

    def __call__(self, x):
        import sympy

        if isinstance(x, sympy.Basic):
            return Surds.make({s: self.R(QQ(c.numerator, c.denominator)) for s, c in _surd_parts(x).items()})
        return self.R(x)


@lru_cache(maxsize=None)
def _surd_parts(x):
    return surd_parts(x)


def _domain(equation: Equation):
    """QQ, with ``surds`` True when the constants hold square roots (cg, P) that are all sums of
    rational multiples of square roots (then they are lifted as Surds); EX (sympy expressions, slow)
    for any other irrational constant."""
    nodes = [n for t in equation.terms for n in t.nodes if n.kind in ("cg", "P")]
    if not nodes:
        return QQ, False
    if all(_surd_parts(x) is not None for n in nodes for x in np.asarray(constant_array(n), dtype=object).flat):
        return QQ, True
    return EX, False


def instances(diagram, equation: Equation):
    """(ring, arrays, how) for every way the equation is to be evaluated: one symbolic instance, or
    RANDOM_TRIALS random integer instances when there are too many variables. The ring is called to
    lift numbers into it (constant tables' entries too)."""
    sizes = channel_sizes([equation])
    inputs = _used_inputs(diagram, equation)
    # cg and P hold square roots: exact sums of rational multiples of them over QQ (Surds), or over
    # sympy expressions (domain EX) where a constant is not of that form
    domain, surds = _domain(equation)
    if _n_entries(inputs, sizes) <= MAX_VARIABLES:
        R, arrays = symbolic_inputs(inputs, sizes, domain)
        return [(_SurdRing(R) if surds else R, arrays)], "exactly"
    import random

    rng = random.Random(f"{diagram.name}:{equation.target}")
    R, _ = ring(["unused"], domain)
    R = _SurdRing(R) if surds else R
    out = []
    for _ in range(RANDOM_TRIALS):
        arrays = {}
        for t in inputs:
            shp = shape(t.type, sizes)
            a = np.empty(shp, dtype=object)
            for idx in itertools.product(*(range(n) for n in shp)):
                a[idx] = R(rng.randrange(-(1 << 19), 1 << 19))
            arrays[t.name] = _symmetrize(t.type, a)
        out.append((R, arrays))
    bound = f"at {RANDOM_TRIALS} random integer points, false pass <= (degree/2^20)^{RANDOM_TRIALS}"
    return out, bound


def _symmetrize(typ: TensorType, a):
    if is_stf(typ):
        return stf_from_array(a, typ.rank)
    if typ.family != "cart" or typ.rank != 2 or not typ.symmetry:
        return a
    at = np.swapaxes(a, -1, -2)
    if typ.symmetry == "skew":
        return a - at
    a = a + at
    if typ.symmetry == "sym_traceless":
        a = a.copy()
        a[..., 2, 2] = -a[..., 0, 0] - a[..., 1, 1]
    return a


def symbolic_inputs(inputs, sizes: dict[str, int], domain=QQ):
    """One array of fresh polynomial variables per input, with the input's symmetry imposed."""
    names: list[str] = []
    layouts = []
    for t in inputs:
        shp = shape(t.type, sizes)
        cells = {}
        if is_stf(t.type):  # symt(l): the free entries of each channel slice (compiler.math.stf)
            nch = len(shp) - t.type.rank
            for ch in itertools.product(*(range(n) for n in shp[:nch])):
                for m in free_monomials(t.type.rank):
                    cells[ch + m] = len(names)
                    names.append(f"{t.name}_{'_'.join(map(str, ch + m))}")
            layouts.append((t, shp, cells))
            continue
        for idx in itertools.product(*(range(n) for n in shp)):
            rep = _representative(t.type, idx)
            if rep is not None and rep[0] not in cells:
                cells[rep[0]] = len(names)
                names.append(f"{t.name}_{'_'.join(map(str, rep[0]))}")
        layouts.append((t, shp, cells))
    R, *gens = ring(names or ["unused"], domain)
    arrays = {}
    for t, shp, cells in layouts:
        if is_stf(t.type):
            nch = len(shp) - t.type.rank
            a = np.empty(shp, dtype=object)
            for ch in itertools.product(*(range(n) for n in shp[:nch])):
                free = {m: gens[cells[ch + m]] for m in free_monomials(t.type.rank)}
                a[ch] = stf_fill(free, t.type.rank)
            arrays[t.name] = a
            continue
        a = np.empty(shp, dtype=object)
        for idx in itertools.product(*(range(n) for n in shp)):
            a[idx] = _value(t.type, idx, cells, gens, R)
        arrays[t.name] = a
    return R, arrays


def _representative(typ: TensorType, idx):
    """The independent entry an entry equals (and its sign), or None if it is fixed to zero."""
    if typ.family != "cart" or typ.rank != 2 or not typ.symmetry:
        return idx, 1
    *ch, i, j = idx
    ch = tuple(ch)
    if typ.symmetry == "skew":
        if i == j:
            return None
        return (ch + (min(i, j), max(i, j)), 1 if i < j else -1)
    if typ.symmetry == "sym_traceless" and i == j == 2:
        return None
    return ch + (min(i, j), max(i, j)), 1


def _value(typ, idx, cells, gens, R):
    rep = _representative(typ, idx)
    if rep is None:
        if typ.symmetry == "sym_traceless":
            *ch, _, _ = idx
            ch = tuple(ch)
            return -gens[cells[ch + (0, 0)]] - gens[cells[ch + (1, 1)]]
        return R(0)
    key, sign = rep
    return sign * gens[cells[key]]


def evaluate_term(term: TensorNetwork, arrays: dict, R):
    """coefficient × einsum of the term's nodes, exactly (the constants lifted into the ring R)."""
    return _evaluate_term(term, arrays, Exact(coefficient=lambda c: R(QQ(c.numerator, c.denominator)), element=R))


def evaluate(equation: Equation, arrays: dict, R):
    """The output of one equation, as an array of exact polynomials."""
    total = None
    for term in equation.terms:
        v = evaluate_term(term, arrays, R)
        total = v if total is None else total + v
    return total


def is_zero(array) -> bool:
    return all(x == 0 for x in np.asarray(array, dtype=object).flat)


def rank2_parts(y):
    """(I, A, S) of arrays of 3x3 matrices: y = I + A + S (trace, antisymmetric, symmetric traceless)."""
    yt = np.swapaxes(y, -1, -2)
    tr = np.einsum("...ii->...", y)
    third = QQ(1, 3)
    half = QQ(1, 2)
    i_part = np.einsum("...,ij->...ij", np.asarray(tr, dtype=object) * third, DELTA)
    a_part = (y - yt) * half
    s_part = (y + yt) * half - i_part
    return i_part, a_part, s_part


def invert(typ: TensorType, y):
    """The action of the inversion -I on a tensor of type ``typ`` (part by part when graded)."""
    if typ.family == "cart" and typ.rank == 2 and typ.graded:
        parts = dict(zip((0, 1, 2), rank2_parts(y)))
        result = None
        for ir in typ.parts:
            term = parts[ir.l] * ir.p
            result = term if result is None else result + term
        return np.asarray(result, dtype=object)
    return np.asarray(y * typ.inversion, dtype=object)


def parity_violation(diagram, equation: Equation):
    """(per-term f(-I·x) - (-I)·f(x), how decided); their sum is zero iff the equation commutes with
    the inversion. Random instances are stacked along a new first axis."""
    types = {t.name: t.type for t in diagram.inputs}
    runs, how = instances(diagram, equation)
    per_term = []
    for term in equation.terms:
        values = []
        for R, arrays in runs:
            flipped = {name: invert(types[name], a) for name, a in arrays.items()}
            values.append(evaluate_term(term, flipped, R) - invert(equation.type, evaluate_term(term, arrays, R)))
        per_term.append(values[0] if len(values) == 1 else np.stack(values))
    return per_term, how


def symmetry_violation(diagram, equation: Equation):
    """(None or which property fails, how decided) for the output's declared symmetry."""
    typ = equation.type
    if is_stf(typ):
        runs, how = instances(diagram, equation)
        for R, arrays in runs:
            y = evaluate(equation, arrays, R)
            n = y.ndim
            for k in range(n - typ.rank, n - 1):
                if not is_zero(y - np.swapaxes(y, k, k + 1)):
                    return f"symmetric (unchanged by swapping legs {k - n + typ.rank + 1} and {k - n + typ.rank + 2})", how
            if not is_zero(np.trace(y, axis1=n - 2, axis2=n - 1)):
                return "traceless (a trace over two legs is 0)", how
        return None, how
    if typ.family != "cart" or typ.rank != 2 or not typ.symmetry:
        return None, "exactly"
    runs, how = instances(diagram, equation)
    for R, arrays in runs:
        y = evaluate(equation, arrays, R)
        yt = np.swapaxes(y, -1, -2)
        if typ.symmetry == "skew":
            if not is_zero(y + yt):
                return "antisymmetric (Y[i,j] = -Y[j,i])", how
            continue
        if not is_zero(y - yt):
            return "symmetric (Y[i,j] = Y[j,i])", how
        if typ.symmetry == "sym_traceless" and not is_zero(np.einsum("...ii->...", y)):
            return "traceless (Y[k,k] = 0)", how
    return None, how


def inversion_eigenvalues(diagram, equation: Equation) -> tuple[int | None, ...]:
    """How the right-hand side actually transforms under the inversion -I: the eigenvalue (+1 or -1)
    of each irreducible part of a rank-2 output (l = 0, 1, 2 as the type has them), or of the whole
    output otherwise; None where the part mixes parities (or is identically zero)."""
    types = {t.name: t.type for t in diagram.inputs}
    typ = equation.type
    runs, _ = instances(diagram, equation)
    found: list[set[int]] = []
    for R, arrays in runs:
        flipped = {name: invert(types[name], a) for name, a in arrays.items()}
        y, yf = evaluate(equation, arrays, R), evaluate(equation, flipped, R)
        if typ.family == "cart" and typ.rank == 2:
            pairs = [(p, pf) for l, p, pf in zip((0, 1, 2), rank2_parts(y), rank2_parts(yf))
                     if l in {ir.l for ir in typ.parts}]
        else:
            pairs = [(y, yf)]
        if not found:
            found = [{1, -1} for _ in pairs]
        for signs, (p, pf) in zip(found, pairs):
            if is_zero(p):
                signs.clear()
            if not is_zero(pf - p):
                signs.discard(1)
            if not is_zero(pf + p):
                signs.discard(-1)
    return tuple(next(iter(s)) if len(s) == 1 else None for s in found)
