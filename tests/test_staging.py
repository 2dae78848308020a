"""Channel mixing scaled per channel run in stages (compiler.planning.staging): which diagrams are
staged and into what, the staged module without one-call code for them, and the staged public
functions against the one-call emitted code (the module built with staging=False), values, VJPs,
out=, fused=True, batched weights, broadcasting, torch gradcheck / gradgradcheck, equivariance."""

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from compiler.api import compile_source, load_source, lower_source
from compiler.ir.program import StageCall, sum_formula
from compiler.planning.staging import stage_diagram
from compiler.testing import assert_equivariant, random_input

ROOT = Path(__file__).resolve().parents[1]

SOURCE = """
group O3
diagram scaled_both(x: vec[c], s: scalar[c], W: weight[c,d], n: scalar[d], z: vec[d]) -> y: vec[d] {
    y[d,i] = n[d] W[c,d] s[c] x[c,i] + 2 n[d] W[c,d] x[c,i] + z[d,i]
}
diagram flipped(x: vec[c], s: scalar[c], W: weight[d,c]) -> y: vec[d] {
    y[d,i] = W[d,c] s[c] x[c,i]
}
diagram cross_mix(a: vec[c], b: vec[c], W: weight[c,d], g: scalar) -> y: axial[d] {
    y[d,i] = g W[c,d] eps[i,j,k] a[c,j] b[c,k]
}
diagram sph_mix(x: sph(1o)[c], y: sph(1o)[c], W: weight[c,d], n: scalar[d]) -> t: sph(2e)[d] {
    t[d,m] = n[d] W[c,d] cg(1,1,2)[p,q,m] x[c,p] y[c,q]
}
diagram post_only(x: vec[c], W: weight[c,d], n: scalar[d]) -> y: cart2[d] {
    y[d,i,j] = n[d] W[c,d] x[c,i] delta[j,k] x[c,k]
}
diagram named(X: cart2[c], s: scalar[c], W0: weight[c,d], W1: weight[c,d]) -> (i: scalar[d], a: axial[d]) {
    i[d] = 1/3 W0[c,d] s[c] X[c,k,k]
    a[d,k] = -1/2 W1[c,d] s[c] eps[k,i,j] X[c,i,j]
}
diagram plain(X: cart2[c], W: weight[c,d]) -> Y: cart2[d] {
    Y[d,i,j] = W[c,d] X[c,i,j] - W[c,d] X[c,j,i]
}
diagram elementwise(x: vec[c], s: scalar[c]) -> y: vec[c] {
    y[c,i] = s[c] x[c,i]
}
"""


@pytest.fixture(scope="module")
def program():
    return lower_source(SOURCE, "staging.diag")


@pytest.fixture(scope="module")
def module():
    return load_source(SOURCE, "staging_test_module")


@pytest.fixture(scope="module")
def unstaged():
    """The same source as one call each (staging=False): the one-call side of the comparisons."""
    return load_source(SOURCE, "staging_test_unstaged", staging=False)


def _stages(d):
    """Each stage of ``d``'s staged form: (stage, the values it takes, those it gives, its equations);
    a shared mixing stage (StageCall) under names of its own."""
    st = stage_diagram(d)
    if st is None:
        return None
    by = {s.name: s for s in st.diagrams}
    rows = []
    for step in st.composite.steps:
        if isinstance(step, StageCall):
            stage, args, results = by[step.stage], list(step.arguments), list(step.results)
        else:
            stage = by[step]
            args, results = [t.name for t in stage.inputs], [t.name for t in stage.outputs]
        rows.append((stage.name, args, results, [f"{eq.target} = {sum_formula(eq.terms)}" for eq in stage.equations]))
    return rows


MIX3 = ["v0 = W0[c,d] u0[c]", "v1 = W1[c,d] u1[c,k0]", "v2 = W2[c,d] u2[c,k0]"]


def test_tensornets_diagrams_are_staged_as_written_by_hand_in_session_15():
    prog = lower_source((ROOT / "diagrams" / "tensornet_layer.diag").read_text(), "tensornet_layer.diag")
    by = {d.name: d for d in prog.diagrams}
    # project: the scaled parts (session 15's decompose_scaled) then one GEMM a part, giving the outputs
    project = _stages(by["project"])
    assert [row[:2] for row in project] == [("_project_pre", ["X", "s"]),
                                            (project[1][0], ["_project_u0", "_project_u1", "_project_u2",
                                                             "W0", "W1", "W2"])]
    assert project[0][3] == ["_project_u0 = 1/3 s[c] X[c,k,k]", "_project_u1 = -1/2 s[c] eps[k,i,j] X[c,i,j]",
                             "_project_u2 = s[c] P(2)[m,i,j] X[c,i,j]"]
    assert project[1][0].startswith("_mix_") and project[1][2:] == (["i", "a", "t"], MIX3)
    # compose_mixed: the parts mixed as they are (no pre stage), by the same shared mixing stage as
    # project's (one function, one host loop, one set of kernels), then scaled and composed
    stages = _stages(by["compose_mixed"])
    assert [row[0] for row in stages] == [project[1][0], "_compose_mixed_post"]
    assert stages[0][1:3] == (["i", "a", "t", "W0", "W1", "W2"], ["_compose_mixed_v0", "_compose_mixed_v1",
                                                                   "_compose_mixed_v2"])
    assert stages[1][3] == ["X = n0[d] delta[i,j] _compose_mixed_v0[d] - n1[d] eps[i,j,k] _compose_mixed_v1[d,k] "
                            "+ n2[d] P(2)[m,i,j] _compose_mixed_v2[d,m]"]
    # elementwise diagrams and plain channel mixing are not staged
    for name in ("compose", "parts_norm", "matmul_o3_scaled", "residual"):
        assert stage_diagram(by[name]) is None, name


