"""Two builds of TensorNet's diagrams, one process: the steps a planner change touches, forward +
backward (torch autograd through the generated VJPs), CPU float32, the two builds alternating,
best of R. A build is a folder holding ``layer.py`` and ``graph.py``, the modules that
``python -m compiler compile`` wrote from diagrams/tensornet_layer.diag and
examples/tensornet_graph.diag at some commit (emitted modules import nothing from diagc, so two
commits' modules load side by side).

    python benchmarks/tensornet_steps_ab.py BEFORE_DIR AFTER_DIR [N] [E] [R] [THREADS]
        # default 2000 atoms, 58416 edges (tensornet_bench.py's 2,000-atom system), 5 repeats, 1 thread

Steps: ``embed`` (the embedding's graph diagram, random edge lists), ``project`` (decompose of
s X, each part mixed over channels: an interaction's projection, weights requiring gradients).
Both builds' results and gradients are checked against each other first. (benchmarks/module_ab.py
times every function of diagrams/ the same way, called directly; this times the two steps as the
model runs them, the graph diagram included, through torch autograd.)
"""
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from module_ab import load_module  # noqa: E402


def main(argv):
    before, after = argv[0], argv[1]
    n, E, R, threads = (int(a) for a in (argv[2:6] + ["2000", "58416", "5", "1"][len(argv[2:6]):]))
    torch.set_num_threads(threads)
    C = 64
    builds = {tag: (load_module(Path(folder) / "layer.py", tag), load_module(Path(folder) / "graph.py", tag))
              for tag, folder in (("before", before), ("after", after))}
    torch.manual_seed(0)
    dst, src = torch.sort(torch.randint(0, n, (E,)))[0], torch.randint(0, n, (E,))
    zd, zs = (torch.randn(n, C, requires_grad=True) for _ in range(2))
    proj = torch.randn(E, 3 * C, requires_grad=True)
    u = torch.nn.functional.normalize(torch.randn(E, 3), dim=-1).requires_grad_()
    y = torch.randn(E, 5, requires_grad=True)
    X = torch.randn(n, C, 3, 3, requires_grad=True)
    s = torch.rand(n, C, requires_grad=True)
    W = [torch.randn(C, C, requires_grad=True) / 8 for _ in range(3)]
    W = [w.detach().requires_grad_() for w in W]

    def embed(build):
        w0, w1, w2 = proj.view(-1, 3, C).unbind(1)  # views of one (E, 3C) array, as the model's
        return build[1].embed(zd, zs, w0, w1, w2, u, y, src, dst), (zd, zs, proj, u, y)

    def project(build):
        return build[0].project(X, s, *W), (X, s, *W)

    steps = {"embed": embed, "project": project}
    cots = {}
    for name, step in steps.items():
        results = {}
        for key, build in builds.items():
            outs, leaves = step(build)
            cots.setdefault(name, [torch.randn_like(o) for o in outs])
            results[key] = list(outs) + list(torch.autograd.grad(outs, leaves, cots[name]))
        for a, b in zip(results["before"], results["after"]):
            scale = float(a.detach().abs().max()) or 1.0
            assert float((a - b).detach().abs().max()) <= 1e-4 * scale, name
    best = {}
    for _ in range(R):
        for name, step in steps.items():
            for key, build in builds.items():
                t = time.perf_counter()
                outs, leaves = step(build)
                torch.autograd.grad(outs, leaves, cots[name])
                best[name, key] = min(best.get((name, key), 1e9), time.perf_counter() - t)
    print(f"| step, forward + backward ({n} atoms, {E} edges, {threads} thread) | before (ms) | after (ms) | after / before |")
    print("|---|---:|---:|---:|")
    for name in steps:
        b, a = best[name, "before"], best[name, "after"]
        print(f"| {name} | {b * 1e3:.1f} | {a * 1e3:.1f} | {a / b:.2f} |")


if __name__ == "__main__":
    main(sys.argv[1:])
