"""What the CUDA kernel path costs on the host: an emitted function's dispatch up to the launch.

    python benchmarks/host_overhead.py [--repeat 15] [--number 200] [--profile] [--out DIR] [--tensornet]

On a machine without a GPU: the emitted module's launcher runs with cupy replaced by a stand-in
whose ``RawModule`` hands back a launch that does nothing (no NVRTC, no device), torch CPU tensors
standing for CUDA tensors (the module's ``_on_gpu``, ``_device_index`` and ``_torch_stream`` report
device 0), exactly as tests/test_cuda_module.py runs the kernel path. Everything else is the
module's own code: the argument checks, the dispatch, the torch custom ops and autograd, output
allocation, the launch configuration and the kernel's parameter tuple. So the figures are the
Python host time of a call, what the device's kernel time hides or does not (the H200 profile in
benchmarks/gpu_profile.py measured tp_2e's kernel at 20.9 us and a forward call's host time at
0.12 ms). Small batches (the launch is a stand-in: sizes change only torch.empty's cost).

Per operation (tp_2e of diagrams/spherical.diag, cross of products.diag, TensorNet's matmul_o3 of
tensornet.diag) and pass: ``forward`` (no autograd), ``fwd+bwd`` (inputs requiring grad,
torch.autograd.grad of the result), ``double`` (create_graph=True, then the gradient of the
gradients: a force-training step's share), ``kernels=False`` forward for scale (the array-library
code on CPU tensors: not a GPU figure); and torch's own floor for the same passes, an
elementwise product of tensors of tp_2e's shape. Microseconds of process CPU time per call, best
of ``--repeat`` runs of ``--number`` calls, contenders alternating. ``--profile`` prints cProfile's top entries per pass
(what the time is spent in). ``--out DIR`` also writes DIR/host_overhead.md. ``--tensornet`` adds
TensorNet's forward + forces per call (examples/tensornet.py with all four modules on the stand-in,
against torchmd-net's pure-torch model and the model with ``project`` / ``compose_mixed`` run as
one call each, unstaged; see tensornet_calls).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import platform
import pstats
import sys
import time
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import compiler  # noqa: E402

CASES = (("spherical", "tp_2e", 64, 32), ("products", "cross", 2048, None), ("tensornet", "matmul_o3", 64, 32))


def stand_in(m):
    """cupy as far as the launcher uses it, launching nothing; installed into module ``m``."""
    class RawModule:
        def __init__(self, code, options=()):
            pass

        def get_function(self, symbol):
            def launch(grid, block, args, shared_mem=0, stream=None):
                return None
            return launch

    class Context:
        def __init__(self, *args):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    cupy = types.SimpleNamespace(RawModule=RawModule, cuda=types.SimpleNamespace(Device=Context, ExternalStream=Context))
    m._CUDA.update(available=True, cupy=cupy, modules={}, functions={})
    m._on_gpu = lambda b, args: True
    m._device_index = lambda b, device: 0
    m._torch_stream = lambda b, device: 1234
    return m


def calls(torch, m, name, rows, channels):
    """The timed calls of one operation: name -> a function of no arguments."""
    fn = getattr(m, name)
    cfg = getattr(m, f"_{name}_KERNEL")
    g = torch.Generator().manual_seed(0)
    xs = []
    for _, chans, dims in cfg["inputs"]:
        xs.append(torch.randn((rows,) + (channels,) * len(chans) + tuple(dims), generator=g, dtype=torch.float32))
    out = fn(*xs)
    outs = out if isinstance(out, tuple) else (out,)
    cots = tuple(torch.randn(o.shape, generator=g, dtype=o.dtype) for o in outs)
    leaves = tuple(x.detach().requires_grad_(True) for x in xs)
    vs = tuple(torch.randn(x.shape, generator=g, dtype=x.dtype) for x in xs)

    def forward():
        return fn(*xs)

    def backward():
        r = fn(*leaves)
        return torch.autograd.grad(r, leaves, cots[0] if not isinstance(r, tuple) else cots)

    def double():
        r = fn(*leaves)
        gs = torch.autograd.grad(r, leaves, cots[0] if not isinstance(r, tuple) else cots, create_graph=True)
        return torch.autograd.grad(gs, leaves, vs)

    def array_code():
        return fn(*xs, kernels=False)

    return {"forward": forward, "fwd+bwd": backward, "double": double, "kernels=False fwd": array_code}


def reference(torch, rows, channels):
    """torch's own floor for the same passes: an elementwise product x * y of tensors of tp_2e's
    shape (one dispatcher call forward, autograd's MulBackward)."""
    g = torch.Generator().manual_seed(0)
    x, y, c, v, w = (torch.randn(rows, channels, 5, generator=g) for _ in range(5))
    a, b = x.detach().requires_grad_(True), y.detach().requires_grad_(True)

    def double():
        gs = torch.autograd.grad(a * b, (a, b), c, create_graph=True)
        return torch.autograd.grad(gs, (a, b), (v, w))

    return {"forward": lambda: x * y, "fwd+bwd": lambda: torch.autograd.grad(a * b, (a, b), c), "double": double,
            "kernels=False fwd": lambda: x * y}


def tensornet_calls(torch, atoms: int = 24, channels: int = 16) -> dict:
    """TensorNet forward + forces (examples/tensornet.py) with its four diagram modules on the
    stand-in (every kernel launch a no-op: what Python and the torch operations around the kernels
    cost, as on a GPU machine's host), beside torchmd-net's pure-torch model on CPU tensors of the
    same tiny size (its operations' host cost, a little arithmetic) and examples/tensornet.py with
    project and compose_mixed each run as one call, not in stages (compiler.planning.staging): their
    own emitted code and their derivatives', array code on the GPU (session 14's model), from the
    module built with ``staging=False``."""
    sys.path[:0] = [str(ROOT / "benchmarks"), str(ROOT / "examples")]
    import tensornet
    import torchmdnet_ref
    from tensornet_bench import system

    for m in (tensornet.BASE, tensornet.LAYER, tensornet.SO3, tensornet.GRAPH):
        stand_in(m)
    args = dict(hidden_channels=channels, num_layers=2, num_rbf=8, cutoff_upper=4.5, max_num_neighbors=64,
                static_shapes=False, dtype=torch.float32)
    torch.manual_seed(0)
    ref = torchmdnet_ref.reference_tensornet(**args)
    ours = tensornet.TensorNet(**args)
    ours.load_state_dict(ref.state_dict(), strict=True)
    z, pos, batch = system(atoms)
    L = tensornet.LAYER
    unstaged = stand_in(compiler.load(ROOT / "diagrams" / "tensornet_layer.diag", "host_overhead_layer",
                                      staging=False))
    # the diagram's own code, its backward the derivative diagram's own code too
    one_call = {name: getattr(unstaged, name) for name in ("project", "compose_mixed")}

    def step(model, swap=None):
        def call():
            saved = {k: getattr(L, k) for k in swap or {}}
            for k, f in (swap or {}).items():
                setattr(L, k, f)
            try:
                p = pos.detach().requires_grad_(True)
                return torch.autograd.grad(model(z, p, batch)[0].sum(), p)
            finally:
                for k, f in saved.items():
                    setattr(L, k, f)
        return call

    return {"torchmd-net": step(ref), "diagc": step(ours),
            "diagc, project / compose_mixed unstaged (one call)": step(ours, one_call)}


def best(fs: dict, repeat: int, number: int) -> dict:
    """Microseconds of process CPU time per call of each function (time.process_time: on a shared
    machine wall time also counts other processes' turns), best of ``repeat`` runs of ``number``
    calls, the functions alternating."""
    times = {k: float("inf") for k in fs}
    for f in fs.values():
        for _ in range(20):
            f()
    for _ in range(repeat):
        for k, f in fs.items():
            t0 = time.process_time()
            for _ in range(number):
                f()
            times[k] = min(times[k], (time.process_time() - t0) / number * 1e6)
    return times


def profile(f, number: int, top: int = 14) -> str:
    p = cProfile.Profile()
    p.enable()
    for _ in range(number):
        f()
    p.disable()
    s = io.StringIO()
    pstats.Stats(p, stream=s).sort_stats("tottime").print_stats(top)
    lines = [ln for ln in s.getvalue().splitlines() if ln.strip()]
    start = next(k for k, ln in enumerate(lines) if ln.lstrip().startswith("ncalls"))
    return "\n".join(lines[start - 1:])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--number", type=int, default=200)
    ap.add_argument("--profile", action="store_true", help="cProfile's top entries per pass")
    ap.add_argument("--out", help="also write DIR/host_overhead.md")
    ap.add_argument("--tensornet", action="store_true",
                    help="also TensorNet's forward + forces (24 atoms, 16 channels) on the stand-in, per call")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    lines = [f"# Host cost of the kernel path (stand-in launch; {platform.machine()}, {platform.python_version()}, "
             f"torch {torch.__version__}, diagc {compiler.__version__})", "",
             f"microseconds of process CPU time per call, best of {args.repeat} x {args.number} calls", "",
             "| operation | rows x channels | forward | fwd+bwd | double | kernels=False fwd (CPU) |",
             "|---|---|---|---|---|---|"]
    print("\n".join(lines), flush=True)
    profiles = []
    for stem, name, rows, channels in CASES + (("", "torch x * y (reference)", 64, 32),):
        if stem:
            m = stand_in(compiler.load(ROOT / "diagrams" / f"{stem}.diag"))
            fs = calls(torch, m, name, rows, channels or 1)
        else:
            fs = reference(torch, rows, channels)
        t = best(fs, args.repeat, args.number)
        size = f"{rows} x {channels}" if channels else f"{rows}"
        row = f"| {name} | {size} | " + " | ".join(f"{t[k]:.1f}" for k in fs) + " |"
        lines.append(row)
        print(row, flush=True)
        if args.profile and stem:
            for k in ("forward", "fwd+bwd", "double"):
                profiles.append(f"\n## {name} {k}: cProfile, {args.number} calls, by own time\n```\n"
                                f"{profile(fs[k], args.number)}\n```")
    if args.tensornet:
        fs = tensornet_calls(torch)
        number = max(1, args.number // 40)
        t = best(fs, args.repeat, number)
        table = ["", f"TensorNet forward + forces, 24 atoms, 16 channels, float32: milliseconds of process CPU time "
                 f"per call, best of {args.repeat} x {number} calls, alternating", "", "| model | ms |", "|---|---|"]
        table += [f"| {k} | {v / 1000:.2f} |" for k, v in t.items()]
        lines += table
        print("\n".join(table), flush=True)
    if profiles:
        print("\n".join(profiles))
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "host_overhead.md").write_text("\n".join(lines + profiles) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
