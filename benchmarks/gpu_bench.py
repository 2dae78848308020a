"""TensorNet's operations on a CUDA GPU: the emitted kernels against the bandwidth bound and the
alternatives, values checked first. Two steps, so that the GPU machine needs only python 3.12,
numpy, torch (CUDA) and cupy (or nvcc), not diagc's own dependencies:

    python benchmarks/gpu_bench.py --prepare DIR        # here: writes DIR/*.cu, DIR/*.py, manifest.json
    python benchmarks/gpu_bench.py --run DIR --out OUT  # on the GPU: writes OUT/gpu_bench.md (+ .json)

``--prepare`` compiles ``diagrams/tensornet.diag``, ``diagrams/tensornet_so3.diag`` and
``diagrams/products.diag`` with both targets (``--target cuda`` and the Python module) and writes
the kernels' launch configurations and the naive einsum transcription of every term (from
``contenders.Naive``) into ``manifest.json``. ``--run`` reads only that folder and
``benchmarks/experts.py`` (torchmd-net's formulas, the one copy the CPU benchmark uses too).

Per operation, at N x C = 32768 x 128 (``--rows``, ``--channels``; a diagram without channels gets
N*C batch rows; weights have no batch axis), float32 and float64, the contenders are

* ``expert``: torchmd-net's formulas in torch (``experts.expert_set(torch)``);
* ``expert compiled``: the same formulas under ``torch.compile`` (a fresh compile per operation and
  dtype, untimed: the warm-up calls trigger it; float32 only unless ``--compiled-dtypes`` says
  otherwise, ``--no-compiled`` leaves it out, and like ``fused`` it is not started once ``--budget``
  seconds have passed);
* ``planned``: the emitted Python module's function on CUDA tensors;
* ``fused``: the same with ``fused=True`` (``torch.compile``; its compile is untimed, ``--no-fused``
  leaves it out);
* ``einsum``: every term as one ``torch.einsum`` with dense delta/eps/cg tables (naive);
* ``kernel``: the emitted CUDA kernel, compiled from the ``.cu`` by NVRTC (``cupy.RawModule``), or
  when cupy is missing or fails, by ``nvcc -shared`` and called through its ``extern "C"``
  launcher; outputs preallocated, arguments bound once;
* ``module``: the emitted Python function on the CUDA tensors (its kernel path: argument checks,
  output allocation, the torch custom op, the launch on torch's stream).

Before any timing a child process (``--probe``) checks every forward kernel, every module function
that has a kernel (forward, NAME_vjp, NAME_vjp_vjp; float64 and float32, partial tiles) against
``kernels=False``, gradcheck and gradgradcheck on the kernel path (``GRADCHECK``),
``torch.compile(fullgraph=True)`` over kernel ops and cupy arrays through the kernel path; a failed
check keeps that contender out of the tables. After the forward tables come channel mixing by each
GEMM route (``mixing_variants``) and forward + VJP + second order under autograd against the expert
(``training_steps``, float32); the summary table is printed last.

Every contender's float64 result is compared with the planned torch function's first (relative
1e-10; float32 results with the float64 reference at 1e-4); a contender that disagrees or raises
is reported and not timed, the others go on. Times are CUDA-event device times, the median of 20
calls after 3 warm-up calls; before each timed call ``torch.cuda._sleep`` keeps the device busy so
that the host's launch overhead (the same for every contender in kind) is not counted. The bound is
the bytes the operation must read and write at that dtype divided by the copy bandwidth (read +
write) measured with ``Tensor.copy_`` in the same process. ``--device cpu`` runs every torch
contender on the CPU with wall-clock timing (a smoke test of the script itself, no kernels).
"""

from __future__ import annotations

import argparse
import ctypes
import importlib.util
import json
import math
import platform
import subprocess
import sys
import time
import traceback
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))
from gpu_timer import GpuTimer  # noqa: E402

FILES = ("tensornet", "tensornet_so3", "products")
#: (file stem, diagram, label in the tables)
OPS = (
    ("tensornet", "vector_to_skew", "vector_to_skew"),
    ("tensornet", "vector_to_sym", "vector_to_sym"),
    ("tensornet", "decompose", "decompose (3 outputs)"),
    ("tensornet", "tensor_norm", "tensor_norm"),
    ("tensornet", "matmul_o3", "M·Y + Y·M"),
    ("tensornet_so3", "matmul_so3", "2 Y·M (SO3)"),
    ("tensornet", "mix_skew", "channel mixing"),
    ("tensornet", "edge_tensor", "edge_tensor"),
    ("tensornet", "skew_to_vector", "skew_to_vector"),
    ("products", "cross", "cross product"),
)
CONTENDERS = ("expert", "expert compiled", "planned", "fused", "einsum", "kernel", "module")
WARMUP, REPEATS = 3, 20


# ---------------------------------------------------------------------------------------------
# --prepare (needs diagc)


def prepare(folder: Path) -> None:
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(HERE))
    import compiler
    from contenders import Naive
    from compiler.api import checked_program
    from compiler.targets.cuda.kernels import lower_program, module_config

    folder.mkdir(parents=True, exist_ok=True)
    manifest = {"diagc": compiler.__version__, "files": {}, "ops": [list(op) for op in OPS]}
    for stem in FILES:
        path = ROOT / "diagrams" / f"{stem}.diag"
        source = path.read_text()
        (folder / f"{stem}.py").write_text(compiler.compile_source(source, str(path)))
        (folder / f"{stem}.cu").write_text(compiler.compile_source(source, str(path), "cuda"))
        program = checked_program(source, str(path))
        kernels = {k.name: module_config(k) for k in lower_program(program).kernels}
        diagrams = {}
        for d in program.diagrams:
            naive = Naive(d)
            diagrams[d.name] = {
                "inputs": [_tensor(t) for t in d.inputs],
                "outputs": [_tensor(t) for t in d.outputs],
                "kernel": kernels[d.name],
                "naive": {
                    "constants": {n: t.tolist() for n, t in naive.constants.items()},
                    "equations": [{"output": _tensor(t), "terms": [[c, spec, [list(o) for o in ops]]
                                                                    for c, spec, ops in terms]}
                                  for t, (_, terms) in zip(d.outputs, naive.equations)],
                },
            }
        manifest["files"][stem] = diagrams
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    print(f"wrote {folder}: {', '.join(f'{s}.cu, {s}.py' for s in FILES)}, manifest.json")


