"""First-call compile time of the fused paths, cold and with torch's on-disk cache (a benchmark).

    python benchmarks/compile_cache_bench.py                    # every tensornet op with a fused form
    python benchmarks/compile_cache_bench.py --ops matmul_o3 --out DIR

``fused=True`` on torch tensors runs each function's component formulas through ``torch.compile``,
once per function and process. What a later process can reuse is inductor's on-disk cache (the FX
graph cache, on by default in torch 2.x; ``TORCHINDUCTOR_CACHE_DIR`` says where, default
``/tmp/torchinductor_<user>``). This runs two fresh processes in a row on one new, empty cache
folder and times, in each, the first call of ``NAME``, ``NAME_vjp`` and ``NAME_vjp_vjp`` with
``fused=True`` (torch CPU float32, N*C = 2^12, C = 64): the first process compiles from nothing
("cold"), the second finds the first one's cache ("warm"). A third process ("artifacts") starts on a
second new, empty cache folder and first loads the bytes the cold process saved with
``torch.compiler.save_cache_artifacts()`` (``load_cache_artifacts``): what a training job can ship to
fresh machines or containers, where no on-disk cache survives. Writes ``compile_cache.md`` / ``.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SUFFIXES = ("", "_vjp", "_vjp_vjp")


def child(ops_names, save=None, load=None) -> dict:
    """In this process: the first-call time of each fused function (seconds); ``load``: a file of
    cache artifacts loaded first (its seconds under "load"); ``save``: where to write this
    process's artifacts after the calls."""
    import numpy as np
    import torch

    times = {}
    if load:
        t = time.perf_counter()
        torch.compiler.load_cache_artifacts(Path(load).read_bytes())
        times["load"] = time.perf_counter() - t

    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import compiler
    from contenders import make_inputs
    from compiler.frontend.lower import lower_source

    path = ROOT / "diagrams" / "tensornet.diag"
    ops = compiler.load(path)
    rng = np.random.default_rng(0)
    for d in lower_source(path.read_text(), str(path)).diagrams:
        if d.name not in ops_names:
            continue
        _, _, arrays = make_inputs(d, 2 ** 12, 64, rng)
        xs = [torch.from_numpy(a.astype(np.float32)) for a in arrays]
        y = getattr(ops, d.name)(*xs)
        cots = [torch.randn(t.shape) for t in (y if isinstance(y, tuple) else (y,))]
        cots2 = [torch.randn(x.shape) for x in xs]
        args = {"": xs, "_vjp": xs + cots, "_vjp_vjp": xs + cots + cots2}
        times[d.name] = {}
        for s in SUFFIXES:
            f = getattr(ops, d.name + s)
            t = time.perf_counter()
            f(*args[s], fused=True)
            times[d.name][s] = time.perf_counter() - t
    if save:
        artifacts = torch.compiler.save_cache_artifacts()
        if artifacts is None:
            raise SystemExit("torch.compiler.save_cache_artifacts() returned nothing")
        Path(save).write_bytes(artifacts[0])
    return times


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ops", nargs="*", default=["vector_to_skew", "vector_to_sym", "decompose", "tensor_norm",
                                                 "matmul_o3", "edge_tensor", "skew_to_vector"])
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--save", help=argparse.SUPPRESS)
    p.add_argument("--load", help=argparse.SUPPRESS)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args.ops, args.save, args.load)))
        return 0
    runs = {}
    with tempfile.TemporaryDirectory(prefix="inductor-cache-") as cache, \
            tempfile.TemporaryDirectory(prefix="inductor-cache-") as fresh:
        artifacts = os.path.join(fresh, "artifacts.bin")
        for label, folder, extra in (("cold", cache, ["--save", artifacts]), ("warm", cache, []),
                                     ("artifacts", os.path.join(fresh, "cache"), ["--load", artifacts])):
            env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=folder)
            r = subprocess.run([sys.executable, __file__, "--child", "--ops", *args.ops, *extra], env=env,
                               capture_output=True, text=True, check=True)
            runs[label] = json.loads(r.stdout.strip().splitlines()[-1])
            print(label, runs[label], flush=True)
        size = os.path.getsize(artifacts)
    labels = ("cold", "warm", "artifacts")
    import torch

    lines = ["# First call of the fused functions: cold, and with inductor's on-disk cache", "",
             f"torch {torch.__version__} CPU, float32, N*C = 2^12, C = 64; fresh processes: cold and warm on "
             "one new TORCHINDUCTOR_CACHE_DIR (warm reuses cold's cache), artifacts on another new, empty one "
             f"after loading the {size / 1e6:.1f} MB that cold saved with torch.compiler.save_cache_artifacts "
             f"({runs['artifacts']['load']:.1f} s to load, not in the columns); seconds, one run each, on a "
             "shared 2-core machine.", "",
             "| operation | " + " | ".join(f"NAME{s} {label}" for s in SUFFIXES for label in labels) + " |",
             "|---|" + "---|" * (len(SUFFIXES) * len(labels))]
    for op in args.ops:
        cells = [f"{runs[label][op][s]:.1f}" for s in SUFFIXES for label in labels]
        lines.append(f"| {op} | " + " | ".join(cells) + " |")
    total = {label: sum(sum(t.values()) for k, t in runs[label].items() if k != "load") for label in labels}
    lines += ["", f"Total: {total['cold']:.1f} s cold, {total['warm']:.1f} s warm, {total['artifacts']:.1f} s "
              f"from the artifacts (+ {runs['artifacts']['load']:.1f} s loading them)."]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "compile_cache.json").write_text(json.dumps(runs, indent=1))
    (out / "compile_cache.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