def test_which_diagrams_are_staged_and_how(program):
    by = {d.name: d for d in program.diagrams}
    # two terms with one weight and the same post side: one intermediate, one GEMM
    stages = _stages(by["scaled_both"])
    assert stages[0][3] == ["_scaled_both_u0 = s[c] x[c,i] + 2 x[c,i]"]
    assert stages[1][1:] == (["_scaled_both_u0", "W"], ["_scaled_both_v0"], ["v0 = W0[c,d] u0[c,k0]"])
    assert stages[2][3] == ["y = n[d] _scaled_both_v0[d,i] + z[d,i]"]
    # the weight's orientation is kept
    assert _stages(by["flipped"])[1][3] == ["v0 = W0[d,c] u0[c,k0]"]
    # eps goes with the pre side (3 numbers a channel, not 9); the channel-free g with the post side
    stages = _stages(by["cross_mix"])
    assert stages[0][3] == ["_cross_mix_u0 = eps[i,j,k] a[c,j] b[c,k]"]
    assert stages[2][3] == ["y = g _cross_mix_v0[d,i]"]
    # a spherical intermediate: cg with the pre side (5 numbers, not 3 x 3)
    stages = _stages(by["sph_mix"])
    assert stages[0][3] == ["_sph_mix_u0 = cg(1,1,2)[p,q,m] x[c,p] y[c,q]"]
    # delta goes where the intermediate is smallest: with x's pair (x x^T: 9 numbers either way) ...
    assert [s[0][:5] for s in _stages(by["post_only"])] == ["_post", "_mix_", "_post"]
    # the mixing's results are the outputs: no post stage
    assert [s[2] for s in _stages(by["named"])] == [["_named_u0", "_named_u1"], ["i", "a"]]
    assert _stages(by["plain"]) is None and _stages(by["elementwise"]) is None


def _close(a, b, tol=1e-12):
    a = a if isinstance(a, tuple) else (a,)
    b = b if isinstance(b, tuple) else (b,)
    assert len(a) == len(b)
    for x, y in zip(a, b):
        x, y = np.asarray(x), np.asarray(y)
        assert x.shape == y.shape
        assert np.abs(x - y).max() <= tol * max(1.0, np.abs(y).max()), np.abs(x - y).max()


def _args(module, name, rng, batch=(6,), channels=None):
    d = {t.name: t for t in lower_source(SOURCE, "s.diag").diagrams}[name]
    sizes = channels or {"c": 5, "d": 4}
    return [random_input(t.type, rng, batch=() if t.type.family == "weight" or not t.type.channels else batch,
                         channel_sizes=sizes) for t in d.inputs]


STAGED = ["scaled_both", "flipped", "cross_mix", "sph_mix", "post_only", "named"]


def _one_call_names(name):
    """What a diagram's one-call forward code is called in a module: its planned and fused functions,
    spec, kernel config, and its kernels' and host loops' symbols in _CUDA_SOURCE (``diagc_NAME_``
    and no more: ``diagc_NAME_vjp_`` are its derivative's)."""
    return [rf"\b_{name}_planned\b", rf"\b_{name}_fused\b", rf"\b_{name}_SPEC\b", rf"\b_{name}_KERNEL\b",
            rf"\bdiagc_{name}_(?!vjp_)"]


