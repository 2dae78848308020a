"""PaiNN's interaction message (Schuett, Unke & Gastegger 2021, eqs. 7-8) with its equivariant part
as one diagram: ``painn_message`` of ``examples/gnn.diag`` (gather at each edge's source, gated
per-edge products, sum over the edges arriving at each node), checked O(3)-equivariant by diagc.

The invariant parts stay in torch: phi (Linear, SiLU, Linear on the scalar features, C -> 3C) and the
filter W (Linear on a sine radial basis times a cosine cutoff, per edge, -> 3C). With x = phi(s_j) W(r_ij)
split into channel blocks (x_s, x_v, x_r) and u_ij the unit vector from node i to its neighbour j:

    ds_i = sum_j x_s,           dv_i = sum_j x_v v_j + x_r u_ij

    python examples/gnn_message.py        # a random molecule: checks equivariance, prints the error
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import compiler  # noqa: E402

OPS = compiler.load(ROOT / "examples" / "gnn.diag")


def radial_basis(d: torch.Tensor, num_rbf: int, cutoff: float) -> torch.Tensor:
    """PaiNN's sin(k pi d / cutoff) / d basis, k = 1..num_rbf, shape (E, num_rbf)."""
    k = torch.arange(1, num_rbf + 1, dtype=d.dtype, device=d.device)
    return torch.sin(k * math.pi * d[:, None] / cutoff) / d[:, None]


def cosine_cutoff(d: torch.Tensor, cutoff: float) -> torch.Tensor:
    return 0.5 * (torch.cos(math.pi * d / cutoff) + 1.0) * (d < cutoff).to(d.dtype)


class PaiNNMessage(torch.nn.Module):
    """The message block: ``forward(s, v, pos, src, dst) -> (ds, dv)`` with s (N, C), v (N, C, 3),
    pos (N, 3) and the edge list as two integer arrays (source j, target i) of length E."""

    def __init__(self, channels: int = 16, num_rbf: int = 8, cutoff: float = 5.0, dtype=torch.float64):
        super().__init__()
        self.channels, self.num_rbf, self.cutoff = channels, num_rbf, cutoff
        self.phi = torch.nn.Sequential(torch.nn.Linear(channels, channels, dtype=dtype), torch.nn.SiLU(),
                                       torch.nn.Linear(channels, 3 * channels, dtype=dtype))
        self.filter = torch.nn.Linear(num_rbf, 3 * channels, dtype=dtype)

    def invariants(self, s, pos, src, dst):
        """The per-node gates phi(s) and per-edge filters W(r), split into their three blocks, and
        the unit edge vectors u (everything the diagram takes besides v and the edge list)."""
        r = pos[src] - pos[dst]
        d = r.norm(dim=-1)
        w = self.filter(radial_basis(d, self.num_rbf, self.cutoff)) * cosine_cutoff(d, self.cutoff)[:, None]
        x = self.phi(s)
        xs, xv, xr = x.split(self.channels, dim=-1)
        ws, wv, wr = w.split(self.channels, dim=-1)
        return xs, xv, xr, ws, wv, wr, r / d[:, None]

    def forward(self, s, v, pos, src, dst):
        xs, xv, xr, ws, wv, wr, u = self.invariants(s, pos, src, dst)
        return OPS.painn_message(xs, xv, xr, v, ws, wv, wr, u, src, dst)


def random_graph(n_atoms: int = 12, cutoff: float = 5.0, seed: int = 0, dtype=torch.float64):
    """Random positions in a box and every ordered pair closer than the cutoff as an edge."""
    g = torch.Generator().manual_seed(seed)
    pos = torch.rand(n_atoms, 3, generator=g, dtype=dtype) * 6.0
    d = torch.cdist(pos, pos)
    dst, src = torch.nonzero((d < cutoff) & (d > 0), as_tuple=True)
    return pos, src, dst


def main() -> None:
    from compiler.testing import random_rotation

    import numpy as np

    torch.manual_seed(0)
    model = PaiNNMessage()
    pos, src, dst = random_graph()
    s = torch.randn(pos.shape[0], model.channels, dtype=torch.float64)
    v = torch.randn(pos.shape[0], model.channels, 3, dtype=torch.float64)
    ds, dv = model(s, v, pos, src, dst)
    R = torch.tensor(random_rotation(np.random.default_rng(1)))
    ds_r, dv_r = model(s, v @ R.T, pos @ R.T, src, dst)
    print(f"{pos.shape[0]} atoms, {src.shape[0]} edges: |ds(Rx) - ds(x)| = {(ds_r - ds).abs().max():.1e}, "
          f"|dv(Rx) - R dv(x)| = {(dv_r - dv @ R.T).abs().max():.1e}")


if __name__ == "__main__":
    main()
