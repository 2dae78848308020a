"""Isotropic constitutive laws learnt from invariants (functions of invariants inside a diagram).

``examples/constitutive.diag`` holds two diagrams with a user function:

* ``stress(E, F)``: sigma = F0 delta + F1 E + F2 E.E with (F0, F1, F2) = F(tr E, tr E^2, tr E^3), the
  general isotropic law (Rivlin-Ericksen), one diagram;
* ``energy(E, W)``: w = W(tr E, tr E^2, tr E^3); the hyperelastic stress sigma = dW/dE is
  ``energy_vjp(E, W, 1)``: the chain rule through the stages' generated VJPs, with W's own
  derivative (torch autograd of the MLP) between them.

F and W are small MLPs (``torch.nn.Module``) passed at call time, trained on synthetic data from a
compressible Neo-Hookean law (second Piola-Kirchhoff stress in the Green-Lagrange strain E):
C = I + 2E, J = sqrt(det C), S = mu (I - C^-1) + lam ln(J) C^-1. Both models are objective by
construction: rotating E rotates sigma, whatever the MLP weights.

    python examples/constitutive.py      # trains both, prints the relative stress errors
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import compiler  # noqa: E402

OPS = compiler.load(Path(__file__).resolve().parent / "constitutive.diag")
MU, LAM = 1.0, 2.0


def neo_hookean(E: torch.Tensor) -> torch.Tensor:
    """The Neo-Hookean second Piola-Kirchhoff stress of strains E (..., 3, 3), symmetric."""
    eye = torch.eye(3, dtype=E.dtype)
    C = eye + 2 * E
    Cinv = torch.linalg.inv(C)
    lnJ = 0.5 * torch.logdet(C)
    return MU * (eye - Cinv) + LAM * lnJ[..., None, None] * Cinv


def strains(n: int, scale: float = 0.1, seed: int = 0, dtype=torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(n, 3, 3, generator=g, dtype=dtype) * scale
    return (A + A.transpose(-1, -2)) / 2


class MLP(torch.nn.Module):
    """An MLP of the invariants (tr E, tr E^2, tr E^3), each first divided by its typical size
    (``scale``, ``scale``^2, ``scale``^3) so that all are of order one."""

    def __init__(self, n_in: int, n_out: int, hidden: int = 32, seed: int = 0, scale: float = 0.1):
        super().__init__()
        torch.manual_seed(seed)
        self.register_buffer("inv_scale", torch.tensor([scale ** -(k + 1) for k in range(n_in)]))
        self.net = torch.nn.Sequential(torch.nn.Linear(n_in, hidden), torch.nn.SiLU(),
                                       torch.nn.Linear(hidden, hidden), torch.nn.SiLU(),
                                       torch.nn.Linear(hidden, n_out))
        self.double()

    def forward(self, x):
        return self.net(x * self.inv_scale)


def stress_direct(E: torch.Tensor, F: MLP) -> torch.Tensor:
    return OPS.stress(E, F)


def stress_hyperelastic(E: torch.Tensor, W: MLP) -> torch.Tensor:
    """sigma = dW/dE, through energy_vjp (the generated stage VJPs, W's derivative by torch)."""
    return OPS.energy_vjp(E, W, torch.ones(E.shape[:-2], dtype=E.dtype))


def train(kind: str = "direct", steps: int = 200, n: int = 128, lr: float = 1e-2, seed: int = 0):
    """(module, relative error on held-out strains before, after) for ``kind`` 'direct' or
    'hyperelastic'."""
    net = MLP(3, 3 if kind == "direct" else 1, seed=seed)
    model = (lambda E: stress_direct(E, net)) if kind == "direct" else (lambda E: stress_hyperelastic(E, net))
    E_train, E_test = strains(n, seed=seed), strains(n, seed=seed + 1)
    target = neo_hookean(E_train)
    scale = target.pow(2).mean()

    def test_error():
        pred = model(E_test).detach()
        want = neo_hookean(E_test)
        return float(torch.linalg.norm(pred - want) / torch.linalg.norm(want))

    before = test_error()
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        loss = (model(E_train) - target).pow(2).mean() / scale
        loss.backward()
        opt.step()
    return net, model, before, test_error()


def main():
    for kind in ("direct", "hyperelastic"):
        _, _, before, after = train(kind)
        print(f"{kind:>12}: relative stress error on held-out strains {before:.3f} -> {after:.4f}")


if __name__ == "__main__":
    main()
