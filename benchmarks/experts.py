"""The hand-written implementations the benchmarks time diagc's code against (one copy, shared by
``codegen_bench.py``, ``gpu_bench.py`` and ``tests/reference.py``, whose references for TensorNet's
operations these are; it imports nothing from diagc, so it runs on a machine
without the compiler's dependencies).

For TensorNet's operations these are torchmd-net's formulas (``torchmdnet/models/tensornet.py``, in
its [N, F, 3, 3] layout); for the other diagrams the obvious code (``np.cross``, ``(a*b).sum(-1)``...).
``expert_set(xp)`` returns ``{(file stem, diagram): (input types, function)}`` for ``xp`` numpy or torch.
"""

from __future__ import annotations

import numpy as np

try:
    import torch
except ImportError:  # pragma: no cover - torch is part of the test extras
    torch = None




def expert_set(xp):
    """The hand-written implementations for array module ``xp`` (numpy or torch)."""
    T = xp is not np

    def eye(like):
        return xp.eye(3, dtype=like.dtype) if not T else torch.eye(3, 3, dtype=like.dtype, device=like.device)

    def stack(arrs, axis):
        return torch.stack(arrs, dim=axis) if T else np.stack(arrs, axis=axis)

    def transpose(x):
        return x.transpose(-2, -1) if T else np.swapaxes(x, -2, -1)

    def diag(x):
        return x.diagonal(dim1=-1, dim2=-2) if T else x.diagonal(axis1=-1, axis2=-2)

    def movedim(x, a, b):
        return x.movedim(a, b) if T else np.moveaxis(x, a, b)

    def vector_to_skewtensor(vector):
        zero = xp.zeros_like(vector[..., 0])
        tensor = stack((zero, -vector[..., 2], vector[..., 1],
                        vector[..., 2], zero, -vector[..., 0],
                        -vector[..., 1], vector[..., 0], zero), -1)
        return tensor.reshape(*vector.shape[:-1], 3, 3)

    def skewtensor_to_vector(tensor):
        tensor = tensor.reshape(*tensor.shape[:-2], 9)
        return 0.5 * stack((tensor[..., 7] - tensor[..., 5],
                            tensor[..., 2] - tensor[..., 6],
                            tensor[..., 3] - tensor[..., 1]), -1)

    def I_to_tensor(I):
        return I[..., None, None] * eye(I)

    def outer_to_symtensor(tensor):
        S = 0.5 * (tensor + transpose(tensor))
        I = diag(tensor).mean(-1)
        return S - I_to_tensor(I)

    def vector_to_symtensor(v):
        return outer_to_symtensor(xp.matmul(v[..., :, None], v[..., None, :]))

    def decompose_tensor(tensor):
        A = 0.5 * (tensor - transpose(tensor))
        S = tensor - A
        I = diag(tensor).mean(-1)
        S = S - I_to_tensor(I)
        return I, A, S

    def decompose(X):  # the diagram returns I as a full 3x3 tensor
        I, A, S = decompose_tensor(X)
        return I_to_tensor(I), A, S

    def tensor_norm(tensor):
        return (tensor**2).sum((-2, -1))

    def matmul_o3(M, Y):  # torchmd-net: A = matmul(msg, Y); B = matmul(Y, msg); A + B
        return xp.matmul(M, Y) + xp.matmul(Y, M)

    def matmul_so3(M, Y):  # torchmd-net: 2 * matmul(Y, msg)
        return 2 * xp.matmul(Y, M)

    def linear(x, W):  # nn.Linear(F, F, bias=False) over the channel axis: x @ weight.T, weight = W.T
        if W.ndim > 2:  # weights with batch axes (the tests): x[..., c] @ W[..., c, d] per batch entry
            W = W.reshape(tuple(W.shape[:-2]) + (1,) * (x.ndim - W.ndim + 1) + tuple(W.shape[-2:]))
            return xp.matmul(x[..., None, :], W)[..., 0, :]
        if T:
            return torch.nn.functional.linear(x, W.t())
        return np.tensordot(x, W, axes=([-1], [0]))

    def mix(A, W):  # linears_tensor[k](A.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return movedim(linear(movedim(A, -3, -1), W), -1, -3)

    def edge_tensor(r, fI, fA, fS):  # TensorEmbedding._get_tensor_messages + forward, no aggregation
        vec_A = fA[..., None] * r[..., None, :]
        outer = xp.matmul(r[..., :, None], r[..., None, :])
        S = fS[..., None, None] * outer[..., None, :, :]
        return vector_to_skewtensor(vec_A) + outer_to_symtensor(S) + I_to_tensor(fI)

    def linear_cart2(X, W0, W1, W2):
        Xp = movedim(X, -3, -1)
        Y = linear(Xp, W0) + linear(movedim(Xp, -3, -2), W1)
        tr = linear(diag(X).sum(-1), W2)
        return movedim(Y, -1, -3) + I_to_tensor(tr)

    def cross(a, b):
        return torch.linalg.cross(a, b) if T else np.cross(a, b)

    def dot(a, b):
        return (a * b).sum(-1)

    def triple(a, b, c):
        return (cross(a, b) * c).sum(-1)

    def plain_decompose(X):
        A = 0.5 * (X - transpose(X))
        I = I_to_tensor(diag(X).mean(-1))
        return I, A, 0.5 * (X + transpose(X)) - I

    return {
        # (file stem, diagram): (input types, function)
        ("tensornet", "vector_to_skew"): (("vec[c]",), vector_to_skewtensor),
        ("tensornet", "vector_to_sym"): (("vec[c]",), vector_to_symtensor),
        ("tensornet", "decompose"): (("cart2(0e+1o+2e)[c]",), decompose),
        ("tensornet", "tensor_norm"): (("cart2(0e+1o+2e)[c]",), tensor_norm),
        ("tensornet", "matmul_o3"): (("cart2(0e+1o+2e)[c]",) * 2, matmul_o3),
        ("tensornet", "mix_skew"): (("skew2(1o)[c]", "weight[c,d]"), mix),
        ("tensornet", "edge_tensor"): (("vec", "scalar[c]", "scalar[c]", "scalar[c]"), edge_tensor),
        ("tensornet", "skew_to_vector"): (("skew2(1o)[c]",), skewtensor_to_vector),
        ("tensornet_so3", "matmul_so3"): (("cart2(0e+1o+2e)[c]",) * 2, matmul_so3),
        ("products", "dot"): (("vec", "vec"), dot),
        ("products", "cross"): (("vec", "vec"), cross),
        ("products", "triple"): (("vec", "vec", "vec"), triple),
        ("linear", "mix"): (("cart2[c]", "weight[c,d]"), mix),
        ("linear", "linear_cart2"): (("cart2[c]",) + ("weight[c,d]",) * 3, linear_cart2),
        ("decompose", "decompose"): (("cart2",), plain_decompose),
    }
