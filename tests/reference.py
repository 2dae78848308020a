"""Independent hand-written numpy references for the example diagrams in ``diagrams/*.diag``.

Each function here re-implements one diagram with ordinary numpy operations (``@``, ``np.cross``,
``np.swapaxes``, ``np.trace``, broadcasting, explicit component formulas) -- deliberately *not* by
transcribing the diagram's index formula into ``np.einsum`` -- so that tests can compare the code
diagc generates against a genuinely independent implementation.  Where a diagram is one of
TensorNet's operations, the reference follows torchmd-net's formulation (``vector_to_skewtensor``,
``skewtensor_to_vector``, ``decompose_tensor``, ``tensor_norm``, the O(3) product ``MY + YM`` and
the SO(3) product ``2 YM`` of the interaction layer).

Storage convention (the same as the compiled functions): arguments in declaration order; every
array has arbitrary leading batch axes ``...`` (broadcast between arguments), then its channel
axes in declared order, then one axis of size 3 per Cartesian leg.  For example ``X: cart2[c]`` is
``(..., c, 3, 3)``, ``W: weight[c, d]`` is ``(..., c, d)`` (possibly without batch axes),
``fI: scalar[c]`` is ``(..., c)``, ``v: vec`` is ``(..., 3)`` and a ``scalar`` output is ``(...)``.
A diagram with several outputs returns a tuple in declared order.

``REFERENCES`` maps ``(file stem, diagram name)`` to the reference function.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

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


def _skew_matrix(v: np.ndarray) -> np.ndarray:
    """torchmd-net's vector_to_skewtensor: [[0,-vz,vy],[vz,0,-vx],[-vy,vx,0]]."""
    v = np.asarray(v)
    vx, vy, vz = v[..., 0], v[..., 1], v[..., 2]
    zero = np.zeros_like(vx)
    rows = (
        np.stack([zero, -vz, vy], axis=-1),
        np.stack([vz, zero, -vx], axis=-1),
        np.stack([-vy, vx, zero], axis=-1),
    )
    return np.stack(rows, axis=-2)


def _outer_sym_traceless(v: np.ndarray) -> np.ndarray:
    """torchmd-net's outer_to_symtensor: v v^T - |v|^2/3 * I."""
    v = np.asarray(v)
    outer = v[..., :, None] * v[..., None, :]
    sq = np.sum(v * v, axis=-1)
    return outer - (sq / 3.0)[..., None, None] * _eye(v)


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
    """torchmd-net's decompose_tensor, returned as full 3x3 arrays (I, A, S)."""
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
# tensornet.diag
# ----------------------------------------------------------------------------------------------

def vector_to_skew(v):
    """vector_to_skewtensor: v (..., c, 3) -> A (..., c, 3, 3) = [v]_x."""
    return _skew_matrix(v)


def vector_to_sym(v):
    """outer_to_symtensor: v (..., c, 3) -> S (..., c, 3, 3) = v v^T - |v|^2/3 I."""
    return _outer_sym_traceless(v)


def tensornet_decompose(X):
    """decompose_tensor: X (..., c, 3, 3) -> (I, A, S), each (..., c, 3, 3)."""
    return _decompose_parts(X)


def tensor_norm(X):
    """tensor_norm: squared Frobenius norm over the 3x3 axes, (..., c, 3, 3) -> (..., c)."""
    X = np.asarray(X)
    return np.sum(X ** 2, axis=(-2, -1))


def matmul_o3(M, Y):
    """TensorNet's O(3) interaction product C = M Y + Y M, per channel."""
    M = np.asarray(M)
    Y = np.asarray(Y)
    return M @ Y + Y @ M


def mix_skew(A, W):
    """mix_skew(A: skew2(1o)[c], W: weight[c,d]) -> B: skew2(1o)[d]."""
    return _channel_mix(W, A)


def edge_tensor(r, fI, fA, fS):
    """Embedding edge tensor X_c = fI_c I + fA_c [r]_x + fS_c (r r^T - |r|^2/3 I).

    r is (..., 3); fI, fA, fS are (..., c); the result is (..., c, 3, 3).
    """
    r = np.asarray(r)
    fI = np.asarray(fI)
    fA = np.asarray(fA)
    fS = np.asarray(fS)
    I0 = _eye(r, fI, fA, fS)                  # (3, 3)
    A0 = _skew_matrix(r)[..., None, :, :]     # (..., 1, 3, 3): broadcast over channels
    S0 = _outer_sym_traceless(r)[..., None, :, :]
    return (fI[..., None, None] * I0
            + fA[..., None, None] * A0
            + fS[..., None, None] * S0)


def skew_to_vector(A):
    """skewtensor_to_vector: v = 1/2 (A21 - A12, A02 - A20, A10 - A01), (..., c, 3, 3) -> (..., c, 3)."""
    A = np.asarray(A)
    return 0.5 * np.stack(
        [
            A[..., 2, 1] - A[..., 1, 2],
            A[..., 0, 2] - A[..., 2, 0],
            A[..., 1, 0] - A[..., 0, 1],
        ],
        axis=-1,
    )


# ----------------------------------------------------------------------------------------------
# tensornet_so3.diag
# ----------------------------------------------------------------------------------------------

def matmul_so3(M, Y):
    """TensorNet's SO(3) interaction product C = 2 Y M, per channel."""
    M = np.asarray(M)
    Y = np.asarray(Y)
    return 2.0 * (Y @ M)


# ----------------------------------------------------------------------------------------------

REFERENCES: dict[tuple[str, str], Callable] = {
    ("decompose", "decompose"): decompose,
    ("linear", "mix"): mix,
    ("linear", "linear_cart2"): linear_cart2,
    ("products", "dot"): dot,
    ("products", "cross"): cross,
    ("products", "triple"): triple,
    ("tensornet", "vector_to_skew"): vector_to_skew,
    ("tensornet", "vector_to_sym"): vector_to_sym,
    ("tensornet", "decompose"): tensornet_decompose,
    ("tensornet", "tensor_norm"): tensor_norm,
    ("tensornet", "matmul_o3"): matmul_o3,
    ("tensornet", "mix_skew"): mix_skew,
    ("tensornet", "edge_tensor"): edge_tensor,
    ("tensornet", "skew_to_vector"): skew_to_vector,
    ("tensornet_so3", "matmul_so3"): matmul_so3,
}


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
