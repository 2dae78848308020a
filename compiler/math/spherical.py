"""Exact spherical-tensor building blocks in e3nn's real basis.

Everything here is exact (numbers of the form sum_n q_n * sqrt(n), q_n rational, n square-free) and
cached; results are returned as sympy objects (``sympy.ImmutableMatrix`` -- immutable because they
are cached and shared) or, for the ``*_numeric`` helpers, as float64 numpy arrays rounded once from
the exact values.  No torch/e3nn import.

Conventions (identical to e3nn >= 0.5, checked against e3nn 0.6.0 in ``tests/test_spherical.py``)
-------------------------------------------------------------------------------------------------
* A spherical ``l`` lives in the real basis of e3nn (``o3.Irreps`` data layout), components indexed
  0..2l.  e3nn uses **y as the polar axis**; for l = 1 the components are the Cartesian ones in the
  order **(x, y, z)**: ``D^1(R) = R`` and ``Y_1^component(r) = sqrt(3) * (x, y, z)``, so ``P_1`` is the
  3x3 identity.  (In the underlying "standard" real basis with z polar the order would read (y, z, x);
  e3nn's relabelling of axes x->z, y->x, z->y turns that into (x, y, z).)
* l = 2 (component normalisation, unit r):
  ``Y_2 = (sqrt15 xz, sqrt15 xy, sqrt5 (y^2 - (x^2+z^2)/2), sqrt15 yz, sqrt15/2 (z^2 - x^2))``.
* ``wigner_3j(l1, l2, l3)`` reproduces ``e3nn.o3.wigner_3j`` exactly, sign included: it is built by
  the same construction (SU(2) Clebsch-Gordan coefficients, change of basis ``Q_l`` =
  ``change_of_basis(l)``, Frobenius normalisation), in exact arithmetic.
* ``cartesian_to_spherical(l)`` = ``P_l`` has orthonormal rows; row m is the (unit-norm) symmetric
  traceless tensor whose polynomial is e3nn's ``Y_l,m``:
  ``Y_l^component(r) = sh_component_constant(l) * P_l vec(r^{(x)l})`` with the positive constant
  ``sqrt((2l+1) (2l-1)!! / l!)`` (sqrt(3) for l = 1, sqrt(15/2) for l = 2).  It is built from e3nn's own
  recursion ``Y_l  ∝+  C(l-1, 1, l) . (Y_{l-1} (x) r)`` on polynomials (28 monomials at l = 6, never the
  3**l-column tensor), then laid out on the 3**l Cartesian components (row-major / ``np.kron`` order
  of the legs).
* ``wigner_D(l, R) = P_l R^{(x)l} P_l^T``, i.e. ``D^l(R) P_l = P_l R^{(x)l}`` for a proper rotation; this
  is e3nn's ``o3.Irrep(l, p).D_from_matrix(R)`` for det R = +1.
  **Improper R (det -1)**: ``wigner_D`` returns ``D^l(det(R) R)``, the matrix of the rotation part,
  exactly like e3nn (which applies ``p ** k`` on top).  The action of R on a spherical tensor of
  type ``lp`` is then ``p * wigner_D(l, R)`` -- callers multiply by the parity themselves (or pass
  ``parity=p``).  Note that for improper R, ``P_l R^{(x)l} P_l^T = (-1)^l wigner_D(l, R)`` (the
  natural parity of a rank-l Cartesian tensor).
"""

from __future__ import annotations

import functools
import itertools
from fractions import Fraction
from math import factorial, gcd

import numpy as np
import sympy

__all__ = [
    "cartesian_to_spherical",
    "cartesian_to_spherical_numeric",
    "change_of_basis",
    "sh_component_constant",
    "triangle_ok",
    "wigner_3j",
    "wigner_3j_numeric",
    "wigner_D",
    "wigner_D_numeric",
]

# ----------------------------------------------------------------------------------------------
# exact numbers: sums of rational multiples of square roots of square-free integers


