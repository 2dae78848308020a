"""Whole models and fused steps on a CUDA GPU against the libraries users run there, values checked
first (float64 against the reference, then float32), timed with CUDA events.

    python benchmarks/gpu_models.py --prepare                        # here: build/gpu_carry/
    python benchmarks/gpu_models.py --run OUT                        # on the GPU: OUT/gpu_models.md, .json
    python benchmarks/gpu_models.py --run OUT --device cpu --small   # a smoke test of the script (CPU)

diagc itself imports on the GPU machine (lark, python-flint and opt_einsum installed there from
wheels), so ``--run`` compiles the diagrams there. ``--prepare`` writes what cannot be made there
into ``build/gpu_carry/``: torchmd-net's ``models/tensornet.py`` and ``models/utils.py``
(``torchmdnet_ref.copy_for_carry``; torchmd-net 3.1.0 does not install there) and, as a fallback
put last on ``sys.path`` (``site/``), a copy of ``opt_einsum_fx``, which mace-torch's contraction
imports (``benchmarks/mace_gpu_bench.py``, run by ``gpu_all.sh``, times MACE). Carry
``build/gpu_carry`` (about 0.2 MB) to the GPU machine.

Parts (each in a child process, so that a failure, a faulting kernel or a timeout in one does not
stop the others; each writes ``OUT/part_NAME.json`` after every row, so a part cut off by the budget
keeps the rows it finished):

* ``tensornet``: ``examples/tensornet.py``'s ``TensorNet`` against torchmd-net's pure-torch
  ``TensorNet`` (``benchmarks/torchmdnet_ref.py``), the same state_dict, hidden_channels 128, 2
  layers, 32 radial functions, O(3): forward (no_grad) and forward + forces (autograd), float32, at
  2,000 and 10,000 atoms (one random molecule at 0.089 atoms/A^3 as ``tensornet_bench.system``,
  about 34 neighbours within 4.5 A). The neighbour list is built once, outside the timing, and both
  models get it through the same stand-in for their ``distance`` module (vectors and distances are
  still computed from ``pos`` inside the forward, so forces are complete); ours runs with its CUDA
  kernels (the default) and with them switched off (its array code on CUDA tensors). Checked
  first in float64 (features and forces, 1e-10 relative) at 300 atoms, then float32 (1e-3) at each
  size.
* ``graph``: both messages of ``examples/gnn.diag`` at 2,000 and 20,000 atoms x 34 neighbours x 64
  channels (random edges as ``graph_bench.py``): the module on CUDA tensors (the parts' kernels with
  torch gathers and sums), ``kernels=False``, hand-written torch (``graph_bench.hand_*``:
  index_select, products, index_add) and the fused graph kernel ``diagc_NAME_graph_kernel_f32/_f64``
  of ``--target cuda`` (NVRTC through cupy, else ``nvcc -shared`` and its launcher; outputs zeroed
  inside each timed call). Checked in float64 (1e-10) then float32 (1e-4) against the hand-written
  step. Then, at the same sizes, TensorNet's embedding backward alone: ``embed_vjp`` of
  ``examples/tensornet_graph.diag`` (the module: its fused VJP kernel; ``kernels=False``) against
  the VJP written out in torch (``graph_bench.hand_embed_vjp``), every cotangent checked; and the
  interaction message's backward alone, ``message_vjp`` (its fused VJP kernel visiting the edges
  sorted by the senders it adds into, and with ``GRAPH_ORDER = False``, the edges' own order)
  against ``graph_bench.hand_message_vjp``.
* ``spherical``: ``tp_2e`` (cg(2,2,2)) and ``tp_1o_2e`` (cg(1,2,1)) of ``diagrams/spherical.diag``
  against e3nn's ``o3.TensorProduct`` for the same single path (``Cx2e x Cx2e -> Cx2e``, "uuu", no
  weights; e3nn's flat layout is a zero-copy reshape of diagc's), 2^15 and 2^17 rows x 32 channels
  (N*C = 2^20, where a call's host time shows, and 2^22, the other tables' size, where the device's
  does), forward and forward + backward, float32. e3nn's result is its path weight times diagc's
  (checked, float64, 1e-10).

Times: CUDA events around each call, the device idle when the call starts (so the host's launch
overhead is counted: these are whole steps), median of ``--repeats`` (default 10) after 2 warm-up
calls, the contenders alternating inside every repeat. ``--budget`` (seconds, default 240) bounds
the whole run: each part gets its share of what is left and is stopped at it; a part that cannot
start is reported as skipped. ``--device cpu`` runs everything with wall-clock times (no kernels:
a smoke test; ``--small`` shrinks every size).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import re
import subprocess
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CARRY = ROOT / "build" / "gpu_carry"
PARTS = ("tensornet", "graph", "spherical")
#: a part's share of the budget (relative)
SHARES = {"tensornet": 100, "graph": 55, "spherical": 50}
WARMUP = 2

for p in (str(ROOT), str(HERE), str(ROOT / "examples")):
    if p not in sys.path:
        sys.path.insert(0, p)
sys.path.append(str(CARRY / "site"))  # fallbacks copied by --prepare, after every installed package
from gpu_bench import rel_err  # noqa: E402
from gpu_timer import GpuTimer  # noqa: E402


# ---------------------------------------------------------------------------------------------
# --prepare (here: needs torchmd-net and diagc's enumeration)


def prepare() -> None:
    import torchmdnet_ref

    dest = torchmdnet_ref.copy_for_carry(CARRY / "torchmdnet")
    print(f"wrote {dest} (torchmd-net's models/tensornet.py, models/utils.py)")
    import shutil

    import opt_einsum_fx  # mace-torch's contraction imports it (benchmarks/mace_gpu_bench.py); e3nn
    # depends on it, so the GPU machine should have it: the copy is a fallback, last on the path
    target = CARRY / "site" / "opt_einsum_fx"
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(Path(opt_einsum_fx.__file__).parent, target, ignore=shutil.ignore_patterns("__pycache__"))
    print(f"wrote {target}")



# ---------------------------------------------------------------------------------------------
# shared helpers of the parts


class Part:
    """One part's results: rows written to OUT/part_NAME.json after each one."""

    def __init__(self, name: str, out: Path, deadline: float):
        self.name, self.path, self.deadline = name, out / f"part_{name}.json", deadline
        self.rows, self.notes, self.checks, self.info = [], [], [], {}
        self.save()

    def left(self) -> float:
        return self.deadline - time.time()

    def save(self):
        self.path.write_text(json.dumps({"rows": self.rows, "notes": self.notes, "checks": self.checks,
                                         "info": self.info}, indent=1) + "\n")

    def note(self, text: str):
        print(f"[{self.name}] {text}", flush=True)
        self.notes.append(text)
        self.save()

    def check(self, label: str, err: float, tol: float) -> bool:
        ok = err <= tol
        self.checks.append({"check": label, "err": err, "tol": tol, "ok": ok})
        print(f"[{self.name}] check {label}: {err:.2e} (tol {tol:g}) {'ok' if ok else 'FAILED'}", flush=True)
        self.save()
        return ok

    def row(self, row: dict):
        self.rows.append(row)
        print(f"[{self.name}] " + json.dumps(row), flush=True)
        self.save()

    def timed(self, timer, calls: dict, ref, tol, label: dict, want: float):
        """Check each contender against ``ref`` (relative ``tol``; ``ref`` None: checked by the
        caller already), time those that agree (if ``want`` seconds are left), add the row."""
        ok, errs = {}, {}
        for k, f in calls.items():
            try:
                got = f()
                if ref is None:
                    ok[k] = f
                    continue
                errs[k] = rel_err(got, ref)
                if errs[k] <= tol:
                    ok[k] = f
                else:
                    self.note(f"{label}: {k} disagrees (relative error {errs[k]:.2e} > {tol:g}); not timed")
            except Exception as exc:  # noqa: BLE001 - reported, the others go on
                self.note(f"{label}: {k} failed: {type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}")
                traceback.print_exc(limit=3)
        if self.left() < want:
            self.note(f"{label}: not timed, {self.left():.0f} s of the part's budget left")
            return
        ms = {k: seconds * 1e3 for k, seconds in timer.alternating(ok).items()}
        self.row(dict(label, ms=ms, err=errs))


