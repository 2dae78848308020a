"""Every function of every example (``diagrams/*.diag`` and ``examples/*.diag``: graphs, invariant
functions and irreps types included) on CUDA torch tensors, against the numpy module in float64:
the forward with kernels (the default) and with ``kernels=False``, ``NAME_vjp`` on random
cotangents, and torch autograd's gradient through the kernel path against ``NAME_vjp``'s numpy
result; needs a GPU with torch (and cupy for the kernel path).

    python benchmarks/cuda_paths_check.py [--out FILE]

tests/test_cuda_paths_check.py runs this check without a GPU (CPU tensors standing for CUDA
tensors, the launches taken by a stand-in for cupy, graph kernels compiled for the host); this script
is the check on the real device. A function taking a user function (``fn`` type) is called with
``tanh`` from the array library in use. Prints one line per failure and a count; exit 1 on any."""

from __future__ import annotations

import argparse
import inspect
import sys
import traceback
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import compiler  # noqa: E402
from compiler.frontend.lower import lower_source  # noqa: E402
from compiler.testing import random_input  # noqa: E402

SIZES = {"c": 8, "d": 4, "u": 3, "v": 2, "w": 2}
N_NODES, N_EDGES, BATCH = 37, 150, (64,)


def _args(d, rng):
    """Random float64 inputs for diagram ``d``: edge lists for ``edges`` types, node/edge sizes for
    graph axes, ``None`` placeholders for ``fn`` inputs (filled per library)."""
    graph = any(t.type.family == "edges" for t in d.inputs)
    sizes = dict(SIZES)
    args = []
    for t in d.inputs:
        ty = t.type
        if ty.family == "edges":
            sizes[ty.channels[0]] = N_EDGES
            sizes[ty.channels[1]] = N_NODES
    for t in d.inputs:
        ty = t.type
        if ty.family == "edges":
            args.append(rng.integers(0, N_NODES, size=N_EDGES).astype(np.int64))
        elif ty.family == "fn":
            args.append(None)
        else:
            args.append(random_input(ty, rng, () if graph else BATCH, sizes))
    return args


def _fill(args, d, lib):
    f = np.tanh if lib == "numpy" else torch.tanh
    return [f if t.type.family == "fn" else a for a, t in zip(args, d.inputs)]


def _tuple(y):
    return y if isinstance(y, tuple) else (y,)


def _err(got, want) -> float:
    got = got.detach().cpu().numpy() if isinstance(got, torch.Tensor) else np.asarray(got)
    want = np.asarray(want)
    if got.shape != want.shape:
        return float("inf")
    scale = max(1.0, float(np.abs(want).max())) if want.size else 1.0
    return float(np.abs(got - want).max()) / scale if want.size else 0.0


def example_files() -> list[Path]:
    """The example files the check covers: ``diagrams/*.diag`` and ``examples/*.diag``."""
    return sorted((ROOT / "diagrams").glob("*.diag")) + sorted((ROOT / "examples").glob("*.diag"))