def test_a_staged_diagram_has_no_one_call_code_and_staging_false_gives_it_back(module, unstaged, monkeypatch):
    staged_text = compile_source(SOURCE, "staging.diag")
    text = compile_source(SOURCE, "staging.diag", staging=False)
    assert module._CUDA_SOURCE and unstaged._CUDA_SOURCE
    for name in STAGED:
        for pattern in _one_call_names(name):
            assert not re.search(pattern, staged_text), (name, pattern)
            assert not re.search(pattern, module._CUDA_SOURCE), (name, pattern)
        assert not hasattr(module, f"_{name}_SPEC") and not hasattr(module, f"_{name}_planned")
        assert f"_{name}_staged" in getattr(module, name).__code__.co_names  # it runs its stages
        # what its derivatives run as one call is there: NAME_vjp with out=, NAME_vjp_vjp
        assert hasattr(module, f"_{name}_vjp_SPEC") and hasattr(module, f"_{name}_vjp_vjp_SPEC")
        # staging=False: the one-call public function, its code and kernel; no stages
        assert re.search(rf"\b_{name}_SPEC = \(_{name}_planned, ", text), name
        assert f"_{name}_staged" not in text and f"_{name}_SPEC" in getattr(unstaged, name).__code__.co_names
    kernels = {name for name in STAGED if hasattr(unstaged, f"_{name}_KERNEL")}
    assert kernels == {"flipped", "cross_mix", "named"}  # as one call these have kernels (and host loops)
    assert all(re.search(rf"\bdiagc_{name}_(?!vjp_)", unstaged._CUDA_SOURCE) for name in kernels)
    assert not re.search(r"\b_mix_[0-9a-f]{12}\b", text) and re.search(r"\b_mix_[0-9a-f]{12}\b", staged_text)
    # exactly the module of a compiler without the staging pass
    import compiler.targets.python.codegen as codegen

    monkeypatch.setattr(codegen, "stage_diagram", lambda d: None)
    assert compile_source(SOURCE, "staging.diag") == text


@pytest.mark.parametrize("name", STAGED)
def test_staged_functions_equal_the_one_call_code(module, unstaged, name):
    rng = np.random.default_rng(1)
    f = getattr(module, name)
    one_call = getattr(unstaged, name)
    assert f"_{name}_staged" in f.__code__.co_names  # the public function calls the chain of stages
    assert f"_{name}_SPEC" in one_call.__code__.co_names  # the diagram's own emitted code, one call
    args = _args(module, name, rng)
    one = one_call(*args)
    _close(f(*args), one)
    _close(f(*args, fused=True), one)  # each stage's fused code / host loop
    outs = tuple(np.empty_like(np.asarray(r)) for r in (one if isinstance(one, tuple) else (one,)))
    written = f(*args, out=outs if len(outs) > 1 else outs[0])
    _close(outs if len(outs) > 1 else outs[0], one)
    assert (written if isinstance(written, tuple) else (written,))[0] is outs[0]
    # the VJP: the staged chain rule against the derivative diagram's one-call code
    cot = one if isinstance(one, tuple) else (one,)
    cot = tuple(rng.normal(size=np.shape(c)) for c in cot)
    vjp, vspec = getattr(module, f"{name}_vjp"), getattr(module, f"_{name}_vjp_SPEC")
    _close(vjp(*args, *cot), module._call(vspec, tuple(args) + cot, None, False))
    # a batched weight and inputs broadcast against each other
    args2 = [np.stack([a, 2 * a, -a]) if k == 0 else a for k, a in enumerate(args)]  # batch (3, 6) with (6,)
    args2 = [np.stack([a, 2 * a, -a])[:, None] if np.ndim(a) == 2 and a.shape in ((5, 4), (4, 5)) else a  # (3, 1)
             for a in args2]
    assert any(np.ndim(a) == 4 and a.shape[-2:] in ((5, 4), (4, 5)) for a in args2)
    _close(f(*args2), one_call(*args2))


@pytest.mark.parametrize("name", STAGED)
def test_staged_functions_are_equivariant(module, name):
    d = {t.name: t for t in lower_source(SOURCE, "s.diag").diagrams}[name]
    assert_equivariant(getattr(module, name), [t.type for t in d.inputs], [t.type for t in d.outputs], "O3",
                       channel_sizes={"c": 5, "d": 4})


@pytest.mark.parametrize("name", ["scaled_both", "sph_mix", "named"])
def test_staged_functions_under_torch_autograd(module, name):
    rng = np.random.default_rng(2)
    args = [torch.tensor(a, requires_grad=True) for a in _args(module, name, rng, batch=(3,),
                                                                channels={"c": 3, "d": 2})]
    f = getattr(module, name)
    assert torch.autograd.gradcheck(f, tuple(args))
    assert torch.autograd.gradgradcheck(f, tuple(args))


def test_staged_functions_take_python_numbers_and_lists_like_the_one_call_code(module, unstaged):
    """A Python number or nested lists among the arguments are converted before the shape check (the
    staged function once read their .shape), to the first argument's library and dtype."""
    rng = np.random.default_rng(3)
    x, s, W, n, z = _args(module, "scaled_both", rng)
    want = unstaged.scaled_both(x, s, W, n, z)
    _close(module.scaled_both(x.tolist(), s, W, n.tolist(), z), want)
    xt = torch.tensor(x, dtype=torch.float32)
    got = module.scaled_both(xt, s, W, n, z)
    one = unstaged.scaled_both(xt, s, W, n, z)
    assert isinstance(got, torch.Tensor) and got.dtype == one.dtype == torch.float32
    _close(got.double(), one.double(), 1e-6)
