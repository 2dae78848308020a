"""Numerical equivariance testing, shipped for users, the test suite and the certifier alike.

>>> from compiler.testing import assert_equivariant
>>> assert_equivariant(module.cross, ["vec", "vec"], ["axial"], group="O3")   # doctest: +SKIP

``assert_equivariant(f, inputs, outputs)`` draws random inputs of the given types (with their
symmetries), random rotations, and for O(3) random improper elements (reflections), and checks
``f(rho_in(g) x) == rho_out(g) f(x)`` for every output.
"""

from __future__ import annotations

import numpy as np

from .ir.types import FixedSize, TensorType


def _as_type(t) -> TensorType:
    return t if isinstance(t, TensorType) else TensorType.parse(t)


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A Haar-random proper rotation (det = +1)."""
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def random_reflection(rng: np.random.Generator) -> np.ndarray:
    """A random improper orthogonal matrix (det = -1): a mirror composed with a rotation."""
    return random_rotation(rng) @ np.diag([1.0, 1.0, -1.0])


def _det(g) -> float:
    """det g: exact for matrices of Fractions (object arrays or nested lists), float otherwise."""
    m = np.asarray(g, dtype=object if not isinstance(g, np.ndarray) or g.dtype == object else float)
    if m.dtype == object:
        return (m[0, 0] * (m[1, 1] * m[2, 2] - m[1, 2] * m[2, 1]) - m[0, 1] * (m[1, 0] * m[2, 2] - m[1, 2] * m[2, 0])
                + m[0, 2] * (m[1, 0] * m[2, 1] - m[1, 1] * m[2, 0]))
    return float(np.linalg.det(m))


def wigner_d(irrep, g) -> np.ndarray:
    """The real Wigner matrix of an irrep (l, p) at g in O(3), in e3nn's basis (l = 1 is (x, y, z)):
    D^l of the proper part, times p when g is improper. Exact for exact g when l <= 1."""
    g = np.asarray(g)
    det = _det(g)
    sign = irrep.p if det < 0 else 1
    q = g * (1 if det > 0 else -1)  # the proper part
    if irrep.l == 0:
        return np.array([[sign]], dtype=g.dtype)
    if irrep.l == 1:
        return sign * q
    if g.dtype == object:
        from .math.spherical import wigner_D

        return sign * np.array(wigner_D(irrep.l, q.tolist()).tolist(), dtype=object)
    from .math.spherical import wigner_D_numeric

    return sign * wigner_D_numeric(irrep.l, q.astype(float))


def act(t, g, x):
    """rho(g) x for x of type ``t``: R on each Cartesian leg, the det(R) factor of pseudo parts,
    part by part for graded rank-2 tensors; channel axes untouched. Exact when g and x hold
    Fractions (object arrays): the certifier uses the same function."""
    t = _as_type(t)
    g = np.asarray(g, dtype=object) if isinstance(g, list) else np.asarray(g)
    x = np.asarray(x)
    if t.family in ("weight", "edges"):  # invariant: no geometric leg
        return x
    if t.family == "sph":
        return np.einsum("ij,...j->...i", wigner_d(t.irrep, g), x)
    y = x
    for k in range(t.rank):
        axis = x.ndim - t.rank + k
        y = np.moveaxis(np.tensordot(g, y, axes=([1], [axis])), 0, axis)
    if _det(g) > 0:
        return y
    if t.rank == 2 and t.graded:
        yt = np.swapaxes(y, -1, -2)
        trace = np.einsum("...ii->...", y)[..., None, None] * np.eye(3, dtype=int)
        parts = {0: trace / 3, 1: (y - yt) / 2, 2: (y + yt) / 2 - trace / 3}
        total = parts[t.parts[0].l] * t.parts[0].p
        for ir in t.parts[1:]:
            total = total + parts[ir.l] * ir.p
        return total
    return y * (-1 if t.parities[0] == -1 else 1)


def random_input(t, rng: np.random.Generator, batch=(4,), channel_sizes=None, dtype=np.float64) -> np.ndarray:
    """A random array of type ``t`` with its symmetry: symmetric, antisymmetric or traceless (symt(l):
    symmetric and traceless on every pair of legs)."""
    t = _as_type(t)
    sizes = channel_sizes or {}
    shape = tuple(batch) + tuple(c.size if isinstance(c, FixedSize) else sizes.get(c, 2) for c in t.channels) + t.geometric_dims
    x = rng.normal(size=shape)
    if t.family == "cart" and t.rank >= 3 and t.symmetry == "sym_traceless":  # symt(l)
        from .math.stf import stf_from_array

        x = stf_from_array(x, t.rank)
    if t.family == "cart" and t.rank == 2 and t.symmetry:
        xt = np.swapaxes(x, -1, -2)
        if t.symmetry == "skew":
            x = (x - xt) / 2
        else:
            x = (x + xt) / 2
            if t.symmetry == "sym_traceless":
                x = x - np.trace(x, axis1=-2, axis2=-1)[..., None, None] * np.eye(3) / 3
    return x.astype(dtype)


def equivariance_error(f, inputs, outputs, g, args) -> float:
    """max |f(rho(g) x) - rho(g) f(x)| over all outputs, relative to max |f(x)|."""
    inputs = [_as_type(t) for t in inputs]
    outputs = [_as_type(t) for t in outputs]
    plain = f(*args)
    moved = f(*[act(t, g, a) for t, a in zip(inputs, args)])
    if len(outputs) == 1:
        plain, moved = (plain,), (moved,)
    worst = 0.0
    for t, y, y_moved in zip(outputs, plain, moved):
        y = np.asarray(y)
        scale = max(1.0, float(np.max(np.abs(y))) if y.size else 1.0)
        worst = max(worst, float(np.max(np.abs(np.asarray(y_moved) - act(t, g, y)))) / scale if y.size else 0.0)
    return worst


def assert_equivariant(f, inputs, outputs, group: str = "O3", *, trials: int = 3, seed: int = 0,
                       batch=(4,), channel_sizes=None, tol: float = 1e-10) -> None:
    """Raise AssertionError unless f commutes with random rotations (and reflections for O3)."""
    if group not in ("O3", "SO3"):
        raise ValueError(f"unknown group {group!r}")
    rng = np.random.default_rng(seed)
    for trial in range(trials):
        args = [random_input(t, rng, batch, channel_sizes) for t in inputs]
        elements = [("rotation", random_rotation(rng))]
        if group == "O3":
            elements.append(("reflection", random_reflection(rng)))
        for what, g in elements:
            err = equivariance_error(f, inputs, outputs, g, args)
            if not err <= tol:
                raise AssertionError(f"not equivariant under a random {what} (trial {trial}): "
                                     f"relative error {err:.3e} > {tol:.1e}")
