"""Exact sums of rational multiples of square roots (compiler/math/surds.py), which the checker's
exact evaluation uses for the entries of cg and P tables instead of sympy's expression domain."""

from __future__ import annotations

import random
from fractions import Fraction

import numpy as np
import pytest
import sympy

from compiler.math.constants import constant_table
from compiler.math.surds import Surds, squarefree_split, surd_parts


def as_sympy(x):
    """A Surds (or plain rational) as the sympy number it stands for."""
    parts = x.parts if isinstance(x, Surds) else {1: x}
    return sympy.Add(*(sympy.Rational(Fraction(c).numerator, Fraction(c).denominator) * sympy.sqrt(s)
                       for s, c in parts.items()))


def lift(value):
    return Surds.make(dict(surd_parts(value)))


@pytest.mark.parametrize("kind, args", [("P", (1,)), ("P", (2,)), ("P", (3,))]
                         + [("cg", (a, b, c)) for a in range(4) for b in range(4) for c in range(abs(a - b), min(a + b, 3) + 1)])
def test_every_table_entry_is_a_sum_of_square_roots(kind, args):
    """Every entry of the cg and P tables the checker meets is sum_s c_s sqrt(s) with s squarefree:
    the parts reproduce the entry exactly."""
    table = constant_table(kind, args)
    for entry in set(np.asarray(table, dtype=object).flat):
        parts = surd_parts(entry)
        assert parts is not None, entry
        assert all(squarefree_split(s) == (1, s) for s in parts)
        assert sympy.simplify(as_sympy(Surds.make(dict(parts))) - entry) == 0, entry


def test_what_is_not_a_sum_of_square_roots_is_refused():
    for value in (sympy.cbrt(2), sympy.pi, sympy.sqrt(-2), sympy.sqrt(2 + sympy.sqrt(3)), sympy.Symbol("x")):
        assert surd_parts(value) is None, value
    assert surd_parts(sympy.sqrt(sympy.Rational(1, 8))) == {2: Fraction(1, 4)}
    assert surd_parts(sympy.sqrt(12) - 2 * sympy.sqrt(3)) == {}
    assert surd_parts(0) == {} and surd_parts(sympy.Rational(-3, 4)) == {1: Fraction(-3, 4)}


def test_arithmetic_agrees_with_sympy():
    """Random sums, differences and products of numbers built from sqrt(2), sqrt(3), sqrt(5),
    sqrt(6), sqrt(10), sqrt(15) and rationals: each result equals sympy's, a result that is rational
    is a plain coefficient and zero is 0."""
    rng = random.Random(7)
    radicands = (1, 2, 3, 5, 6, 10, 15)

    def number():
        return sympy.Add(*(sympy.Rational(rng.randint(-5, 5), rng.randint(1, 4)) * sympy.sqrt(s)
                           for s in rng.sample(radicands, rng.randint(1, 3))))

    for _ in range(300):
        a, b = number(), number()
        x, y = lift(a), lift(b)
        for got, want in ((x + y, a + b), (x - y, a - b), (x * y, a * b), (x * 3, 3 * a), (2 + x, a + 2),
                          (x * Fraction(1, 3), a / 3), (-x, -a), (x - x, 0), (1 - x, 1 - a)):
            assert sympy.expand(as_sympy(got) - want) == 0, (a, b, got, want)
            if sympy.expand(want).is_Rational:
                assert not isinstance(got, Surds)
        assert (x == y) == (sympy.expand(a - b) == 0) and (x == x) and not (x != x)
        assert (x * y == 0) == (sympy.expand(a * b) == 0)


def test_sqrt_times_sqrt():
    assert lift(sympy.sqrt(2)) * lift(sympy.sqrt(2)) == 2
    assert isinstance(lift(sympy.sqrt(6)) * lift(sympy.sqrt(10)), Surds)
    assert (lift(sympy.sqrt(6)) * lift(sympy.sqrt(10))).parts == {15: 2}  # sqrt(60) = 2 sqrt(15)


def test_polynomial_coefficients_mix_with_surds():
    """In the checker the coefficients are polynomials over QQ: a polynomial times a Surds (sympy's
    ring hands the product back to Surds), sums cancelling to 0, numpy's einsum over object arrays."""
    from sympy import QQ
    from sympy.polys.rings import ring

    R, x, y = ring("x y", QQ)
    s2 = Surds.make({2: R(1)})
    assert x * s2 - s2 * x == 0 and (x + s2) - s2 == x
    p = np.array([x, y, R(0)], dtype=object)
    q = np.array([s2, s2 * y, s2], dtype=object)
    total = np.einsum("i,i->", p, q)
    assert isinstance(total, Surds) and total.parts == {2: x + y ** 2}
    assert total - Surds.make({2: x}) - Surds.make({2: y ** 2}) == 0


CHECKS = {  # graded inputs through P(2) and cg: decided by the exact parity check
    "P(2) of the 2e part into sph(2e)": ("group O3\ndiagram f(X: cart2(0e+1o+2e)[c]) -> t: sph(2e)[c] {\n"
                                         "    t[c,m] = P(2)[m,i,j] X[c,i,j]\n}\n", None),
    "P(2) of the 2e part into sph(2o)": ("group O3\ndiagram f(X: cart2(0e+1o+2e)[c]) -> t: sph(2o)[c] {\n"
                                         "    t[c,m] = P(2)[m,i,j] X[c,i,j]\n}\n", "mixes parities"),
    "a 2o part into a 2e one": ("group O3\ndiagram f(X: cart2(0e+1o+2o)[c], y: sph(2e)[c]) -> Z: cart2(0e+1o+2e)[c] {\n"
                                "    Z[c,i,j] = P(2)[m,i,j] y[c,m] + X[c,i,j]\n}\n", "symmetric traceless (2e) part"),
    "cg(2,1,1) into 1o": ("group O3\ndiagram f(X: cart2(0e+1o+2e)[c], y: sph(1o)[c]) -> z: sph(1o)[c] {\n"
                          "    z[c,k] = cg(2,1,1)[m,n,k] P(2)[m,i,j] X[c,i,j] y[c,n]\n}\n", None),
    "cg(2,1,1) into 1e": ("group O3\ndiagram f(X: cart2(0e+1o+2e)[c], y: sph(1o)[c]) -> z: sph(1e)[c] {\n"
                          "    z[c,k] = cg(2,1,1)[m,n,k] P(2)[m,i,j] X[c,i,j] y[c,n]\n}\n", "mixes parities"),
}


@pytest.mark.parametrize("name", list(CHECKS))
def test_the_checker_decides_as_with_sympy_expressions(monkeypatch, name):
    """The same verdict, word for word, with the constants as Surds over QQ and as sympy's EX domain."""
    import compiler.ir.exact as exact
    from compiler.api import check_source

    src, expected = CHECKS[name]
    (fast,) = check_source(src, "f.diag")
    assert exact._domain(next(iter(_equations(src))))[1] is True  # the constants went through Surds
    monkeypatch.setattr(exact, "_domain", lambda eq: (sympy.EX, False))
    (slow,) = check_source(src, "f.diag")
    assert str(fast.error) == str(slow.error)
    if expected is None:
        assert fast.error is None
    else:
        assert fast.error is not None and expected in str(fast.error)


def _equations(src):
    from compiler.frontend.lower import lower_source

    return [eq for d in lower_source(src, "f.diag").diagrams for eq in d.equations]
