"""Spherical tensors in diagrams: cg and P nodes, the checker's rules, constant folding, and
agreement with e3nn (FullTensorProduct, spherical_harmonics)."""

import numpy as np
import pytest

import compiler
from compiler.api import checked_program
from compiler.errors import DiagError, EquivarianceError
from compiler.frontend.lower import lower_source
from compiler.testing import assert_equivariant, random_input
from conftest import ROOT

PATH = ROOT / "diagrams" / "spherical.diag"


@pytest.fixture(scope="module")
def ops():
    return compiler.load(PATH)


@pytest.mark.parametrize("diagram", lower_source(PATH.read_text(), str(PATH)).diagrams, ids=lambda d: d.name)
def test_spherical_examples_are_equivariant(ops, diagram):
    assert_equivariant(getattr(ops, diagram.name), [t.type for t in diagram.inputs],
                       [t.type for t in diagram.outputs], diagram.group, channel_sizes={"c": 3})


@pytest.fixture(scope="module")
def e3nn():
    e3nn = pytest.importorskip("e3nn")
    import torch

    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield e3nn
    torch.set_default_dtype(old)


@pytest.mark.parametrize("l1, l2, l3", [(1, 1, 0), (1, 1, 1), (1, 1, 2), (1, 2, 1), (1, 2, 3), (2, 2, 2),
                                        (2, 2, 4), (2, 3, 1), (3, 3, 2), (0, 3, 3)])
def test_cg_path_equals_e3nn_full_tensor_product(e3nn, l1, l2, l3):
    """e3nn's component-normalised FullTensorProduct is sqrt(2 l3 + 1) times the cg contraction."""
    import torch
    from e3nn import o3

    p1, p2 = (1 if l1 % 2 == 0 else -1), 1
    ir = lambda l, p: f"{l}{'e' if p == 1 else 'o'}"  # noqa: E731
    p3 = p1 * p2
    src = (f"diagram tp(x: sph({ir(l1, p1)}), y: sph({ir(l2, p2)})) -> z: sph({ir(l3, p3)}) {{\n"
           f"    z[c] = cg({l1},{l2},{l3})[a,b,c] x[a] y[b]\n}}\n")
    f = compiler.load_source(src).tp
    tp = o3.FullTensorProduct(f"1x{ir(l1, p1)}", f"1x{ir(l2, p2)}", filter_ir_out=[ir(l3, p3)])
    x, y = torch.randn(4, 2 * l1 + 1), torch.randn(4, 2 * l2 + 1)
    np.testing.assert_allclose(tp(x, y).numpy(), np.sqrt(2 * l3 + 1) * f(x.numpy(), y.numpy()), atol=1e-12)


@pytest.mark.parametrize("l", [1, 2, 3])
def test_P_of_r_tensor_power_is_e3nn_spherical_harmonics(e3nn, l):
    import torch
    from e3nn import o3

    from compiler.math.spherical import sh_component_constant

    legs = ",".join("ijk"[:l])
    src = f"diagram y(r: vec) -> s: sph({l}{'e' if l % 2 == 0 else 'o'}) {{\n    s[m] = P({l})[m,{legs}] " + \
        " ".join(f"r[{i}]" for i in "ijk"[:l]) + "\n}\n"
    f = compiler.load_source(src).y
    r = torch.randn(6, 3)
    want = o3.spherical_harmonics(l, r, normalize=False, normalization="component").numpy()
    np.testing.assert_allclose(float(sh_component_constant(l)) * f(r.numpy()), want, atol=1e-12)


def test_cartesian_to_spherical_and_back(ops):
    rng = np.random.default_rng(0)
    X = random_input("cart2", rng, (5,))
    s, v, t = ops.cart_to_sph(X)
    np.testing.assert_allclose(s[..., 0], np.trace(X, axis1=-2, axis2=-1))
    sym = (X + np.swapaxes(X, -1, -2)) / 2 - np.trace(X, axis1=-2, axis2=-1)[..., None, None] * np.eye(3) / 3
    np.testing.assert_allclose(ops.sph_to_sym2t(t), sym, atol=1e-12)  # P_2^T P_2 is the STF projector
    np.testing.assert_allclose(np.sum(t ** 2, -1), np.sum(sym ** 2, (-2, -1)), atol=1e-12)  # isometry
    np.testing.assert_allclose(v, 0.5 * np.stack([X[:, 1, 2] - X[:, 2, 1], X[:, 2, 0] - X[:, 0, 2],
                                                  X[:, 0, 1] - X[:, 1, 0]], -1), atol=1e-12)


