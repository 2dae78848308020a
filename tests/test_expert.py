"""The hand-written expert formulas (benchmarks/experts.py, the benchmarks' contenders):
numpy and torch give the emitted code's values, in the benchmark's layout (weights without batch axes)."""

import numpy as np
import pytest

import compiler
from compiler.testing import random_input
from conftest import ROOT
import reference  # noqa: F401  (puts benchmarks/ on the path)
from experts import expert_set

torch = pytest.importorskip("torch")

EXPERT_NP, EXPERT_TORCH = expert_set(np), expert_set(torch)


@pytest.mark.parametrize("key", sorted(EXPERT_NP), ids=lambda k: f"{k[0]}.{k[1]}")
def test_expert_matches_emitted_code_in_numpy_and_torch(key):
    stem, name = key
    types, f_np = EXPERT_NP[key]
    f_t = EXPERT_TORCH[key][1]
    fn = getattr(compiler.load(ROOT / "diagrams" / f"{stem}.diag"), name)
    rng = np.random.default_rng(1)
    sizes = {"c": 4, "d": 3}
    args = [random_input(t, rng, () if t.startswith("weight") else (5,), sizes) for t in types]
    want = fn(*args)
    want = want if isinstance(want, tuple) else (want,)
    for got in (f_np(*args), f_t(*[torch.from_numpy(a) for a in args])):
        got = got if isinstance(got, tuple) else (got,)
        assert len(got) == len(want)
        for g, w in zip(got, want):
            g = g.numpy() if isinstance(g, torch.Tensor) else g
            assert g.shape == w.shape
            np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-12)
