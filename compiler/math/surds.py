"""Exact numbers of the form sum_s c_s sqrt(s): the constants of cg and P tables in exact checks.

The entries of the Clebsch-Gordan and P(l) tables are rational multiples of square roots
(``sqrt(6)/3``, ``-sqrt(210)/70``). The checker's exact evaluation (:mod:`compiler.ir.exact`) used to
lift them into sympy's expression domain EX, where every product of polynomials calls ``cancel``:
3 of the 5 seconds that compiling TensorNet's layers took. Here such a number is a map from
squarefree integers s to coefficients c_s (rationals, or polynomials over the rationals in the
checker's ring): a product sqrt(s1) sqrt(s2) = g sqrt(s1 s2 / g^2) with g = gcd(s1, s2), which is
squarefree again, and since the square roots of distinct squarefree integers are linearly
independent over the rationals, a sum is zero exactly when every coefficient is. So every identity
decided with EX is decided the same way, with the coefficients' own (fast) arithmetic.
"""

from __future__ import annotations

from math import gcd


class Surds:
    """sum_s parts[s] * sqrt(s) over squarefree s >= 1 (parts without zero coefficients). Mixes with
    plain coefficients (a polynomial, a rational, an int: the part of s = 1). A result with only
    the part of s = 1 is returned as that coefficient, and 0 as the int 0."""

    __slots__ = ("parts",)

    def __init__(self, parts: dict):
        self.parts = parts

    @staticmethod
    def make(parts: dict):
        parts = {s: c for s, c in parts.items() if c != 0}
        if not parts:
            return 0
        if len(parts) == 1 and 1 in parts:
            return parts[1]
        return Surds(parts)

    @staticmethod
    def _parts(x) -> dict:
        if isinstance(x, Surds):
            return x.parts
        return {1: x}

    def __add__(self, other):
        parts = dict(self.parts)
        for s, c in Surds._parts(other).items():
            parts[s] = parts[s] + c if s in parts else c
        return Surds.make(parts)

    __radd__ = __add__

    def __neg__(self):
        return Surds({s: -c for s, c in self.parts.items()})

    def __sub__(self, other):
        return self + (-other)

    def __rsub__(self, other):
        return (-self) + other

    def __mul__(self, other):
        parts: dict = {}
        for s2, c2 in Surds._parts(other).items():
            for s1, c1 in self.parts.items():
                g = gcd(s1, s2)
                s = s1 // g * (s2 // g)
                c = c1 * c2 * g if g != 1 else c1 * c2
                parts[s] = parts[s] + c if s in parts else c
        return Surds.make(parts)

    def __rmul__(self, other):
        return self * other  # (commutative coefficients)

    def __eq__(self, other):
        difference = self - other
        return not isinstance(difference, Surds) and difference == 0

    def __ne__(self, other):
        return not self == other

    __hash__ = None

    def __repr__(self) -> str:
        return " + ".join(f"({c})*sqrt({s})" for s, c in sorted(self.parts.items()))


def squarefree_split(n: int) -> tuple[int, int]:
    """(k, s) with n = k^2 s and s squarefree (n >= 1)."""
    from sympy import factorint

    k = s = 1
    for p, e in factorint(n).items():
        k *= p ** (e // 2)
        if e % 2:
            s *= p
    return k, s


def surd_parts(value) -> dict | None:
    """{squarefree s: Fraction} with value = sum_s c_s sqrt(s), for an int, a rational or a sympy
    expression that is a sum of rational multiples of square roots of positive rationals; None for
    anything else (a cube root, pi, ...)."""
    from fractions import Fraction

    import sympy

    expr = value if isinstance(value, sympy.Basic) else sympy.Rational(value)
    parts: dict[int, Fraction] = {}
    for monomial, coefficient in sympy.expand(expr).as_coefficients_dict().items():
        square = monomial ** 2
        if not (coefficient.is_Rational and monomial.is_positive and square.is_Rational):
            return None
        square = Fraction(int(square.p), int(square.q))
        # monomial = sqrt(p/q) = sqrt(p q) / q = k sqrt(s) / q
        k, s = squarefree_split(square.numerator * square.denominator)
        c = Fraction(int(coefficient.p), int(coefficient.q)) * Fraction(k, square.denominator)
        parts[s] = parts.get(s, Fraction(0)) + c
    return {s: c for s, c in parts.items() if c != 0}
