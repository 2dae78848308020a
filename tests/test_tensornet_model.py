"""examples/tensornet.py against torchmd-net 3.1.0's own TensorNet (its pure-torch path, loaded by
benchmarks/torchmdnet_ref.py): the same state_dict, the same features and forces; O(3)/SO(3)
invariance; strict loading; energy conservation in a short molecular dynamics run."""

import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from conftest import ROOT  # noqa: E402
import reference  # noqa: E402,F401  (puts benchmarks/ on the path)

sys.path.insert(0, str(ROOT / "examples"))

import tensornet  # noqa: E402
from compiler.testing import assert_equivariant  # noqa: E402

torchmdnet_ref = pytest.importorskip("torchmdnet_ref")
try:
    torchmdnet_ref.load_tensornet_module()
except ImportError as exc:  # torchmd-net is a test reference: pip install --no-deps torchmd-net==3.1.0
    pytest.skip(str(exc), allow_module_level=True)

F64 = torch.float64

CONFIGS = {
    "O3-expnorm-silu": dict(equivariance_invariance_group="O(3)"),
    "SO3-expnorm-silu": dict(equivariance_invariance_group="SO(3)"),
    "O3-gauss-tanh-lower": dict(rbf_type="gauss", activation="tanh", cutoff_lower=0.4, trainable_rbf=True),
    "SO3-3layers-ssp": dict(equivariance_invariance_group="SO(3)", num_layers=3, activation="ssp"),
}


def pair(seed, **kw):
    """torchmd-net's TensorNet with random weights, in float64, and ours holding its state_dict."""
    args = dict(hidden_channels=8, num_layers=2, num_rbf=6, cutoff_upper=3.5, max_num_neighbors=32,
                static_shapes=False, dtype=F64)
    args.update(kw)
    torch.manual_seed(seed)
    ref = torchmdnet_ref.reference_tensornet(**args).to(F64)
    with torch.no_grad():
        for p in ref.parameters():  # random weights, not only the initialisation's
            p.add_(0.3 * torch.randn_like(p))
    ours = tensornet.TensorNet(**args)
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ref, ours


def molecules(seed, sizes=(5, 7)):
    """Random molecules (atoms 0.9 apart on average), batched."""
    g = torch.Generator().manual_seed(seed)
    n = sum(sizes)
    z = torch.randint(1, 20, (n,), generator=g)
    pos = torch.randn(n, 3, generator=g, dtype=F64) * 1.3
    batch = torch.cat([torch.full((k,), b) for b, k in enumerate(sizes)])
    return z, pos, batch


def features_and_forces(model, z, pos, batch, w, q=None):
    pos = pos.clone().requires_grad_(True)
    x = model(z, pos, batch, q=q)[0]
    (grad,) = torch.autograd.grad((x * w).sum(), pos)
    return x.detach(), -grad


@pytest.mark.parametrize("name", list(CONFIGS))
def test_features_and_forces_equal_torchmdnet(name):
    ref, ours = pair(1, **CONFIGS[name])
    for seed in range(2):
        z, pos, batch = molecules(10 + seed)
        w = torch.randn(len(z), ref.hidden_channels, dtype=F64)
        x_ref, f_ref = features_and_forces(ref, z, pos, batch, w)
        x, f = features_and_forces(ours, z, pos, batch, w)
        assert x.shape == x_ref.shape == (len(z), 8)
        assert float(x_ref.abs().max()) > 0.1 and float(f_ref.abs().max()) > 0.1  # not a trivial zero
        assert torch.allclose(x, x_ref, rtol=0, atol=1e-10), float((x - x_ref).abs().max())
        assert torch.allclose(f, f_ref, rtol=0, atol=1e-10), float((f - f_ref).abs().max())


@pytest.mark.parametrize("host", [True, False], ids=["host_loops", "torch_compile"])
def test_fused_model_equals_torchmdnet(host, monkeypatch):
    """TensorNet(fused=True): every diagram with a fused form runs it, on the CPU as the kernels'
    host loops (compiled C++; the graph functions one loop each, gather - product - sum) or, with
    HOST_KERNELS off, torch.compile of each function and of the VJPs the forces take; features and
    forces still equal torchmd-net's."""
    modules = (tensornet.LAYER, tensornet.BASE, tensornet.SO3, tensornet.GRAPH)
    if host and modules[0]._host_compiler() is None:
        pytest.skip("no C++ compiler: the host loops cannot be built")
    for module in modules:
        monkeypatch.setattr(module, "HOST_KERNELS", host)
    ref, planned = pair(5)
    fused = tensornet.TensorNet(hidden_channels=8, num_layers=2, num_rbf=6, cutoff_upper=3.5,
                                max_num_neighbors=32, static_shapes=False, dtype=F64, fused=True)
    fused.load_state_dict(ref.state_dict(), strict=True)
    assert fused.fused and all(layer.fused for layer in fused.layers) and not planned.layers[0].fused
    z, pos, batch = molecules(6)
    w = torch.randn(len(z), 8, dtype=F64)
    x_ref, f_ref = features_and_forces(ref, z, pos, batch, w)
    x, f = features_and_forces(fused, z, pos, batch, w)
    assert torch.allclose(x, x_ref, rtol=0, atol=1e-10), float((x - x_ref).abs().max())
    assert torch.allclose(f, f_ref, rtol=0, atol=1e-10), float((f - f_ref).abs().max())
    if host:  # the host loops ran: compose, residual, their VJPs, the two graph functions and theirs
        loaded = set(tensornet.LAYER._HOST["functions"]) | set(tensornet.GRAPH._HOST["functions"])
        assert {"diagc_compose_host_f64", "diagc_residual_host_f64", "diagc_compose_vjp_host_f64",
                "diagc_message_graph_host_f64", "diagc_message_vjp_graph_host_f64", "diagc_embed_graph_host_f64",
                "diagc_embed_vjp_graph_host_f64"} <= loaded, loaded
    else:  # the fused forms ran: compose, residual, ... and their VJPs were compiled in this process
        compiled = {key[1].__name__ for key in tensornet.LAYER._COMPILED if key[0] == "torch"}
        assert {"_compose_fused", "_residual_fused", "_compose_vjp_fused"} <= compiled, compiled


