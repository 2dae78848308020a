"""Time the code diagc emits against the alternatives a user would pick, in one process.

    python benchmarks/codegen_bench.py                 # 10^4, 10^5, 10^6 elements (about 6 min on 2 cores,
                                                       # torch.compile included, see --fused)
    python benchmarks/codegen_bench.py --quick         # 10^4 and 10^5 only (about 2 min + the same compiles)
    python benchmarks/codegen_bench.py --out DIR       # where codegen.md / .png / .json go
                                                       # (default: benchmarks/results)
    python benchmarks/codegen_bench.py --fused all     # fused=True contenders for every diagram file
                                                       # (tensornet: diagrams/tensornet.diag only, the
                                                       # default; none: not at all)

For every diagram of every ``diagrams/*.diag`` file, at batch sizes N*C in {10^4, 10^5, 10^6}
(C = 64 channels on every channel axis, N = total / C rows; N = total for a diagram without
channels), float32 and float64, 1 and 2 threads, it times:

* ``emitted np`` / ``emitted torch``: the function diagc emits (``compiler.load``), called on numpy
  arrays and on torch CPU tensors (the same memory, via ``torch.from_numpy``); when an emitted
  function takes ``out=``, also ``np out=`` / ``torch out=`` into preallocated outputs;
* ``np fused`` / ``torch fused``: the emitted function called with ``fused=True`` (when it takes
  that argument: every output component as one unrolled formula, run eagerly on numpy and through
  ``torch.compile`` on tensors; a diagram without a fused form, such as channel mixing, is not
  timed with it, since fused=True would only run its normal path). Each
  compile costs seconds (2 s typical, 10 s at most for tensornet.diag on 2 cores, with an empty
  inductor cache), and dynamo compiles again for every dtype, for the second batch size (dynamic
  shapes) and for every thread count (8 compiles per function, about 2 minutes for tensornet.diag),
  so these contenders are timed only for the files of ``--fused`` (default ``tensornet``: the
  diagrams of ``diagrams/tensornet.diag``, also under --quick). Every compiling call is made untimed, before
  the warm-up call and again after each change of the thread count; the report gives their total.
  Dynamo compiles a code object at most ``torch._dynamo.config.recompile_limit`` (8) times and
  then silently runs it eagerly; this benchmark sets ``fail_on_recompile_limit_hit``, so that such
  a call raises and is reported (a MISMATCH, or a note) instead of being timed as if compiled;
* ``naive``: every term of every equation transcribed into one ``numpy.einsum`` with ``delta =
  eye(3)`` and the dense 3x3x3 Levi-Civita array as operands (``optimize=False``), read from the IR;
* ``optimize``: the same einsums with ``optimize=True``;
* ``expert np`` / ``expert torch``: hand-written code. For TensorNet's operations this is the
  torchmd-net formulation (``torchmdnet/models/tensornet.py`` in its [N, F, 3, 3] layout, see
  SEEDS section 2.4): ``vector_to_skewtensor`` by ``torch.stack`` of components,
  ``decompose_tensor`` by diagonal-mean and transpose, ``tensor_norm`` as ``(X**2).sum((-2,-1))``,
  ``M@Y + Y@M`` and ``2*(Y@M)`` with ``torch.matmul``, channel mixing as a bias-free linear layer
  over the permuted channel axis; the numpy column is the same formulas in numpy. For the other
  diagrams it is the obvious code (``np.cross``, ``(a*b).sum(-1)``, ``torch.linalg.cross``...).
  Every expert result is checked against the emitted result before anything is timed;
* the memory bound: the bytes the operation must read and write (its inputs and outputs at the
  dtype) divided by the copy bandwidth measured in this run, once for ``np.copyto`` into an
  existing 256 MB buffer (``copy bound``) and once for ``src.copy()`` into fresh memory
  (``oop bound``, out of place: allocation and page faults included). A bandwidth counts the bytes
  read plus the bytes written, so a copy runs exactly at its own bound. Small cases fit in the
  caches and can run below a DRAM bound (ratio < 1).

The tables give, per framework, the ratios of emitted, out= and fused to the expert and to both
bounds, per operation and as geometric means; the Goals section judges TensorNet's emitted/expert
and out=/expert (goal <= 1), torch fused/copy bound (goal: near the bound, met at <= 3.5, FUSED_GOAL:
the 3.5x the issue measured for M@Y+Y@M unrolled under torch.compile) and numpy emitted/naive.

Times are wall-clock, best of ``--repeats`` (default 5) timed loops of about 5 ms (at least one call)
after a warm-up call, with the contenders of a case alternating inside every repeat (the order
rotates), all in this one process so that the ratios are meaningful on a noisy machine. A contender
slower than 0.15 s per call gets 2 single timed calls, one slower than 1 s one call (made at 1 thread
and reused for 2), which keeps the default run near 6 minutes on a 2-core machine (21 diagrams;
measured 338-346 s, of which about 15 s were torch.compile with a warm inductor cache) and --quick
near 2 minutes. The warm-up call's results are checked against the emitted code's (relative 1e-4 in
float32, 1e-10 in float64); a contender that disagrees is reported as a MISMATCH, not timed, and the
exit status is 1. The header records the load average: on a 2-core machine shared with other work,
2-thread numbers suffer most. Nothing here belongs in the test suite.

Threads: ``torch.set_num_threads``; numpy's BLAS through threadpoolctl when it is installed, else
through OpenBLAS's own ``*_set_num_threads`` found with ctypes, else not at all (then said in the
table header: numpy's BLAS keeps its default thread count, numpy's own loops are single-threaded).

Diagrams without a hand-written implementation are still timed against the naive einsums (a note is
printed); a diagram file that does not compile is skipped with a note.

Layout: this file is the driver (the arguments, the loop over cases, sizes, dtypes and threads, the
files written); ``harness.py`` holds threads, bandwidth and timing; ``contenders.py`` the cases
(``find_cases``), every contender's call (``case_calls``), the warm-up with its checks (``warm_up``),
the naive einsums (the shared reference evaluator ``compiler.math.einsum``) and the inputs;
``report.py`` the tables and the plot. The expert formulas are ``experts.py`` (one copy, shared with
``gpu_bench.py`` and the tests).
"""

