"""The built-in constants of the language, exactly: one home for their tables.

``delta`` (the 3x3 identity) and ``eps`` (the Levi-Civita symbol) are integers; ``cg(l1,l2,l3)``
(real Wigner 3j symbols) and ``P(l)`` (the Cartesian-to-spherical map of degree l) hold square roots
of rationals, as sympy numbers. Every table is an object array of exact values; a caller that needs
integers or floats converts (``EPS.astype(np.int64)``, ``np.asarray(a, dtype=np.float64)``).

A constant's kind and parameters are a typed :class:`Constant` on its IR node (never parsed back
from the node's name); ``str(constant)`` is its one spelling, ``cg(1,1,2)``, as in the source.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

#: eps[i,j,k]: +1 on even permutations of (0,1,2), -1 on odd ones, 0 elsewhere
EPS = np.zeros((3, 3, 3), dtype=object)
for _p in itertools.permutations(range(3)):
    EPS[_p] = 1 if _p in ((0, 1, 2), (1, 2, 0), (2, 0, 1)) else -1
del _p
#: delta[i,j]
DELTA = np.eye(3, dtype=int).astype(object)


@dataclass(frozen=True)
class Constant:
    """A built-in constant with parameters: ``Constant('cg', (1, 1, 2))`` or ``Constant('P', (2,))``."""

    kind: str  # 'cg' | 'P'
    params: tuple[int, ...]

    def __str__(self) -> str:
        return f"{self.kind}({','.join(map(str, self.params))})"


def constant_table(kind: str, params: tuple[int, ...] = ()) -> np.ndarray:
    """The exact table of a constant: delta, eps (integers), cg, P (sympy surds)."""
    if kind == "delta":
        return DELTA
    if kind == "eps":
        return EPS
    from .spherical import cartesian_to_spherical, wigner_3j

    if kind == "cg":
        return np.array(wigner_3j(*params), dtype=object)
    if kind == "P":
        (l,) = params
        p = np.array(cartesian_to_spherical(l).tolist(), dtype=object)
        return p.reshape((2 * l + 1,) + (3,) * l)
    raise ValueError(f"'{kind}' is not a built-in constant")


def constant_array(node) -> np.ndarray:
    """The exact values of a constant IR node (delta, eps, cg, P)."""
    c = node.constant
    return constant_table(node.kind, c.params if c is not None else ())