def test_total_charge_enters_as_torchmdnet():
    ref, ours = pair(2)
    z, pos, batch = molecules(3)
    q = torch.tensor([1.0, -2.0], dtype=F64)
    w = torch.randn(len(z), 8, dtype=F64)
    x_ref, f_ref = features_and_forces(ref, z, pos, batch, w, q=q)
    x, f = features_and_forces(ours, z, pos, batch, w, q=q)
    x0, _ = features_and_forces(ours, z, pos, batch, w)
    assert float((x - x0).abs().max()) > 1e-3  # the charge changes the features
    assert torch.allclose(x, x_ref, rtol=0, atol=1e-10) and torch.allclose(f, f_ref, rtol=0, atol=1e-10)


def test_returns_torchmdnet_tuple():
    ref, ours = pair(3)
    z, pos, batch = molecules(4)
    out_ref, out = ref(z, pos, batch), ours(z, pos, batch)
    assert len(out) == len(out_ref) == 5 and out[1] is None and out_ref[1] is None
    assert out[2] is z and out[3] is pos and out[4] is batch


def test_static_shapes_reference_gives_the_same_features():
    """torchmd-net with static_shapes=True pads the edge list with a ghost atom; ours always fits
    the list to the pairs found, and the features are the same."""
    ref, ours = pair(4, static_shapes=True)
    z, pos, batch = molecules(5)
    assert torch.allclose(ours(z, pos, batch)[0], ref(z, pos, batch)[0], rtol=0, atol=1e-10)


@pytest.mark.parametrize("group", ["O3", "SO3"])
def test_invariance_and_force_equivariance(group):
    _, ours = pair(5, equivariance_invariance_group="O(3)" if group == "O3" else "SO(3)")
    z = torch.tensor([8, 1, 1, 6, 7, 1, 1, 1])
    w = torch.randn(len(z), 8, dtype=F64, generator=torch.Generator().manual_seed(0))

    def energy_and_forces(pos):
        pos = torch.as_tensor(pos, dtype=F64).requires_grad_(True)
        x = ours(z, pos, torch.zeros(len(z), dtype=torch.long))[0]
        energy = (x * w).sum(-1)  # per-atom energies: invariant
        (grad,) = torch.autograd.grad(energy.sum(), pos)
        return energy.detach().numpy(), -grad.numpy()

    assert_equivariant(energy_and_forces, ["vec"], ["scalar", "vec"], group=group, batch=(len(z),), trials=2)


def test_so3_model_is_not_reflection_invariant():
    """The check above can fail: torchmd-net's SO(3) product C = 2 Y M is odd under reflections."""
    _, ours = pair(5, equivariance_invariance_group="SO(3)")
    z = torch.tensor([8, 1, 1, 6, 7, 1, 1, 1])

    def features(pos):
        return ours(z, torch.as_tensor(pos, dtype=F64), torch.zeros(len(z), dtype=torch.long))[0].detach().numpy()

    with pytest.raises(AssertionError, match="reflection"):
        assert_equivariant(features, ["vec"], ["scalar[c]"], group="O3", batch=(len(z),), channel_sizes={"c": 8})


def test_strict_load_state_dict_errors():
    ref, ours = pair(6)
    state = ref.state_dict()
    missing = {k: v for k, v in state.items() if k != "layers.1.linears_tensor.4.weight"}
    with pytest.raises(RuntimeError, match=r'Missing key\(s\) in state_dict: "layers.1.linears_tensor.4.weight"'):
        ours.load_state_dict(missing)
    extra = dict(state, **{"layers.0.extra": torch.zeros(1)})
    with pytest.raises(RuntimeError, match=r'Unexpected key\(s\) in state_dict: "layers.0.extra"'):
        ours.load_state_dict(extra)
    wrong = dict(state, **{"linear.weight": torch.zeros(3, 3, dtype=F64)})
    with pytest.raises(RuntimeError, match="size mismatch for linear.weight"):
        ours.load_state_dict(wrong)