from __future__ import annotations

import argparse
import glob
import inspect
import json
import os
import sys
import time
import traceback
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from contenders import (COMPILED, CONTENDERS, EMIT_NP, Naive, as_tuple, case_calls, find_cases,  # noqa: E402
                        make_inputs, to_np, warm_up)
from experts import expert_set  # noqa: E402  (benchmarks/experts.py: the one copy, also used by gpu_bench.py and the tests)
from harness import Threads, bandwidth, compile_or_raise, machine_line, recompile, timeit  # noqa: E402
from report import plot, render, fmt_ms  # noqa: E402

try:
    import torch
except ImportError:  # pragma: no cover - torch is part of the test extras
    torch = None

TENSORNET_FILES = ("tensornet", "tensornet_so3")
FUSED_FILES = {"tensornet": ("tensornet",), "all": None, "none": ()}  # --fused: files timed with fused=True


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="batch sizes 10^4 and 10^5 only")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"), help="folder for codegen.md/.png/.json")
    ap.add_argument("--repeats", type=int, default=5, help="timed repeats per contender (best of)")
    ap.add_argument("--channels", type=int, default=64, help="size of every channel axis")
    ap.add_argument("--sizes", default="", help="comma-separated N*C sizes instead of the defaults, e.g. 1e6")
    ap.add_argument("--only", default="", help="only diagrams whose 'file:name' contains this text")
    ap.add_argument("--fused", choices=tuple(FUSED_FILES), default="tensornet",
                    help="which diagram files get the fused=True contenders (each torch.compile costs seconds)")
    args = ap.parse_args()
    fused_files = FUSED_FILES[args.fused]
    t_start = time.perf_counter()
    C = args.channels
    sizes = [10**4, 10**5] if args.quick else [10**4, 10**5, 10**6]
    if args.sizes:
        sizes = [int(float(x)) for x in args.sizes.split(",")]
    target = 0.005  # seconds per timed loop: short loops, so that one of the repeats misses the noise
    dtypes = [np.float32, np.float64]
    thread_counts = [1, 2]
    threads = Threads()
    load_start = os.getloadavg()
    bw = bandwidth()
    print("\n".join(machine_line(threads, bw)), flush=True)
    experts = {"np": expert_set(np), "torch": expert_set(torch) if torch else {}}

    notes, failures, rows = [], [], []

    def note(text):
        notes.append(text)
        print("note:", text, flush=True)

    cases, digest = find_cases(sorted(glob.glob(str(ROOT / "diagrams" / "*.diag"))), args.only, fused_files,
                               experts["np"], note)
    rng = np.random.default_rng(0)
    if fused_files != () and not any("fused" in inspect.signature(case.fn).parameters for case in cases):
        note("no emitted function takes fused=: the fused contenders are not timed")
    if torch and any(case.fused for case in cases):
        compile_or_raise()
    compiled = []  # seconds of every untimed torch fused call that compiled (or might have)
    for case in cases:
        stem, label, d, fn = case.stem, case.label, case.diagram, case.fn
        try:
            naive = Naive(d)
        except Exception as exc:
            naive = None
            note(f"{label}: no naive einsum ({type(exc).__name__}: {exc}); timed without it")
        for total in sizes:
            n, nc, args64 = make_inputs(d, total, C, rng)
            for dtype in dtypes:
                a_np = [a.astype(dtype) for a in args64]
                a_t = [torch.from_numpy(a) for a in a_np] if torch else None
                threads.set(1)
                try:
                    t = time.perf_counter()
                    ref = fn(*a_np)
                    t_ref = time.perf_counter() - t
                except Exception as exc:
                    note(f"{label}: emitted code raised {type(exc).__name__}: {exc}; diagram skipped")
                    traceback.print_exc()
                    break
                calls, outs = case_calls(case, a_np, a_t, naive, experts, C, ref)
                tol = 1e-4 if dtype == np.float32 else 1e-10
                where = f"{label} {np.dtype(dtype).name} N*C={total}"
                warm = {EMIT_NP: t_ref}
                for msg in warm_up(calls, outs, ref, warm, tol, where, note, compiled):
                    failures.append(msg)
                    print("MISMATCH:", msg, flush=True)
                nbytes = sum(a.nbytes for a in a_np) + sum(to_np(y).nbytes for y in as_tuple(ref))
                del ref
                best = None
                for nt in thread_counts:
                    threads.set(nt)
                    compiled += recompile(calls, COMPILED, f"{where} {nt}t", note)
                    best, reduced = timeit(calls, warm, args.repeats, target, best)
                    row = {"op": label, "tensornet": stem in TENSORNET_FILES, "dtype": np.dtype(dtype).name,
                           "threads": nt, "total": total, "N": n, "C": C, "NC": nc, "bytes": nbytes,
                           "copy": nbytes / (bw[0] * 1e9), "oop": nbytes / (bw[1] * 1e9),
                           "reduced": reduced}
                    row.update({k: best.get(k) for k in CONTENDERS})
                    rows.append(row)
                    print(f"{label:28s} {row['dtype']:8s} {nt}t N*C={total:<8d} " + "  ".join(
                        f"{k}={fmt_ms(row[k])}" for k in CONTENDERS if row[k] is not None)
                        + f"  copy={fmt_ms(row['copy'])} oop={fmt_ms(row['oop'])} ms"
                        + (f"  (timed calls: {', '.join(f'{k} {v}' for k, v in reduced.items())})" if reduced else ""), flush=True)
                threads.set(1)
                del calls, a_np, a_t
            else:
                continue
            break
    bw_end = bandwidth()
    elapsed = time.perf_counter() - t_start
    loads = (load_start, os.getloadavg())
    args.emitted_sha = digest.hexdigest()[:12]
    args.compiled = compiled
    if max(l[0] for l in loads) > 1.5:
        note(f"the 1-minute load average reached {max(l[0] for l in loads):.1f} on {os.cpu_count()} CPUs: other "
             f"processes were running, so the 2-thread numbers (OpenMP/OpenBLAS threads waiting for a busy "
             f"core) can be far off; 1-thread numbers suffer less")
    report = render(rows, notes, failures, threads, bw, bw_end, args, elapsed, thread_counts, loads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "codegen.md").write_text(report, encoding="utf-8")
    (out / "codegen.json").write_text(json.dumps({"bandwidth_GBps": {"copyto": bw[0], "copy": bw[1],
                                                                     "copyto_end": bw_end[0], "copy_end": bw_end[1]},
                                                  "fused_first_calls_s": compiled,
                                                  "rows": rows, "notes": notes, "failures": failures},
                                                 indent=1), encoding="utf-8")
    plot_note = plot(rows, out / "codegen.png")
    print()
    print(report)
    print(plot_note)
    print(f"wrote {out / 'codegen.md'}, {out / 'codegen.json'}" + ("" if "skipped" in plot_note else f", {out / 'codegen.png'}"))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
