"""TensorNet (Simeon & De Fabritiis 2023) with its equivariant work compiled from diagrams.

``TensorNet`` takes torchmd-net 3.1.0's constructor arguments, loads a torchmd-net ``TensorNet``
state_dict unchanged (``load_state_dict``, strict) and its ``forward(z, pos, batch)`` returns what
torchmd-net's representation model returns: ``(x, None, z, pos, batch)`` with ``x`` the per-atom
invariant features (N, hidden_channels). Every operation on 3x3 features (compose, decompose, the
channel mixings, the products, norms) is a diagram of ``diagrams/tensornet_layer.diag``,
``tensornet.diag`` or ``tensornet_so3.diag``, and the message passing the graph diagrams of
``examples/tensornet_graph.diag``: the interaction's ``message`` (the parts gathered at an edge's
source, scaled, summed over the edges arriving at a node) and the embedding's ``embed`` (the edge
parts scaled by emb2 of the two atoms, summed at the receiver), one fused CUDA kernel each on the
GPU; all are checked equivariant and compiled when this file is imported. Torch code does the rest:

* invariant functions: the radial basis, the cutoff, the scalar MLPs and LayerNorms,
  ``1 / (|X|^2 + 1)``;
* the neighbour list (brute force within the cutoff, per molecule of ``batch``).

Features cross the graph in compact form, the parts (i, a, t) of X = i delta - eps a + P(2) t
(1 + 3 + 5 numbers per channel, see ``tensornet_layer.diag``), where torchmd-net sends I, A as a
vector and S as a 3x3 (13 numbers).

    python examples/tensornet.py      # a small molecule: features, energy, forces
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import compiler  # noqa: E402

LAYER = compiler.load(ROOT / "diagrams" / "tensornet_layer.diag")
BASE = compiler.load(ROOT / "diagrams" / "tensornet.diag")
SO3 = compiler.load(ROOT / "diagrams" / "tensornet_so3.diag")
GRAPH = compiler.load(ROOT / "examples" / "tensornet_graph.diag")


# ---------------------------------------------------------------------------------------------------
# invariant functions (torch): radial bases, cutoff, activations, with torchmd-net's parameter names
# ---------------------------------------------------------------------------------------------------

class CosineCutoff(nn.Module):
    """0.5 (cos(pi d / cu) + 1) below cu (with a lower cutoff: the window cl < d < cu)."""

    def __init__(self, cutoff_lower: float = 0.0, cutoff_upper: float = 5.0):
        super().__init__()
        self.cutoff_lower, self.cutoff_upper = cutoff_lower, cutoff_upper

    def forward(self, d):
        lo, hi = self.cutoff_lower, self.cutoff_upper
        if lo > 0:
            c = 0.5 * (torch.cos(math.pi * (2 * (d - lo) / (hi - lo) + 1.0)) + 1.0)
            return c * (d < hi) * (d > lo)
        return 0.5 * (torch.cos(d * math.pi / hi) + 1.0) * (d < hi)


class ExpNormalSmearing(nn.Module):
    """PhysNet's basis: cutoff(d) exp(-beta (exp(alpha (cl - d)) - mu)^2); buffers or parameters
    ``means``, ``betas``."""

    def __init__(self, cutoff_lower=0.0, cutoff_upper=5.0, num_rbf=50, trainable=True, dtype=torch.float32):
        super().__init__()
        self.cutoff_lower, self.cutoff_upper, self.num_rbf = cutoff_lower, cutoff_upper, num_rbf
        self.cutoff_fn = CosineCutoff(0, cutoff_upper)
        self.alpha = 5.0 / (cutoff_upper - cutoff_lower)
        start = torch.exp(torch.scalar_tensor(-cutoff_upper + cutoff_lower, dtype=dtype))
        means = torch.linspace(start, 1, num_rbf, dtype=dtype)
        betas = torch.tensor([(2 / num_rbf * (1 - start)) ** -2] * num_rbf, dtype=dtype)
        if trainable:
            self.means, self.betas = nn.Parameter(means), nn.Parameter(betas)
        else:
            self.register_buffer("means", means)
            self.register_buffer("betas", betas)

    def forward(self, d):
        d = d.unsqueeze(-1)
        return self.cutoff_fn(d) * torch.exp(-self.betas * (torch.exp(self.alpha * (-d + self.cutoff_lower)) - self.means) ** 2)


class GaussianSmearing(nn.Module):
    """exp(coeff (d - offset)^2), offsets evenly spaced; buffers or parameters ``coeff``, ``offset``."""

    def __init__(self, cutoff_lower=0.0, cutoff_upper=5.0, num_rbf=50, trainable=True, dtype=torch.float32):
        super().__init__()
        offset = torch.linspace(cutoff_lower, cutoff_upper, num_rbf, dtype=dtype)
        coeff = -0.5 / (offset[1] - offset[0]) ** 2
        if trainable:
            self.coeff, self.offset = nn.Parameter(coeff), nn.Parameter(offset)
        else:
            self.register_buffer("coeff", coeff)
            self.register_buffer("offset", offset)

    def forward(self, d):
        return torch.exp(self.coeff * torch.pow(d.unsqueeze(-1) - self.offset, 2))


class ShiftedSoftplus(nn.Module):
    # torchmd-net's shift is log 2 rounded to float32
    shift = torch.log(torch.tensor(2.0)).item()

    def forward(self, x):
        return nn.functional.softplus(x) - self.shift


class Swish(nn.Module):
    def forward(self, x):
        return x * torch.sigmoid(x)


RBF = {"gauss": GaussianSmearing, "expnorm": ExpNormalSmearing}
ACTIVATIONS = {"ssp": ShiftedSoftplus, "silu": nn.SiLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid,
               "swish": Swish, "mish": nn.Mish}


# ---------------------------------------------------------------------------------------------------
# the graph (torch): neighbour list, gather at the source, sum over the edges arriving at a node
# ---------------------------------------------------------------------------------------------------

class Distance(nn.Module):
    """Pairs (i, j) of one molecule with cutoff_lower <= |r_ij| < cutoff_upper, both orders and the
    self pairs (as torchmd-net's ``OptimizedDistance(loop=True)``), brute force; ``box`` is the
    (unused, zero) buffer torchmd-net's state_dict carries. Returns edge_index (2, E) with
    edge_index[0] the receiving atom, distances (E,) and r_i - r_j (E, 3)."""

    def __init__(self, cutoff_lower: float, cutoff_upper: float, max_num_neighbors: int):
        super().__init__()
        self.cutoff_lower, self.cutoff_upper = cutoff_lower, cutoff_upper
        self.max_num_neighbors = max_num_neighbors
        self.register_buffer("box", torch.zeros((3, 3)), persistent=True)

    def forward(self, pos, batch):
        with torch.no_grad():
            d2 = torch.cdist(pos, pos).square_()
            keep = (batch[:, None] == batch[None, :]) & (d2 < self.cutoff_upper**2)
            if self.cutoff_lower > 0:
                keep &= (d2 >= self.cutoff_lower**2) | torch.eye(len(pos), dtype=torch.bool, device=pos.device)
            keep.fill_diagonal_(True)
            edge_index = keep.nonzero().t()
        if edge_index.shape[1] > self.max_num_neighbors * len(pos):
            raise ValueError(f"found {edge_index.shape[1]} pairs, more than max_num_neighbors * atoms = "
                             f"{self.max_num_neighbors * len(pos)}; increase max_num_neighbors")
        vec = pos[edge_index[0]] - pos[edge_index[1]]
        d2 = (vec * vec).sum(-1)
        zero = d2 == 0  # self pairs: distance 0 with gradient 0, not sqrt's infinite slope
        return edge_index, torch.where(zero, 0, torch.sqrt(d2.masked_fill(zero, 1))), vec


def weight(linear):
    """A bias-free nn.Linear's matrix as a diagram weight W[c, d] (in, out)."""
    return linear.weight.t()


# ---------------------------------------------------------------------------------------------------
# the model: torchmd-net's module tree and parameter names, the 3x3 work through the diagrams
# ---------------------------------------------------------------------------------------------------

class TensorEmbedding(nn.Module):
    fused = False  # run the diagrams' fused=True forms (set by TensorNet)
    def __init__(self, hidden_channels, num_rbf, activation, cutoff_lower, cutoff_upper, max_z, dtype):
        super().__init__()
        self.hidden_channels = hidden_channels
        self.distance_proj1 = nn.Linear(num_rbf, hidden_channels, dtype=dtype)
        self.distance_proj2 = nn.Linear(num_rbf, hidden_channels, dtype=dtype)
        self.distance_proj3 = nn.Linear(num_rbf, hidden_channels, dtype=dtype)
        self.cutoff = CosineCutoff(cutoff_lower, cutoff_upper)
        self.emb = nn.Embedding(max_z, hidden_channels, dtype=dtype)
        self.emb2 = nn.Linear(2 * hidden_channels, hidden_channels, dtype=dtype)
        self.act = activation()
        self.linears_tensor = nn.ModuleList(nn.Linear(hidden_channels, hidden_channels, bias=False, dtype=dtype)
                                            for _ in range(3))
        self.linears_scalar = nn.ModuleList([
            nn.Linear(hidden_channels, 2 * hidden_channels, dtype=dtype),
            nn.Linear(2 * hidden_channels, 3 * hidden_channels, dtype=dtype)])
        self.init_norm = nn.LayerNorm(hidden_channels, dtype=dtype)

    def forward(self, z, edge_index, edge_weight, edge_unit, edge_attr):
        C = self.hidden_channels
        # emb2 of the pair (Z_dst, Z_src) is linear: its two halves applied per atom, read at each edge
        Z = self.emb(z)
        zd = nn.functional.linear(Z, self.emb2.weight[:, :C], self.emb2.bias)
        zs = nn.functional.linear(Z, self.emb2.weight[:, C:])
        # the three radial projections as one matrix product: (E, 3C), times the cutoff
        projs = (self.distance_proj1, self.distance_proj2, self.distance_proj3)
        proj = nn.functional.linear(edge_attr, torch.cat([p.weight for p in projs]), torch.cat([p.bias for p in projs]))
        w0, w1, w2 = (proj * self.cutoff(edge_weight).unsqueeze(-1)).view(-1, 3, C).unbind(1)
        # per-edge basis (1, r, P(2) r r) of the parts i, a, t, each scaled and summed at the receiver
        y = LAYER.edge_sph2(edge_unit, fused=self.fused)
        i, a, t = GRAPH.embed(zd, zs, w0, w1, w2, edge_unit, y, edge_index[1], edge_index[0], fused=self.fused)
        norm = self.init_norm(LAYER.parts_norm(i, a, t, fused=self.fused))
        for linear in self.linears_scalar:
            norm = self.act(linear(norm))
        n0, n1, n2 = norm.reshape(-1, 3, C).unbind(1)
        W0, W1, W2 = (weight(lin) for lin in self.linears_tensor)
        return LAYER.compose_mixed(i, a, t, W0, W1, W2, n0, n1, n2, fused=self.fused)


class Interaction(nn.Module):
    fused = False  # run the diagrams' fused=True forms (set by TensorNet)
    def __init__(self, num_rbf, hidden_channels, activation, cutoff_lower, cutoff_upper, group, dtype):
        super().__init__()
        self.hidden_channels = hidden_channels
        self.cutoff = CosineCutoff(cutoff_lower, cutoff_upper)
        self.linears_scalar = nn.ModuleList([
            nn.Linear(num_rbf, hidden_channels, dtype=dtype),
            nn.Linear(hidden_channels, 2 * hidden_channels, dtype=dtype),
            nn.Linear(2 * hidden_channels, 3 * hidden_channels, dtype=dtype)])
        self.linears_tensor = nn.ModuleList(nn.Linear(hidden_channels, hidden_channels, bias=False, dtype=dtype)
                                            for _ in range(6))
        self.act = activation()
        self.equivariance_invariance_group = group

    def forward(self, X, edge_index, edge_weight, edge_attr, g):
        for linear in self.linears_scalar:
            edge_attr = self.act(linear(edge_attr))
        f0, f1, f2 = (edge_attr * self.cutoff(edge_weight)[:, None]).view(-1, 3, self.hidden_channels).unbind(1)
        W = [weight(lin) for lin in self.linears_tensor]
        s = 1 / (BASE.tensor_norm(X, fused=self.fused) + 1)
        i, a, t = LAYER.project(X, s, W[0], W[1], W[2], fused=self.fused)
        Y = LAYER.compose(i, a, t, fused=self.fused)
        # the parts at each edge's source, scaled by the edge's radial weights, summed at the receiver
        M = LAYER.compose(*GRAPH.message(i, a, t, f0, f1, f2, edge_index[1], edge_index[0], fused=self.fused),
                          fused=self.fused)
        if self.equivariance_invariance_group == "O(3)":
            P = LAYER.matmul_o3_scaled(M, Y, g, fused=self.fused)
        else:
            P = SO3.matmul_so3(M, Y, fused=self.fused)  # 2 Y M
        s2 = 1 / (BASE.tensor_norm(P, fused=self.fused) + 1)
        dX = LAYER.compose(*LAYER.project(P, s2, W[3], W[4], W[5], fused=self.fused), fused=self.fused)
        return LAYER.residual(X * s[..., None, None], dX, g, fused=self.fused)


class TensorNet(nn.Module):
    """torchmd-net's TensorNet representation model (same arguments, parameters and outputs).

    One argument of diagc's own, ``fused``: True runs every diagram that has a fused form with
    ``fused=True`` (on torch: each function and its VJP compiled by torch.compile at its first
    call; see the README on compile time); False (default) runs the planned code, no compile step."""

    def __init__(self, hidden_channels=128, num_layers=2, num_rbf=32, rbf_type="expnorm", trainable_rbf=False,
                 activation="silu", cutoff_lower=0, cutoff_upper=4.5, max_num_neighbors=64, max_z=128,
                 equivariance_invariance_group="O(3)", static_shapes=True, dtype=torch.float32, fused=False):
        super().__init__()
        if rbf_type not in RBF:
            raise ValueError(f'Unknown RBF type "{rbf_type}". Choose from {", ".join(RBF)}.')
        if activation not in ACTIVATIONS:
            raise ValueError(f'Unknown activation function "{activation}". Choose from {", ".join(ACTIVATIONS)}.')
        if equivariance_invariance_group not in ("O(3)", "SO(3)"):
            raise ValueError(f'Unknown group "{equivariance_invariance_group}". Choose O(3) or SO(3).')
        self.hidden_channels, self.num_layers, self.num_rbf = hidden_channels, num_layers, num_rbf
        self.rbf_type, self.activation = rbf_type, activation
        self.cutoff_lower, self.cutoff_upper = cutoff_lower, cutoff_upper
        self.equivariance_invariance_group = equivariance_invariance_group
        # the neighbour list always fits the pairs found: results are those of either static_shapes
        self.static_shapes = static_shapes
        act = ACTIVATIONS[activation]
        # torchmd-net's initial values (computed in float32), held in dtype
        self.distance_expansion = RBF[rbf_type](cutoff_lower, cutoff_upper, num_rbf, trainable_rbf).to(dtype)
        self.tensor_embedding = TensorEmbedding(hidden_channels, num_rbf, act, cutoff_lower, cutoff_upper, max_z, dtype)
        self.layers = nn.ModuleList(
            Interaction(num_rbf, hidden_channels, act, cutoff_lower, cutoff_upper, equivariance_invariance_group, dtype)
            for _ in range(num_layers))
        self.linear = nn.Linear(3 * hidden_channels, hidden_channels, dtype=dtype)
        self.out_norm = nn.LayerNorm(3 * hidden_channels, dtype=dtype)
        self.act = act()
        self.distance = Distance(cutoff_lower, cutoff_upper, max_num_neighbors)
        self.fused = self.tensor_embedding.fused = bool(fused)
        for layer in self.layers:
            layer.fused = self.fused

    def forward(self, z, pos, batch, box=None, q=None, s=None):
        if box is not None:
            raise NotImplementedError("periodic boxes are not supported by this example's neighbour list")
        edge_index, edge_weight, edge_vec = self.distance(pos, batch)
        edge_attr = self.distance_expansion(edge_weight)
        self_pair = edge_index[0] == edge_index[1]
        edge_unit = edge_vec / edge_weight.masked_fill(self_pair, 1).unsqueeze(1)
        g = 1.0 if q is None else 1 + 0.1 * q[batch].to(pos.dtype)
        X = self.tensor_embedding(z, edge_index, edge_weight, edge_unit, edge_attr)
        for layer in self.layers:
            X = layer(X, edge_index, edge_weight, edge_attr, g)
        x = torch.cat(LAYER.part_norms(X, fused=self.fused), -1)
        x = self.act(self.linear(self.out_norm(x)))
        return x, None, z, pos, batch


def main():
    torch.manual_seed(0)
    model = TensorNet(hidden_channels=16, num_layers=2, num_rbf=8, cutoff_upper=4.0, dtype=torch.float64)
    z = torch.tensor([8, 1, 1, 6, 1, 1, 1])
    pos = (torch.randn(7, 3, dtype=torch.float64) * 1.2).requires_grad_(True)
    x, _, _, _, _ = model(z, pos, torch.zeros(7, dtype=torch.long))
    energy = x.sum()
    (forces,) = torch.autograd.grad(-energy, pos)
    print("features", tuple(x.shape), "energy", float(energy))
    print("forces\n", forces)


if __name__ == "__main__":
    main()
