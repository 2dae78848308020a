"""Symmetric traceless (STF) Cartesian tensors of rank l from their 2l+1 free components, in any
number domain (floats, Fractions, polynomials, residues mod p): one construction for random
inputs, exact symbolic inputs and evaluation modulo a prime.

A symmetric tensor's entry depends only on how many of its legs are x, y and z: the monomial
(a, b, c), a + b + c = l. Tracelessness is T(a+2, b, c) + T(a, b+2, c) + T(a, b, c+2) = 0 for every
monomial of degree l - 2, so the entries with c <= 1 (l + 1 with c = 0, l with c = 1) are free and
the others follow by T(a, b, c) = -T(a+2, b, c-2) - T(a, b+2, c-2), with rational coefficients.
"""

from __future__ import annotations

import itertools

import numpy as np


def free_monomials(l: int) -> list[tuple[int, int, int]]:
    """The 2l+1 monomials (a, b, c) with c <= 1 whose entries determine an STF tensor of rank l."""
    return [(a, l - c - a, c) for c in (0, 1) if c <= l for a in range(l - c, -1, -1)]


def stf_fill(free: dict, l: int, batch: tuple[int, ...] = (), dtype=object) -> np.ndarray:
    """The STF tensor, shape ``batch + (3,) * l``, whose entries at the free monomials are
    ``free[(a, b, c)]`` (scalars or arrays of shape ``batch``)."""
    entries = dict(free)
    for c in range(2, l + 1):
        for a in range(l - c, -1, -1):
            b = l - c - a
            entries[(a, b, c)] = -entries[(a + 2, b, c - 2)] - entries[(a, b + 2, c - 2)]
    out = np.empty(tuple(batch) + (3,) * l, dtype=dtype)
    for idx in itertools.product(range(3), repeat=l):
        out[(Ellipsis,) + idx] = entries[(idx.count(0), idx.count(1), idx.count(2))]
    return out


def stf_from_array(a: np.ndarray, l: int) -> np.ndarray:
    """The STF tensor whose free entries are read from ``a`` (shape ``(..., 3, ..., 3)``): the
    symmetric traceless tensor a random array stands for."""
    batch = a.shape[:a.ndim - l]
    free = {}
    for m in free_monomials(l):
        idx = (0,) * m[0] + (1,) * m[1] + (2,) * m[2]
        free[m] = a[(Ellipsis,) + idx]
    return stf_fill(free, l, batch, a.dtype)


def is_stf(typ) -> bool:
    """A symmetric traceless Cartesian type of rank >= 3 (``symt(l)``; rank 2 is ``sym2t``)."""
    return typ.family == "cart" and typ.rank >= 3 and typ.symmetry == "sym_traceless"
