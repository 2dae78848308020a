"""The force-training example: forces from generated VJPs equal -dE/dpos, and one optimisation step
with the loss under torch.compile(fullgraph=True) equals the eager step."""

import sys

import torch
from conftest import ROOT

sys.path.insert(0, str(ROOT / "examples"))
import force_training as ft  # noqa: E402


def test_forces_from_generated_vjps_are_minus_the_energy_gradient():
    params = ft.init_params(channels=3)
    pos, src, dst, _, _ = ft.toy_batch(atoms=4)
    pos = pos.clone().requires_grad_(True)
    energy, forces = ft.energy_and_forces(params, pos, src, dst)
    (grad,) = torch.autograd.grad(energy, pos)
    assert torch.allclose(forces, -grad, rtol=0, atol=1e-12)


def test_compiled_training_step_equals_eager():
    batch = ft.toy_batch(atoms=4)
    eager, compiled = ft.init_params(channels=3), ft.init_params(channels=3)
    torch._dynamo.reset()
    loss_eager = ft.train_step(eager, batch)
    loss_compiled = ft.train_step(compiled, batch, torch.compile(ft.loss_fn, fullgraph=True))
    assert torch.allclose(loss_eager, loss_compiled, rtol=0, atol=1e-12)
    for name in eager:
        assert not torch.equal(eager[name], ft.init_params(channels=3)[name])  # the step moved it
        assert torch.allclose(eager[name], compiled[name], rtol=0, atol=1e-12), name