def check(files, dev, report, prepare_module=None) -> tuple[int, int]:
    """(passed, failed) over every function of ``files`` on torch tensors on ``dev``, each failure
    reported as a line through ``report``. ``prepare_module`` (tests only): called with each loaded
    module first (tests/test_cuda_paths_check.py installs its cupy stand-in there)."""
    rng = np.random.default_rng(0)
    ok = fail = 0
    for path in files:
        try:
            mod = compiler.load(path)
            if prepare_module is not None:
                prepare_module(mod)
            diagrams = lower_source(path.read_text(), str(path)).diagrams
        except Exception as e:  # noqa: BLE001
            fail += 1
            report(f"FAIL {path.name}: load: {type(e).__name__}: {e}")
            continue
        for d in diagrams:
            name = f"{path.stem}.{d.name}"
            fn = getattr(mod, d.name)
            vjp = getattr(mod, f"{d.name}_vjp", None)
            positional = [q for q in inspect.signature(fn).parameters.values() if q.kind is q.POSITIONAL_OR_KEYWORD]
            if len(positional) != len(d.inputs):  # an irreps argument lowered to several blocks: not covered
                report(f"  {name}: skipped (irreps inputs)")
                continue
            # a graph function whose arrays are all per edge takes the node count as num_nodes=
            nodes = {"num_nodes": N_NODES} if "num_nodes" in inspect.signature(fn).parameters else {}
            try:
                args = _args(d, rng)
                want = _tuple(fn(*_fill(args, d, "numpy"), **nodes))
            except Exception as e:  # noqa: BLE001
                fail += 1
                report(f"FAIL {name}: numpy reference: {type(e).__name__}: {str(e)[:200]}")
                continue
            targs = [torch.as_tensor(x, device=dev) if isinstance(x, np.ndarray) else x
                     for x in _fill(args, d, "torch")]
            for mode, kw in (("kernel", {}), ("kernels=False", {"kernels": False})):
                try:
                    got = _tuple(fn(*targs, **kw, **nodes))
                    e = max(_err(g, w) for g, w in zip(got, want))
                    assert all(g.device.type == dev.type for g in got), "result not on the device"
                    assert e < 1e-10, f"max relative error {e:.2e}"
                    ok += 1
                except Exception as e:  # noqa: BLE001
                    fail += 1
                    report(f"FAIL {name} forward {mode}: {type(e).__name__}: {str(e)[:200]}")
            if vjp is None:
                report(f"  {name}: no NAME_vjp")
                continue
            cots = [rng.normal(size=np.shape(w)) for w in want]
            try:
                vwant = _tuple(vjp(*_fill(args, d, "numpy"), *cots, **nodes))
            except Exception as e:  # noqa: BLE001
                fail += 1
                report(f"FAIL {name}_vjp numpy: {type(e).__name__}: {str(e)[:200]}")
                continue
            tcots = [torch.as_tensor(c, device=dev) for c in cots]
            try:
                vgot = _tuple(vjp(*targs, *tcots, **nodes))
                e = max((_err(g, w) for g, w in zip(vgot, vwant) if g is not None), default=0.0)
                assert e < 1e-10, f"max relative error {e:.2e}"
                ok += 1
            except Exception as e:  # noqa: BLE001
                fail += 1
                report(f"FAIL {name}_vjp kernel: {type(e).__name__}: {str(e)[:200]}")
            # autograd through the kernel path against the generated VJP (float inputs only)
            try:
                leaves = [t.clone().requires_grad_(True) if isinstance(t, torch.Tensor) and t.is_floating_point()
                          else t for t in targs]
                outs = _tuple(fn(*leaves, **nodes))
                loss = sum((o * c).sum() for o, c in zip(outs, tcots))
                grads = torch.autograd.grad(loss, [x for x in leaves if isinstance(x, torch.Tensor)
                                                   and x.requires_grad], allow_unused=True)
                wants = [w for x, w in zip(leaves, vwant) if isinstance(x, torch.Tensor) and x.requires_grad]
                e = max((_err(g, w) for g, w in zip(grads, wants) if g is not None), default=0.0)
                assert e < 1e-10, f"max relative error {e:.2e}"
                ok += 1
            except Exception as e:  # noqa: BLE001
                fail += 1
                report(f"FAIL {name} autograd: {type(e).__name__}: {str(e)[:200]}")
                traceback.print_exc(limit=3)
    return ok, fail


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--out", help="also write the report to this file")
    p.add_argument("--device", default="cuda", help="cuda (default) or cpu (a smoke test of the script)")
    a = p.parse_args(argv)
    dev = torch.device(a.device)
    lines = []

    def report(msg):
        print(msg, flush=True)
        lines.append(msg)

    ok, fail = check(example_files(), dev, report)
    where = torch.cuda.get_device_name() if dev.type == "cuda" else "cpu"
    report(f"{ok} passed, {fail} failed ({where}, torch {torch.__version__})")
    if a.out:
        Path(a.out).write_text("\n".join(lines) + "\n")
    return 1 if fail else 0


if __name__ == "__main__":
    sys.exit(main())
