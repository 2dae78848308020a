"""MACE's symmetric contraction on a CUDA GPU: diagc's compiled diagram
(examples/mace_symmetric_contraction.py) against mace-torch's ``SymmetricContraction`` and
cuEquivariance's ``cuet.SymmetricContraction`` (its CUDA kernel), the same map, values checked first.

    python benchmarks/mace_gpu_bench.py [--nodes 10000] [--channels 32 128] [--out DIR] [--device cuda]

mace-torch's module (correlation 3, ``Kx0e+Kx1o+Kx2e -> Kx0e+Kx1o``, 3 elements, random weights)
is the reference. diagc's weights come from it by the change of basis the example fits
(``diagc_weights``); cuEquivariance's the same way: its basis polynomials are read off the module
itself (one weight row set to one, the others zero) and MACE's are fitted in their span by least
squares, exact since the spans are equal. Every contender's float64 output is compared with
mace-torch's (relative 1e-10) before anything is timed; a contender that disagrees is reported and
left out. Times: float32, CUDA events, median of 20 calls after 3 warm-ups, contenders alternating
within each repeat; forward (``torch.no_grad``) and forward + backward (the gradient with respect to
the A-features, as force training needs). ``--device cpu`` is a smoke test (wall clock, small
sizes; cuEquivariance's ``naive`` method). Writes DIR/mace_gpu.md and .json.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import traceback
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "examples"))
if str(ROOT / "benchmarks") not in sys.path:
    sys.path.append(str(ROOT / "benchmarks"))

import compiler  # noqa: E402
import mace_symmetric_contraction as example  # noqa: E402
from gpu_timer import GpuTimer  # noqa: E402

Z = 3
WARMUP, REPEATS = 3, 20


def cuet_module(K: int, device, dtype, method):
    import cuequivariance as cue
    import cuequivariance_torch as cuet

    return cuet.SymmetricContraction(
        cue.Irreps("O3", f"{K}x0e+{K}x1o+{K}x2e"), cue.Irreps("O3", "+".join(f"{K}x{L}" for L in example.OUTPUTS)),
        contraction_degree=3, num_elements=Z, layout_in=cue.ir_mul, layout_out=cue.mul_ir,
        original_mace=True, dtype=dtype, math_dtype=dtype, device=device, method=method)


def cuet_x(A, K: int):
    """cuEquivariance's ir_mul input from the flat (mul_ir) A-features."""
    return example.mace_x(A, K).transpose(1, 2).flatten(1)


def cuet_weights(m, sc, K: int, points: np.ndarray):
    """cuEquivariance weights (Z, rows, K) giving mace-torch module ``sc``'s map, and the fit's
    largest residual. Basis row b of output L is the module's output with weight[0, b, :] = 1."""
    import torch

    dev, dt = m.weight.device, m.weight.dtype
    n = points.shape[0]
    A = np.concatenate([np.tile(points[:, 0:1], K), np.tile(points[:, 1:4], K), np.tile(points[:, 4:9], K)], 1)
    x = cuet_x(torch.as_tensor(A, dtype=dt, device=dev), K)
    z = torch.zeros(n, dtype=torch.int32, device=dev)
    rows = m.weight.shape[1]
    values = []  # values[b]: (n, sum of K(2L+1)) output with basis row b alone
    with torch.no_grad():
        saved = m.weight.detach().clone()
        for b in range(rows):
            m.weight.zero_()
            m.weight[0, b, :] = 1
            values.append(m(x, z).cpu().numpy())
        m.weight.copy_(saved)
    values = np.stack(values, -1)  # (n, out dim, rows)
    W = np.zeros((Z, rows, K))
    worst, start = 0.0, 0
    for contraction, L in zip(sc.contractions, example.OUTPUTS):
        d = 2 * int(L[0]) + 1
        block = values[:, start:start + K * d].reshape(n, K, d, rows)[:, 0]  # channel 0: (n, d, rows)
        start += K * d
        used = np.flatnonzero(np.abs(block).max(axis=(0, 1)) > 1e-12)
        E = block[:, :, used].reshape(n * d, len(used))
        M = example.mace_basis_values(contraction, torch.as_tensor(points)).detach().numpy().reshape(n * d, -1)
        T, *_ = np.linalg.lstsq(E, M, rcond=None)
        worst = max(worst, float(np.abs(E @ T - M).max()))
        W[:, used, :] = np.einsum("jk,zkc->zjc", T, example.mace_weights(contraction))
    return W, worst


