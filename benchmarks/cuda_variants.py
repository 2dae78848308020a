"""Variants of the emitted kernels measured against each other on a GPU: how many elements a float32
thread of an elementwise kernel takes, the direct form against the staged tile, the channel-mixing
GEMM's register tile against cuBLAS; and the float32 GEMM throughput that bounds channel mixing. Two
steps, as gpu_bench.py:

    python benchmarks/cuda_variants.py --prepare DIR          # here: DIR/<variant>/*.py, manifest.json
    python benchmarks/cuda_variants.py --run DIR --out OUT    # on the GPU (torch + cupy): OUT/cuda_variants.md

``--prepare`` emits ``diagrams/tensornet.diag`` and ``diagrams/products.diag`` (the Python module,
its embedded kernels, forward and derivatives) once per variant, each a setting of the generator's
rules in ``compiler.targets.cuda.kernels`` (``VARIANTS``): ``chosen`` (the rules as they are: 4
elements a thread for rows of at most 6 staged words, 2 up to 18, twice that, up to 4, when the
kernel sums into rows; the GEMM tile of ``MIX_SHAPES``' first fitting shape), 2 or 4 elements a
float32 thread (halved where a block would not fit 48 KiB of shared memory: each cell names the
elements a block takes), ``direct`` (``DIRECT_ROW_WORDS`` unbounded: a thread's consecutive
elements read and written as runs from registers, no shared memory), and the GEMM with other
register tiles (output channels x batch rows a thread), float32 launch bounds of 3 blocks an SM
(more registers) and 8 channels a step. ``--run`` launches each variant's float32
kernel of the diagrams in ``TIMED`` through NVRTC (``cupy.RawModule``) at N x C = 32768 x 128 (a
diagram without channels: N*C rows), checks it against the module's ``kernels=False`` (relative
1e-5) first, then times it (gpu_bench's device_timer: median of 20 CUDA-event timings) against the
bandwidth bound (bytes read and written over ``Tensor.copy_``'s bandwidth, measured in the same
process); ``torch.linalg.cross`` is timed beside the cross product. Channel mixing (mix_skew, a
weight shared by the batch) is timed first, and kept at once in OUT/cuda_variants_mixing.json:
per GEMM variant, float32 and float64, against the module's ``kernels=False`` code (cuBLAS through
torch.matmul, what ``MIXING = "blas"`` runs) and one ``torch.matmul`` on a channels-last copy.
Last, ``torch.matmul`` of two 8192 x 8192 float32 matrices with TF32 off gives the GEMM
throughput, and with it channel mixing's compute bound: 2 N C D 9 flops (mix_skew) over that
throughput.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
FILES = ("tensornet", "products")
#: (file stem, function) timed per variant: forward kernels and the derivatives that sum over a channel axis
TIMED = (("products", "cross"), ("tensornet", "vector_to_skew"), ("tensornet", "edge_tensor"),
         ("tensornet", "matmul_o3"), ("tensornet", "decompose"), ("tensornet", "skew_to_vector"),
         ("tensornet", "edge_tensor_vjp"), ("products", "cross_vjp"))
#: label: (settings of compiler.targets.cuda.kernels, the files emitted). Each variant costs one
#: NVRTC compile of each of its modules on the GPU (several seconds)
VARIANTS = {
    "chosen": ({}, FILES),
    "2 a thread": ({"_per_thread_f32": lambda words, sums=False: 2}, FILES),
    "4 a thread": ({"_per_thread_f32": lambda words, sums=False: 4}, FILES),
    "direct": ({"DIRECT_ROW_WORDS": 1 << 20}, FILES),
    "GEMM 4x1": ({"MIX_SHAPES": ((4, 1),)}, ("tensornet",)),
    "GEMM 2x2": ({"MIX_SHAPES": ((2, 2),)}, ("tensornet",)),
    "GEMM 3 blocks": ({"MIX_MIN_BLOCKS": {"f32": 3, "f64": 2}}, ("tensornet",)),  # up to 168 registers
    "GEMM chunk 8": ({"MIX_CHUNKS": (8, 4, 2, 1)}, ("tensornet",)),
}
#: the variants of the elementwise table and of the channel-mixing table
ELEMENTWISE = ("chosen", "2 a thread", "4 a thread", "direct")
GEMMS = ("chosen", "GEMM 4x1", "GEMM 2x2", "GEMM 3 blocks", "GEMM chunk 8")


def prepare(folder: Path) -> None:
    sys.path.insert(0, str(ROOT))
    import compiler
    from compiler.targets.cuda import kernels

    manifest = {"diagc": compiler.__version__, "variants": {}}
    for label, (settings, files) in VARIANTS.items():
        before = {k: getattr(kernels, k) for k in settings}
        try:
            for k, v in settings.items():
                setattr(kernels, k, v)
            sub = folder / label.replace(" ", "_")
            sub.mkdir(parents=True, exist_ok=True)
            for stem in files:
                path = ROOT / "diagrams" / f"{stem}.diag"
                (sub / f"{stem}.py").write_text(compiler.compile_source(path.read_text(), str(path)))
        finally:
            for k, v in before.items():
                setattr(kernels, k, v)
        manifest["variants"][label] = {"folder": sub.name, "files": list(files)}
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    print(f"wrote {folder}: {', '.join(v['folder'] for v in manifest['variants'].values())}")


def _launcher(m, cfg, args, torch, dtype="float32"):
    """A no-argument call of cfg's ``dtype`` kernel on ``args`` (every input batched but a mixing
    kernel's weights, which are shared by the batch) into fresh outputs."""
    fn = m._cuda_function(cfg["symbols"][dtype], m._device_index(m._BACKENDS["torch"], args[0].device))
    cp = m._CUDA["cupy"]
    rows = args[0].shape[0]
    mixing = cfg["kind"] == "mixing"
    sizes = {}
    for (_, chans, dims), x in zip(cfg["inputs"], args):
        lead = 0 if mixing and len(chans) == 2 else 1  # a shared weight has no batch axis
        sizes.update({c: x.shape[lead + k] for k, c in enumerate(chans)})
    outs = [torch.zeros((rows,) + tuple(sizes[c] for c in chans) + tuple(dims), device=args[0].device,
                        dtype=args[0].dtype) for _, chans, dims in cfg["outputs"]]
    chans = [sizes[c] for c in cfg["channels"]]
    flags = [0 if mixing and len(ch) == 2 else 1 for _, ch, _ in cfg["inputs"]]
    if mixing:
        grid = ((rows + cfg["rows"] - 1) // cfg["rows"], (chans[1] + cfg["cols"] - 1) // cfg["cols"], 1)
        tail = [rows] + chans
    else:
        n = rows * math.prod(chans)
        grid = ((n + cfg["per_block"][dtype] - 1) // cfg["per_block"][dtype], 1, 1)
        tail = [n] + chans
    params = tuple([v for x, f in zip(args, flags) for v in (np.uint64(x.data_ptr()), np.int32(f))]
                   + [np.uint64(o.data_ptr()) for o in outs] + [np.int64(v) for v in tail])
    summed = [outs[k] for k in cfg.get("summed", ())]
    stream = cp.cuda.ExternalStream(m._torch_stream(m._BACKENDS["torch"], args[0].device), fn_device(args[0]))
    shared = cfg["shared_words"][dtype] * args[0].element_size()

    def launch():
        for o in summed:
            o.zero_()
        with stream:
            fn(grid, (cfg["block"], 1, 1), params, shared_mem=shared)
        return tuple(outs)
    return launch


def fn_device(x) -> int:
    return x.device.index or 0


def _mixing(modules, rows, channels, device, torch, timer, rel_err):
    """mix_skew (B[n,d] = Σ_c W[c,d] A[n,c], 3x3 blocks, W shared by the batch) per GEMM variant
    and by torch, float32 and float64: rows of {"dtype", "route", "ms" or "error", "err"}."""
    out = []
    for dtype, tol in ((torch.float32, 1e-5), (torch.float64, 1e-12)):
        g = torch.Generator(device=device)
        g.manual_seed(7)
        A = torch.randn(rows, channels, 3, 3, generator=g, device=device, dtype=dtype)
        A = A - A.transpose(-1, -2)
        W = torch.randn(channels, channels, generator=g, device=device, dtype=dtype) / channels ** 0.5
        name = str(dtype)[6:]
        m0 = modules["chosen"]
        want = m0.mix_skew(A.double(), W.double(), kernels=False)
        calls = {f"kernel {label}": (lambda m=modules[label]: _launcher(m, m._mix_skew_KERNEL, [A, W], torch, name))
                 for label in GEMMS if label in modules}
        calls["torch (kernels=False: cuBLAS)"] = lambda: (lambda: m0.mix_skew(A, W, kernels=False))
        calls["torch.matmul, channels last"] = lambda: (
            lambda: (W.t() @ A.reshape(rows, channels, 9).transpose(0, 1).reshape(channels, -1))
            .reshape(channels, rows, 9).transpose(0, 1).reshape(rows, channels, 3, 3))
        for route, make in calls.items():
            row = {"dtype": name, "route": route}
            out.append(row)
            try:
                call = make()
                got = call()
                if device.type == "cuda":
                    torch.cuda.synchronize()
                row["err"] = rel_err(got, want)
                if not row["err"] <= tol:
                    raise AssertionError(f"relative error {row['err']:.1e}")
                row["ms"] = timer.median(call) * 1e3
            except Exception as exc:  # noqa: BLE001 - reported, the others go on
                row["error"] = f"{type(exc).__name__}: {exc}"
            print(json.dumps(row), flush=True)
        del A, W
    return out


def run(folder: Path, out: Path, rows: int, channels: int, device_name: str = "cuda", prepare_module=None) -> int:
    """``prepare_module`` (tests and smoke runs only): called with each loaded module first."""
    import torch

    sys.path.insert(0, str(HERE))
    from gpu_bench import _load_module, copy_bandwidth, device_timer, rel_err

    device = torch.device(device_name)
    timer = device_timer(torch, device)
    bandwidth = copy_bandwidth(torch, device, timer)
    manifest = json.loads((folder / "manifest.json").read_text())
    table, failed = [], False
    if any(not isinstance(entry, dict) for entry in manifest["variants"].values()):
        raise SystemExit(f"{folder} was prepared by an older cuda_variants.py: remove it and run --prepare again")
    loaded = {}
    for label, entry in manifest["variants"].items():  # NVRTC compiles each at its first launch
        loaded[label] = {stem: _load_module(folder / entry["folder"] / f"{stem}.py") for stem in entry["files"]}
        for m in loaded[label].values():
            (prepare_module or (lambda m: None))(m)
    out.mkdir(parents=True, exist_ok=True)
    # channel mixing first (the open question: the generated GEMM against cuBLAS), kept at once
    mixing = _mixing({label: ms["tensornet"] for label, ms in loaded.items() if "tensornet" in ms},
                     rows, channels, device, torch, timer, rel_err)
    (out / "cuda_variants_mixing.json").write_text(json.dumps(mixing, indent=1) + "\n")
    failed |= any("error" in r for r in mixing)
    elementwise = [v for v in manifest["variants"] if v in ELEMENTWISE]
    for label in elementwise:
        modules = loaded[label]
        for stem, name in TIMED:
            m = modules[stem]
            cfg = getattr(m, f"_{name}_KERNEL")
            g = torch.Generator(device=device)
            g.manual_seed(5)
            batch = rows if any(ch for _, ch, _ in cfg["inputs"]) else rows * channels
            args = [torch.randn((batch,) + (channels,) * len(ch) + tuple(dims), generator=g, device=device)
                    for _, ch, dims in cfg["inputs"]]
            row = {"variant": label, "op": f"{stem}.{name}", "per_block": cfg["per_block"]["float32"]}
            table.append(row)
            try:
                launch = _launcher(m, cfg, args, torch)
                got = launch()
                if device.type == "cuda":
                    torch.cuda.synchronize()
                row["err"] = rel_err(got, getattr(m, name)(*[a.double() for a in args], kernels=False))
                if not row["err"] <= 1e-5:
                    raise AssertionError(f"relative error {row['err']:.1e}")
                nbytes = sum(a.numel() * 4 for a in args) + sum(o.numel() * 4 for o in got)
                row["bound_ms"] = nbytes / bandwidth * 1e3
                row["ms"] = timer.median(launch) * 1e3
                if name == "cross" and label == "chosen":
                    row["torch.linalg.cross ms"] = timer.median(lambda: torch.linalg.cross(*args, dim=-1)) * 1e3
            except Exception as exc:  # noqa: BLE001 - reported, the others go on
                row["error"] = f"{type(exc).__name__}: {exc}"
                failed = True
            print(json.dumps(row), flush=True)
            del args
    torch.backends.cuda.matmul.allow_tf32 = False
    side = 8192 if device.type == "cuda" else 256
    a = torch.randn(side, side, device=device)
    b = torch.randn(side, side, device=device)
    flops = 2 * side ** 3 / timer.median(lambda: a @ b)
    mixing_flops = 2 * rows * channels * channels * 9
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu (smoke test)"
    lines = [f"# Kernel variants on {name}", "",
             f"`python benchmarks/cuda_variants.py --run` (diagc {manifest['diagc']}), N x C = {rows} x {channels}, "
             f"torch {torch.__version__}, copy bandwidth {bandwidth / 1e12:.2f} TB/s (read + write), "
             "NVRTC through cupy; median of 20 CUDA-event timings, ms; every kernel checked against kernels=False "
             "first (relative 1e-5 in float32, 1e-12 in float64).", "",
             "## Elementwise kernels, float32: elements a thread, direct form", "",
             "| function | " + " | ".join(elementwise) + " | bound |",
             "|---|" + "---|" * (len(elementwise) + 1)]
    for stem, name in TIMED:
        cells = []
        for label in elementwise:
            r = next(r for r in table if r["variant"] == label and r["op"] == f"{stem}.{name}")
            cells.append(f"{r['ms']:.4f} ({r['ms'] / r['bound_ms']:.2f}x, {r['per_block']} a block)" if "ms" in r
                         else r.get("error", "-"))
        bound = next((r["bound_ms"] for r in table if r["op"] == f"{stem}.{name}" and "bound_ms" in r), math.nan)
        lines.append(f"| {stem}.{name} | " + " | ".join(cells) + f" | {bound:.4f} |")
    expert = next((r["torch.linalg.cross ms"] for r in table if "torch.linalg.cross ms" in r), None)
    if expert is not None:
        lines += ["", f"torch.linalg.cross: {expert:.4f} ms."]
    routes = list(dict.fromkeys(r["route"] for r in mixing))
    lines += ["", "## Channel mixing (mix_skew, weight shared by the batch) by route", "",
              "`kernel X`: the emitted GEMM of variant X launched directly (register tile: output channels x batch "
              "rows a thread; `chosen`: the generator's); `torch`: the module's kernels=False code (cuBLAS).", "",
              "| dtype | " + " | ".join(routes) + " |", "|---|" + "---|" * len(routes)]
    for dt in dict.fromkeys(r["dtype"] for r in mixing):
        cells = []
        for route in routes:
            r = next((r for r in mixing if r["dtype"] == dt and r["route"] == route), {})
            cells.append(f"{r['ms']:.4f}" if "ms" in r else r.get("error", "-"))
        lines.append(f"| {dt} | " + " | ".join(cells) + " |")
    lines += ["", f"float32 GEMM (torch.matmul 8192^3, TF32 off): {flops / 1e12:.1f} TFLOP/s; channel mixing "
              f"(mix_skew, {mixing_flops / 1e9:.2f} GFLOP) compute bound {mixing_flops / flops * 1e3:.3f} ms, "
              f"bandwidth bound {(2 * rows * channels * 9 * 4 + channels * channels * 4) / bandwidth * 1e3:.3f} ms."]
    (out / "cuda_variants.md").write_text("\n".join(lines) + "\n")
    (out / "cuda_variants.json").write_text(json.dumps({"rows": table, "mixing": mixing, "bandwidth": bandwidth,
                                                        "gemm_flops": flops}, indent=1) + "\n")
    print("\n".join(lines))
    return 1 if failed else 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--prepare", type=Path, metavar="DIR")
    p.add_argument("--run", type=Path, metavar="DIR")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    p.add_argument("--rows", type=int, default=32768)
    p.add_argument("--channels", type=int, default=128)
    a = p.parse_args(argv)
    if a.prepare:
        prepare(a.prepare)
    if a.run:
        return run(a.run, a.out, a.rows, a.channels)
    if not (a.prepare or a.run):
        p.error("give --prepare DIR and/or --run DIR")
    return 0


if __name__ == "__main__":
    sys.exit(main())
