"""The contenders of ``codegen_bench.py``: the cases (every diagram's emitted function, with its
expert, out= and fused forms), the naive einsums timed besides the emitted code (the shared reference
evaluator, ``compiler.math.einsum``, in floating point), and the inputs, outputs, warm-up and checks of
a case. The hand-written experts are ``experts.py`` (one copy, shared with the tests)."""

from __future__ import annotations

import hashlib
import inspect
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import compiler  # noqa: E402
from compiler.frontend.lower import lower_source  # noqa: E402
from compiler.math.einsum import Floats, evaluate_term, term_einsum  # noqa: E402
from compiler.testing import random_input  # noqa: E402
from harness import seconds  # noqa: E402

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


@dataclass(frozen=True)
class Case:
    """One emitted function to time: ``has_expert`` when experts.py has it with the same signature,
    ``has_out`` when it takes out=, ``fused`` when its fused=True contenders are timed."""

    stem: str
    label: str  # file:diagram
    diagram: object  # ir.Diagram
    fn: object
    has_expert: bool
    has_out: bool
    fused: bool


def find_cases(paths, only: str, fused_files, experts_np: dict, note):
    """Every diagram of the given .diag files as a :class:`Case` (``only``: a text its 'file:name'
    contains; ``fused_files``: the stems timed with fused=True, None for all), and the sha256 of the
    emitted modules. A file that does not compile, a diagram without a function or an expert: ``note``."""
    cases = []
    digest = hashlib.sha256()
    for path in paths:
        stem = Path(path).stem
        try:
            prog = lower_source(Path(path).read_text(encoding="utf-8"), path)
            digest.update(compiler.compile_file(path).encode())
            module = compiler.load(path)
        except Exception as exc:  # a file that does not compile right now: say so, go on
            note(f"{Path(path).name}: skipped, it does not compile ({type(exc).__name__}: {exc})")
            continue
        for d in prog.diagrams:
            label = f"{stem}:{d.name}"
            if only and only not in label:
                continue
            fn = getattr(module, d.name, None)
            if fn is None:
                note(f"{label}: no emitted function, skipped")
                continue
            exp = experts_np.get((stem, d.name))
            sig = tuple(str(t.type) for t in d.inputs)
            if exp is None:
                note(f"{label}: no expert implementation; timed against the naive einsums only")
            elif exp[0] != sig:
                note(f"{label}: signature {sig} differs from the expert's {exp[0]}; expert skipped")
            params = inspect.signature(fn).parameters
            fused = "fused" in params and (fused_files is None or stem in fused_files)
            if fused and f"_{d.name}_fused" not in fn.__globals__:  # no fused form: fused=True is the planned path
                note(f"{label}: no fused form (see its docstring); the fused contenders are not timed")
                fused = False
            cases.append(Case(stem, label, d, fn, exp is not None and exp[0] == sig, "out" in params, fused))
    return cases, digest


def case_calls(case: Case, a_np, a_t, naive, experts: dict, c: int, ref):
    """The contenders' calls of one case on numpy inputs ``a_np`` and torch tensors ``a_t`` (None
    without torch), the emitted numpy call first; and the preallocated out= outputs (sized like
    ``ref``, the emitted result) by contender."""
    fn = case.fn
    calls, outs = {EMIT_NP: lambda: fn(*a_np)}, {}
    if naive is not None:
        calls[NAIVE] = lambda: naive(a_np, False, c)
        calls[OPT] = lambda: naive(a_np, True, c)
    if a_t is not None:
        calls[EMIT_T] = lambda: fn(*a_t)
    if case.has_expert:
        ex_np = experts["np"][(case.stem, case.diagram.name)][1]
        calls[EXP_NP] = lambda: ex_np(*a_np)
        if a_t is not None:
            ex_t = experts["torch"][(case.stem, case.diagram.name)][1]
            calls[EXP_T] = lambda: ex_t(*a_t)
    if case.has_out:
        outs[OUT_NP] = o_np = preallocated(ref, "np")
        calls[OUT_NP] = lambda: fn(*a_np, out=o_np)
        if a_t is not None:
            outs[OUT_T] = o_t = preallocated(ref, "torch")
            calls[OUT_T] = lambda: fn(*a_t, out=o_t)
    if case.fused:
        calls[FUSED_NP] = lambda: fn(*a_np, fused=True)
        if a_t is not None:
            calls[FUSED_T] = lambda: fn(*a_t, fused=True)
    return calls, outs


def warm_up(calls: dict, outs: dict, ref, warm: dict, tol: float, where: str, note,
            compiled: list) -> list[str]:
    """One untimed call of every contender not yet in ``warm`` (a compiling one is called once more
    before, its seconds appended to ``compiled``), checked against ``ref``: its time goes into
    ``warm``; a message for each one that disagrees or raises (removed from ``calls``: not timed)."""
    mismatches = []
    for name in list(calls):
        if name in warm:
            continue
        try:
            if name in COMPILED:  # torch.compile's compile, outside the timed warm-up
                compiled.append(seconds(calls[name]))
            t = time.perf_counter()
            got = calls[name]()
            warm[name] = time.perf_counter() - t
            if name in outs:
                got = outs[name] if got is None else got
            err = max_rel_err(got, ref)
        except Exception as exc:
            err = math.inf
            note(f"{where}: {name} raised {type(exc).__name__}: {exc}")
        got = None
        if not err <= tol:
            mismatches.append(f"{where}: {name} disagrees with the emitted "
                              f"code (max relative error {err:.2e} > {tol:.0e}); not timed")
            del calls[name]
    return mismatches