def _tensor(t) -> dict:
    return {"name": t.name, "family": t.type.family, "symmetry": t.type.symmetry,
            "channels": [getattr(c, "size", c) for c in t.type.channels],  # a FixedSize as its int
            "dims": list(t.type.geometric_dims)}


# ---------------------------------------------------------------------------------------------
# --run (torch, numpy, cupy or nvcc only)


def _load_module(path: Path):
    spec = importlib.util.spec_from_file_location(f"diagc_bench_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # torch.compile finds a function's globals through its module's name
    spec.loader.exec_module(module)
    return module


class Kernels:
    """The emitted kernels of one .cu file: NVRTC through cupy, else nvcc + the host launchers."""

    def __init__(self, cu: Path, configs: dict, torch, build: Path):
        self.torch = torch
        self.configs = configs
        self.how = None
        errors = []
        try:
            import cupy

            self.cupy = cupy
            self.module = cupy.RawModule(code=cu.read_text(), options=("-std=c++17",))
            for cfg in configs.values():  # compile now, not inside a timing
                for symbol in cfg["symbols"].values():
                    self.module.get_function(symbol)
            self.how = f"NVRTC (cupy {cupy.__version__})"
            return
        except Exception as exc:  # noqa: BLE001 - reported, then the nvcc route is tried
            errors.append(f"cupy: {type(exc).__name__}: {exc}")
        try:
            lib = build / f"lib{cu.stem}.so"
            run = subprocess.run(["nvcc", "-O3", "-arch=native", "-shared", "-Xcompiler", "-fPIC", str(cu),
                                  "-o", str(lib)], capture_output=True, text=True)
            if run.returncode:
                raise RuntimeError(run.stderr[-2000:])
            self.lib = ctypes.CDLL(str(lib))
            self.how = "nvcc -shared, extern \"C\" launchers"
        except Exception as exc:  # noqa: BLE001
            errors.append(f"nvcc: {type(exc).__name__}: {exc}")
            raise RuntimeError("; ".join(errors)) from None

    def bind(self, name: str, meta: dict, args, sizes: dict):
        """A no-argument callable launching the kernel on ``args`` (torch CUDA tensors, made
        contiguous here) into preallocated outputs; returns the outputs."""
        torch = self.torch
        cfg = self.configs[name]
        dtype = args[0].dtype
        key = {torch.float32: "float32", torch.float64: "float64"}[dtype]
        suffix = key.replace("float", "f")
        args = [a.contiguous() for a in args]
        flags = []
        batch = None
        for a, t in zip(args, meta["inputs"]):
            own = len(t["channels"]) + len(t["dims"])
            flags.append(int(a.dim() > own))
            if a.dim() > own:
                batch = a.shape[0] if batch is None else batch
        outs = []
        for k, t in enumerate(meta["outputs"]):
            shape = (batch,) if batch is not None else ()
            make = torch.zeros if k in cfg.get("summed", ()) else torch.empty  # a summed output is added into
            outs.append(make(shape + tuple(sizes[c] for c in t["channels"]) + tuple(t["dims"]),
                             dtype=dtype, device=args[0].device))
        summed = [outs[k] for k in cfg.get("summed", ())]
        b = batch if batch is not None else 1
        itemsize = args[0].element_size()
        if cfg["kind"] == "elementwise":
            chans = [sizes[c] for c in cfg["channels"]]
            n = b * math.prod(chans)
            grid = ((n + cfg["per_block"][key] - 1) // cfg["per_block"][key], 1, 1)
            tail = [n] + chans
            launcher_tail = [b] + chans
        else:
            cin, cout = sizes[cfg["channels"][0]], sizes[cfg["channels"][1]]
            grid = ((b + cfg["rows"] - 1) // cfg["rows"], (cout + cfg["cols"] - 1) // cfg["cols"], 1)
            tail = launcher_tail = [b, cin, cout]
        shared = cfg["shared_words"][key] * itemsize
        if self.how.startswith("NVRTC"):
            cp = self.cupy
            fn = self.module.get_function(cfg["symbols"][key])
            call = []
            for a, f in zip(args, flags):
                call += [np.uint64(a.data_ptr()), np.int32(f)]
            call += [np.uint64(o.data_ptr()) for o in outs] + [np.int64(x) for x in tail]
            call = tuple(call)
            stream = cp.cuda.ExternalStream(torch.cuda.current_stream().cuda_stream)

            def launch():
                for o in summed:
                    o.zero_()
                with stream:
                    fn(grid, (cfg["block"], 1, 1), call, shared_mem=shared)
                return tuple(outs)
            return launch
        fn = getattr(self.lib, f"diagc_{name}_{suffix}")
        fn.restype = ctypes.c_int
        call = []
        for a, f in zip(args, flags):
            call += [ctypes.c_void_p(a.data_ptr()), ctypes.c_int(f)]
        call += [ctypes.c_void_p(o.data_ptr()) for o in outs] + [ctypes.c_longlong(x) for x in launcher_tail]

        def launch():
            code = fn(*call, ctypes.c_void_p(torch.cuda.current_stream().cuda_stream))
            if code:
                raise RuntimeError(f"launcher returned cudaError {code}")
            return tuple(outs)
        return launch


def _inputs(meta: dict, rows: int, channels: int, dtype, device, torch, seed: int):
    """Random inputs (symmetric / antisymmetric / traceless as declared), float64 then cast."""
    g = torch.Generator(device=device)
    g.manual_seed(seed)
    has_channels = any(t["channels"] for t in meta["inputs"] + meta["outputs"])
    batch = (rows,) if has_channels else (rows * channels,)
    out = []
    for t in meta["inputs"]:
        shape = (() if t["family"] == "weight" else batch) + (channels,) * len(t["channels"]) + tuple(t["dims"])
        x = torch.randn(shape, generator=g, device=device, dtype=torch.float64)
        if t["family"] == "weight":
            x = x / math.sqrt(channels)
        if t["symmetry"]:
            xt = x.transpose(-1, -2)
            x = (x - xt) / 2 if t["symmetry"] == "skew" else (x + xt) / 2
            if t["symmetry"] == "sym_traceless":
                x = x - x.diagonal(dim1=-2, dim2=-1).sum(-1)[..., None, None] * torch.eye(3, device=device,
                                                                                             dtype=x.dtype) / 3
        out.append(x.to(dtype))
    sizes = {c: channels for t in meta["inputs"] + meta["outputs"] for c in t["channels"]}
    return out, sizes


def _naive(meta: dict, torch, device):
    """One torch.einsum per term (manifest transcription of contenders.Naive)."""
    tables = {}

    def call(*args):
        dtype = args[0].dtype
        values = {("in", t["name"]): a for t, a in zip(meta["inputs"], args)}
        for name, table in meta["naive"]["constants"].items():
            key = (name, dtype)
            if key not in tables:
                tables[key] = torch.tensor(table, dtype=dtype, device=device)
            values[("const", name)] = tables[key]
        batch = next((a.shape[:a.dim() - len(t["channels"]) - len(t["dims"])] for a, t in zip(args, meta["inputs"])
                      if t["family"] != "weight"), ())
        results = []
        for eq in meta["naive"]["equations"]:
            total = None
            for coef, spec, ops in eq["terms"]:
                y = torch.einsum(spec, *[values[tuple(o)] for o in ops])
                if coef != 1.0:
                    y = coef * y
                total = y if total is None else total + y
            o = eq["output"]
            sizes = {}
            for a, t in zip(args, meta["inputs"]):
                first = a.dim() - len(t["dims"]) - len(t["channels"])
                sizes.update({c: a.shape[first + k] for k, c in enumerate(t["channels"])})
            shape = tuple(batch) + tuple(sizes[c] for c in o["channels"]) + tuple(o["dims"])
            results.append(total.expand(shape).clone() if tuple(total.shape) != shape else total)
        return tuple(results)
    return call


def _as_tuple(y):
    return tuple(y) if isinstance(y, (tuple, list)) else (y,)


def rel_err(got, ref) -> float:
    """Largest |got - ref| over max(1, max |ref|), over matching tuples of tensors (inf where their
    counts or shapes differ); gpu_models.py's and cuda_variants.py's too."""
    got, ref = _as_tuple(got), _as_tuple(ref)
    if len(got) != len(ref):
        return math.inf
    worst = 0.0
    for g, r in zip(got, ref):
        if tuple(g.shape) != tuple(r.shape):
            return math.inf
        if r.numel():
            scale = max(1.0, float(r.detach().abs().max()))
            worst = max(worst, float((g.detach().double() - r.detach().double()).abs().max()) / scale)
    return worst


def device_timer(torch, device) -> GpuTimer:
    """This benchmark's timing (cuda_variants.py's too): on a GPU the device time of each call, the
    host's enqueueing hidden behind a 2e6-cycle sleep, every call queued and one synchronisation at
    the end; median seconds of REPEATS calls after WARMUP."""
    return GpuTimer(torch, device, warmup=WARMUP, repeats=REPEATS, sleep_cycles=2_000_000, queued=True)


def copy_bandwidth(torch, device, timer) -> float:
    """Bytes read + written per second by Tensor.copy_ of 512 MiB."""
    n = 512 * 2**20 // 4
    src = torch.ones(n, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    seconds = timer.median(lambda: dst.copy_(src))
    del src, dst
    return 2 * n * 4 / seconds


#: diagrams whose kernel path is checked by gradcheck and gradgradcheck (float64, small sizes)
GRADCHECK = (("tensornet", "matmul_o3"), ("tensornet", "vector_to_sym"), ("tensornet", "decompose"),
             ("tensornet", "tensor_norm"), ("tensornet", "mix_skew"), ("tensornet", "edge_tensor"),
             ("products", "cross"))
#: operations timed as a force-training step's share: forward, VJP, second order (float32)
STEPS = (("tensornet", "vector_to_sym"), ("tensornet", "decompose"), ("tensornet", "tensor_norm"),
         ("tensornet", "matmul_o3"), ("tensornet", "mix_skew"), ("tensornet", "edge_tensor"),
         ("products", "cross"))


def _random(cfg, batch, channels, dtype, device, torch, seed):
    """Random inputs for a module kernel configuration (every input batched)."""
    g = torch.Generator(device=device)
    g.manual_seed(seed)
    return [torch.randn(tuple(batch) + (channels,) * len(chans) + tuple(dims), generator=g, device=device,
                        dtype=dtype) for _, chans, dims in cfg["inputs"]]


def probe(folder: Path, device_name: str = "cuda") -> int:
    """In a child process (a kernel that faults poisons its CUDA context, so the parent learns of it
    here instead of losing its run), float64 unless said:

    * every forward kernel of the .cu files once at odd small sizes (partial tiles) against the
      planned torch function;
    * every function of the modules that has a kernel (forward, NAME_vjp, NAME_vjp_vjp) through the
      module's kernel path (the torch custom op) against kernels=False, in float64 and float32;
    * gradcheck and gradgradcheck on the kernel path of the GRADCHECK diagrams;
    * torch.compile(fullgraph=True) of a loss over kernel ops, value and gradient against eager.

    Prints one line ``PROBE {json}``: per check null (passed) or the reason; and the seconds the
    first call of each module took (NVRTC compile of its embedded source, or cupy's disk cache)."""
    import torch

    manifest = json.loads((folder / "manifest.json").read_text())
    modules = {stem: _load_module(folder / f"{stem}.py") for stem in manifest["files"]}
    device = torch.device(device_name)
    verdict, first_call = {}, {}

    def check(key, f):
        try:
            verdict[key] = f()
        except Exception as exc:  # noqa: BLE001
            verdict[key] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"

    with __import__("tempfile").TemporaryDirectory() as tmp:
        for stem in manifest["files"]:
            try:
                k = Kernels(folder / f"{stem}.cu", {n: m["kernel"] for n, m in manifest["files"][stem].items()},
                            torch, Path(tmp))
            except Exception as exc:  # noqa: BLE001
                verdict.update({f"kernel {stem}.{n}": f"not loaded: {exc}" for n in manifest["files"][stem]})
                continue
            for name, meta in manifest["files"][stem].items():
                def raw(name=name, meta=meta):
                    args, sizes = _inputs(meta, 37, 5, torch.float64, device, torch, seed=7)
                    got = k.bind(name, meta, args, sizes)()
                    torch.cuda.synchronize()
                    err = rel_err(got, getattr(modules[stem], name)(*args, kernels=False))
                    return None if err <= 1e-12 else f"MISMATCH at 37 x 5 (relative error {err:.2e})"
                check(f"kernel {stem}.{name}", raw)
    for stem, m in modules.items():
        specs = getattr(m, "_KERNEL_SPECS", ())
        for n, spec in enumerate(specs):
            cfg = spec[5]

            def module_path(cfg=cfg, first=n == 0):
                fn = getattr(m, cfg["name"])
                for dtype, tol, rows, chans in ((torch.float64, 1e-12, 37, 5), (torch.float32, 1e-5, 37, 5),
                                                (torch.float64, 1e-12, 9, 40)):
                    args = _random(cfg, (rows,), chans, dtype, device, torch, seed=11)
                    started = time.perf_counter()
                    got = fn(*args)
                    torch.cuda.synchronize()
                    if first and dtype == torch.float64 and rows == 37:
                        first_call[stem] = time.perf_counter() - started
                    err = rel_err(got, fn(*args, kernels=False))
                    if not err <= tol:
                        return f"MISMATCH {str(dtype)[6:]} at {rows} x {chans} (relative error {err:.2e})"
                if cfg["kind"] in ("mixing", "mixing_vjp") and (cfg["kind"] == "mixing" or "launches" in cfg):
                    for dtype, tol, rows, chans in ((torch.float64, 1e-12, 300, 37), (torch.float32, 1e-5, 37, 70)):
                        args = [a[0] if len(c) == 2 and not d else a for a, (_, c, d) in
                                zip(_random(cfg, (rows,), chans, dtype, device, torch, seed=13), cfg["inputs"])]
                        # the generated GEMM (and weight-cotangent) kernels, weights shared
                        err = rel_err(_mixing(m, "kernel", fn, *args), fn(*args, kernels=False))
                        if not err <= tol:
                            return f"MISMATCH (MIXING = kernel) {str(dtype)[6:]} at {rows} x {chans} ({err:.2e})"
                return None
            check(f"module {stem}.{cfg['name']}", module_path)
    for stem, name in GRADCHECK:
        m = modules[stem]
        cfg = getattr(m, f"_{name}_KERNEL")

        def grads(m=m, name=name, cfg=cfg):
            args = [a.requires_grad_() for a in _random(cfg, (3,), 2, torch.float64, device, torch, seed=5)]
            if cfg["kind"] == "mixing":  # a weight without batch axis
                args = [a if len(c) < 2 else a[0].detach().requires_grad_() for a, (_, c, _) in
                        zip(args, cfg["inputs"])]
            fn = getattr(m, name)
            torch.autograd.gradcheck(fn, tuple(args), raise_exception=True)
            torch.autograd.gradgradcheck(fn, tuple(args), raise_exception=True)
            return None
        check(f"gradcheck {stem}.{name}", grads)

    def compiled():
        m = modules["tensornet"]
        M, Y = (a.requires_grad_() for a in _random(m._matmul_o3_KERNEL, (64,), 8, torch.float64, device, torch, 3))

        def loss(M, Y):
            I, A, S = m.decompose(m.matmul_o3(M, Y))
            return m.tensor_norm(I + A + S).sum()
        value = torch.compile(loss, fullgraph=True, backend="aot_eager")(M, Y)
        want = loss(M, Y)
        got_g, want_g = torch.autograd.grad(value, (M, Y)), torch.autograd.grad(want, (M, Y))
        err = max(rel_err(value.detach(), want.detach()), rel_err(got_g, want_g))
        return None if err <= 1e-12 else f"MISMATCH (relative error {err:.2e})"
    check("torch.compile(fullgraph=True) over kernel ops", compiled)

    def cupy_arrays():
        import cupy

        m = modules["tensornet"]
        args = _random(m._matmul_o3_KERNEL, (37,), 5, torch.float64, device, torch, 4)
        before = len(m._CUDA["functions"])
        got = m.matmul_o3(*(cupy.asarray(a) for a in args))
        if not isinstance(got, cupy.ndarray):
            return f"returned {type(got).__name__}, not a cupy array"
        err = rel_err(torch.as_tensor(got, device=device), m.matmul_o3(*args, kernels=False))
        return None if err <= 1e-12 else f"MISMATCH (relative error {err:.2e}; {before} kernels loaded before)"
    if device.type == "cuda":
        check("cupy arrays through the kernel path", cupy_arrays)
    print("PROBE " + json.dumps({"verdict": verdict, "first_call": first_call}))
    return 0


def _probe_kernels(folder: Path) -> tuple[dict, str | None]:
    try:
        child = subprocess.run([sys.executable, __file__, "--probe", str(folder)], capture_output=True, text=True,
                               timeout=240)
    except subprocess.TimeoutExpired:
        return {}, "the kernel probe timed out"
    line = next((x for x in child.stdout.splitlines() if x.startswith("PROBE ")), None)
    if line is None:
        return {}, f"the kernel probe failed (exit {child.returncode}): {child.stderr[-1500:]}"
    return json.loads(line[6:]), None


def run(folder: Path, out: Path, device_name: str, rows: int, channels: int, fused: bool, budget: float,
        compiled_dtypes=("float32",)) -> int:
    import torch

    sys.path.insert(0, str(HERE))
    from experts import expert_set

    started = time.perf_counter()
    device = torch.device(device_name)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: run with --device cpu for a smoke test", file=sys.stderr)
        return 2
    manifest = json.loads((folder / "manifest.json").read_text())
    timer = device_timer(torch, device)
    bandwidth = copy_bandwidth(torch, device, timer)
    experts = expert_set(torch)
    modules = {stem: _load_module(folder / f"{stem}.py") for stem in manifest["files"]}
    notes, kernels = [], {}
    probed, problem = _probe_kernels(folder) if device.type == "cuda" else ({}, None)
    verdict = probed.get("verdict", {})
    if problem:
        notes.append(problem + "; no kernel timed")
    build = out / "build"
    build.mkdir(parents=True, exist_ok=True)
    for stem in manifest["files"]:
        if device.type != "cuda" or problem:
            continue
        try:
            kernels[stem] = Kernels(folder / f"{stem}.cu", {n: m["kernel"] for n, m in manifest["files"][stem].items()},
                                    torch, build)
        except Exception as exc:  # noqa: BLE001
            notes.append(f"{stem}.cu: the kernels could not be loaded: {exc}")
    results = []
    failed = False
    for dtype in (torch.float32, torch.float64):
        for stem, name, label in manifest["ops"]:
            meta = manifest["files"][stem][name]
            row = {"op": label, "diagram": f"{stem}.{name}", "dtype": str(dtype).replace("torch.", ""),
                   "ms": {}, "err": {}, "notes": []}
            results.append(row)
            try:
                args, sizes = _inputs(meta, rows, channels, torch.float64, device, torch, seed=len(results))
                fn = getattr(modules[stem], name)
                ref = _as_tuple(fn(*args, kernels=False))
                args = [a.to(dtype) for a in args]
            except Exception as exc:  # noqa: BLE001
                row["notes"].append(f"inputs/reference failed: {type(exc).__name__}: {exc}")
                failed = True
                continue
            nbytes = sum(a.numel() * a.element_size() for a in args) + sum(r.numel() for r in ref) * args[0].element_size()
            row["bytes"] = nbytes
            row["bound_ms"] = nbytes / bandwidth * 1e3
            calls = {}
            expert = experts.get((stem, name))
            if expert is not None:
                calls["expert"] = lambda f=expert[1]: f(*args)
                if row["dtype"] in compiled_dtypes and time.perf_counter() - started < budget:
                    compiled = torch.compile(expert[1], dynamic=False)  # compiled at its first call (untimed)
                    calls["expert compiled"] = lambda f=compiled: f(*args)
                elif row["dtype"] in compiled_dtypes:
                    row["notes"].append("expert compiled skipped: time budget spent")
            calls["planned"] = lambda: fn(*args, kernels=False)
            if fused and meta["kernel"]["kind"] == "mixing":
                row["notes"].append("fused: no fused form (a contracted channel axis); not timed")
            elif fused and time.perf_counter() - started < budget:
                calls["fused"] = lambda: fn(*args, fused=True, kernels=False)
            elif fused:
                row["notes"].append("fused skipped: time budget spent")
            naive = _naive(meta, torch, device)
            calls["einsum"] = lambda: naive(*args)
            if verdict.get(f"kernel {stem}.{name}"):
                row["notes"].append(f"kernel: failed the probe: {verdict[f'kernel {stem}.{name}']}")
                failed = True
            elif stem in kernels:
                try:
                    calls["kernel"] = kernels[stem].bind(name, meta, args, sizes)
                except Exception as exc:  # noqa: BLE001
                    row["notes"].append(f"kernel: {type(exc).__name__}: {exc}")
                    failed = True
            module_key = f"module {stem}.{name}"
            if device.type == "cuda" and not problem and module_key in verdict and verdict[module_key] is None:
                calls["module"] = lambda: fn(*args)  # the module's kernel path: checks, custom op, launch
            elif device.type == "cuda" and verdict.get(module_key):
                row["notes"].append(f"module: failed the probe: {verdict[module_key]}")
                failed = True
            tolerance = 1e-10 if dtype == torch.float64 else 1e-4
            for key, call in calls.items():  # one failing contender does not stop the others
                before = len(row["notes"])
                _time_checked(row, key, call, ref, tolerance, timer, torch, device)
                failed |= len(row["notes"]) > before
            print(f"{row['dtype']:8} {label:24} bound {row['bound_ms']:.3f} ms  "
                  + "  ".join(f"{k} {v:.3f}" for k, v in row["ms"].items()) + "  " + "; ".join(row["notes"]),
                  flush=True)
            del args, ref, calls
    mixing = mixing_variants(modules["tensornet"], kernels.get("tensornet"), manifest, rows, channels, device,
                             torch, timer, experts, verdict)
    failed |= any(r["notes"] for r in mixing)
    steps = training_steps(modules, manifest, rows, channels, device, torch, timer, experts, verdict)
    failed |= any(r["notes"] for r in steps)
    failed |= any(v for v in verdict.values())
    elapsed = time.perf_counter() - started
    how = ", ".join(sorted({k.how for k in kernels.values()})) or "none"
    text = report(results, bandwidth, device, torch, rows, channels, how, notes, elapsed, manifest["diagc"],
                  mixing, steps, probed)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_bench.md").write_text(text)
    (out / "gpu_bench.json").write_text(json.dumps({"results": results, "bandwidth": bandwidth, "notes": notes,
                                                     "mixing": mixing, "steps": steps, "probe": probed,
                                                     "seconds": elapsed}, indent=1) + "\n")
    print(text[text.index("## Summary"):] if "## Summary" in text else text)
    print(f"wrote {out / 'gpu_bench.md'} and gpu_bench.json ({elapsed:.0f} s)")
    return 1 if failed else 0


def _time_checked(row, key, call, ref, tolerance, timer, torch, device):
    """Check ``call`` against ``ref`` then time it into ``row`` (a failure is noted, not raised)."""
    try:
        got = call()
        if device.type == "cuda":
            torch.cuda.synchronize()
        err = rel_err(got, ref)
        row["err"][key] = err
        if not err <= tolerance:
            row["notes"].append(f"{key}: MISMATCH (relative error {err:.2e} > {tolerance:g}); not timed")
            return
        row["ms"][key] = timer.median(call) * 1e3
    except Exception as exc:  # noqa: BLE001
        row["notes"].append(f"{key}: {type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}")
        traceback.print_exc(limit=2)


def _mixing(m, choice, fn, *args):
    """fn(*args) with module m's MIXING switch set to ``choice`` ("kernel": the generated GEMM and
    weight-cotangent kernels; "blas": the array library's), the kernel spec's choice (None) after."""
    m.MIXING = choice
    try:
        return fn(*args)
    finally:
        m.MIXING = None


MIXING_VARIANTS = ("expert", "kernel", "module kernel", "module blas", "bmm", "one GEMM")


def mixing_variants(m, kernels, manifest, rows, channels, device, torch, timer, experts, verdict):
    """Channel mixing B[b,d] = Σ_c W[c,d] A[b,c] (3x3 blocks) by each GEMM route, float32 and float64:
    the raw tiled-GEMM kernel, the module with MIXING="kernel" (its custom op) and MIXING="blas"
    (each for the call only; the module's own choice is its kernel spec's ``library_gemm``)
    (the planned torch code: einsum, cuBLAS), torch.matmul as a batched GEMM over the batch, and one
    large GEMM after moving the channel axis last (two copies); then per dtype its VJP (``dtype
    VJP`` rows: d_A and the batch-summed d_W) through the module with MIXING="kernel" (the parts'
    GEMMs and the weight-cotangent kernel) and "blas"."""
    meta = manifest["files"]["tensornet"]["mix_skew"]
    out = []
    for dtype in (torch.float32, torch.float64):
        row = {"dtype": str(dtype)[6:], "ms": {}, "err": {}, "notes": []}
        out.append(row)
        args, sizes = _inputs(meta, rows, channels, torch.float64, device, torch, seed=99)
        ref = _as_tuple(m.mix_skew(*args, kernels=False))
        A, W = (a.to(dtype) for a in args)
        b, c = A.shape[0], A.shape[1]
        calls = {"expert": lambda: experts[("tensornet", "mix_skew")][1](A, W)}
        if kernels is not None and not verdict.get("kernel tensornet.mix_skew"):
            calls["kernel"] = kernels.bind("mix_skew", meta, [A, W], sizes)
        if verdict.get("module tensornet.mix_skew", "not probed") is None:
            calls["module kernel"] = lambda: _mixing(m, "kernel", m.mix_skew, A, W)
        calls["module blas"] = lambda: _mixing(m, "blas", m.mix_skew, A, W)
        calls["bmm"] = lambda: torch.matmul(W.t(), A.reshape(b, c, 9)).reshape(b, W.shape[1], 3, 3)
        calls["one GEMM"] = lambda: (A.permute(0, 2, 3, 1).reshape(-1, c) @ W).reshape(b, 3, 3, -1).permute(
            0, 3, 1, 2).contiguous()
        tolerance = 1e-10 if dtype == torch.float64 else 1e-4
        for key, call in calls.items():
            _time_checked(row, key, call, ref, tolerance, timer, torch, device)
        print(f"mixing {row['dtype']:8} " + "  ".join(f"{k} {v:.3f}" for k, v in row["ms"].items())
              + "  " + "; ".join(row["notes"]), flush=True)
        del args, ref, A, W, calls
        # its VJP (d_A, and d_W summed over the batch): the generated kernels against cuBLAS
        row = {"dtype": str(dtype)[6:] + " VJP", "ms": {}, "err": {}, "notes": []}
        out.append(row)
        vjp_cfg = m._mix_skew_vjp_KERNEL
        args = [a[0] if len(c) == 2 and not d else a for a, (_, c, d) in
                zip(_random(vjp_cfg, (rows,), channels, torch.float64, device, torch, seed=98), vjp_cfg["inputs"])]
        ref = _as_tuple(m.mix_skew_vjp(*args, kernels=False))
        args = [a.to(dtype) for a in args]
        calls = {"module blas": lambda: _mixing(m, "blas", m.mix_skew_vjp, *args)}
        if "launches" in vjp_cfg and verdict.get("module tensornet.mix_skew_vjp", "not probed") is None:
            calls["module kernel"] = lambda: _mixing(m, "kernel", m.mix_skew_vjp, *args)
        for key, call in calls.items():
            _time_checked(row, key, call, ref, tolerance, timer, torch, device)
        print(f"mixing {row['dtype']:8} " + "  ".join(f"{k} {v:.3f}" for k, v in row["ms"].items())
              + "  " + "; ".join(row["notes"]), flush=True)
        del args, ref, calls
    return out


STEP_CONTENDERS = ("expert", "module", "module direct", "planned")


def training_steps(modules, manifest, rows, channels, device, torch, timer, experts, verdict):
    """A force-training step's share per operation, float32: the forward, the VJP with
    create_graph=True and the second-order VJP (of the first VJP, with respect to the inputs and the
    cotangents), as torch.autograd runs it over

    * ``expert``: torchmd-net's formulas;
    * ``module``: the emitted function on its kernel path (custom ops whose backward is NAME_vjp, whose
      backward is NAME_vjp_vjp, on their kernels where they have one);
    * ``planned``: the same with kernels=False (the array code, with the generated VJPs);

    and ``module direct``: NAME, NAME_vjp, NAME_vjp_vjp called directly (kernel path, no autograd).
    Every result is checked against the expert's first (relative 1e-3, float32)."""
    out = []
    for stem, name in STEPS:
        m = modules[stem]
        meta = manifest["files"][stem][name]
        expert = experts.get((stem, name))
        row = {"op": f"{stem}.{name}", "ms": {}, "err": {}, "notes": []}
        out.append(row)
        try:
            args, sizes = _inputs(meta, rows, channels, torch.float32, device, torch, seed=17)
            fwd, vjp, vjp2 = (getattr(m, name + s) for s in ("", "_vjp", "_vjp_vjp"))
            ys = _as_tuple(fwd(*args, kernels=False))
            g = torch.Generator(device=device)
            g.manual_seed(3)
            cots = [torch.randn(y.shape, generator=g, device=device, dtype=y.dtype) for y in ys]
            cots2 = [torch.randn(a.shape, generator=g, device=device, dtype=a.dtype) for a in args]
        except Exception as exc:  # noqa: BLE001
            row["notes"].append(f"inputs failed: {type(exc).__name__}: {exc}")
            continue

        def autograd_step(f, **kw):
            def step():
                leaves = [x.detach().requires_grad_(True) for x in args]
                cl = [c.detach().requires_grad_(True) for c in cots]
                y = _as_tuple(f(*leaves, **kw))
                first = torch.autograd.grad(y, leaves, cl, create_graph=True)
                used = [(gi, c) for gi, c in zip(first, cots2) if gi.requires_grad]
                second = torch.autograd.grad([u for u, _ in used], leaves + cl, [c for _, c in used],
                                             allow_unused=True)
                return tuple(x.detach() for x in first) + tuple(
                    torch.zeros_like(v) if s is None else s for s, v in zip(second, leaves + cl))
            return step

        def direct():
            fwd(*args)
            first = _as_tuple(vjp(*args, *cots))
            second = _as_tuple(vjp2(*args, *cots, *cots2))
            return first + second
        calls = {}
        if expert is not None:
            calls["expert"] = autograd_step(expert[1])
        if verdict.get(f"module {stem}.{name}", "not probed") is None:
            calls["module"] = autograd_step(fwd)
            calls["module direct"] = direct
        calls["planned"] = autograd_step(fwd, kernels=False)
        try:
            ref = calls["planned"]()
        except Exception as exc:  # noqa: BLE001
            row["notes"].append(f"planned: {type(exc).__name__}: {exc}")
            continue
        for key, call in calls.items():
            _time_checked(row, key, call, ref, 1e-3, timer, torch, device)
        print(f"step {row['op']:28} " + "  ".join(f"{k} {v:.3f}" for k, v in row["ms"].items())
              + "  " + "; ".join(row["notes"]), flush=True)
        del args, cots, cots2, calls, ref
    return out


def _geomean(xs):
    xs = [x for x in xs if x and math.isfinite(x)]
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else math.nan


def _ms(x):
    return f"{x:.3f}" if x is not None else "—"


def _ratio(a, b):
    return f"{a / b:.2f}" if a and b else "—"


def report(results, bandwidth, device, torch, rows, channels, how, notes, elapsed, version, mixing=(), steps=(),
           probed=None) -> str:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "CPU"
    probed = probed or {}
    L = [f"# TensorNet operations on {name}", "",
         f"`python benchmarks/gpu_bench.py --run` (diagc {version}), N x C = {rows} x {channels}, torch "
         f"{torch.__version__}, copy bandwidth {bandwidth / 1e12:.2f} TB/s (read + write, Tensor.copy_ of 512 MiB), "
         f"kernels through {how}. Device times in ms, median of {REPEATS} CUDA-event timings after {WARMUP} "
         f"warm-up calls; values checked first against the planned torch function in float64. `kernel`: the "
         f"emitted kernel launched directly (outputs preallocated); `module`: the emitted Python function on "
         f"CUDA tensors (argument checks, output allocation, its torch custom op, the launch). Run took "
         f"{elapsed:.0f} s.", ""]
    for dtype in ("float32", "float64"):
        rows_ = [r for r in results if r["dtype"] == dtype]
        L += [f"## {dtype}", "",
              "| operation | bandwidth bound | expert | expert torch.compile | diagc planned | diagc fused=True | "
              "naive einsum | kernel | module | kernel / bound | module / bound | expert / module | "
              "expert compiled / module | fused / module |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in rows_:
            ms = r["ms"]
            L.append(f"| {r['op']} | {r.get('bound_ms', math.nan):.3f} | " + " | ".join(_ms(ms.get(k)) for k in CONTENDERS)
                     + f" | {_ratio(ms.get('kernel'), r.get('bound_ms'))} | {_ratio(ms.get('module'), r.get('bound_ms'))}"
                     f" | {_ratio(ms.get('expert'), ms.get('module'))} | {_ratio(ms.get('expert compiled'), ms.get('module'))}"
                     f" | {_ratio(ms.get('fused'), ms.get('module'))} |")
        fw = [r["ms"]["kernel"] / r["bound_ms"] for r in rows_ if "kernel" in r["ms"]]
        mo = [r["ms"]["module"] / r["bound_ms"] for r in rows_ if "module" in r["ms"]]
        ex = [r["ms"]["expert"] / r["ms"]["module"] for r in rows_ if "module" in r["ms"] and "expert" in r["ms"]]
        L += ["", f"Geometric mean: kernel / bound {_geomean(fw):.2f}, module / bound {_geomean(mo):.2f}, "
              f"expert / module {_geomean(ex):.2f}.", ""]
    L += ["## Value checks (largest relative error against the planned torch function, float64)", "",
          "| operation | " + " | ".join(CONTENDERS) + " |", "|---|" + "---|" * len(CONTENDERS)]
    for r in results:
        if r["dtype"] == "float64":
            L.append(f"| {r['op']} | " + " | ".join(f"{r['err'][k]:.1e}" if k in r["err"] else "—"
                                                   for k in CONTENDERS) + " |")
    if mixing:
        L += ["", "## Channel mixing by GEMM route (mix_skew)", "",
              "`kernel`: the emitted register-tiled GEMM launched directly; `module kernel` / `module blas`: the "
              "module with MIXING = \"kernel\" / \"blas\" (the planned torch code, cuBLAS); `bmm`: torch.matmul "
              "batched over the batch rows; `one GEMM`: the channel axis moved last, one GEMM, moved back.", "",
              "| dtype | " + " | ".join(MIXING_VARIANTS) + " |", "|---|" + "---|" * len(MIXING_VARIANTS)]
        for r in mixing:
            L.append(f"| {r['dtype']} | " + " | ".join(_ms(r["ms"].get(k)) for k in MIXING_VARIANTS) + " |")
    if steps:
        L += ["", "## Forward + VJP + second order (float32, a force-training step's share)", "",
              "torch.autograd over: `expert` (torchmd-net's formulas), `module` (kernel path: custom ops whose "
              "backward is the generated NAME_vjp, then NAME_vjp_vjp), `planned` (kernels=False: the array code "
              "and the generated VJPs); `module direct`: NAME, NAME_vjp, NAME_vjp_vjp called in turn.", "",
              "| operation | " + " | ".join(STEP_CONTENDERS) + " | expert / module |",
              "|---|" + "---|" * (len(STEP_CONTENDERS) + 1)]
        for r in steps:
            L.append(f"| {r['op']} | " + " | ".join(_ms(r["ms"].get(k)) for k in STEP_CONTENDERS)
                     + f" | {_ratio(r['ms'].get('expert'), r['ms'].get('module'))} |")
    verdict = probed.get("verdict", {})
    if verdict:
        bad = {k: v for k, v in verdict.items() if v}
        L += ["", "## Probe (child process, float64 unless said)", "",
              f"{len(verdict) - len(bad)} of {len(verdict)} checks passed: every forward kernel and every module "
              "function with a kernel (forward, NAME_vjp, NAME_vjp_vjp; float64 and float32) against kernels=False "
              "at 37 x 5; gradcheck and gradgradcheck on the kernel path of "
              + ", ".join(f"{s}.{n}" for s, n in GRADCHECK) + "; torch.compile(fullgraph=True, backend=aot_eager) "
              "of a loss over kernel ops against eager (value and gradient). First call of each module (NVRTC "
              "compile or cupy's disk cache): " + ", ".join(f"{k} {v:.1f} s" for k, v in
                                                           probed.get("first_call", {}).items()) + "."]
        L += [f"- FAILED {k}: {v}" for k, v in bad.items()]
    problems = notes + [f"{r['dtype']} {r['op']}: {n}" for r in results for n in r["notes"]]
    problems += [f"mixing {r['dtype']}: {n}" for r in mixing for n in r["notes"]]
    problems += [f"step {r['op']}: {n}" for r in steps for n in r["notes"]]
    if problems:
        L += ["", "## Notes", ""] + [f"- {p}" for p in problems]
    L += ["", "## Summary", "", "| | float32 | float64 |", "|---|---|---|"]
    for label, key, base in (("kernel / bound (geomean)", "kernel", "bound_ms"),
                             ("module / bound (geomean)", "module", "bound_ms")):
        cells = []
        for dtype in ("float32", "float64"):
            xs = [r["ms"][key] / r[base] for r in results if r["dtype"] == dtype and key in r["ms"]]
            cells.append(f"{_geomean(xs):.2f} (worst {max(xs):.2f})" if xs else "—")
        L.append(f"| {label} | {cells[0]} | {cells[1]} |")
    for label, a, b in (("expert / module (geomean)", "expert", "module"),
                        ("expert compiled / module (geomean)", "expert compiled", "module"),
                        ("fused / module (geomean)", "fused", "module")):
        cells = []
        for dtype in ("float32", "float64"):
            xs = [r["ms"][a] / r["ms"][b] for r in results if r["dtype"] == dtype and a in r["ms"] and b in r["ms"]]
            cells.append(f"{_geomean(xs):.2f} (least {min(xs):.2f})" if xs else "—")
        L.append(f"| {label} | {cells[0]} | {cells[1]} |")
    for label, vjp in (("channel mixing, fastest 3 (ms)", False), ("its VJP, fastest first (ms)", True)):
        cells = [", ".join(f"{k} {v:.3f}" for k, v in sorted(r["ms"].items(), key=lambda kv: kv[1])[:3])
                 for r in mixing if r["dtype"].endswith(" VJP") == vjp]
        if cells:
            L.append(f"| {label} | {cells[0]} | {cells[1] if len(cells) > 1 else '—'} |")
    if steps:
        xs = [r["ms"]["expert"] / r["ms"]["module"] for r in steps if "expert" in r["ms"] and "module" in r["ms"]]
        L.append(f"| fwd+VJP+2nd: expert / module (geomean) | "
                 f"{_geomean(xs):.2f} (least {min(xs):.2f})" + " | — |" if xs else "| fwd+VJP+2nd | — | — |")
    if verdict:
        L.append(f"| probe checks passed | {sum(1 for v in verdict.values() if not v)} of {len(verdict)} | |")
    return "\n".join(L) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    step = p.add_mutually_exclusive_group(required=True)
    step.add_argument("--prepare", metavar="DIR", help="write the .cu/.py files and manifest.json (needs diagc)")
    step.add_argument("--run", metavar="DIR", help="benchmark from a prepared folder (torch, numpy, cupy or nvcc)")
    step.add_argument("--probe", metavar="DIR", help=argparse.SUPPRESS)  # the child process of --run
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"), help="folder for gpu_bench.md")
    p.add_argument("--device", default="cuda", help="cuda (default) or cpu (a smoke test, no kernels)")
    p.add_argument("--rows", type=int, default=32768)
    p.add_argument("--channels", type=int, default=128)
    p.add_argument("--no-fused", action="store_true", help="leave out fused=True (torch.compile)")
    p.add_argument("--no-compiled", action="store_true", help="leave out torch.compile of the expert")
    p.add_argument("--compiled-dtypes", nargs="+", default=["float32"], choices=["float32", "float64"],
                   help="dtypes timed with torch.compile of the expert (default float32)")
    p.add_argument("--budget", type=float, default=150.0,
                   help="seconds after which fused=True (compiles) is no longer started (default 150)")
    args = p.parse_args(argv)
    if args.prepare:
        prepare(Path(args.prepare))
        return 0
    if args.probe:
        return probe(Path(args.probe))
    return run(Path(args.run), Path(args.out), args.device, args.rows, args.channels, not args.no_fused, args.budget,
               () if args.no_compiled else tuple(args.compiled_dtypes))


if __name__ == "__main__":
    sys.exit(main())
