"""benchmarks/gpu_models.py without a GPU: the fused graph kernel's binding (which tensor goes to
which parameter, sizes, grid, zeroed outputs) through a stand-in for cupy that computes each launch
from host memory, and torchmd-net's reference loaded from the carried copy of its two files."""

from __future__ import annotations

import ctypes
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import gpu_models  # noqa: E402
from graph_bench import hand_painn, hand_tensornet  # noqa: E402

import compiler  # noqa: E402

GNN = ROOT / "examples" / "gnn.diag"
#: per message: the hand-written step, its array inputs in diagram order, the outputs
MESSAGES = {
    "tensornet_message": (hand_tensornet, ("Y", "f"), ("M",)),
    "painn_message": (hand_painn, ("xs", "xv", "xr", "v", "ws", "wv", "wr", "u"), ("ds", "dv")),
}


class StandIn:
    """cupy's RawModule / ExternalStream as the benchmark uses them. A launch reads its arguments
    (pointers into host memory, sizes) as the kernel's signature names them, computes the message
    with the hand-written torch step on arrays viewed at those addresses, and adds it into the
    output arrays (the kernel's atomicAdd). ``shapes`` gives each named array's shape."""

    __version__ = "stand-in"

    def __init__(self, kernels_params, shapes):
        self.params, self.shapes, self.launches = kernels_params, shapes, []
        stand_in = self

        class RawModule:
            def __init__(self, code, options=()):
                assert "diagc_tensornet_message_graph_kernel_f32" in code

            def get_function(self, symbol):
                return lambda grid, block, args, shared_mem=0: stand_in.launch(symbol, grid, block, args)

        class cuda:  # noqa: N801 - cupy.cuda
            class ExternalStream:
                def __init__(self, handle):
                    assert handle == 0

                def __enter__(self):
                    return self

                def __exit__(self, *exc):
                    return False

        self.RawModule, self.cuda = RawModule, cuda

    def view(self, address, shape, dtype):
        ctype = {np.float32: ctypes.c_float, np.float64: ctypes.c_double, np.int64: ctypes.c_int64}[dtype]
        n = math.prod(shape)
        return torch.from_numpy(np.ctypeslib.as_array((ctype * n).from_address(int(address))).reshape(shape))

    def launch(self, symbol, grid, block, args):
        name, suffix = symbol[len("diagc_"):].split("_graph_kernel_")
        dtype = {"f32": np.float32, "f64": np.float64}[suffix]
        block_size, params = self.params[name]
        assert len(args) == len(params) and block == (block_size, 1, 1)
        sizes = {p: int(a) for p, a in zip(params, args) if p in ("edges", "ch0")}
        from compiler.targets.cuda.graph import EDGES_PER_THREAD

        threads = -(-sizes["edges"] // EDGES_PER_THREAD) * sizes["ch0"]  # a thread per run of edges and channel
        assert grid[0] * block_size >= threads > (grid[0] - 1) * block_size
        arrays = {}
        for p, a in zip(params, args):
            if p.startswith("list_"):
                arrays[p[5:]] = self.view(a, (sizes["edges"],), np.int64)
            elif p.startswith(("in_", "out_")):
                key = p.split("_", 1)[1]
                key = key if key in self.shapes else key.rsplit("_", 1)[0]
                arrays[key] = self.view(a, self.shapes[key], dtype)
        hand, names, outs = MESSAGES[name]
        result = hand(*(arrays[n] for n in names), arrays["src"], arrays["dst"])
        for o, r in zip(outs, result if isinstance(result, tuple) else (result,)):
            arrays[o] += r  # the kernel adds into its outputs
        self.launches.append(symbol)


@pytest.mark.parametrize("name", sorted(MESSAGES))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_graph_kernel_binding_through_a_stand_in(name, dtype):
    """Each tensor reaches the parameter the signature names, the sizes and grid cover every
    (edge, channel), the outputs are zeroed before each launch (two calls give one result), and the
    result equals the diagc module's."""
    n, E, C = 7, 23, 3
    g = torch.Generator().manual_seed(1)
    src, dst = torch.randint(0, n, (E,), generator=g), torch.randint(0, n, (E,), generator=g)
    shapes = {"Y": (n, C, 3, 3), "f": (E, C), "M": (n, C, 3, 3), "xs": (n, C), "xv": (n, C), "xr": (n, C),
              "v": (n, C, 3), "ws": (E, C), "wv": (E, C), "wr": (E, C), "u": (E, 3), "ds": (n, C), "dv": (n, C, 3)}
    hand, names, outs = MESSAGES[name]
    inputs = {k: torch.randn(shapes[k], generator=g, dtype=dtype) for k in names}
    cu = compiler.compile_source(GNN.read_text(), str(GNN), "cuda")
    params = gpu_models.GraphKernels(cu, torch, Path("unused"), cupy=StandIn({}, {})).params
    stand_in = StandIn(params, shapes)
    kernels = gpu_models.GraphKernels(cu, torch, Path("unused"), cupy=stand_in)
    kernels.stream = lambda: 0
    assert kernels.how == "NVRTC (cupy stand-in)"
    launch = kernels.bind(name, inputs, {"src": src, "dst": dst}, {o: shapes[o] for o in outs}, n, E, C)
    first = [t.clone() for t in launch()]
    second = launch()
    want = getattr(compiler.load(GNN), name)(*(inputs[k] for k in names), src, dst)
    want = want if isinstance(want, tuple) else (want,)
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    for a, b, w in zip(first, second, want):
        assert a.dtype == dtype and tuple(a.shape) == tuple(w.shape)
        assert torch.equal(a, b)
        assert float((a - w).abs().max()) <= tol * max(1.0, float(w.abs().max()))
    suffix = "f64" if dtype == torch.float64 else "f32"
    assert stand_in.launches == [f"diagc_{name}_graph_kernel_{suffix}"] * 2


def test_torchmdnet_reference_loads_from_the_carried_copy(tmp_path):
    """Where torchmd-net is not importable (the GPU machine), torchmdnet_ref reads the two files
    copy_for_carry wrote, and the model is the installed package's (same parameters, same output)."""
    torchmdnet_ref = pytest.importorskip("torchmdnet_ref")
    pytest.importorskip("torchmdnet")
    dest = torchmdnet_ref.copy_for_carry(tmp_path / "torchmdnet")
    assert sorted(p.name for p in (dest / "models").iterdir()) == ["tensornet.py", "utils.py"]
    code = f"""
import sys, torch
sys.path.insert(0, {str(ROOT / 'benchmarks')!r})
import torchmdnet_ref
want = torchmdnet_ref.load_tensornet_module()
torchmdnet_ref._CACHE.clear()
sys.modules["torchmdnet"] = None  # not importable: find_spec answers None
torchmdnet_ref.CARRIED = __import__("pathlib").Path({str(dest)!r})
assert torchmdnet_ref._package_dir() == torchmdnet_ref.CARRIED
out = []
for module in (want, torchmdnet_ref.load_tensornet_module()):
    torch.manual_seed(0)
    m = module.TensorNet(hidden_channels=8, num_layers=1, num_rbf=4, static_shapes=False, dtype=torch.float64).to(torch.float64)
    z, pos = torch.tensor([1, 6, 8, 1]), torch.randn(4, 3, dtype=torch.float64)
    out.append(m(z, pos, torch.zeros(4, dtype=torch.long))[0])
assert torch.equal(out[0], out[1]), (out[0] - out[1]).abs().max()
print("ok")
"""
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr[-2000:]
