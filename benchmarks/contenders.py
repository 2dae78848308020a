"""The naive einsums the benchmark times besides the emitted code (the shared reference evaluator,
``compiler.math.einsum``, in floating point), and the inputs, outputs and checks of a case. The
hand-written experts are ``experts.py``."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from compiler.math.einsum import Floats, evaluate_term, term_einsum  # noqa: E402
from compiler.testing import random_input  # noqa: E402

try:
    import torch
except ImportError:  # pragma: no cover - torch is part of the test extras
    torch = None

# contender keys, in the order of the table
EMIT_NP, EMIT_T, OUT_NP, OUT_T = "emitted np", "emitted torch", "np out=", "torch out="
FUSED_NP, FUSED_T = "np fused", "torch fused"
NAIVE, OPT, EXP_NP, EXP_T = "naive", "optimize", "expert np", "expert torch"
CONTENDERS = (EMIT_NP, EMIT_T, OUT_NP, OUT_T, FUSED_NP, FUSED_T, NAIVE, OPT, EXP_NP, EXP_T)
COMPILED = (FUSED_T,)  # torch.compile: compiles on its first call, again for a new thread count


# ---------------------------------------------------------------------------------------------
# naive einsum, transcribed from the IR term by term


def _shape(typ, batch, c):
    return tuple(batch) + tuple(c for _ in typ.channels) + tuple(typ.geometric_dims)


class Naive:
    """One ``numpy.einsum`` per term, every constant (delta, eps, cg, P) a dense operand, nothing
    eliminated or folded: the shared reference evaluator in floating point, its einsums prepared once."""

    def __init__(self, diagram):
        self.d = diagram
        self.inputs = [t.name for t in diagram.inputs]
        self.batched = {t.name: t.type.family != "weight" for t in diagram.inputs}
        self.domains = {}  # (dtype, optimize) -> Floats, which keeps the constants rounded to dtype
        self.einsums = [(eq.type, [term_einsum(term, self.batched.__getitem__) for term in eq.terms])
                        for eq in diagram.equations]
        for _, terms in self.einsums:
            for e in terms:
                if not e.spec.replace("...", "").replace(",", "").replace("->", "").isascii():
                    raise ValueError("a term with more than 52 distinct indices (numpy.einsum's letters)")
        # the same einsums as plain data, which gpu_bench.py ships in its manifest: node name -> float64
        # table, and per equation (type, [(coefficient, spec, (("in" | "const", name), ...))])
        tables = Floats()
        self.constants = {n.name: tables.constant(n) for _, terms in self.einsums for e in terms
                          for n in e.nodes if n.kind != "input"}
        self.equations = [(typ, [(float(e.coefficient), e.spec,
                                  tuple(("in" if n.kind == "input" else "const", n.name) for n in e.nodes))
                                 for e in terms]) for typ, terms in self.einsums]

    def __call__(self, args, optimize: bool, c: int):
        dtype = np.result_type(*args)
        key = (dtype, optimize)
        if key not in self.domains:
            self.domains[key] = Floats(dtype, optimize)
        domain = self.domains[key]
        arrays = dict(zip(self.inputs, args))
        batch = next((a.shape[: a.ndim - len(t.type.channels) - len(t.type.geometric_dims)]
                      for a, t in zip(args, self.d.inputs) if self.batched[t.name]), ())
        results = []
        for typ, terms in self.einsums:
            total = None
            for e in terms:
                y = evaluate_term(e, arrays, domain)
                total = y if total is None else total + y
            shape = _shape(typ, batch, c)
            if total is None:
                total = np.zeros(shape, dtype)
            elif total.shape != shape:
                total = np.broadcast_to(total, shape).copy()
            results.append(total)
        if self.d.stacked:
            t = self.d.outputs[0].type
            return (np.stack(results, axis=-(len(t.geometric_dims) + len(t.channels)) - 1),)
        return tuple(results)


# ---------------------------------------------------------------------------------------------
# cases


def as_tuple(y):
    return tuple(y) if isinstance(y, (tuple, list)) else (y,)


def to_np(y):
    if torch is not None and isinstance(y, torch.Tensor):
        return y.detach().numpy()
    return np.asarray(y)


def max_rel_err(got, ref) -> float:
    got, ref = as_tuple(got), as_tuple(ref)
    if len(got) != len(ref):
        return math.inf
    worst = 0.0
    for g, r in zip(got, ref):
        g, r = to_np(g), to_np(r)
        if g.shape != r.shape:
            return math.inf
        scale = max(1.0, float(np.max(np.abs(r)))) if r.size else 1.0
        worst = max(worst, float(np.max(np.abs(g.astype(np.float64) - r))) / scale if r.size else 0.0)
    return worst


def make_inputs(diagram, total: int, c: int, rng):
    """float64 inputs with N*C = total (N = total for a diagram without channels)."""
    has_channels = any(t.type.channels for t in list(diagram.inputs) + list(diagram.outputs))
    n = max(1, round(total / c)) if has_channels else total
    args = []
    for t in diagram.inputs:
        if t.type.family == "weight":
            x = random_input(t.type, rng, batch=(), channel_sizes={ch: c for ch in t.type.channels})
            x = x / math.sqrt(c)
        else:
            x = random_input(t.type, rng, batch=(n,), channel_sizes={ch: c for ch in t.type.channels})
        args.append(np.ascontiguousarray(x))
    return n, (n * c if has_channels else n), args


def preallocated(ys, lib):
    ys = as_tuple(ys)
    if lib == "torch":
        outs = tuple(torch.empty_like(torch.as_tensor(to_np(y)).contiguous()) for y in ys)
    else:
        outs = tuple(np.empty(to_np(y).shape, to_np(y).dtype) for y in ys)
    return outs[0] if len(outs) == 1 else outs
