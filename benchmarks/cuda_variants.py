"""How many elements a float32 thread of an emitted elementwise kernel should take, measured on a
GPU; and the float32 GEMM throughput that bounds channel mixing. Two steps, as gpu_bench.py:

    python benchmarks/cuda_variants.py --prepare DIR          # here: DIR/<variant>/*.cu, *.py, manifest.json
    python benchmarks/cuda_variants.py --run DIR --out OUT    # on the GPU (torch + cupy): OUT/cuda_variants.md

``--prepare`` emits ``diagrams/tensornet.diag`` and ``diagrams/products.diag`` (the Python module,
its embedded kernels, forward and derivatives) once per variant: float32 threads taking 2 or 4
elements (``kernels._per_thread_f32`` fixed; 2 where 4 would not fit 48 KiB of shared memory: each
cell names the elements a block takes), and ``chosen``, the generator's own choice (4 for rows
of at most 6 staged words, 2 up to 12, else 1). ``--run`` launches each variant's float32 kernel
of the diagrams in ``TIMED`` through NVRTC (``cupy.RawModule``) at N x C = 32768 x 128 (a diagram
without channels: N*C rows), checks it against the module's ``kernels=False`` (relative 1e-5)
first, then times it (gpu_bench's Timer: median of 20 CUDA-event timings) against the bandwidth
bound (bytes read and written over ``Tensor.copy_``'s bandwidth, measured in the same process);
``torch.linalg.cross`` is timed beside the cross product. Last, ``torch.matmul`` of two 8192 x 8192
float32 matrices with TF32 off gives the GEMM throughput, and with it channel mixing's compute
bound: 2 N C D 9 flops (mix_skew) over that throughput.
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
#: the generator's choice (1, 2 or 4 by row size) and the two others worth timing; each variant costs
#: one NVRTC compile of each module on the GPU (several seconds)
VARIANTS = {"chosen": None, "2 a thread": 2, "4 a thread": 4}


def prepare(folder: Path) -> None:
    sys.path.insert(0, str(ROOT))
    import compiler
    from compiler.targets.cuda import kernels

    chosen = kernels._per_thread_f32
    manifest = {"diagc": compiler.__version__, "variants": {}}
    try:
        for label, fixed in VARIANTS.items():
            kernels._per_thread_f32 = chosen if fixed is None else (  # within 48 KiB of shared memory
                lambda words, n=fixed: n if n * 128 * words * 4 <= kernels.SHARED_BYTES else 2)
            sub = folder / label.replace(" ", "_")
            sub.mkdir(parents=True, exist_ok=True)
            for stem in FILES:
                path = ROOT / "diagrams" / f"{stem}.diag"
                (sub / f"{stem}.py").write_text(compiler.compile_source(path.read_text(), str(path)))
            manifest["variants"][label] = sub.name
    finally:
        kernels._per_thread_f32 = chosen
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    print(f"wrote {folder}: {', '.join(manifest['variants'].values())}")


def _launcher(m, cfg, args, torch):
    """A no-argument call of cfg's float32 kernel on ``args`` (every input batched) into fresh outputs."""
    fn = m._cuda_function(cfg["symbols"]["float32"], m._device_index(m._BACKENDS["torch"], args[0].device))
    cp = m._CUDA["cupy"]
    rows = args[0].shape[0]
    sizes = {}
    for (_, chans, _), x in zip(cfg["inputs"], args):
        sizes.update({c: x.shape[1 + k] for k, c in enumerate(chans)})
    outs = [torch.zeros((rows,) + tuple(sizes[c] for c in chans) + tuple(dims), device=args[0].device)
            for _, chans, dims in cfg["outputs"]]
    chans = [sizes[c] for c in cfg["channels"]]
    n = rows * math.prod(chans)
    grid = ((n + cfg["per_block"]["float32"] - 1) // cfg["per_block"]["float32"], 1, 1)
    params = tuple([v for x in args for v in (np.uint64(x.data_ptr()), np.int32(1))]
                   + [np.uint64(o.data_ptr()) for o in outs] + [np.int64(v) for v in [n] + chans])
    summed = [outs[k] for k in cfg.get("summed", ())]
    stream = cp.cuda.ExternalStream(m._torch_stream(m._BACKENDS["torch"], args[0].device), fn_device(args[0]))

    def launch():
        for o in summed:
            o.zero_()
        with stream:
            fn(grid, (cfg["block"], 1, 1), params, shared_mem=cfg["shared_words"]["float32"] * 4)
        return tuple(outs)
    return launch


def fn_device(x) -> int:
    return x.device.index or 0


def run(folder: Path, out: Path, rows: int, channels: int, device_name: str = "cuda", prepare_module=None) -> int:
    """``prepare_module`` (tests and smoke runs only): called with each loaded module first."""
    import torch

    sys.path.insert(0, str(HERE))
    from gpu_bench import Timer, _load_module, _rel_err, copy_bandwidth

    device = torch.device(device_name)
    timer = Timer(torch, device)
    bandwidth = copy_bandwidth(torch, device, timer)
    manifest = json.loads((folder / "manifest.json").read_text())
    table, failed = [], False
    for label, sub in manifest["variants"].items():
        modules = {stem: _load_module(folder / sub / f"{stem}.py") for stem in FILES}
        for m in modules.values():
            (prepare_module or (lambda m: None))(m)
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
                row["err"] = _rel_err(got, getattr(m, name)(*[a.double() for a in args], kernels=False))
                if not row["err"] <= 1e-5:
                    raise AssertionError(f"relative error {row['err']:.1e}")
                nbytes = sum(a.numel() * 4 for a in args) + sum(o.numel() * 4 for o in got)
                row["bound_ms"] = nbytes / bandwidth * 1e3
                row["ms"] = timer(launch) * 1e3
                if name == "cross" and label == "chosen":
                    row["torch.linalg.cross ms"] = timer(lambda: torch.linalg.cross(*args, dim=-1)) * 1e3
            except Exception as exc:  # noqa: BLE001 - reported, the others go on
                row["error"] = f"{type(exc).__name__}: {exc}"
                failed = True
            print(json.dumps(row), flush=True)
            del args
    torch.backends.cuda.matmul.allow_tf32 = False
    side = 8192 if device.type == "cuda" else 256
    a = torch.randn(side, side, device=device)
    b = torch.randn(side, side, device=device)
    flops = 2 * side ** 3 / timer(lambda: a @ b)
    mixing_flops = 2 * rows * channels * channels * 9
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu (smoke test)"
    lines = [f"# Elements a float32 thread takes, on {name}", "",
             f"`python benchmarks/cuda_variants.py --run` (diagc {manifest['diagc']}), N x C = {rows} x {channels}, "
             f"float32, torch {torch.__version__}, copy bandwidth {bandwidth / 1e12:.2f} TB/s (read + write), "
             "NVRTC through cupy; median of 20 CUDA-event timings; every kernel checked against kernels=False "
             "first (relative 1e-5).", "",
             "| function | " + " | ".join(manifest["variants"]) + " | bound |",
             "|---|" + "---|" * (len(manifest["variants"]) + 1)]
    for stem, name in TIMED:
        cells = []
        for label in manifest["variants"]:
            r = next(r for r in table if r["variant"] == label and r["op"] == f"{stem}.{name}")
            cells.append(f"{r['ms']:.4f} ({r['ms'] / r['bound_ms']:.2f}x, {r['per_block']} a block)" if "ms" in r
                         else r.get("error", "-"))
        bound = next((r["bound_ms"] for r in table if r["op"] == f"{stem}.{name}" and "bound_ms" in r), math.nan)
        lines.append(f"| {stem}.{name} | " + " | ".join(cells) + f" | {bound:.4f} |")
    expert = next((r["torch.linalg.cross ms"] for r in table if "torch.linalg.cross ms" in r), None)
    if expert is not None:
        lines += ["", f"torch.linalg.cross: {expert:.4f} ms."]
    lines += ["", f"float32 GEMM (torch.matmul 8192^3, TF32 off): {flops / 1e12:.1f} TFLOP/s; channel mixing "
              f"(mix_skew, {mixing_flops / 1e9:.2f} GFLOP) compute bound {mixing_flops / flops * 1e3:.3f} ms, "
              f"bandwidth bound {(2 * rows * channels * 9 * 4 + channels * channels * 4) / bandwidth * 1e3:.3f} ms."]
    out.mkdir(parents=True, exist_ok=True)
    (out / "cuda_variants.md").write_text("\n".join(lines) + "\n")
    (out / "cuda_variants.json").write_text(json.dumps({"rows": table, "bandwidth": bandwidth, "gemm_flops": flops},
                                                       indent=1) + "\n")
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
