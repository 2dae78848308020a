"""Independent hand-written numpy references for the example diagrams in ``diagrams/*.diag``.

Each function here re-implements one diagram with ordinary numpy operations (``@``, ``np.cross``,
``np.swapaxes``, ``np.trace``, broadcasting, explicit component formulas) -- deliberately *not* by
transcribing the diagram's index formula into ``np.einsum`` -- so that tests can compare the code
diagc generates against a genuinely independent implementation.  Where a diagram is one of
TensorNet's operations, the reference is ``benchmarks/experts.py``'s ``expert_set(numpy)``:
torchmd-net's formulation (``vector_to_skewtensor``, ``skewtensor_to_vector``, ``decompose_tensor``,
``tensor_norm``, the O(3) product ``MY + YM`` and the SO(3) product ``2 YM`` of the interaction layer,
channel mixing as a bias-free linear layer), written once for numpy and torch; the benchmarks time the
same functions as their expert contenders.

Storage convention (the same as the compiled functions): arguments in declaration order; every
array has arbitrary leading batch axes ``...`` (broadcast between arguments), then its channel
axes in declared order, then one axis of size 3 per Cartesian leg.  For example ``X: cart2[c]`` is
``(..., c, 3, 3)``, ``W: weight[c, d]`` is ``(..., c, d)`` (possibly without batch axes),
``fI: scalar[c]`` is ``(..., c)``, ``v: vec`` is ``(..., 3)`` and a ``scalar`` output is ``(...)``.
A diagram with several outputs returns a tuple in declared order.

``REFERENCES`` maps ``(file stem, diagram name)`` to the reference function.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

__all__ = ["REFERENCES"]


# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------

def _eye(*arrays: np.ndarray) -> np.ndarray:
    """3x3 identity in the floating dtype the arguments promote to."""
    return np.eye(3, dtype=np.result_type(*arrays, np.float32))


def _trace(X: np.ndarray) -> np.ndarray:
    """Trace over the last two (3x3) axes."""
    return np.trace(X, axis1=-2, axis2=-1)


def _transpose(X: np.ndarray) -> np.ndarray:
    """Transpose of the trailing 3x3 block."""
    return np.swapaxes(X, -1, -2)


def _channel_mix(W: np.ndarray, X: np.ndarray) -> np.ndarray:
    """Y[..., d, *geo] = sum_c W[..., c, d] X[..., c, *geo] for X with two 3-legs (..., c, 3, 3).

    Done as a batched matmul: (..., d, c) @ (..., c, 9) -> (..., d, 9).
    """
    W = np.asarray(W)
    X = np.asarray(X)
    flat = X.reshape(X.shape[:-2] + (9,))
    mixed = np.swapaxes(W, -1, -2) @ flat
    return mixed.reshape(mixed.shape[:-1] + (3, 3))


def _channel_mix_scalar(W: np.ndarray, s: np.ndarray) -> np.ndarray:
    """t[..., d] = sum_c W[..., c, d] s[..., c] as a row-vector times matrix product."""
    W = np.asarray(W)
    s = np.asarray(s)
    return (s[..., None, :] @ W)[..., 0, :]


def _decompose_parts(X: np.ndarray):
    """The trace, antisymmetric and symmetric traceless parts, as full 3x3 arrays (I, A, S)."""
    X = np.asarray(X)
    XT = _transpose(X)
    I = (_trace(X) / 3.0)[..., None, None] * _eye(X)
    A = 0.5 * (X - XT)
    S = 0.5 * (X + XT) - I
    return I, A, S


# ----------------------------------------------------------------------------------------------
# decompose.diag
# ----------------------------------------------------------------------------------------------

def decompose(X):
    """decompose(X: cart2) -> (I: cart2, A: skew2, S: sym2t); X is (..., 3, 3)."""
    return _decompose_parts(X)


# ----------------------------------------------------------------------------------------------
# linear.diag
# ----------------------------------------------------------------------------------------------

def mix(X, W):
    """mix(X: cart2[c], W: weight[c,d]) -> Y: cart2[d]; Y = W^T X over the channel axis."""
    return _channel_mix(W, X)


def linear_cart2(X, W0, W1, W2):
    """linear_cart2: Y_d = sum_c W0[c,d] X_c + W1[c,d] X_c^T + W2[c,d] tr(X_c) * I."""
    X = np.asarray(X)
    identity_part = _channel_mix(W0, X)
    transpose_part = _channel_mix(W1, _transpose(X))
    trace_part = _channel_mix_scalar(W2, _trace(X))[..., None, None] * _eye(X, W2)
    return identity_part + transpose_part + trace_part


# ----------------------------------------------------------------------------------------------
# products.diag
# ----------------------------------------------------------------------------------------------

def dot(a, b):
    """dot(a: vec, b: vec) -> s: scalar."""
    a = np.asarray(a)
    b = np.asarray(b)
    return np.sum(a * b, axis=-1)


def cross(a, b):
    """cross(a: vec, b: vec) -> c: axial."""
    return np.cross(np.asarray(a), np.asarray(b))


def triple(a, b, c):
    """triple(a, b, c) -> t: pscalar; (a x b) . c."""
    return np.sum(np.cross(np.asarray(a), np.asarray(b)) * np.asarray(c), axis=-1)


# ----------------------------------------------------------------------------------------------
# tensornet.diag, tensornet_so3.diag: torchmd-net's formulas, benchmarks/experts.py (the benchmarks'
# expert contenders: one copy, numpy or torch)
# ----------------------------------------------------------------------------------------------

from experts import expert_set  # noqa: E402  (benchmarks/experts.py, the one copy)


# ----------------------------------------------------------------------------------------------

REFERENCES: dict[tuple[str, str], Callable] = {
    ("decompose", "decompose"): decompose,
    ("linear", "mix"): mix,
    ("linear", "linear_cart2"): linear_cart2,
    ("products", "dot"): dot,
    ("products", "cross"): cross,
    ("products", "triple"): triple,
}
REFERENCES.update({key: fn for key, (_, fn) in expert_set(np).items() if key[0] in ("tensornet", "tensornet_so3")})


# ---------------------------------------------------------------------------------------------------
# spherical.diag: e3nn's Wigner-3j (read from e3nn itself, float64) and the explicit l = 2 basis
# matrices of SEEDS §1.3 / the README (e3nn order; l = 1 is (x, y, z))
# ---------------------------------------------------------------------------------------------------

def _w3j(l1, l2, l3):
    import torch
    from e3nn import o3

    return o3.wigner_3j(l1, l2, l3, dtype=torch.float64).numpy()


_S2 = 1 / np.sqrt(2.0)
_S6 = 1 / np.sqrt(6.0)
_L2 = np.zeros((5, 3, 3))
_L2[0, 0, 2] = _L2[0, 2, 0] = _S2  # (E_xz + E_zx)/sqrt2
_L2[1, 0, 1] = _L2[1, 1, 0] = _S2  # (E_xy + E_yx)/sqrt2
_L2[2] = np.diag([-_S6, 2 * _S6, -_S6])  # (2E_yy - E_xx - E_zz)/sqrt6
_L2[3, 1, 2] = _L2[3, 2, 1] = _S2  # (E_yz + E_zy)/sqrt2
_L2[4] = np.diag([-_S2, 0.0, _S2])  # (E_zz - E_xx)/sqrt2


def vec_vec(x, y):
    return tuple(np.einsum("abc,...a,...b->...c", _w3j(1, 1, l), x, y) for l in (0, 1, 2))


def tp_2e(x, y):
    return np.einsum("abm,...ca,...cb->...cm", _w3j(2, 2, 2), x, y)


def tp_1o_2e(x, y):
    return np.einsum("abm,...ca,...cb->...cm", _w3j(1, 2, 1), x, y)


def cart_to_sph(X):
    s = np.trace(X, axis1=-2, axis2=-1)[..., None]
    v = 0.5 * np.stack([X[..., 1, 2] - X[..., 2, 1], X[..., 2, 0] - X[..., 0, 2], X[..., 0, 1] - X[..., 1, 0]], -1)
    t = np.tensordot(X, _L2, axes=([-2, -1], [1, 2]))
    return s, v, t


def sph_to_sym2t(t):
    return np.tensordot(t, _L2, axes=([-1], [0]))


def vec_to_sph(r):
    return np.array(r, copy=True)


REFERENCES.update({
    ("spherical", "vec_vec"): vec_vec,
    ("spherical", "tp_2e"): tp_2e,
    ("spherical", "tp_1o_2e"): tp_1o_2e,
    ("spherical", "cart_to_sph"): cart_to_sph,
    ("spherical", "sph_to_sym2t"): sph_to_sym2t,
    ("spherical", "vec_to_sph"): vec_to_sph,
})


# ---------------------------------------------------------------------------------------------------
# tensornet_layer.diag: torchmd-net's compose/decompose/products written out in numpy (compact parts
# i, a, t with X = i delta + [a]x + sum_m t_m L2[m], L2 the explicit l = 2 basis above)
# ---------------------------------------------------------------------------------------------------

def _skew(a):
    a0, a1, a2 = a[..., 0], a[..., 1], a[..., 2]
    z = np.zeros_like(a0)
    return np.stack([np.stack([z, -a2, a1], -1), np.stack([a2, z, -a0], -1), np.stack([-a1, a0, z], -1)], -2)


def tl_compose(i, a, t):
    i, a, t = (np.asarray(x) for x in (i, a, t))
    return i[..., None, None] * np.eye(3) + _skew(a) + np.tensordot(t, _L2, axes=([-1], [0]))


def tl_compose_mixed(i, a, t, W0, W1, W2, n0, n1, n2):
    i2 = np.einsum("...c,...cd->...d", i, W0) * n0
    a2 = np.einsum("...ck,...cd->...dk", a, W1) * np.asarray(n1)[..., None]
    t2 = np.einsum("...cm,...cd->...dm", t, W2) * np.asarray(n2)[..., None]
    return tl_compose(i2, a2, t2)


def tl_project(X, s, W0, W1, W2):
    X = np.asarray(X) * np.asarray(s)[..., None, None]
    i = np.trace(X, axis1=-2, axis2=-1) / 3
    a = 0.5 * np.stack([X[..., 2, 1] - X[..., 1, 2], X[..., 0, 2] - X[..., 2, 0], X[..., 1, 0] - X[..., 0, 1]], -1)
    t = np.einsum("...ij,mij->...m", X, _L2)
    return (np.einsum("...c,...cd->...d", i, W0), np.einsum("...ck,...cd->...dk", a, W1),
            np.einsum("...cm,...cd->...dm", t, W2))


def tl_parts_norm(i, a, t):
    return 3 * np.asarray(i) ** 2 + 2 * (np.asarray(a) ** 2).sum(-1) + (np.asarray(t) ** 2).sum(-1)


def tl_matmul_o3_scaled(M, Y, g):
    return np.asarray(g)[..., None, None, None] * (np.asarray(M) @ Y + np.asarray(Y) @ M)


def tl_residual(X, D, g):
    return np.asarray(X) + D + np.asarray(g)[..., None, None, None] * (np.asarray(D) @ D)


def tl_part_norms(X):
    X = np.asarray(X)
    eye = np.eye(3)
    I = np.trace(X, axis1=-2, axis2=-1)[..., None, None] / 3 * eye
    A = 0.5 * (X - np.swapaxes(X, -1, -2))
    S = 0.5 * (X + np.swapaxes(X, -1, -2)) - I
    return (I**2).sum((-1, -2)), (A**2).sum((-1, -2)), (S**2).sum((-1, -2))


def tl_edge_sph2(r):
    return np.einsum("...i,mij,...j->...m", r, _L2, r)


REFERENCES.update({("tensornet_layer", name[3:]): fn for name, fn in list(globals().items())
                   if name.startswith("tl_")})
