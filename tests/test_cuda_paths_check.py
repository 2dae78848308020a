"""benchmarks/cuda_paths_check.py (every function of every example file on CUDA torch tensors
against the numpy module) without a GPU: its check runs with each module on the kernel path, CPU
tensors standing for CUDA tensors, the launches taken by the cupy stand-in of
tests/test_cuda_module.py (each launch's arguments, grid, block and shared memory checked against
the kernel's config, the module's array code computing what the kernel would) and, for graph
diagrams, by the fused graph kernels themselves compiled for the host (tests/test_graph_gpu.py).
So the script meets no plumbing error on the GPU and every public function's kernel path (forward,
``NAME_vjp``, autograd through the kernel ops) agrees with numpy. The kernels' own arithmetic is
tests/test_cuda_module.py's.

The check runs in a child process (this file as a script): a module's torch custom ops are
registered once per process, and other test files load the same example files."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_check(tmp: Path) -> dict:
    """The check over the example files with the stand-ins installed; what it counted."""
    import torch

    sys.path[:0] = [str(ROOT / "benchmarks"), str(ROOT / "tests")]
    import cuda_paths_check
    from test_cuda_module import StandIn, host_gpu
    from test_graph_gpu import GraphStandIn, _emulator

    stand_ins, failures = {}, []

    def install(m):
        graphs = [n for n in dir(m) if n.endswith("_GRAPH")]
        stem = Path(m.__file__[len("<diagc:"):-1]).stem
        if graphs:  # one emulator library per module (its file names are fixed)
            (tmp / stem).mkdir()
            s = GraphStandIn(m, _emulator(m, tmp / stem))
        else:
            s = StandIn(m)
        host_gpu(m, s.cupy)
        stand_ins[stem] = (s, len(m._KERNEL_SPECS), len(graphs))

    def report(line):
        if line.startswith("FAIL"):
            failures.append(line)

    files = cuda_paths_check.example_files()
    ok, fail = cuda_paths_check.check(files, torch.device("cpu"), report, prepare_module=install)
    modules = {name: {"kernels": k, "graphs": g, "launched": sorted({x[0] for x in s.launches})}
               for name, (s, k, g) in stand_ins.items()}
    return {"files": len(files), "passed": ok, "failed": fail, "failures": failures, "modules": modules}


def test_cuda_paths_check_passes_on_the_emulated_kernel_path(tmp_path):
    if shutil.which("g++") is None:
        import pytest

        pytest.skip("no g++: the graph kernels cannot be run on the host")
    run = subprocess.run([sys.executable, __file__, str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.splitlines()[-1])
    assert result["failed"] == 0 and not result["failures"], result["failures"]
    assert result["files"] == len(result["modules"]) >= 11
    assert all(m["kernels"] for m in result["modules"].values())
    # forward (kernels and kernels=False), NAME_vjp and autograd: 4 checks per function with a VJP
    assert result["passed"] >= 4 * 30
    # every module went through its kernels (forward and NAME_vjp launched), but for the one whose
    # kernels the check does not reach: e3nn_instructions' functions take irreps inputs, which the
    # check leaves out (linear's channel mixings run on cuBLAS, torch's matmul, by default; its
    # linear_cart2 runs in stages, compiler.planning.staging, whose elementwise stages are kernels)
    modules = result["modules"]
    assert {name for name, m in modules.items() if not m["launched"]} == {"e3nn_instructions"}
    assert any("_linear_cart2_pre" in s for s in modules["linear"]["launched"]), modules["linear"]["launched"]
    for name, m in modules.items():
        assert not m["launched"] or any("_vjp_" in s for s in m["launched"]), name  # a VJP kernel, graph or not
    # the graph diagrams' functions ran their fused graph kernels, forward and VJP
    graph = {s for m in modules.values() for s in m["launched"] if "_graph_kernel_" in s}
    assert {"diagc_message_graph_kernel_f64", "diagc_message_vjp_graph_kernel_f64", "diagc_embed_graph_kernel_f64",
            "diagc_tensornet_message_vjp_graph_kernel_f64"} <= graph

if __name__ == "__main__":
    print(json.dumps(run_check(Path(sys.argv[1]))))
