"""Training on energies and forces with generated derivatives (the recommended way to train on forces).

The energy of a small TensorNet-style model is built from emitted diagrams (``edge_tensor``,
``tensor_norm`` of ``diagrams/tensornet.diag``); the forces F = -dE/dpos come from the generated
``edge_tensor_vjp`` and ``tensor_norm_vjp`` as *forward* functions, so the loss on energies and forces
needs only first derivatives of compiled code (its backward runs the generated ``NAME_vjp_vjp``).
There is no ``torch.autograd.grad(..., create_graph=True)`` inside the compiled region, which is what
``torch.compile`` cannot differentiate twice.

    python examples/force_training.py          # a few steps, eager and torch.compile(fullgraph=True)
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import compiler  # noqa: E402

OPS = compiler.load(ROOT / "diagrams" / "tensornet.diag")


def init_params(channels: int = 8, dtype=torch.float64, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {name: torch.rand(channels, generator=g, dtype=dtype).add_(0.5).requires_grad_(True)
            for name in ("alpha", "bI", "bA", "bS", "w")}


def energy_and_forces(params: dict, pos: torch.Tensor, src: torch.Tensor, dst: torch.Tensor, fused: bool = False):
    """E = sum_atoms sum_c w_c |X_atom,c|^2 with X_atom = sum over its edges of
    edge_tensor(r, fI, fA, fS), radial features f = b exp(-alpha |r|^2); F = -dE/dpos, from the
    generated VJPs (the radial functions' derivative written out: they are not diagrams)."""
    r = pos[dst] - pos[src]  # (E, 3)
    r2 = (r * r).sum(-1, keepdim=True)  # (E, 1)
    radial = torch.exp(-params["alpha"] * r2)  # (E, C)
    fI, fA, fS = params["bI"] * radial, params["bA"] * radial, params["bS"] * radial
    X_edge = OPS.edge_tensor(r, fI, fA, fS, fused=fused)  # (E, C, 3, 3)
    X = torch.zeros((pos.shape[0],) + X_edge.shape[1:], dtype=pos.dtype).index_add(0, dst, X_edge)
    n = OPS.tensor_norm(X, fused=fused)  # (N, C)
    energy = (n * params["w"]).sum()
    # forces: the chain rule through generated VJPs, as forward functions
    d_n = params["w"].expand_as(n)
    d_X = OPS.tensor_norm_vjp(X, d_n, fused=fused)
    d_r, d_fI, d_fA, d_fS = OPS.edge_tensor_vjp(r, fI, fA, fS, d_X[dst], fused=fused)
    d_radial = d_fI * params["bI"] + d_fA * params["bA"] + d_fS * params["bS"]  # (E, C)
    d_r2 = (d_radial * radial * -params["alpha"]).sum(-1, keepdim=True)
    d_r = d_r + 2 * d_r2 * r
    d_pos = torch.zeros_like(pos).index_add(0, dst, d_r).index_add(0, src, -d_r)
    return energy, -d_pos


def loss_fn(params, pos, src, dst, energy_ref, forces_ref, fused: bool = False):
    """Squared error on the energy plus the mean squared error on the forces."""
    energy, forces = energy_and_forces(params, pos, src, dst, fused)
    return (energy - energy_ref) ** 2 + ((forces - forces_ref) ** 2).mean()


def train_step(params: dict, batch, loss=loss_fn, lr: float = 1e-2) -> torch.Tensor:
    """One SGD step on ``params`` (in place); returns the loss before the step."""
    value = loss(params, *batch)
    grads = torch.autograd.grad(value, list(params.values()))
    with torch.no_grad():
        for p, g in zip(params.values(), grads):
            p -= lr * g
    return value.detach()


def toy_batch(atoms: int = 6, dtype=torch.float64, seed: int = 1):
    """Random positions, every ordered pair of atoms an edge, and reference energy and forces."""
    g = torch.Generator().manual_seed(seed)
    pos = torch.randn(atoms, 3, generator=g, dtype=dtype)
    src, dst = (ix.reshape(-1) for ix in torch.meshgrid(torch.arange(atoms), torch.arange(atoms), indexing="ij"))
    keep = src != dst
    return pos, src[keep], dst[keep], torch.tensor(1.0, dtype=dtype), torch.randn(atoms, 3, generator=g, dtype=dtype)


def main() -> None:
    batch = toy_batch()
    eager, compiled = init_params(), init_params()
    compiled_loss = torch.compile(loss_fn, fullgraph=True)
    for step in range(3):
        a = train_step(eager, batch)
        b = train_step(compiled, batch, compiled_loss)
        print(f"step {step}: loss eager {a.item():.12f}  compiled {b.item():.12f}")


if __name__ == "__main__":
    main()