def _device(torch, name):
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run with --device cpu for a smoke test")
    return device


# ---------------------------------------------------------------------------------------------
# part 1: TensorNet end to end


def _fixed_distance(torch, edge_index):
    """A stand-in for either model's ``distance`` module with a fixed neighbour list: edge_index
    (2, E) (receiver first, self pairs included), distances and r_i - r_j from ``pos`` (differentiable,
    zero distance with zero gradient at self pairs, as both models' own modules)."""

    class FixedDistance(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.edge_index = edge_index

        def forward(self, pos, batch=None, box=None):
            ei = self.edge_index
            vec = pos.index_select(0, ei[0]) - pos.index_select(0, ei[1])
            d2 = (vec * vec).sum(-1)
            zero = d2 == 0
            return ei, torch.where(zero, 0, torch.sqrt(d2.masked_fill(zero, 1))), vec

    return FixedDistance()


def _kernel_switch(module):
    """The compiled diagram modules a model file uses (they carry ``_CUDA``) and a switch: off makes
    their CUDA-kernel lookup answer 'no cupy', so every function runs its array code."""
    mods = [v for v in vars(module).values() if isinstance(getattr(v, "_CUDA", None), dict)]

    def switch(on: bool):
        for m in mods:
            m._CUDA["available"] = None if on else False  # None: looked up again at the next call
    return mods, switch


def part_tensornet(part: Part, torch, device, args):
    import tensornet  # examples/: compiles its diagrams
    import torchmdnet_ref
    from tensornet_bench import system

    mods, switch = _kernel_switch(tensornet)
    part.info["diagram modules"] = len(mods)
    C = args.tn_channels
    kw = dict(hidden_channels=C, num_layers=2, num_rbf=32, cutoff_upper=4.5, max_num_neighbors=64,
              static_shapes=False)

    def models(dtype, noise: bool, seed=0):
        """torchmd-net's model (with ``noise``: random weights, its initialisation plus noise of
        0.3 / sqrt(fan-in), so that no parameter is left at an initial zero) and ours holding its
        state_dict."""
        torch.manual_seed(seed)
        ref = torchmdnet_ref.reference_tensornet(dtype=dtype, **kw).to(dtype)
        with torch.no_grad():
            for p in ref.parameters() if noise else ():
                p.add_(0.3 / math.sqrt(p.shape[-1] if p.dim() > 1 else C) * torch.randn_like(p))
        ours = tensornet.TensorNet(dtype=dtype, **kw)
        ours.load_state_dict(ref.state_dict(), strict=True)
        return ref.to(device), ours.to(device)

    finder = tensornet.Distance(0.0, kw["cutoff_upper"], kw["max_num_neighbors"]).to(device)

    def neighbours(pos, batch):
        with torch.no_grad():
            return finder(pos, batch)[0]  # the example's brute-force list (cdist), built once per size

    def make(model, z, pos, batch, forces: bool, kernels=None):
        def call():
            if kernels is not None:
                switch(kernels)
            if not forces:
                with torch.no_grad():
                    return model(z, pos, batch)[0]
            p = pos.detach().requires_grad_(True)
            x = model(z, p, batch)[0]
            (grad,) = torch.autograd.grad(x.sum(), p)
            return x.detach(), -grad
        return call

    def contenders(ref, ours, z, pos, batch, forces):
        calls = {"torchmd-net": make(ref, z, pos, batch, forces),
                 "diagc": make(ours, z, pos, batch, forces, kernels=True)}
        if device.type == "cuda":
            calls["diagc kernels=False"] = make(ours, z, pos, batch, forces, kernels=False)
        return calls

    # float64 check
    n = args.tn_check_atoms
    ref, ours = models(torch.float64, noise=True)
    z, pos, batch = (t.to(device) for t in system(n, seed=1))
    pos = pos.double()
    ei = neighbours(pos, batch)
    ref.distance = _fixed_distance(torch, ei)
    ours.distance = _fixed_distance(torch, ei)
    for forces in (False, True):
        calls = contenders(ref, ours, z, pos, batch, forces)
        want = calls.pop("torchmd-net")()
        for k, f in calls.items():
            part.check(f"float64 {n} atoms, {'forward + forces' if forces else 'features'}: {k} vs torchmd-net",
                       rel_err(f(), want), 1e-10)
    switch(True)
    del ref, ours
    # float32 timings
    ref, ours = models(torch.float32, noise=False)  # torchmd-net's initialisation
    for n in args.tn_atoms:
        if part.left() < 10:
            part.note(f"{n} atoms: skipped, {part.left():.0f} s of the part's budget left")
            continue
        z, pos, batch = (t.to(device) for t in system(n))
        ei = neighbours(pos, batch)
        ref.distance = _fixed_distance(torch, ei)
        ours.distance = _fixed_distance(torch, ei)
        for forces in (False, True):
            calls = contenders(ref, ours, z, pos, batch, forces)
            want = calls["torchmd-net"]()
            label = {"atoms": n, "edges": int(ei.shape[1]), "channels": C,
                     "pass": "forward + forces" if forces else "forward (no_grad)", "dtype": "float32"}
            part.timed(GpuTimer(torch, device, warmup=WARMUP, repeats=args.repeats), calls, want, 1e-3, label, want=5)
        switch(True)
        del ei, calls, want


# ---------------------------------------------------------------------------------------------
# part 2: graph message steps, the fused graph kernel


class GraphKernels:
    """The fused graph kernels of an emitted .cu: NVRTC (cupy.RawModule), else nvcc -shared and the
    extern "C" launchers through ctypes. Their parameters are read from the kernel's signature."""

    SIGNATURE = re.compile(r'extern "C" __global__ void __launch_bounds__\((\d+)\) diagc_(\w+)_graph_kernel_f32\((.*?)\)',
                           re.S)

    def __init__(self, cu: str, torch, build: Path, cupy=None):
        """``cupy``: the cupy module or a stand-in with its ``RawModule`` and ``cuda.ExternalStream``
        (default: ``import cupy``)."""
        self.torch, self.how = torch, None
        self.params = {m.group(2): (int(m.group(1)), [p.split()[-1] for p in m.group(3).split(",")])
                       for m in self.SIGNATURE.finditer(cu)}
        errors = []
        try:
            if cupy is None:
                import cupy
            self.cupy = cupy
            self.module = cupy.RawModule(code=cu, options=("-std=c++17",))
            for name in self.params:
                for s in ("f32", "f64"):
                    self.module.get_function(f"diagc_{name}_graph_kernel_{s}")
            self.how = f"NVRTC (cupy {cupy.__version__})"
            return
        except Exception as exc:  # noqa: BLE001 - reported, then nvcc is tried
            errors.append(f"cupy: {type(exc).__name__}: {exc}")
        try:
            import ctypes

            build.mkdir(parents=True, exist_ok=True)
            src, lib = build / "graph.cu", build / "libgraph.so"
            src.write_text(cu)
            run = subprocess.run(["nvcc", "-O3", "-arch=native", "-shared", "-Xcompiler", "-fPIC", str(src), "-o",
                                  str(lib)], capture_output=True, text=True)
            if run.returncode:
                raise RuntimeError(run.stderr[-1500:])
            self.lib = ctypes.CDLL(str(lib))
            self.how = "nvcc -shared, extern \"C\" launchers"
        except Exception as exc:  # noqa: BLE001
            errors.append(f"nvcc: {type(exc).__name__}: {exc}")
            raise RuntimeError("; ".join(errors)) from None

    def stream(self) -> int:
        """The handle of torch's current CUDA stream (the launches go there)."""
        return self.torch.cuda.current_stream().cuda_stream

    def bind(self, name: str, inputs: dict, edge_lists: dict, output_shapes: dict, nodes: int, edges: int,
             channels: int):
        """A no-argument callable: zero the outputs, launch, return the outputs (in signature order)."""
        torch = self.torch
        block, params = self.params[name]
        dtype = next(iter(inputs.values())).dtype
        suffix = {torch.float32: "f32", torch.float64: "f64"}[dtype]
        device = next(iter(inputs.values())).device
        outs = {o: torch.empty(s, dtype=dtype, device=device) for o, s in output_shapes.items()}
        values = []  # ("ptr", tensor) or ("int", n)
        for p in params:
            if p.startswith("list_"):
                values.append(("ptr", edge_lists[p[5:]].to(torch.int64).contiguous()))
            elif p.startswith("out_"):
                values.append(("ptr", outs[p[4:]]))
            elif p.startswith("in_"):
                key = p[3:]
                if key not in inputs:  # a node input read at an edge list: in_NAME_LIST
                    key = key.rsplit("_", 1)[0]
                values.append(("ptr", inputs[key].contiguous()))
            elif p.startswith("stride_"):  # rows of the contiguous input apart (elements)
                key = p[7:] if p[7:] in inputs else p[7:].rsplit("_", 1)[0]
                values.append(("int", math.prod(inputs[key].shape[1:])))
            elif p == "edges":
                values.append(("int", edges))
            elif p == "ch0":
                values.append(("int", channels))
            else:
                raise ValueError(f"diagc_{name}_graph_kernel: parameter {p!r} is not handled by this benchmark")
        chans = [v for (k, v), p in zip(values, params) if p.startswith("ch")]
        from compiler.targets.cuda.graph import EDGES_PER_THREAD

        total = (edges + EDGES_PER_THREAD - 1) // EDGES_PER_THREAD * math.prod(chans)  # a thread per run of edges
        grid = ((total + block - 1) // block, 1, 1)
        if self.how.startswith("NVRTC"):
            import numpy as np

            fn = self.module.get_function(f"diagc_{name}_graph_kernel_{suffix}")
            call = tuple(np.uint64(v.data_ptr()) if k == "ptr" else np.int64(v) for k, v in values)
            cp = self.cupy

            def launch():
                for o in outs.values():
                    o.zero_()
                with cp.cuda.ExternalStream(self.stream()):
                    fn(grid, (block, 1, 1), call)
                return tuple(outs.values())
            return launch
        import ctypes

        fn = getattr(self.lib, f"diagc_{name}_graph_{suffix}")
        fn.restype = ctypes.c_int
        call = [ctypes.c_void_p(v.data_ptr()) if k == "ptr" else ctypes.c_longlong(v) for k, v in values]

        def launch():
            for o in outs.values():
                o.zero_()
            code = fn(*call, ctypes.c_void_p(self.stream()))
            if code:
                raise RuntimeError(f"launcher returned cudaError {code}")
            return tuple(outs.values())
        return launch


def part_graph(part: Part, torch, device, args):
    import compiler
    from graph_bench import hand_embed_vjp, hand_message_vjp, hand_painn, hand_tensornet

    path = ROOT / "examples" / "gnn.diag"
    ops = compiler.load(path)
    kernels = None
    if device.type == "cuda":
        try:
            kernels = GraphKernels(compiler.compile_source(path.read_text(), str(path), "cuda"), torch,
                                   Path(args.out) / "build")
            part.info["graph kernels"] = kernels.how
        except Exception as exc:  # noqa: BLE001
            part.note(f"the fused graph kernels could not be loaded: {exc}")
    C = args.graph_channels
    for n in args.graph_atoms:
        if part.left() < 8:
            part.note(f"{n} atoms: skipped, {part.left():.0f} s of the part's budget left")
            continue
        E = n * args.neighbours
        g = torch.Generator().manual_seed(0)
        src = torch.randint(0, n, (E,), generator=g).to(device)
        dst = torch.sort(torch.randint(0, n, (E,), generator=g)).values.to(device)

        def r(*shape):
            return torch.randn(*shape, generator=g, dtype=torch.float64).to(device)
        cases = {
            "tensornet_message": (hand_tensornet, ("Y", "f"), (r(n, C, 3, 3), r(E, C)), {"M": (n, C, 3, 3)}),
            "painn_message": (hand_painn, ("xs", "xv", "xr", "v", "ws", "wv", "wr", "u"),
                              (r(n, C), r(n, C), r(n, C), r(n, C, 3), r(E, C), r(E, C), r(E, C), r(E, 3)),
                              {"ds": (n, C), "dv": (n, C, 3)}),
        }
        for name, (hand, names, arrays, outputs) in cases.items():
            fn = getattr(ops, name)
            ref = hand(*arrays, src, dst)
            for dtype, tol in ((torch.float64, 1e-10), (torch.float32, 1e-4)):
                a = tuple(x.to(dtype) for x in arrays)
                calls = {"diagc module": lambda a=a: fn(*a, src, dst)}
                if device.type == "cuda":
                    calls["kernels=False"] = lambda a=a: fn(*a, src, dst, kernels=False)
                calls["hand-written torch"] = lambda a=a: hand(*a, src, dst)
                if kernels is not None:
                    try:
                        calls["fused graph kernel"] = kernels.bind(name, dict(zip(names, a)), {"src": src, "dst": dst},
                                                                   outputs, n, E, C)
                    except Exception as exc:  # noqa: BLE001
                        part.note(f"{name}: the graph kernel could not be bound: {exc}")
                label = {"message": name, "atoms": n, "edges": E, "channels": C, "dtype": str(dtype)[6:]}
                _check_or_time(part, torch, device, args, calls, ref, tol, label)
            del ref
        _embed_backward(part, torch, device, args, n, E, C, src, dst, hand_embed_vjp)
        _message_backward(part, torch, device, args, n, E, C, src, dst, hand_message_vjp)
        del src, dst, cases


def _tensornet_graph_step(part: Part, torch, device, name: str, n: int, seed: int):
    """(the module of examples/tensornet_graph.diag, r(*shape): float64 normal arrays on ``device``
    from a generator seeded ``seed``) for one of its steps timed alone, or None (noted) when the
    part's budget is nearly spent."""
    import compiler

    if part.left() < 8:
        part.note(f"{name} {n} atoms: skipped, {part.left():.0f} s of the part's budget left")
        return None
    g = torch.Generator().manual_seed(seed)

    def r(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64).to(device)
    return compiler.load(ROOT / "examples" / "tensornet_graph.diag"), r


def _embed_backward(part: Part, torch, device, args, n, E, C, src, dst, hand):
    """TensorNet's embedding backward alone: ``embed_vjp`` of examples/tensornet_graph.diag (on CUDA
    tensors its fused VJP kernel, the cotangents of u and y summed over the channels in the block),
    ``kernels=False`` (gathers, the per-edge VJP, index_add) and the VJP written out in torch
    (graph_bench.hand_embed_vjp), dst sorted as a neighbour list's receivers, src not."""
    step = _tensornet_graph_step(part, torch, device, "embed_vjp", n, seed=1)
    if step is None:
        return
    ops, r = step
    u = torch.nn.functional.normalize(r(E, 3), dim=-1)
    arrays = (r(n, C), r(n, C), r(E, C), r(E, C), r(E, C), u, r(E, 5), r(n, C), r(n, C, 3), r(n, C, 5))
    ref = hand(*arrays[:7], src, dst, *arrays[7:])
    for dtype, tol in ((torch.float64, 1e-10), (torch.float32, 1e-4)):
        a = tuple(x.to(dtype) for x in arrays)

        def module(a=a, **kw):
            got = ops.embed_vjp(*a[:7], src, dst, *a[7:], **kw)
            return tuple(x for x in got if x is not None)
        calls = {"diagc module": module}
        if device.type == "cuda":
            calls["kernels=False"] = lambda a=a: module(a, kernels=False)
        calls["hand-written torch"] = lambda a=a: hand(*a[:7], src, dst, *a[7:])
        label = {"message": "embed_vjp", "atoms": n, "edges": E, "channels": C, "dtype": str(dtype)[6:]}
        _check_or_time(part, torch, device, args, calls, ref, tol, label)


def _message_backward(part: Part, torch, device, args, n, E, C, src, dst, hand):
    """TensorNet's interaction message backward alone: ``message_vjp`` of
    examples/tensornet_graph.diag, whose fused VJP kernel adds the parts' cotangents into the
    senders (src) while the edges are sorted by the receivers (dst): the module as it runs (the
    kernel visits the edges sorted by src, a sort on the device per call), with ``GRAPH_ORDER =
    False`` (the edges' own order: an atomicAdd per edge), ``kernels=False`` (gathers, the per-edge
    VJP, index_add), and the VJP written out in torch (graph_bench.hand_message_vjp)."""
    step = _tensornet_graph_step(part, torch, device, "message_vjp", n, seed=2)
    if step is None:
        return
    ops, r = step
    arrays = (r(n, C), r(n, C, 3), r(n, C, 5), r(E, C), r(E, C), r(E, C), r(n, C), r(n, C, 3), r(n, C, 5))
    ref = hand(*arrays[:6], src, dst, *arrays[6:])

    def module(a, order=True, **kw):
        ops.GRAPH_ORDER = order
        try:  # (the edge lists' cotangents, None, left out)
            return ops.message_vjp(*a[:6], src, dst, *a[6:], **kw)[:6]
        finally:
            ops.GRAPH_ORDER = True
    for dtype, tol in ((torch.float64, 1e-10), (torch.float32, 1e-4)):
        a = tuple(x.to(dtype) for x in arrays)
        calls = {"diagc module": lambda a=a: module(a)}
        if device.type == "cuda":
            calls["GRAPH_ORDER = False"] = lambda a=a: module(a, False)
            calls["kernels=False"] = lambda a=a: module(a, kernels=False)
        calls["hand-written torch"] = lambda a=a: hand(*a[:6], src, dst, *a[6:])
        label = {"message": "message_vjp", "atoms": n, "edges": E, "channels": C, "dtype": str(dtype)[6:]}
        _check_or_time(part, torch, device, args, calls, ref, tol, label)


def _check_or_time(part: Part, torch, device, args, calls, ref, tol, label):
    """A graph part's contenders on one dtype: in float64 each checked against the hand-written torch
    result ``ref`` (not timed), in float32 timed (CUDA events, alternating) with the check first."""
    what = f"{label['message']} {label['atoms']} atoms"
    if label["dtype"] == "float64":
        for k, f in calls.items():
            try:
                part.check(f"{what} float64: {k} vs hand-written torch", rel_err(f(), ref), tol)
            except Exception as exc:  # noqa: BLE001
                part.note(f"{label['message']} float64: {k} failed: {type(exc).__name__}: {exc}")
        return
    part.timed(GpuTimer(torch, device, warmup=WARMUP, repeats=args.repeats * 2), calls, ref, tol, label, want=3)


# ---------------------------------------------------------------------------------------------
# part 3: spherical products against e3nn


SPHERICAL = (("tp_2e", "cg(2,2,2)", "2e", "2e", "2e"), ("tp_1o_2e", "cg(1,2,1)", "1o", "2e", "1o"))


def part_spherical(part: Part, torch, device, args):
    import compiler
    from e3nn import o3

    ops = compiler.load(ROOT / "diagrams" / "spherical.diag")
    C = args.sph_channels
    sizes = args.sph_rows if isinstance(args.sph_rows, (list, tuple)) else [args.sph_rows]
    for (name, path, i1, i2, i3), N in ((op, n) for n in sizes for op in SPHERICAL):
        if part.left() < 5:
            part.note(f"{name}, {N} rows: skipped, {part.left():.0f} s of the part's budget left")
            continue
        fn = getattr(ops, name)
        part.info[f"{name} has a kernel"] = getattr(ops, f"_{name}_KERNEL", None) is not None
        d1, d2 = 2 * int(i1[0]) + 1, 2 * int(i2[0]) + 1
        g = torch.Generator().manual_seed(0)
        x64 = torch.randn(N, C, d1, generator=g, dtype=torch.float64).to(device)
        y64 = torch.randn(N, C, d2, generator=g, dtype=torch.float64).to(device)
        old = torch.get_default_dtype()
        torch.set_default_dtype(torch.float64)  # e3nn's tables computed in float64, cast below
        try:
            tp = o3.TensorProduct(f"{C}x{i1}", f"{C}x{i2}", f"{C}x{i3}", [(0, 0, 0, "uuu", False)])
        finally:
            torch.set_default_dtype(old)
        alpha = tp.instructions[0].path_weight
        for dtype in (torch.float64, torch.float32):
            t = tp.to(device=device, dtype=dtype)
            x, y = x64.to(dtype), y64.to(dtype)
            ref = fn(x64, y64, kernels=False)
            cot = torch.randn(ref.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64).to(device)
            e3 = lambda x, y, t=t: t(x.reshape(N, -1), y.reshape(N, -1)).reshape(N, C, -1)  # noqa: E731
            forward = {"diagc module": lambda: fn(x, y)}
            if device.type == "cuda":
                forward["kernels=False"] = lambda: fn(x, y, kernels=False)
            forward["e3nn TensorProduct"] = lambda: e3(x, y) / alpha  # the division only for the check
            if dtype == torch.float64:
                for k, f in forward.items():
                    part.check(f"{name} {N} rows float64 forward: {k} vs kernels=False", rel_err(f(), ref), 1e-10)
            timed = dict(forward)
            timed["e3nn TensorProduct"] = lambda: e3(x, y)

            def backward(f, x=x, y=y, dtype=dtype):
                c = cot.to(dtype)

                def call():
                    a, b = x.detach().requires_grad_(True), y.detach().requires_grad_(True)
                    return torch.autograd.grad(f(a, b), (a, b), c)
                return call
            steps = {"diagc module": backward(lambda a, b: fn(a, b))}
            if device.type == "cuda":
                steps["kernels=False"] = backward(lambda a, b: fn(a, b, kernels=False))
            steps["e3nn TensorProduct"] = backward(lambda a, b: e3(a, b) / alpha)
            gref = backward(lambda a, b: fn(a, b, kernels=False), x=x64, y=y64)()
            if dtype == torch.float64:
                for k, f in steps.items():
                    part.check(f"{name} {N} rows float64 forward + backward: {k} vs kernels=False", rel_err(f(), gref), 1e-10)
                continue
            # float32: check, then time (e3nn without the division by its path weight)
            label = {"op": f"{name} ({path}, {i1} x {i2} -> {i3})", "rows": N, "channels": C, "dtype": "float32"}
            checked = {}
            for k, f in forward.items():
                if part.check(f"{name} {N} rows float32 forward: {k} vs float64", rel_err(f(), ref), 1e-4):
                    checked[k] = timed[k]
            timer = GpuTimer(torch, device, warmup=WARMUP, repeats=args.repeats * 2)
            part.timed(timer, checked, None, None, dict(label, **{"pass": "forward"}), want=3)
            part.timed(timer, steps, gref, 1e-4, dict(label, **{"pass": "forward + backward"}), want=3)


# ---------------------------------------------------------------------------------------------
# the run: parts in child processes, then the report


def run_part(name: str, args) -> int:
    import torch

    out = Path(args.out)
    part = Part(name, out, args.deadline)
    device = _device(torch, args.device)
    part.info["device"] = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or "CPU")
    try:
        {"tensornet": part_tensornet, "graph": part_graph, "spherical": part_spherical}[name](
            part, torch, device, args)
    except Exception as exc:  # noqa: BLE001 - the part's failure, reported in the table
        part.note(f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:400] if str(exc) else ''}")
        traceback.print_exc()
        return 1
    part.info["seconds"] = round(time.time() - args.started, 1)
    part.save()
    return 0