def test_bad_arguments():
    with pytest.raises(ValueError, match="Unknown group"):
        tensornet.TensorNet(equivariance_invariance_group="E(3)")
    with pytest.raises(ValueError, match="Unknown RBF type"):
        tensornet.TensorNet(rbf_type="bessel")
    _, ours = pair(7, max_num_neighbors=2)
    z, pos, batch = molecules(8)
    with pytest.raises(ValueError, match="increase max_num_neighbors"):
        ours(z, pos * 0.2, batch)


def test_energy_conservation_velocity_verlet():
    """1,000 velocity-Verlet steps (dt = 2e-3) of a 4-atom molecule on the model's energy plus a
    weak harmonic tether (so the atoms stay within the cutoff), float64, one thread: the total
    energy stays within 1e-4 of its start while the kinetic energy swings by more than 0.01 (the
    dynamics is not trivial); with the forces 10% too strong the drift is 10 times larger (the check
    can fail)."""
    _, ours = pair(8, hidden_channels=4, num_layers=1, num_rbf=4, cutoff_upper=3.0)
    z = torch.tensor([6, 1, 8, 1])
    batch = torch.zeros(4, dtype=torch.long)
    head = torch.linspace(-1.0, 1.0, 4, dtype=F64)
    mass = torch.tensor([12.0, 1.0, 16.0, 1.0], dtype=F64)[:, None]

    def potential_and_forces(pos):
        pos = pos.detach().requires_grad_(True)
        x = ours(z, pos, batch)[0]
        energy = (x * head).sum() + 0.5 * (pos - pos.mean(0)).square().sum()
        (grad,) = torch.autograd.grad(energy, pos)
        return float(energy), -grad

    def run(force_scale, steps, dt=2e-3):
        pos = torch.tensor([[0.0, 0.0, 0.0], [1.1, 0.0, 0.0], [-0.3, 1.2, 0.1], [0.2, -0.4, 1.0]], dtype=F64)
        vel = torch.tensor([[0.1, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.2], [-1.0, 0.0, 0.5]], dtype=F64)
        u, force = potential_and_forces(pos)
        totals, kinetic = [], []
        for _ in range(steps):
            vel = vel + 0.5 * dt * force_scale * force / mass
            pos = pos + dt * vel
            u, force = potential_and_forces(pos)
            vel = vel + 0.5 * dt * force_scale * force / mass
            k = float(0.5 * (mass * vel * vel).sum())
            totals.append(u + k)
            kinetic.append(k)
        return np.array(totals), np.array(kinetic)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a 4-atom molecule: threads only add synchronisation
    try:
        totals, kinetic = run(1.0, 1000)
        wrong, _ = run(1.1, 300)
    finally:
        torch.set_num_threads(threads)
    drift = np.abs(totals - totals[0]).max()
    swing, wrong_drift = kinetic.max() - kinetic.min(), np.abs(wrong - wrong[0]).max()
    assert swing > 0.01, swing
    assert drift < 1e-4, drift  # measured: 3.2e-6, the kinetic swing 0.78
    assert wrong_drift > 10 * drift, (wrong_drift, drift)


@pytest.mark.parametrize("fused", [False, True])
def test_training_on_forces_gives_torchmdnets_parameter_gradients(fused):
    """A force-training step: the gradient of a loss on energies and forces with respect to every
    parameter (a double backward through the whole model: the generated second-order functions,
    and with fused=True the host loops' VJPs of VJPs) equals torchmd-net's, parameter by parameter."""
    ref, ours = pair(5)
    if fused:
        ours = tensornet.TensorNet(hidden_channels=8, num_layers=2, num_rbf=6, cutoff_upper=3.5, max_num_neighbors=32,
                                   static_shapes=False, dtype=F64, fused=True)
        ours.load_state_dict(ref.state_dict(), strict=True)
    z, pos, batch = molecules(21)
    g = torch.Generator().manual_seed(3)
    w = torch.randn(len(z), 8, generator=g, dtype=F64)
    target = torch.randn(len(z), 3, generator=g, dtype=F64)

    def parameter_gradients(model):
        p = pos.clone().requires_grad_(True)
        energy = (model(z, p, batch)[0] * w).sum()
        (forces,) = torch.autograd.grad(-energy, p, create_graph=True)
        loss = 0.1 * energy ** 2 + ((forces - target) ** 2).sum()
        params = dict(model.named_parameters())
        return dict(zip(params, torch.autograd.grad(loss, list(params.values()), allow_unused=True)))

    want, got = parameter_gradients(ref), parameter_gradients(ours)
    assert want.keys() == got.keys() and len(want) == 46
    for name, g_ref in want.items():  # every parameter carries gradient, in both models
        scale = float(g_ref.abs().max())
        assert scale > 1e-6 and got[name] is not None, name
        assert torch.allclose(got[name], g_ref, rtol=0, atol=1e-9 * max(scale, 1.0)), (name, scale)
