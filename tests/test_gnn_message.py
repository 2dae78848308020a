"""examples/gnn_message.py: PaiNN's message as one diagram against a hand-written torch reference."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch

from compiler.testing import random_reflection, random_rotation

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("gnn_message", ROOT / "examples" / "gnn_message.py")
gnn = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gnn)


def reference(model, s, v, pos, src, dst):
    """PaiNN's message written by hand (Schuett et al. 2021, eqs. 7-8), one edge at a time."""
    r = pos[src] - pos[dst]
    d = r.norm(dim=-1)
    k = torch.arange(1, model.num_rbf + 1, dtype=d.dtype)
    rbf = torch.sin(k * torch.pi * d[:, None] / model.cutoff) / d[:, None]
    fcut = 0.5 * (torch.cos(torch.pi * d / model.cutoff) + 1.0) * (d < model.cutoff)
    w = (rbf @ model.filter.weight.T + model.filter.bias) * fcut[:, None]
    lin1, lin2 = model.phi[0], model.phi[2]
    x = torch.nn.functional.silu(s @ lin1.weight.T + lin1.bias) @ lin2.weight.T + lin2.bias
    C = model.channels
    ds = torch.zeros_like(s)
    dv = torch.zeros_like(v)
    for e in range(src.shape[0]):
        j, i = int(src[e]), int(dst[e])
        m = x[j] * w[e]
        ds[i] += m[:C]
        dv[i] += m[C:2 * C, None] * v[j] + m[2 * C:, None] * (r[e] / d[e])[None, :]
    return ds, dv


def _setup(seed=0):
    torch.manual_seed(seed)
    model = gnn.PaiNNMessage(channels=6, num_rbf=5)
    pos, src, dst = gnn.random_graph(10, seed=seed)
    s = torch.randn(10, 6, dtype=torch.float64)
    v = torch.randn(10, 6, 3, dtype=torch.float64)
    return model, s, v, pos, src, dst


def test_matches_hand_written_reference():
    model, s, v, pos, src, dst = _setup()
    assert src.shape[0] > 20
    ds, dv = model(s, v, pos, src, dst)
    ref_ds, ref_dv = reference(model, s, v, pos, src, dst)
    assert torch.allclose(ds, ref_ds, rtol=0, atol=1e-12)
    assert torch.allclose(dv, ref_dv, rtol=0, atol=1e-12)
    assert ds.abs().max() > 1e-3 and dv.abs().max() > 1e-3


def test_rotation_and_reflection_equivariance():
    model, s, v, pos, src, dst = _setup(1)
    ds, dv = model(s, v, pos, src, dst)
    rng = np.random.default_rng(3)
    for g in (random_rotation(rng), random_reflection(rng)):
        R = torch.tensor(g)
        ds_g, dv_g = model(s, v @ R.T, pos @ R.T + 1.5, src, dst)  # rotated, reflected and translated
        assert torch.allclose(ds_g, ds, rtol=0, atol=1e-12)
        assert torch.allclose(dv_g, dv @ R.T, rtol=0, atol=1e-12)
    # a wrong law is caught: v gated by a vector that does not turn with the frame
    assert not torch.allclose(model(s, v @ R.T, pos, src, dst)[1], dv @ R.T, atol=1e-6)


def test_permutation_of_edges():
    model, s, v, pos, src, dst = _setup(2)
    perm = torch.randperm(src.shape[0], generator=torch.Generator().manual_seed(0))
    ds, dv = model(s, v, pos, src, dst)
    ds_p, dv_p = model(s, v, pos, src[perm], dst[perm])
    assert torch.allclose(ds_p, ds, rtol=0, atol=1e-12) and torch.allclose(dv_p, dv, rtol=0, atol=1e-12)


def test_gradients_through_the_message():
    model, s, v, pos, src, dst = _setup(3)
    s.requires_grad_(True)
    v.requires_grad_(True)
    pos.requires_grad_(True)
    ds, dv = model(s, v, pos, src, dst)
    loss = (ds ** 2).sum() + (dv ** 2).sum()
    grads = torch.autograd.grad(loss, (s, v, pos))
    ref_ds, ref_dv = reference(model, s, v, pos, src, dst)
    ref = torch.autograd.grad((ref_ds ** 2).sum() + (ref_dv ** 2).sum(), (s, v, pos))
    for a, b in zip(grads, ref):
        assert torch.allclose(a, b, rtol=0, atol=1e-10)