def _versions(torch) -> str:
    items = [f"torch {torch.__version__}"]
    for mod in ("cupy", "e3nn"):
        try:
            items.append(f"{mod} {__import__(mod).__version__}")
        except Exception:  # noqa: BLE001
            items.append(f"{mod} absent")
    return ", ".join(items)


def run(args) -> int:
    import torch

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    deadline = started + args.budget
    device = _device(torch, args.device)
    parts = [p for p in PARTS if p in args.parts]
    for name in PARTS:  # results of an earlier run in the same folder are not this run's
        for stale in (out / f"part_{name}.json", out / f"part_{name}.log"):
            stale.unlink(missing_ok=True)
    status = {}
    for k, name in enumerate(parts):
        left = deadline - time.time()
        share = left * SHARES[name] / sum(SHARES[p] for p in parts[k:])
        if share < 15:
            status[name] = f"skipped: {left:.0f} s of the budget left"
            print(f"[{name}] {status[name]}", flush=True)
            continue
        cmd = [sys.executable, __file__, "--part", name, "--out", str(out), "--deadline", str(time.time() + share - 5),
               "--started", str(time.time())] + args.forward
        began = time.time()
        try:
            child = subprocess.run(cmd, timeout=share, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            status[name] = "ok" if child.returncode == 0 else f"exit {child.returncode}"
            text = child.stdout
        except subprocess.TimeoutExpired as exc:
            status[name] = f"stopped at its budget share ({share:.0f} s); rows finished before are kept"
            text = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        (out / f"part_{name}.log").write_text(text)
        print(text, end="", flush=True)
        status[name] += f" ({time.time() - began:.0f} s)"
        if not status[name].startswith("ok"):
            print(f"[{name}] {status[name]}", flush=True)
    results = {}
    for name in parts:
        path = out / f"part_{name}.json"
        results[name] = json.loads(path.read_text()) if path.is_file() else None
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or "CPU")
    text = report(results, status, name, _versions(torch), args, time.time() - started)
    (out / "gpu_models.md").write_text(text)
    (out / "gpu_models.json").write_text(json.dumps({"device": name, "versions": _versions(torch), "status": status,
                                                      "parts": results, "seconds": time.time() - started},
                                                     indent=1) + "\n")
    print(text)
    print(f"wrote {out / 'gpu_models.md'} and gpu_models.json ({time.time() - started:.0f} s)")
    bad = any(not s.startswith("ok") for s in status.values()) or any(
        not c["ok"] for r in results.values() if r for c in r["checks"])
    return 1 if bad else 0