def test_constant_subnetworks_are_folded_into_one_table():
    text = compiler.compile_file(PATH)
    assert "cg(" not in text.split('"""')[2] and "P(" not in text.split('"""')[2]  # only in docstrings
    from compiler.api import checked_program
    from compiler.planning.plan import Unrolled, plan_diagram

    plans = {d.name: plan_diagram(d) for d in checked_program(PATH.read_text(), str(PATH)).diagrams}
    assert sum(len(p.tables) for p in plans.values()) >= 5  # each constant subnetwork: one exact table
    # a sparse table of a product of two arrays is written as its nonzero entries (no dense einsum)
    (step,) = plans["tp_2e"].contractions
    assert isinstance(step, Unrolled) and sum(len(c) for c in step.cells) == 25
    # cart_to_sph's v = P(1) eps X: one folded table, no separate eps
    body = text[text.index("def cart_to_sph"):text.index("def sph_to_sym2t")]
    assert "_eps" not in body.split('"""')[2]


@pytest.mark.parametrize("body, sig, out, code, message", [
    ("z[c] = cg(1,1,3)[a,b,c] x[a] y[b]", "x: sph(1o), y: sph(1o)", "z: sph(3o)", 2, "triangle condition"),
    ("z[c] = cg(1,1,2)[a,b,c] x[a] y[b]", "x: sph(1o), y: sph(2e)", "z: sph(2e)", 2, "spherical l=2 leg"),
    ("z[c] = cg(1,1,1)[a,b,c] x[a] y[b]", "x: sph(1o), y: sph(1o)", "z: sph(1o)", 1, "under inversion"),
    ("z[c] = cg(1,1)[a,b,c] x[a] y[b]", "x: sph(1o), y: sph(1o)", "z: sph(1o)", 2, "three degrees"),
    ("z[m] = P(2)[m,i] X[i,j]", "X: cart2", "z: sph(2e)", 2, "3 legs but 2 indices"),
    ("z[m] = P(9)[m,i,j,k,l,n,o,p,q] X[i,j]", "X: cart2", "z: sph(2e)", 2, "above the supported maximum"),
])
def test_spherical_rejections(body, sig, out, code, message):
    src = f"diagram f({sig}) -> {out} {{\n    {body}\n}}\n"
    with pytest.raises(DiagError, match=message) as info:
        checked_program(src, "s.diag")
    assert info.value.exit_code == code and str(info.value).startswith("s.diag:2:")
    assert code == 1 or not isinstance(info.value, EquivarianceError)


def test_spherical_certificates(tmp_path):
    """Irrational constants: the identity is proved exactly on the source (exact surds and Wigner D
    matrices), and the module, bound by its hash, must agree with the source numerically."""
    import hashlib
    import json

    from compiler import cli
    from compiler.tools.certify import CertificateError, verify

    cert_dir = tmp_path / "cert"
    assert cli.main(["prove", str(PATH), "-o", str(cert_dir)]) == 0
    assert verify(str(cert_dir)).startswith("verified 12 diagram(s)")  # each with its NAME_vjp
    cert = json.loads((cert_dir / "certificate.json").read_text())
    assert all(d["algebraic"]["module_agreement"] < 1e-12 for d in cert["diagrams"])
    # a wrong parity claim fails the exact check under the reflection
    bad = json.loads(json.dumps(cert))
    bad["diagrams"][0]["outputs"][2]["type"] = "sph(2o)"
    (cert_dir / "certificate.json").write_text(json.dumps(bad))
    with pytest.raises(CertificateError, match="fails for a reflection"):
        verify(str(cert_dir))
    # a module whose rounded constants were changed (hash updated) no longer agrees with the source
    (cert_dir / "certificate.json").write_text(json.dumps(cert))
    module = cert_dir / "module.py"
    text = module.read_text()
    # off by 1e-5 everywhere (the Python tables and the embedded CUDA source both carry it)
    edited = text.replace("0.7071067811865476", "0.7071167811865476")
    assert edited != text
    module.write_text(edited)
    cert["module"]["sha256"] = hashlib.sha256(edited.encode()).hexdigest()
    (cert_dir / "certificate.json").write_text(json.dumps(cert))
    with pytest.raises(CertificateError, match="differs from the source"):
        verify(str(cert_dir))