def run_size(K, N, device, torch, rng, method, notes):
    source, bases = example.build_source(K)
    module = compiler.load_source(source, f"mace_sc_{K}")
    points = rng.normal(size=(256, 9))
    dweights, dres = example.diagc_weights(example.mace_module(K, Z), bases, points)  # CPU, float64
    A = rng.normal(size=(N, 9 * K))
    zi = rng.integers(0, Z, N)
    failed = set()  # contenders whose float64 values disagree: not timed
    out = {"K": K, "N": N, "check": {}, "forward_ms": {}, "backward_ms": {}}
    mods = {}
    for dtype in (torch.float64, torch.float32):
        At = torch.as_tensor(A, dtype=dtype, device=device)
        y = torch.eye(Z, dtype=dtype, device=device)[torch.as_tensor(zi, device=device)]
        z32 = torch.as_tensor(zi, dtype=torch.int32, device=device)
        sc = example.mace_module(K, Z).to(device=device, dtype=dtype)  # the same seed: the same weights
        Wd = [torch.as_tensor(w, dtype=dtype, device=device) for w in dweights]
        calls = {
            "mace-torch": lambda At=At, sc=sc, y=y: sc(example.mace_x(At, K), y),
            "diagc": lambda At=At, y=y, Wd=Wd: module.mace_sc(At, y, *Wd),
            "diagc kernels=False": lambda At=At, y=y, Wd=Wd: module.mace_sc(At, y, *Wd, kernels=False),
        }
        try:
            m = cuet_module(K, device, dtype, method)
            if not mods:  # the fit, once, in float64
                mods["W"] = cuet_weights(m, example.mace_module(K, Z), K, points)  # on the CPU, float64
            with torch.no_grad():
                m.weight.copy_(torch.as_tensor(mods["W"][0], dtype=dtype))
            calls["cuEquivariance"] = lambda At=At, z32=z32, m=m: m(cuet_x(At, K), z32)
        except Exception as e:  # noqa: BLE001
            notes.append(f"cuEquivariance unavailable ({type(e).__name__}: {str(e)[:200]})")
        if dtype == torch.float64:
            with torch.no_grad():
                ref = calls["mace-torch"]()
                for name, f in list(calls.items()):
                    try:
                        got = f()
                        err = float((got - ref).abs().max() / max(1.0, float(ref.abs().max())))
                    except Exception as e:  # noqa: BLE001
                        err = float("inf")
                        notes.append(f"K={K} {name}: {type(e).__name__}: {str(e)[:200]}")
                        traceback.print_exc(limit=4)
                    out["check"][name] = err
                    if not err < 1e-10:
                        failed.add(name)
            continue
        ok = {k: f for k, f in calls.items() if k not in failed}
        # device time of each call, the host's enqueueing hidden behind a 1e6-cycle sleep; warmed up
        # below, where a contender that fails is left out
        timer = GpuTimer(torch, device, warmup=0, repeats=REPEATS if device.type == "cuda" else 3,
                         sleep_cycles=1_000_000)
        for phase in ("forward", "backward"):
            def wrap(f, phase=phase):
                if phase == "forward":
                    def g():
                        with torch.no_grad():
                            f()
                    return g
                def g():
                    At.grad = None
                    At.requires_grad_(True)
                    f().square().sum().backward()
                return g
            fs = {k: wrap(f) for k, f in ok.items()}
            bad = set()
            for k, f in fs.items():
                try:
                    for _ in range(WARMUP):
                        f()
                except Exception as e:  # noqa: BLE001
                    bad.add(k)
                    notes.append(f"K={K} {k} {phase}: {type(e).__name__}: {str(e)[:200]}")
            seconds = timer.alternating({k: f for k, f in fs.items() if k not in bad})
            out[f"{phase}_ms"] = {k: t * 1e3 for k, t in seconds.items()}
            At.requires_grad_(False)
    out["fit_residual"] = {"diagc": dres, "cuEquivariance": mods["W"][1] if "W" in mods else None}
    return out


def main(argv=None) -> int:
    import torch

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nodes", type=int, default=10000)
    p.add_argument("--channels", type=int, nargs="+", default=[32, 128])
    p.add_argument("--device", default="cuda")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    a = p.parse_args(argv)
    device = torch.device(a.device)
    method = None if device.type == "cuda" else "naive"
    rng = np.random.default_rng(0)
    notes, results = [], []
    t0 = time.perf_counter()
    for K in a.channels:
        try:
            results.append(run_size(K, a.nodes, device, torch, rng, method, notes))
        except Exception as e:  # noqa: BLE001
            notes.append(f"K={K}: {type(e).__name__}: {str(e)[:300]}")
            traceback.print_exc()
        print(json.dumps(results[-1] if results else {}, indent=1), flush=True)
    name = torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or "cpu"
    versions = [f"torch {torch.__version__}"]
    for mod in ("cuequivariance", "cuequivariance_torch", "mace"):
        try:
            versions.append(f"{mod} {__import__(mod).__version__}")
        except Exception:  # noqa: BLE001
            pass
    lines = [f"# MACE symmetric contraction on {name}", "",
             f"`python benchmarks/mace_gpu_bench.py` (diagc {compiler.__version__}; {', '.join(versions)}). "
             f"Correlation 3, Kx0e+Kx1o+Kx2e -> Kx0e+Kx1o, {Z} elements, {a.nodes} nodes, float32; "
             "device times in ms, median of 20 CUDA-event timings after 3 warm-ups, contenders alternating; "
             "values checked first against mace-torch in float64 (relative error below). "
             f"Run took {time.perf_counter() - t0:.0f} s.", "",
             "| K | pass | mace-torch | cuEquivariance | diagc | diagc kernels=False | diagc / cuEquivariance | diagc / mace-torch |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        for phase in ("forward", "backward"):
            t = r[f"{phase}_ms"]
            cell = lambda k: f"{t[k]:.3f}" if k in t else "—"  # noqa: E731
            ratio = lambda a_, b_: f"{t[a_] / t[b_]:.2f}" if a_ in t and b_ in t else "—"  # noqa: E731
            lines.append(f"| {r['K']} | {'forward' if phase == 'forward' else 'forward + backward'} | "
                         f"{cell('mace-torch')} | {cell('cuEquivariance')} | {cell('diagc')} | "
                         f"{cell('diagc kernels=False')} | {ratio('diagc', 'cuEquivariance')} | {ratio('diagc', 'mace-torch')} |")
    lines += ["", "Value checks (largest relative difference from mace-torch, float64): " +
              "; ".join(f"K={r['K']}: " + ", ".join(f"{k} {v:.1e}" for k, v in r["check"].items()) for r in results)]
    lines += [f"- {n}" for n in notes]
    text = "\n".join(lines) + "\n"
    print(text)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "mace_gpu.md").write_text(text)
    (out / "mace_gpu.json").write_text(json.dumps({"device": name, "results": results, "notes": notes}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