def _ms(x):
    return "—" if x is None else (f"{x:.3f}" if x < 10 else f"{x:.1f}")


def _ratio(a, b):
    return f"{a / b:.2f}" if a and b else "—"


def _table(rows, keys, contenders, ratios):
    head = keys + contenders + [f"{a} / {b}" for a, b in ratios]
    L = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        ms = r["ms"]
        L.append("| " + " | ".join(str(r.get(k, "")) for k in keys)
                 + " | " + " | ".join(_ms(ms.get(c)) for c in contenders)
                 + " | " + " | ".join(_ratio(ms.get(a), ms.get(b)) for a, b in ratios) + " |")
    return L


def report(results, status, device, versions, args, elapsed) -> str:
    timing = ("CUDA-event" if args.device == "cuda" else "wall-clock (CPU smoke test, no kernels)")
    L = [f"# diagc models on {device}", "",
         f"`python benchmarks/gpu_models.py --run` ({versions}). Times in ms: {timing} times of whole calls "
         f"(the device idle when each starts, so host launch overhead counts), median of {args.repeats} "
         f"(twice that for the graph and spherical parts) after {WARMUP} warm-up calls, contenders alternating; "
         f"every contender's values checked first (float64, then float32). A ratio `X / Y` is X's time over "
         f"Y's: above 1, Y is faster. Budget {args.budget:.0f} s, run took {elapsed:.0f} s.", "",
         "| part | status |", "|---|---|"]
    L += [f"| {k} | {v} |" for k, v in status.items()]
    sections = {
        "tensornet": ("TensorNet end to end (examples/tensornet.py vs torchmd-net 3.1.0 pure torch, same weights)",
                      ["atoms", "edges", "channels", "pass"], ["torchmd-net", "diagc", "diagc kernels=False"],
                      [("torchmd-net", "diagc"), ("torchmd-net", "diagc kernels=False")]),
        "graph": ("Graph message step (examples/gnn.diag) and TensorNet's backward steps (embed_vjp, message_vjp)",
                  ["message", "atoms", "edges", "channels"],
                  ["hand-written torch", "diagc module", "GRAPH_ORDER = False", "kernels=False", "fused graph kernel"],
                  [("hand-written torch", "diagc module"), ("GRAPH_ORDER = False", "diagc module"),
                   ("hand-written torch", "fused graph kernel")]),
        "spherical": ("Spherical products vs e3nn's TensorProduct (one path, uuu, no weights)",
                      ["op", "rows", "channels", "pass"], ["e3nn TensorProduct", "diagc module", "kernels=False"],
                      [("e3nn TensorProduct", "diagc module")]),
    }
    for name, (title, keys, contenders, ratios) in sections.items():
        if name not in results:
            continue
        r = results[name]
        L += ["", f"## {title}", ""]
        if r is None:
            L.append(f"No results ({status.get(name, 'not run')}).")
            continue
        if r["info"]:
            L.append("; ".join(f"{k}: {v}" for k, v in r["info"].items()) + ".")
            L.append("")
        if r["rows"]:
            L += _table(r["rows"], keys, contenders, ratios)
        else:
            L.append("No timed rows.")
        if r["checks"]:
            bad = [c for c in r["checks"] if not c["ok"]]
            worst = max(r["checks"], key=lambda c: c["err"] / c["tol"] if c["tol"] else 0)
            L += ["", f"Value checks: {len(r['checks']) - len(bad)} of {len(r['checks'])} passed "
                  f"(largest relative error {max(c['err'] for c in r['checks']):.1e}; closest to its tolerance: "
                  f"{worst['check']}, {worst['err']:.1e} of {worst['tol']:g})."]
            L += [f"- FAILED {c['check']}: {c['err']:.2e} > {c['tol']:g}" for c in bad]
        if r["notes"]:
            L += [""] + [f"- note: {n}" for n in r["notes"]]
    return "\n".join(L) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    step = p.add_mutually_exclusive_group(required=True)
    step.add_argument("--prepare", action="store_true", help="write build/gpu_carry/ (needs torchmd-net)")
    step.add_argument("--run", metavar="OUT", help="run the parts, write OUT/gpu_models.md and .json")
    step.add_argument("--part", choices=PARTS, help=argparse.SUPPRESS)  # a child process of --run
    p.add_argument("--out", help=argparse.SUPPRESS)
    p.add_argument("--deadline", type=float, help=argparse.SUPPRESS)
    p.add_argument("--started", type=float, help=argparse.SUPPRESS)
    p.add_argument("--device", default="cuda", help="cuda (default) or cpu (a smoke test: wall clock, no kernels)")
    p.add_argument("--small", action="store_true", help="small sizes everywhere (the CPU smoke test)")
    p.add_argument("--budget", type=float, default=240.0, help="seconds for the whole run (default 240)")
    p.add_argument("--parts", nargs="+", default=list(PARTS), choices=PARTS)
    p.add_argument("--repeats", type=int, default=10)
    args = p.parse_args(argv)
    if args.prepare:
        prepare()
        return 0
    small = args.small
    args.tn_atoms = [60, 120] if small else [2000, 10000]
    args.tn_check_atoms = 40 if small else 300
    args.tn_channels = 16 if small else 128
    args.graph_atoms = [100, 300] if small else [2000, 20000]
    args.graph_channels = 8 if small else 64
    args.neighbours = 34
    args.sph_rows, args.sph_channels = ([256, 1024] if small else [2**15, 2**17]), (8 if small else 32)
    if args.part:
        return run_part(args.part, args)
    args.out = args.run
    args.forward = ["--device", args.device, "--repeats", str(args.repeats)] + (["--small"] if small else [])
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