@functools.cache
def _squarefree_split(n: int) -> tuple[int, int]:
    """n = s**2 * f with f square-free; returns (s, f)."""
    if n == 0:
        return 0, 1
    s, f = 1, 1
    for p, e in sympy.factorint(n).items():
        s *= p ** (e // 2)
        if e % 2:
            f *= p
    return s, f


class _Surd:
    """An element sum_n c_n sqrt(n) of Q(sqrt 2, sqrt 3, ...) in canonical form (n square-free)."""

    __slots__ = ("t",)

    def __init__(self, t: dict[int, Fraction] | None = None):
        self.t = {n: c for n, c in (t or {}).items() if c}

    @staticmethod
    def rational(q) -> _Surd:
        return _Surd({1: Fraction(q)})

    @staticmethod
    def sqrt(q) -> _Surd:
        """sqrt(q) for a rational q >= 0."""
        q = Fraction(q)
        if q < 0:
            raise ValueError("square root of a negative rational")
        s, f = _squarefree_split(q.numerator * q.denominator)
        return _Surd({f: Fraction(s, q.denominator)})

    def __add__(self, other: _Surd) -> _Surd:
        t = dict(self.t)
        for n, c in other.t.items():
            t[n] = t.get(n, 0) + c
        return _Surd(t)

    def __neg__(self) -> _Surd:
        return _Surd({n: -c for n, c in self.t.items()})

    def __sub__(self, other: _Surd) -> _Surd:
        return self + (-other)

    def __mul__(self, other) -> _Surd:
        if not isinstance(other, _Surd):
            q = Fraction(other)
            return _Surd({n: c * q for n, c in self.t.items()})
        t: dict[int, Fraction] = {}
        for n1, c1 in self.t.items():
            for n2, c2 in other.t.items():
                g = gcd(n1, n2)
                n = (n1 // g) * (n2 // g)
                t[n] = t.get(n, 0) + c1 * c2 * g
        return _Surd(t)

    __rmul__ = __mul__

    def __bool__(self) -> bool:
        return bool(self.t)

    def key(self):
        return tuple(sorted(self.t.items()))

    def as_rational(self) -> Fraction:
        if any(n != 1 for n in self.t):
            raise ValueError(f"not rational: {self.t}")
        return self.t.get(1, Fraction(0))

    def sympy(self) -> sympy.Expr:
        return _surd_to_sympy(self.key())

    def __float__(self) -> float:
        return _surd_to_float(self.key())


@functools.cache
def _surd_to_sympy(key) -> sympy.Expr:
    if not key:
        return sympy.Integer(0)
    terms = [sympy.Rational(c.numerator, c.denominator) * sympy.sqrt(sympy.Integer(n)) for n, c in key]
    return sympy.Add(*terms)


@functools.cache
def _surd_to_float(key) -> float:
    """Correctly rounded (to within double rounding of a 50-digit value) float64 of an exact surd."""
    import mpmath

    with mpmath.workdps(50):
        v = mpmath.mpf(0)
        for n, c in key:
            v += mpmath.mpf(c.numerator) / c.denominator * mpmath.sqrt(n)
        return float(v)


_ZERO = _Surd()
_ONE = _Surd.rational(1)


class _Complex:
    """re + i im with exact surd parts (only needed inside the 3j construction)."""

    __slots__ = ("im", "re")

    def __init__(self, re: _Surd = _ZERO, im: _Surd = _ZERO):
        self.re, self.im = re, im

    def __add__(self, o: _Complex) -> _Complex:
        return _Complex(self.re + o.re, self.im + o.im)

    def __mul__(self, o) -> _Complex:
        if isinstance(o, _Complex):
            return _Complex(self.re * o.re - self.im * o.im, self.re * o.im + self.im * o.re)
        return _Complex(self.re * o, self.im * o)

    def conj(self) -> _Complex:
        return _Complex(self.re, -self.im)

    def __bool__(self) -> bool:
        return bool(self.re) or bool(self.im)


def _check_l(*ls) -> None:
    for l in ls:
        if isinstance(l, bool) or not isinstance(l, (int, np.integer)) or l < 0:
            raise ValueError(f"angular momentum l must be a non-negative integer, got {l!r}")


def triangle_ok(l1: int, l2: int, l3: int) -> bool:
    """The triangle condition |l1 - l2| <= l3 <= l1 + l2 (symmetric in the three arguments)."""
    return abs(l1 - l2) <= l3 <= l1 + l2


# ----------------------------------------------------------------------------------------------
# change of basis and Wigner-3j, following e3nn.o3._wigner step by step (exactly)


@functools.cache
def _q_matrix(l: int) -> dict[tuple[int, int], _Complex]:
    """Nonzero entries of e3nn's ``change_basis_real_to_complex(l)``, exact."""
    h = _Surd.sqrt(Fraction(1, 2))
    q: dict[tuple[int, int], _Complex] = {}
    for m in range(-l, 0):
        q[(l + m, l + abs(m))] = _Complex(h, _ZERO)
        q[(l + m, l - abs(m))] = _Complex(_ZERO, -h)
    q[(l, l)] = _Complex(_ONE, _ZERO)
    for m in range(1, l + 1):
        s = (-1) ** m
        q[(l + m, l + abs(m))] = _Complex(h * s, _ZERO)
        q[(l + m, l - abs(m))] = _Complex(_ZERO, h * s)
    # global factor (-i)^l
    phase = [(1, 0), (0, -1), (-1, 0), (0, 1)][l % 4]
    ph = _Complex(_Surd.rational(phase[0]), _Surd.rational(phase[1]))
    return {k: v * ph for k, v in q.items()}


@functools.cache
def change_of_basis(l: int) -> sympy.ImmutableMatrix:
    """e3nn's change-of-basis matrix ``Q_l`` (= ``e3nn.o3._wigner.change_basis_real_to_complex(l)``), exact.

    Shape (2l+1, 2l+1), unitary, rows indexed by the complex (|l m>, m = -l..l) basis and columns
    by e3nn's real basis: a real-basis 3j tensor is
    ``C_real[j, l, m] = sum_{i,k,n} Q_l1[i, j] Q_l2[k, l] conj(Q_l3[n, m]) C_su2[i, k, n]``.
    """
    _check_l(l)
    d = 2 * l + 1
    M = sympy.zeros(d, d)
    for (i, j), v in _q_matrix(l).items():
        M[i, j] = v.re.sympy() + sympy.I * v.im.sympy()
    return sympy.ImmutableMatrix(M)


@functools.cache
def _q_rows(l: int) -> dict[int, list[tuple[int, _Complex]]]:
    """Q_l by rows: {i: [(j, Q_l[i, j]), ...]} (nonzero entries only)."""
    by_row: dict[int, list[tuple[int, _Complex]]] = {}
    for (i, j), v in sorted(_q_matrix(l).items()):
        by_row.setdefault(i, []).append((j, v))
    return by_row


def _su2_cg_coeff(j1, m1, j2, m2, j3, m3) -> _Surd:
    """<j1 m1 j2 m2 | j3 m3> (Condon-Shortley), the formula e3nn takes from QuTiP, exact."""
    if m3 != m1 + m2:
        return _ZERO
    f = factorial
    vmin = max(-j1 + j2 + m3, -j1 + m1, 0)
    vmax = min(j2 + j3 + m1, j3 - j1 + j2, j3 + m3)
    radicand = (2 * j3 + 1) * Fraction(
        f(j3 + j1 - j2) * f(j3 - j1 + j2) * f(j1 + j2 - j3) * f(j3 + m3) * f(j3 - m3),
        f(j1 + j2 + j3 + 1) * f(j1 - m1) * f(j1 + m1) * f(j2 - m2) * f(j2 + m2),
    )
    S = Fraction(0)
    for v in range(vmin, vmax + 1):
        S += (-1) ** (v + j2 + m2) * Fraction(
            f(j2 + j3 + m1 - v) * f(j1 - m1 + v),
            f(v) * f(j3 - j1 + j2 - v) * f(j3 + m3 - v) * f(v + j1 - j2 - m3),
        )
    return _Surd.sqrt(radicand) * S


@functools.cache
def _w3j(l1: int, l2: int, l3: int) -> dict[tuple[int, int, int], _Surd]:
    """Nonzero entries of the exact real Wigner-3j tensor (e3nn's normalisation and sign)."""
    _check_l(l1, l2, l3)
    if not triangle_ok(l1, l2, l3):
        raise ValueError(f"wigner_3j({l1}, {l2}, {l3}): triangle condition |l1-l2| <= l3 <= l1+l2 violated")
    r1, r2, r3 = (_q_rows(l) for l in (l1, l2, l3))
    acc: dict[tuple[int, int, int], _Complex] = {}
    for m1 in range(-l1, l1 + 1):
        for m2 in range(-l2, l2 + 1):
            m3 = m1 + m2
            if abs(m3) > l3:
                continue
            c = _su2_cg_coeff(l1, m1, l2, m2, l3, m3)
            if not c:
                continue
            i, k, n = l1 + m1, l2 + m2, l3 + m3
            for j, a in r1[i]:
                for l_, b in r2[k]:
                    ab = a * b * c
                    for m, g in r3[n]:
                        key = (j, l_, m)
                        term = ab * g.conj()
                        acc[key] = acc[key] + term if key in acc else term
    out: dict[tuple[int, int, int], _Surd] = {}
    norm2 = _ZERO
    for key, v in acc.items():
        if v.im:
            raise AssertionError("real-basis 3j has an imaginary part")  # pragma: no cover
        if v.re:
            out[key] = v.re
            norm2 = norm2 + v.re * v.re
    inv = _Surd.sqrt(1 / norm2.as_rational())
    return {k: v * inv for k, v in out.items()}


@functools.cache
def wigner_3j(l1: int, l2: int, l3: int) -> tuple:
    """Exact real Wigner-3j tensor C[a, b, c], shape (2l1+1, 2l2+1, 2l3+1), as nested tuples of sympy.

    Equal to ``e3nn.o3.wigner_3j(l1, l2, l3)`` (Frobenius norm 1, same sign); invariant:
    ``sum D1[i,a] D2[j,b] D3[k,c] C[a,b,c] = C[i,j,k]``.  ValueError on a triangle violation.
    """
    t = _w3j(l1, l2, l3)
    zero = sympy.Integer(0)
    return tuple(
        tuple(
            tuple(t[(a, b, c)].sympy() if (a, b, c) in t else zero for c in range(2 * l3 + 1))
            for b in range(2 * l2 + 1)
        )
        for a in range(2 * l1 + 1)
    )


@functools.cache
def _w3j_float(l1: int, l2: int, l3: int) -> np.ndarray:
    arr = np.zeros((2 * l1 + 1, 2 * l2 + 1, 2 * l3 + 1))
    for k, v in _w3j(l1, l2, l3).items():
        arr[k] = float(v)
    arr.setflags(write=False)
    return arr


def wigner_3j_numeric(l1: int, l2: int, l3: int) -> np.ndarray:
    """float64 copy of ``wigner_3j`` (exact values rounded once)."""
    return _w3j_float(l1, l2, l3).copy()


# ----------------------------------------------------------------------------------------------
# P_l via harmonic polynomials


def _monomials(l: int) -> list[tuple[int, int, int]]:
    return [(a, b, l - a - b) for a in range(l, -1, -1) for b in range(l - a, -1, -1)]


def _multinomial(alpha: tuple[int, int, int]) -> int:
    return factorial(sum(alpha)) // (factorial(alpha[0]) * factorial(alpha[1]) * factorial(alpha[2]))


_UNIT = ((1, 0, 0), (0, 1, 0), (0, 0, 1))


@functools.cache
def _stf_rows(l: int) -> tuple[dict[tuple[int, int, int], _Surd], ...]:
    """Row m of P_l as {monomial alpha: tensor entry t_{m,alpha}} (the tensor is symmetric: the entry
    at a multi-index depends only on how many legs are x, y, z).  Rows have Frobenius norm 1.

    Recursion (e3nn's own construction of its spherical harmonics, constant > 0):
    poly_l[k] = sum_{i,j} C(l-1, 1, l)[i, j, k] poly_{l-1}[i] r_j, with r = (x, y, z) = e3nn's l = 1.
    """
    _check_l(l)
    if l == 0:
        return ({(0, 0, 0): _ONE},)
    prev = _stf_rows(l - 1)
    # polynomial of the previous rows: q(r) = sum_alpha t_alpha mult(alpha) r^alpha
    prev_poly = [{a: t * _multinomial(a) for a, t in row.items()} for row in prev]
    C = _w3j(l - 1, 1, l)
    polys: list[dict[tuple[int, int, int], _Surd]] = [{} for _ in range(2 * l + 1)]
    for (i, j, k), c in C.items():
        e = _UNIT[j]
        target = polys[k]
        for a, v in prev_poly[i].items():
            b = (a[0] + e[0], a[1] + e[1], a[2] + e[2])
            w = v * c
            target[b] = target[b] + w if b in target else w
    rows = []
    for p in polys:
        t = {a: v * Fraction(1, _multinomial(a)) for a, v in p.items() if v}
        norm2 = _ZERO
        for a, v in t.items():
            norm2 = norm2 + v * v * _multinomial(a)
        inv = _Surd.sqrt(1 / norm2.as_rational())
        rows.append({a: v * inv for a, v in t.items()})
    return tuple(rows)


def _column_monomials(l: int) -> list[tuple[int, int, int]]:
    """The monomial (counts of x, y, z legs) of each of the 3**l columns, row-major leg order."""
    out = []
    for idx in itertools.product(range(3), repeat=l):
        out.append((idx.count(0), idx.count(1), idx.count(2)))
    return out


@functools.cache
def cartesian_to_spherical(l: int) -> sympy.ImmutableMatrix:
    """P_l, shape (2l+1, 3**l), exact: rows orthonormal (P P^T = I), P^T P = STF projector.

    Column index of Cartesian legs (a_1, ..., a_l) is a_1 3^(l-1) + ... + a_l (``np.kron`` order),
    so ``P_l @ vec(r (x) ... (x) r) = Y_l^component(r) / sh_component_constant(l)`` (e3nn order).
    ``P_l^T`` is the map back from spherical l to the symmetric traceless rank-l tensors.
    """
    rows = _stf_rows(l)
    cols = _column_monomials(l)
    zero = sympy.Integer(0)
    flat = []
    for row in rows:
        vals = {a: v.sympy() for a, v in row.items()}
        flat.extend(vals.get(a, zero) for a in cols)
    return sympy.ImmutableMatrix(2 * l + 1, 3**l, flat)


@functools.cache
def _P_float(l: int) -> np.ndarray:
    rows = _stf_rows(l)
    cols = _column_monomials(l)
    arr = np.zeros((2 * l + 1, 3**l))
    for m, row in enumerate(rows):
        vals = {a: float(v) for a, v in row.items()}
        arr[m] = [vals.get(a, 0.0) for a in cols]
    arr.setflags(write=False)
    return arr


def cartesian_to_spherical_numeric(l: int) -> np.ndarray:
    """float64 copy of ``cartesian_to_spherical(l)``."""
    return _P_float(l).copy()


@functools.cache
def sh_component_constant(l: int) -> sympy.Expr:
    """c_l > 0 with e3nn ``spherical_harmonics(l, r, normalize=False, normalization='component')``
    = c_l * P_l vec(r^{(x)l});  c_l = sqrt((2l+1) (2l-1)!! / l!)  (sqrt 3, sqrt(15/2), ...)."""
    _check_l(l)
    dfact = 1
    for k in range(1, 2 * l, 2):
        dfact *= k
    return _Surd.sqrt(Fraction((2 * l + 1) * dfact, factorial(l))).sympy()


# ----------------------------------------------------------------------------------------------
# Wigner D


def _rational_matrix(R):
    """3x3 matrix of Fractions, or None when some entry is not rational."""
    if isinstance(R, sympy.MatrixBase):
        entries = [[R[i, j] for j in range(R.shape[1])] for i in range(R.shape[0])]
    else:
        arr = np.asarray(R, dtype=object)
        entries = arr.tolist()
    if len(entries) != 3 or any(len(r) != 3 for r in entries):
        raise ValueError("R must be a 3x3 matrix")
    out = []
    for row in entries:
        new = []
        for x in row:
            if isinstance(x, float):
                raise ValueError("wigner_D needs exact entries (int, Fraction, sympy); use wigner_D_numeric for floats")
            if isinstance(x, (int, np.integer, Fraction)):
                new.append(Fraction(int(x)) if isinstance(x, np.integer) else Fraction(x))
                continue
            e = sympy.sympify(x)
            if e.is_Rational:
                new.append(Fraction(int(e.p), int(e.q)))
            else:
                return None, entries
        out.append(new)
    return out, entries


def _poly_mul(p, q):
    out = {}
    for a, u in p.items():
        for b, v in q.items():
            c = (a[0] + b[0], a[1] + b[1], a[2] + b[2])
            out[c] = out.get(c, 0) + u * v
    return out


def _substitution(l: int, A) -> dict[tuple, dict[tuple, object]]:
    """For each monomial alpha of degree l, the polynomial r^alpha evaluated at (A r), as {beta: coeff}."""
    lin = [{_UNIT[j]: A[i][j] for j in range(3) if A[i][j] != 0} for i in range(3)]
    one = {(0, 0, 0): 1}
    powers = [[one] for _ in range(3)]
    for i in range(3):
        for _ in range(l):
            powers[i].append(_poly_mul(powers[i][-1], lin[i]))
    return {a: _poly_mul(_poly_mul(powers[0][a[0]], powers[1][a[1]]), powers[2][a[2]]) for a in _monomials(l)}


def wigner_D(l: int, R, parity: int | None = None) -> sympy.ImmutableMatrix:
    """Exact real Wigner matrix D^l(R) in e3nn's basis, = P_l R^{(x)l} P_l^T for det R = +1.

    R: 3x3 orthogonal matrix with exact entries (ints, Fractions, sympy numbers; rational entries take
    a fast exact path, others go through sympy).  Satisfies D^l(R) P_l = P_l R^{(x)l},
    D^l(R1 R2) = D^l(R1) D^l(R2), D^l(R)^T = D^l(R)^{-1}.
    det R = -1: returns D^l(-R) (the rotation part, as e3nn does); the action of R on type ``lp`` is
    ``p * wigner_D(l, R)`` -- pass ``parity=p`` (+1/-1) to have that factor applied here.
    """
    _check_l(l)
    Rq, entries = _rational_matrix(R)
    exact_rational = Rq is not None
    M = Rq if exact_rational else [[sympy.nsimplify(x) if isinstance(x, float) else sympy.sympify(x) for x in row] for row in entries]
    # orthogonality and determinant, exactly
    Ms = sympy.Matrix(M) if not exact_rational else None
    if exact_rational:
        for i in range(3):
            for j in range(3):
                s = sum(M[k][i] * M[k][j] for k in range(3))
                if s != (1 if i == j else 0):
                    raise ValueError("R is not orthogonal (R^T R != I exactly)")
        det = (
            M[0][0] * (M[1][1] * M[2][2] - M[1][2] * M[2][1])
            - M[0][1] * (M[1][0] * M[2][2] - M[1][2] * M[2][0])
            + M[0][2] * (M[1][0] * M[2][1] - M[1][1] * M[2][0])
        )
    else:
        if sympy.simplify(Ms.T * Ms - sympy.eye(3)) != sympy.zeros(3, 3):
            raise ValueError("R is not orthogonal (R^T R != I exactly)")
        det = sympy.simplify(Ms.det())
    if det == -1:
        M = [[-x for x in row] for row in M]
    elif det != 1:  # pragma: no cover - impossible for orthogonal R
        raise ValueError("det R must be +1 or -1")
    sign = 1
    if parity is not None:
        if parity not in (1, -1):
            raise ValueError("parity must be +1 or -1")
        if det == -1:
            sign = parity

    rows = _stf_rows(l)
    d = 2 * l + 1
    mons = _monomials(l)
    mult = {a: _multinomial(a) for a in mons}
    # (R^{(x)l} T_n) has polynomial q_n(R^T r); substitute A = R^T
    A = [[M[j][i] for j in range(3)] for i in range(3)]
    sub = _substitution(l, A)
    if exact_rational:
        # G[n][beta] = coefficient of r^beta in q_n(R^T r)
        D = [[None] * d for _ in range(d)]
        G = []
        for n in range(d):
            g: dict[tuple, _Surd] = {}
            for a, t in rows[n].items():
                w = t * mult[a]
                for b, s in sub[a].items():
                    if s:
                        term = w * s
                        g[b] = g[b] + term if b in g else term
            G.append(g)
        for m in range(d):
            for n in range(d):
                acc = _ZERO
                for b, t in rows[m].items():
                    if b in G[n]:
                        acc = acc + t * G[n][b]
                D[m][n] = (acc * sign).sympy()
        return sympy.ImmutableMatrix(D)
    # generic sympy path (irrational entries)
    D = sympy.zeros(d, d)
    for n in range(d):
        g: dict[tuple, sympy.Expr] = {}
        for a, t in rows[n].items():
            w = t.sympy() * mult[a]
            for b, s in sub[a].items():
                g[b] = g.get(b, 0) + w * s
        for m in range(d):
            acc = sum((t.sympy() * g[b] for b, t in rows[m].items() if b in g), sympy.Integer(0))
            D[m, n] = sympy.radsimp(sympy.expand(acc * sign))
    return sympy.ImmutableMatrix(D)


def wigner_D_numeric(l: int, R, parity: int | None = None) -> np.ndarray:
    """float64 D^l(R) = P_l R^{(x)l} P_l^T for R of shape (..., 3, 3) (batched), e3nn's basis.

    Same convention as ``wigner_D``: an improper R (det < 0) gives D^l(-R); ``parity=p`` multiplies
    those by p, which reproduces ``e3nn.o3.Irrep(l, p).D_from_matrix(R)``.
    """
    _check_l(l)
    R = np.asarray(R, dtype=np.float64)
    if R.shape[-2:] != (3, 3):
        raise ValueError("R must have shape (..., 3, 3)")
    batch = R.shape[:-2]
    Rb = R.reshape(-1, 3, 3)
    det = np.linalg.det(Rb)
    sgn = np.where(det < 0, -1.0, 1.0)
    Rb = Rb * sgn[:, None, None]
    d = 2 * l + 1
    P = _P_float(l)
    B = Rb.shape[0]
    # T[b, a1..al, n] = (R^{(x)l} P^T)[a1..al, n]
    T = np.broadcast_to(P.T.reshape((3,) * l + (d,)), (B,) + (3,) * l + (d,))
    for leg in range(l):
        T = np.moveaxis(T, leg + 1, -1)
        T = np.einsum("b...j,bij->b...i", T, Rb)
        T = np.moveaxis(T, -1, leg + 1)
    D = np.einsum("mk,bkn->bmn", P, T.reshape(B, 3**l, d))
    if parity is not None:
        if parity not in (1, -1):
            raise ValueError("parity must be +1 or -1")
        D = D * np.where(det < 0, float(parity), 1.0)[:, None, None]
    return D.reshape(batch + (d, d))


# ----------------------------------------------------------------------------------------------
# images modulo a prime: the ring homomorphism sqrt(q) -> a square root of q mod p


def _surd_primes(s: _Surd) -> set[int]:
    """The primes under the square roots of ``s`` (the radicands are square-free)."""
    out: set[int] = set()
    for n in s.t:
        if n != 1:
            out.update(sympy.factorint(n))
    return out


@functools.cache
def constant_primes(kind: str, params: tuple[int, ...]) -> frozenset[int]:
    """The primes q whose square roots occur in the exact table of ``cg(l1,l2,l3)`` or ``P(l)``."""
    values = _w3j(*params).values() if kind == "cg" else (v for row in _stf_rows(*params) for v in row.values())
    out: set[int] = set()
    for v in values:
        out |= _surd_primes(v)
    return frozenset(out)


def surd_prime(primes, below: int) -> int:
    """The largest prime p < ``below`` modulo which every prime in ``primes`` is a nonzero square, so
    that sqrt(q) -> (a root of q mod p) extends to a ring homomorphism from the exact numbers of the
    constants (rationals with denominators prime to p, and square roots of those primes) onto Z/p.
    Linear independence of the images mod p implies independence of the exact values (a minor that
    is nonzero mod p is nonzero), which is all :mod:`compiler.tools.enumeration` needs."""
    p = int(sympy.prevprime(below))
    while True:
        if all(q % p and pow(q, (p - 1) // 2, p) == 1 for q in primes):
            return p
        p = int(sympy.prevprime(p))


@functools.cache
def _root_mod_p(q: int, p: int) -> int:
    """The smaller square root of the prime q modulo p (a fixed choice: one homomorphism)."""
    from sympy.ntheory import sqrt_mod

    r = sqrt_mod(q, p)
    if r is None or r * r % p != q % p:
        raise ValueError(f"{q} has no square root modulo {p}")
    return min(r, p - r)


def _surd_mod_p(s: _Surd, p: int) -> int:
    total = 0
    for n, c in s.t.items():
        if c.denominator % p == 0:
            raise ValueError(f"a denominator of the constant is divisible by {p}")
        root = 1
        if n != 1:
            for q in sympy.factorint(n):
                root = root * _root_mod_p(q, p) % p
        total += c.numerator % p * pow(c.denominator, -1, p) % p * root
    return total % p


@functools.cache
def constant_mod_p(kind: str, params: tuple[int, ...], p: int) -> np.ndarray:
    """The image of the exact table of ``cg(l1,l2,l3)`` or ``P(l)`` (the shape of
    :func:`compiler.math.constants.constant_table`) under the homomorphism of :func:`surd_prime`, as int64
    residues; ValueError if some square root needed has none modulo p."""
    if kind == "cg":
        l1, l2, l3 = params
        arr = np.zeros((2 * l1 + 1, 2 * l2 + 1, 2 * l3 + 1), dtype=np.int64)
        for key, v in _w3j(l1, l2, l3).items():
            arr[key] = _surd_mod_p(v, p)
    elif kind == "P":
        (l,) = params
        cols = _column_monomials(l)
        arr = np.zeros((2 * l + 1, 3**l), dtype=np.int64)
        for m, row in enumerate(_stf_rows(l)):
            vals = {a: _surd_mod_p(v, p) for a, v in row.items()}
            arr[m] = [vals.get(a, 0) for a in cols]
        arr = arr.reshape((2 * l + 1,) + (3,) * l)
    else:
        raise ValueError(f"'{kind}' is not a constant with square roots")
    arr.setflags(write=False)
    return arr
