"""Every example function on real cupy arrays (plain, fused=True, out=) against numpy, and one
call with wrong shapes (the ValueError naming the argument); needs a GPU with cupy.

    python benchmarks/cupy_check.py

The test suite covers the same path on a stand-in built over numpy (tests/fake_cupy.py); this
script is the check on the real library."""

import sys
from pathlib import Path

import cupy
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import compiler  # noqa: E402
from compiler.frontend.lower import lower_source  # noqa: E402
from compiler.testing import random_input  # noqa: E402

rng = np.random.default_rng(0)
ok = fail = 0
for path in sorted((ROOT / "diagrams").glob("*.diag")):
    mod = compiler.load(path)
    for d in lower_source(path.read_text(), str(path)).diagrams:
        fn = getattr(mod, d.name)
        args = [random_input(t.type, rng, (64,), {"c": 8, "d": 4}) for t in d.inputs]
        want = fn(*args)
        want = want if isinstance(want, tuple) else (want,)
        dev = [cupy.asarray(a) for a in args]
        for mode in ("plain", "fused", "out"):
            try:
                if mode == "out":
                    bufs = tuple(cupy.empty(w.shape, dtype=w.dtype) for w in want)
                    got = fn(*dev, out=bufs if len(bufs) > 1 else bufs[0])
                else:
                    got = fn(*dev, fused=(mode == "fused"))
                got = got if isinstance(got, tuple) else (got,)
                for g, w in zip(got, want):
                    assert isinstance(g, cupy.ndarray), type(g)
                    np.testing.assert_allclose(cupy.asnumpy(g), w, rtol=1e-10, atol=1e-10)
                ok += 1
            except Exception as e:
                fail += 1
                print(f"FAIL {path.stem}.{d.name} {mode}: {type(e).__name__}: {str(e)[:150]}")
        if d.inputs:  # a wrong shape on the device: the message names the argument
            bad = [cupy.zeros((64,) + (7,) * (len(t.type.channels) + t.type.n_geometric)) for t in d.inputs]
            try:
                fn(*bad)
                if any(t.type.n_geometric for t in d.inputs):
                    print(f"NO ERROR {path.stem}.{d.name} on wrong shapes")
            except ValueError as e:
                print(f"  {d.name}: ValueError: {e}")
            except Exception as e:
                print(f"  {d.name}: {type(e).__name__}: {str(e)[:120]}")
print(f"{ok} passed, {fail} failed")
sys.exit(1 if fail else 0)
