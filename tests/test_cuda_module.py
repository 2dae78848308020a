"""The emitted Python module's CUDA kernel path, without a GPU.

A stand-in for cupy (``StandIn``) takes the place of NVRTC and the device: ``RawModule`` records
what it is asked to compile, and a launch of kernel ``diagc_NAME_kernel_f32/f64`` reads its
arguments exactly as the CUDA kernel's signature says (input pointers and batch flags, output
pointers, element count and channel sizes) from host memory (torch CPU tensors stand for CUDA
tensors), runs the module's array-library code for NAME on what it read, and writes the results
through the output pointers. So everything between a public function and the kernel is tested for
real: the dispatch decision, the argument checks, the pointers, flags and sizes handed over, the
output shapes, the compile cache, the torch custom ops with the generated VJPs as their backward
(gradcheck and gradgradcheck through the kernel path), and torch.compile(fullgraph=True) over them.

With an emulator the launches run the kernels themselves: the embedded CUDA source compiled by g++
(C++20) after a prelude that maps CUDA's few constructs to the host (a block's threads are
std::threads meeting at a std::barrier for each __syncthreads, a warp's 32 threads at another for
each shuffle, atomicAdd a std::atomic_ref, shared memory a buffer filled with NaN bytes before each
block). Every kernel of every example file (forward, VJP, second order) is
compared with the array code that way, at sizes with partial tiles, several GEMM chunks, output
channels past one warp, broadcast and misaligned inputs, and gradcheck runs through them. Timing
and what only a GPU shows (coalescing, occupancy, NVRTC) are benchmarks/gpu_bench.py's.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

import compiler
from compiler.api import checked_program
from compiler.ir.grad import with_derivatives
from compiler.targets.cuda.kernels import CudaProgram, lower_diagram
from compiler.targets.cuda.printer import print_program

ROOT = Path(__file__).resolve().parent.parent
_MODULES = {}


#: sources beside diagrams/ (a stem here is loaded from its text): channel mixing in every form the
#: GEMM kernel takes (a weight stored [d, c] and one [c, d], two outputs, a polynomial per channel)
SOURCES = {
    "mixing_forms": """group O3
diagram mix_forms(X: vec[c], s: scalar[c], V: weight[d,c], W: weight[c,d]) -> (Y: vec[d], n: scalar[d]) {
    Y[d,i] = V[d,c] X[c,i] + W[c,d] s[c] X[c,i]
    n[d] = W[c,d] X[c,k] X[c,k]
}
""",
}


def _module(stem: str):
    """One module per file for the whole session: its torch custom ops are registered once per
    process, bound to the module that registered them."""
    if stem not in _MODULES:
        base, _, variant = stem.partition("+")
        if variant == "unstaged":  # every diagram as one call (staging=False): a staged diagram's own kernel
            _MODULES[stem] = (compiler.load_source(SOURCES[base], f"diagc_test_{base}_unstaged", staging=False)
                              if base in SOURCES else compiler.load(ROOT / "diagrams" / f"{base}.diag", staging=False))
        elif variant:  # "direct": every elementwise kernel that can, direct (kernels.DIRECT_ROW_WORDS);
            from compiler.targets.cuda import kernels  # "tile32": weight cotangents in tiles of 32

            constant, value = {"direct": ("DIRECT_ROW_WORDS", 1 << 20), "tile32": ("GRAD_TILES", (32,))}[variant]
            before = getattr(kernels, constant)
            setattr(kernels, constant, value)
            try:
                path = ROOT / "diagrams" / f"{base}.diag"
                _MODULES[stem] = compiler.load_source(path.read_text(), f"diagc_test_{base}_{variant}")
            finally:
                setattr(kernels, constant, before)
        else:
            _MODULES[stem] = (compiler.load_source(SOURCES[stem], f"diagc_test_{stem}") if stem in SOURCES
                              else compiler.load(ROOT / "diagrams" / f"{stem}.diag"))
    return _MODULES[stem]


_EMULATOR_PRELUDE = r"""
// CUDA as far as the emitted kernels use it, on the host: a block's threads are std::threads, a
// __syncthreads() is a std::barrier, shared memory one buffer (blocks run one after another).
#include <barrier>
#include <cstring>
#include <thread>
#include <vector>
#define __CUDACC_RTC__ 1
struct diagc_dim3 { unsigned x, y, z; };
static thread_local diagc_dim3 threadIdx;
static diagc_dim3 blockIdx;
static diagc_dim3 gridDim;
static std::barrier<>* diagc_barrier;
#define __syncthreads() diagc_barrier->arrive_and_wait()
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__
#define __align__(n) __attribute__((aligned(n)))
struct alignas(16) uint4 { unsigned x, y, z, w; };
alignas(16) unsigned char diagc_shared[1 << 17];
// a warp's shuffles: each lane posts its value, the warp's 32 threads meet, read, meet again
#include <atomic>
static std::barrier<>* diagc_warp_barrier[32];
static unsigned long long diagc_lanes[1024];
template <typename T> T diagc_shuffle(T v, unsigned from) {
    const unsigned t = threadIdx.x;
    std::memcpy(&diagc_lanes[t], &v, sizeof(T));
    diagc_warp_barrier[t >> 5]->arrive_and_wait();
    T r;
    std::memcpy(&r, &diagc_lanes[(t & ~31u) + from], sizeof(T));
    diagc_warp_barrier[t >> 5]->arrive_and_wait();
    return r;
}
template <typename T> T __shfl_down_sync(unsigned, T v, unsigned d) {
    const unsigned lane = threadIdx.x & 31u;
    return diagc_shuffle(v, lane + d < 32u ? lane + d : lane);
}
template <typename T> T __shfl_up_sync(unsigned, T v, unsigned d) {
    const unsigned lane = threadIdx.x & 31u;
    return diagc_shuffle(v, lane >= d ? lane - d : lane);
}
template <typename T> T atomicAdd(T* p, T v) { return std::atomic_ref<T>(*p).fetch_add(v); }
"""


def _device_specs(m):
    """The specs of the functions with one GPU kernel (a derivative of channel mixing has several,
    its cfg's ``launches``, or host loops only: no kernel symbols)."""
    return [s for s in m._KERNEL_SPECS if "symbols" in s[5]]


def _kernels(m):
    """Every GPU kernel of module ``m``: (the function's cfg, the kernel's entry): a function with
    one kernel is its own entry; a derivative of channel mixing has one per launch."""
    out = [(s[5], s[5]) for s in _device_specs(m)]
    out += [(s[5], launch) for s in m._KERNEL_SPECS if s[5]["kind"] == "mixing_vjp" for launch in s[5].get("launches", ())]
    return out


def _emulator_source(m) -> str:
    """The module's embedded CUDA source after the prelude, and per kernel symbol ``run_SYMBOL``:
    every block of the grid in turn, shared memory filled with NaN bytes first (a read of anything
    not written shows), ``block`` threads calling the kernel with the launch's arguments."""
    lines = [_EMULATOR_PRELUDE, m._CUDA_SOURCE]
    for cfg, entry in _kernels(m):
        n_in = len(cfg["inputs"])
        n_out = len(cfg["outputs"]) if entry is cfg else 1
        n_tail = 1 + len(cfg["channels"]) if cfg["kind"] == "elementwise" else 3
        for dtype, ctype in (("float32", "float"), ("float64", "double")):
            symbol = entry["symbols"][dtype]
            args = [f"(const {ctype}*)p[{k}], f[{k}]" for k in range(n_in)]
            args += [f"({ctype}*)p[{n_in + j}]" for j in range(n_out)] + [f"tl[{k}]" for k in range(n_tail)]
            lines += [
                f'extern "C" void run_{symbol}(void* const* p, const int* f, const long long* tl, unsigned gx,',
                "                              unsigned gy, unsigned gz, unsigned threads) {",
                "    gridDim = {gx, gy, gz};",
                "    for (unsigned bz = 0; bz < gz; ++bz) for (unsigned by = 0; by < gy; ++by) for (unsigned bx = 0; bx < gx; ++bx) {",
                "        blockIdx = {bx, by, bz};",
                "        std::memset(diagc_shared, 0xff, sizeof diagc_shared);",
                "        std::barrier<> bar(threads);",
                "        diagc_barrier = &bar;",
                "        std::vector<std::barrier<>*> warps;",
                "        for (unsigned w = 0; w < threads / 32; ++w) warps.push_back(diagc_warp_barrier[w] = new std::barrier<>(32));",
                "        std::vector<std::thread> team;",
                "        for (unsigned t = 0; t < threads; ++t) team.emplace_back([=] {",
                "            threadIdx = {t, 0, 0};",
                f"            {symbol}({', '.join(args)});",
                "        });",
                "        for (auto& th : team) th.join();",
                "        for (auto* w : warps) delete w;",
                "    }",
                "}",
            ]
    return "\n".join(lines) + "\n"


_EMULATORS = {}


def _emulator(stem: str, tmp: Path):
    """The module's kernels compiled for the host (g++ -std=c++20), or None where that is not possible."""
    if stem not in _EMULATORS:
        cxx = shutil.which("g++")
        lib = None
        if cxx is not None:
            src, so = tmp / f"emu_{stem}.cpp", tmp / f"libemu_{stem}.so"
            src.write_text(_emulator_source(_module(stem)))
            run = subprocess.run([cxx, "-std=c++20", "-O1", "-shared", "-fPIC", "-pthread", str(src), "-o", str(so)],
                                 capture_output=True, text=True)
            assert run.returncode == 0, run.stderr[-3000:]
            lib = ctypes.CDLL(str(so))
        _EMULATORS[stem] = lib
    return _EMULATORS[stem]


class StandIn:
    """cupy as far as the kernel path uses it, with the launches run on the host (see above): by the
    module's array code, or with ``emulator``, by the kernels themselves compiled for the host."""

    def __init__(self, module, emulator=None):
        self.module = module
        self.emulator = emulator
        self.compiled = []  # (device, options) per RawModule
        self.launches = []  # (symbol, grid, block, shared_mem)
        stand_in = self

        class RawModule:
            def __init__(self, code, options=()):
                assert code == module._CUDA_SOURCE
                self.device = stand_in.device
                stand_in.compiled.append((self.device, options))

            def get_function(self, symbol):
                assert f"extern \"C\" __global__ void __launch_bounds__" in module._CUDA_SOURCE
                assert f" {symbol}(" in module._CUDA_SOURCE, symbol
                return lambda grid, block, args, shared_mem=0: stand_in.launch(symbol, grid, block, args, shared_mem)

        stand_in.device = 0

        class Device:
            def __init__(self, index):
                self.index = index

            def __enter__(self):
                self.saved, stand_in.device = stand_in.device, self.index

            def __exit__(self, *exc):
                stand_in.device = self.saved

        class ExternalStream:
            def __init__(self, handle, device):
                stand_in.stream = (handle, device)

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                return False

        self.cupy = types.SimpleNamespace(RawModule=RawModule,
                                          cuda=types.SimpleNamespace(Device=Device, ExternalStream=ExternalStream))

    def launch(self, symbol, grid, block, args, shared_mem):
        m = self.module
        cfg, entry = next((c, e) for c, e in _kernels(m) if symbol in e["symbols"].values())
        dtype = np.float32 if symbol.endswith("_f32") else np.float64
        assert symbol == entry["symbols"]["float32" if dtype == np.float32 else "float64"]
        key = "float32" if dtype == np.float32 else "float64"
        assert block == (entry["block"], 1, 1) and shared_mem == entry["shared_words"][key] * np.dtype(dtype).itemsize
        n_in, n_out = len(cfg["inputs"]), len(cfg["outputs"]) if entry is cfg else 1
        assert len(args) == 2 * n_in + n_out + (1 + len(cfg["channels"]) if cfg["kind"] == "elementwise" else 3)
        assert all(type(a) is np.uint64 for a in args[0:2 * n_in:2] + args[2 * n_in:2 * n_in + n_out])
        assert all(type(a) is np.int32 and int(a) in (0, 1) for a in args[1:2 * n_in:2])
        assert all(type(a) is np.int64 for a in args[2 * n_in + n_out:])
        tail = [int(a) for a in args[2 * n_in + n_out:]]
        sizes = dict(zip(entry["channels"], tail[1:]))
        if cfg["kind"] == "elementwise":
            per_row = int(np.prod([sizes[c] for c in cfg["channels"]])) if cfg["channels"] else 1
            rows = tail[0] // per_row
            assert grid == (-(-tail[0] // cfg["per_block"][key]), 1, 1)
        elif "tile" in entry:  # a weight's cotangent
            rows, tile = tail[0], entry["tile"]
            assert grid == (-(-tail[1] // tile), -(-tail[2] // tile), min(-(-rows // entry["span"]), 65535))
        else:
            rows = tail[0]
            assert grid == (-(-rows // entry["rows"]), -(-sizes[entry["channels"][1]] // entry["cols"]), 1)
        self.launches.append((symbol, grid, block, shared_mem))
        if self.emulator is not None:
            run = getattr(self.emulator, f"run_{symbol}")
            run.restype = None
            pointers = (ctypes.c_void_p * (n_in + n_out))(*[int(a) for a in args[0:2 * n_in:2]],
                                                         *[int(a) for a in args[2 * n_in:2 * n_in + n_out]])
            flags = (ctypes.c_int * max(n_in, 1))(*[int(a) for a in args[1:2 * n_in:2]])
            tail_array = (ctypes.c_longlong * len(tail))(*tail)
            run(pointers, flags, tail_array, ctypes.c_uint(grid[0]), ctypes.c_uint(grid[1]), ctypes.c_uint(grid[2]),
                ctypes.c_uint(block[0]))
            return

        def memory(pointer, shape):
            count = int(np.prod(shape))
            raw = (ctypes.c_char * (count * np.dtype(dtype).itemsize)).from_address(int(pointer))
            return np.frombuffer(raw, dtype=dtype).reshape(shape)

        inputs = []
        for k, (_, chans, dims) in enumerate(cfg["inputs"]):
            shape = ((rows,) if int(args[2 * k + 1]) else ()) + tuple(sizes[c] for c in chans) + tuple(dims)
            inputs.append(memory(args[2 * k], shape).copy())
        results = getattr(m, cfg["name"])(*inputs, kernels=False)
        results = results if isinstance(results, tuple) else (results,)
        written = range(len(cfg["outputs"])) if entry is cfg else (entry["output"],)
        for j, k in enumerate(written):  # (an output totalled over the batch is zeroed first: written = added)
            _, chans, dims = cfg["outputs"][k]
            shape = (() if k in cfg.get("totalled", ()) else (rows,)) + tuple(sizes[c] for c in chans) + tuple(dims)
            memory(args[2 * n_in + j], shape)[...] = np.broadcast_to(results[k], shape)


def host_gpu(m, cupy, monkeypatch=None):
    """Module ``m`` on its CUDA kernel path with CPU tensors: they count as CUDA tensors of device 0
    (stream 1234), ``cupy`` (a StandIn's) compiles and launches, the caches of compiled modules and
    functions start empty; through ``monkeypatch`` where given (undone after the test). The one
    way every test file (and cuda_variants' and cuda_paths_check's smoke runs) installs a stand-in."""
    items = {"available": True, "cupy": cupy, "modules": {}, "functions": {}}
    attributes = {"_on_gpu": lambda b, args: True, "_device_index": lambda b, device: 0,
                  "_torch_stream": lambda b, device: 1234}
    for key, value in items.items():
        if monkeypatch is None:
            m._CUDA[key] = value
        else:
            monkeypatch.setitem(m._CUDA, key, value)
    for name, value in attributes.items():
        if monkeypatch is None:
            setattr(m, name, value)
        else:
            monkeypatch.setattr(m, name, value)
    return m


def cupy_arrays(s, monkeypatch):
    """tests/fake_cupy.py installed as cupy (arrays of numpy under the module name cupy), with
    stand-in ``s``'s NVRTC and launches and data pointers for its arrays: cupy arrays then take the
    kernel path as CUDA arrays do. Returns the fake cupy module."""
    import fake_cupy

    cp = fake_cupy.install(monkeypatch)
    monkeypatch.setattr(cp, "RawModule", s.cupy.RawModule, raising=False)
    monkeypatch.setattr(cp, "cuda", s.cupy.cuda, raising=False)
    monkeypatch.setattr(cp, "ascontiguousarray", fake_cupy._function("ascontiguousarray"), raising=False)
    monkeypatch.setattr(fake_cupy.ndarray, "data", property(lambda a: types.SimpleNamespace(ptr=a.ctypes.data)),
                        raising=False)
    return cp


@pytest.fixture
def gpu(monkeypatch, tmp_path_factory):
    """A function that installs the stand-in into a module: CPU tensors count as CUDA tensors (with
    ``emulate``, the kernels run compiled for the host; the test is skipped where they cannot)."""
    def install(stem: str, emulate: bool = False):
        m = _module(stem)
        emulator = _emulator(stem, tmp_path_factory.mktemp("emu")) if emulate else None
        if emulate and emulator is None:
            pytest.skip("no g++: the kernels were not emulated on the host")
        s = StandIn(m, emulator)
        host_gpu(m, s.cupy, monkeypatch)
        monkeypatch.setattr(m, "MIXING", "kernel")  # the default follows library_gemm; these tests run the GEMM kernel
        return m, s
    return install


def _args(m, name, rng, batch=(4,), channels=3, dtype=torch.float64):
    cfg = getattr(m, f"_{name}_KERNEL")
    out = []
    for _, chans, dims in cfg["inputs"]:
        shape = tuple(batch) + (channels,) * len(chans) + tuple(dims)
        out.append(torch.tensor(rng.standard_normal(shape), dtype=dtype))
    return out


def _same(got, want, tol=1e-12):
    got = got if isinstance(got, tuple) else (got,)
    want = want if isinstance(want, tuple) else (want,)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.shape == w.shape and g.dtype == w.dtype
        assert not w.numel() or float((g - w).abs().max()) <= tol * max(1.0, float(w.abs().max()))


def _kernel_names(stem):
    return [s[5]["name"] for s in _module(stem)._KERNEL_SPECS]


# ---------------------------------------------------------------------------------------------
# without a GPU the module is what it was


def test_module_without_gpu_runs_the_array_code_and_never_imports_cupy():
    m = _module("tensornet")
    text = compiler.compile_file(ROOT / "diagrams" / "tensornet.diag")
    assert "\nimport cupy" not in text and "\nimport torch" not in text
    rng = np.random.default_rng(0)
    args = _args(m, "matmul_o3", rng)
    assert not m._use_kernel(m._backend(*args), m._matmul_o3_SPEC, args)  # CPU tensors: no kernel
    _same(m.matmul_o3(*args), m.matmul_o3(*args, kernels=False))
    np_args = [a.numpy() for a in args]
    assert not m._use_kernel(m._backend(*np_args), m._matmul_o3_SPEC, np_args)
    assert m._CUDA["modules"] == {} and m._CUDA["functions"] == {}
    assert "cupy" not in sys.modules or type(sys.modules["cupy"]).__name__ == "module"


def test_without_cupy_cuda_arrays_run_the_array_code(gpu, monkeypatch):
    m, s = gpu("tensornet")
    monkeypatch.setitem(m._CUDA, "available", False)
    args = _args(m, "decompose", np.random.default_rng(1))
    _same(m.decompose(*args), m.decompose(*args, kernels=False))
    assert s.launches == [] and s.compiled == []


def test_embedded_source_is_the_cuda_targets_and_compiles_with_nvcc(tmp_path):
    for stem in ("tensornet", "products"):
        m = _module(stem)
        program = with_derivatives(checked_program((ROOT / "diagrams" / f"{stem}.diag").read_text(),
                                                   str(ROOT / "diagrams" / f"{stem}.diag")), checked=True)
        kernels = []
        for d in program.diagrams:
            try:
                kernels.append(lower_diagram(d))
            except compiler.DiagError:
                assert getattr(m, f"_{d.name}_SPEC")[5] is None  # refused: the array code runs
        from compiler.targets.python.codegen import source_sha256

        assert m._CUDA_SOURCE == print_program(CudaProgram(program.filename, source_sha256(program.source),
                                                           tuple(kernels)))
        assert {k.name for k in kernels} == set(_kernel_names(stem))
    # the derivatives have kernels where their diagrams have a fused form
    assert {"matmul_o3_vjp", "matmul_o3_vjp_vjp", "vector_to_sym_vjp"} <= set(_kernel_names("tensornet"))
    assert {"cross_vjp", "cross_vjp_vjp"} <= set(_kernel_names("products"))
    nvcc = shutil.which("nvcc") or ("/usr/local/cuda/bin/nvcc" if os.path.exists("/usr/local/cuda/bin/nvcc") else None)
    if nvcc is None:
        pytest.skip("nvcc not found: the embedded CUDA source was not compiled")
    cu = tmp_path / "embedded.cu"
    cu.write_text(_module("tensornet")._CUDA_SOURCE)
    run = subprocess.run([nvcc, "-arch=sm_90", "-std=c++17", "-c", str(cu), "-o", str(tmp_path / "embedded.o")],
                         capture_output=True, text=True)
    assert run.returncode == 0 and "warning" not in run.stderr, run.stderr[-3000:]


# ---------------------------------------------------------------------------------------------
# the kernel path through the stand-in


@pytest.mark.parametrize("stem, name", [("tensornet", n) for n in (
    "vector_to_skew", "vector_to_sym", "decompose", "tensor_norm", "matmul_o3", "mix_skew", "edge_tensor",
    "skew_to_vector", "matmul_o3_vjp", "tensor_norm_vjp_vjp")] + [("products", n) for n in ("cross", "dot", "triple")])
def test_kernel_path_hands_the_kernel_what_its_signature_says(gpu, stem, name):
    m, s = gpu(stem)
    rng = np.random.default_rng(len(name))
    for dtype in (torch.float64, torch.float32):
        args = _args(m, name, rng, batch=(3, 2), dtype=dtype)
        got = getattr(m, name)(*args)
        _same(got, getattr(m, name)(*args, kernels=False), 1e-12 if dtype == torch.float64 else 1e-5)
        assert s.launches[-1][0] == getattr(m, f"_{name}_KERNEL")["symbols"][str(dtype)[6:]]
    assert s.compiled == [(0, ("-std=c++17",))]  # compiled once for the device, then cached


def test_broadcast_and_non_contiguous_inputs(gpu):
    m, s = gpu("tensornet")
    rng = np.random.default_rng(3)
    M, Y = _args(m, "matmul_o3", rng, batch=(5,))
    one = M[:1]  # broadcast over the batch: passed with flag 0, not copied
    _same(m.matmul_o3(one, Y), m.matmul_o3(one, Y, kernels=False))
    Mt = M.transpose(-1, -2)  # non-contiguous: copied first
    _same(m.matmul_o3(Mt, Y), m.matmul_o3(Mt, Y, kernels=False))
    M2, Y2 = _args(m, "matmul_o3", rng, batch=(5, 1)), _args(m, "matmul_o3", rng, batch=(1, 4))
    _same(m.matmul_o3(M2[0], Y2[1]), m.matmul_o3(M2[0], Y2[1], kernels=False))  # expanded copy
    r = torch.tensor(rng.standard_normal((6, 3)))
    f = [torch.tensor(rng.standard_normal((6, 4))) for _ in range(3)]
    _same(m.edge_tensor(r, *f), m.edge_tensor(r, *f, kernels=False))  # r read per element (no channel)
    A, W = _args(m, "mix_skew", rng, batch=(2,))
    W = W[0]  # a weight without batch axis
    _same(m.mix_skew(A, W), m.mix_skew(A, W, kernels=False))
    out = torch.empty(5, 3, 3, 3, dtype=torch.float64)
    assert m.matmul_o3(M, Y, out=out) is out
    _same(out, m.matmul_o3(M, Y, kernels=False))
    empty = torch.empty(0, 3, 3, 3, dtype=torch.float64)
    before = len(s.launches)
    assert m.matmul_o3(empty, empty).shape == (0, 3, 3, 3) and len(s.launches) == before  # nothing launched


def test_switches_run_the_array_code(gpu, monkeypatch):
    m, s = gpu("tensornet")
    args = _args(m, "matmul_o3", np.random.default_rng(4))
    _same(m.matmul_o3(*args, kernels=False), m.matmul_o3(*args))
    assert len(s.launches) == 1  # only the second call
    monkeypatch.setattr(m, "MIXING", "blas")  # channel mixing through the array library's matmul
    A, W = _args(m, "mix_skew", np.random.default_rng(5))
    m.mix_skew(A, W[0])
    assert len(s.launches) == 1
    monkeypatch.setattr(m, "MIXING", None)  # the kernel spec chooses: data, from the generator
    cfg = m._mix_skew_SPEC[5]
    assert cfg is m._mix_skew_KERNEL and cfg["library_gemm"] is True
    m.mix_skew(A, W[0])
    assert len(s.launches) == 1
    monkeypatch.setitem(cfg, "library_gemm", False)
    _same(m.mix_skew(A, W[0]), m.mix_skew(A, W[0], kernels=False))
    assert len(s.launches) == 2 and s.launches[-1][0] == cfg["symbols"]["float64"]


def test_compile_cache_is_per_device(gpu, monkeypatch):
    m, s = gpu("tensornet")
    rng = np.random.default_rng(6)
    for _ in range(2):
        m.vector_to_skew(*_args(m, "vector_to_skew", rng))
        m.vector_to_sym(*_args(m, "vector_to_sym", rng))
    assert s.compiled == [(0, ("-std=c++17",))]
    assert set(m._CUDA["functions"]) == {(0, "diagc_vector_to_skew_kernel_f64"), (0, "diagc_vector_to_sym_kernel_f64")}
    monkeypatch.setattr(m, "_device_index", lambda b, device: 1)
    m.vector_to_skew(*_args(m, "vector_to_skew", rng))
    assert s.compiled == [(0, ("-std=c++17",)), (1, ("-std=c++17",))]
    assert (1, "diagc_vector_to_skew_kernel_f64") in m._CUDA["functions"]


@pytest.mark.parametrize("call, message, error", [
    (lambda m, M, Y: m.matmul_o3(M.to(torch.int64), Y.to(torch.int64)), "M has dtype torch.int64; the CUDA kernels take",
     TypeError),
    (lambda m, M, Y: m.matmul_o3(M, Y.to("meta")), "Y is on meta but M is on cpu", ValueError),
    (lambda m, M, Y: m.matmul_o3(M, Y[..., :2]), "Y has shape (4, 3, 3, 2); expected (..., c, 3, 3)", ValueError),
    (lambda m, M, Y: m.matmul_o3(M, Y[:, :2]), "Y has shape (4, 2, 3, 3); expected (..., c, 3, 3) with c = 3 from M",
     ValueError),
    (lambda m, M, Y: m.matmul_o3(M, Y[:3]), "Y has batch shape (3,), which does not broadcast with the batch shape "
     "(4,) of M", ValueError),
])
def test_bad_arguments_name_the_argument(gpu, call, message, error):
    m, s = gpu("tensornet")
    M, Y = _args(m, "matmul_o3", np.random.default_rng(7))
    with pytest.raises(error) as info:
        call(m, M, Y)
    assert message in str(info.value)
    assert s.launches == []


def test_mixed_dtypes_are_promoted_before_the_kernel(gpu):
    m, s = gpu("tensornet")
    M, Y = _args(m, "matmul_o3", np.random.default_rng(8))
    got = m.matmul_o3(M, Y.float())  # float64 with float32: the float64 kernel, as numpy would promote
    assert got.dtype == torch.float64 and len(s.launches) == 1
    _same(got, m.matmul_o3(M, Y.float().double(), kernels=False))


def test_launch_plans_are_cached_per_dtype_device_shape_and_strides(gpu, monkeypatch):
    """A call's checks, copies, output shapes and grid are planned once per (function, dtypes,
    devices, shapes, strides): a repeated call plans nothing and hands the kernel the same sizes;
    other strides (a transposed view: copied) or another batch get their own plan; a bad argument
    after a good call of the same shapes still raises, naming the argument, and is not cached."""
    m, s = gpu("tensornet")
    m._CUDA["plans"].clear()
    planned = []
    real = m._launch_plan
    monkeypatch.setattr(m, "_launch_plan", lambda b, cfg, args: planned.append(cfg["name"]) or real(b, cfg, args))
    rng = np.random.default_rng(11)
    M, Y = _args(m, "matmul_o3", rng, batch=(5,))
    want = m.matmul_o3(M, Y, kernels=False)
    for _ in range(3):
        _same(m.matmul_o3(M, Y), want)
    assert planned == ["matmul_o3"] and len(s.launches) == 3 and len(set(s.launches)) == 1
    Mt = M.transpose(-1, -2)
    for _ in range(2):
        _same(m.matmul_o3(Mt, Y), m.matmul_o3(Mt, Y, kernels=False))
    M2, Y2 = _args(m, "matmul_o3", rng, batch=(7,))
    _same(m.matmul_o3(M2, Y2), m.matmul_o3(M2, Y2, kernels=False))
    assert planned == ["matmul_o3"] * 3 and len(m._CUDA["plans"]) == 3
    with pytest.raises(TypeError, match="M has dtype torch.int64; the CUDA kernels take"):
        m.matmul_o3(M.to(torch.int64), Y.to(torch.int64))
    with pytest.raises(ValueError, match=r"Y has shape \(5, 2, 3, 3\); expected \(..., c, 3, 3\) with c = 3 from M"):
        m.matmul_o3(M, Y[:, :2])
    assert len(m._CUDA["plans"]) == 3


def test_eager_calls_launch_without_the_custom_op(gpu, monkeypatch):
    """Plain tensors outside torch.compile launch from the module (no dispatcher round trip), with
    autograd through the module's autograd.Function (first and second order on the kernels); the
    custom op stays what torch.compile and tensor subclasses go through."""
    m, s = gpu("products")
    a, b = (x.requires_grad_() for x in _args(m, "cross", np.random.default_rng(12), batch=(6,), channels=1))
    m._torch_ops()
    ops = dict(m._CUDA["ops"])

    def refuse(*args):
        raise AssertionError("the custom op ran")
    monkeypatch.setitem(m._CUDA, "ops", {name: refuse for name in ops})
    c = m.cross(a, b)
    g = torch.randn(c.shape, dtype=c.dtype)
    ga, gb = torch.autograd.grad(c, (a, b), g, create_graph=True)
    wa, wb = torch.autograd.grad(m.cross(a, b, kernels=False), (a, b), g, create_graph=True)
    _same((ga.detach(), gb.detach()), (wa.detach(), wb.detach()))
    v = torch.randn(ga.shape, dtype=ga.dtype)
    _same(torch.autograd.grad((ga * v).sum(), (a, b)), torch.autograd.grad((wa * v).sum(), (a, b)))
    used = [symbol for symbol, *_ in s.launches]
    assert {"diagc_cross_kernel_f64", "diagc_cross_vjp_kernel_f64", "diagc_cross_vjp_vjp_kernel_f64"} <= set(used)
    monkeypatch.setitem(m._CUDA, "ops", ops)
    monkeypatch.setattr(m, "_kernel_eager", lambda b, args: False)  # as under torch.compile: the op
    _same(m.cross(a, b).detach(), c.detach())
    assert torch.autograd.gradcheck(m.cross, (a, b))


# ---------------------------------------------------------------------------------------------
# autograd and torch.compile over the custom ops


@pytest.mark.parametrize("stem, name", [("tensornet", "matmul_o3"), ("tensornet", "vector_to_sym"),
                                        ("tensornet", "tensor_norm"), ("tensornet", "mix_skew"),
                                        ("products", "cross")])
def test_gradcheck_on_the_kernel_path(gpu, stem, name):
    m, s = gpu(stem)
    args = [a.requires_grad_() for a in _args(m, name, np.random.default_rng(8), batch=(2,), channels=2)]
    if name == "mix_skew":
        args[1] = args[1][0].detach().requires_grad_()
    fn = getattr(m, name)
    assert torch.autograd.gradcheck(fn, tuple(args))
    assert torch.autograd.gradgradcheck(fn, tuple(args))
    used = {symbol for symbol, *_ in s.launches}
    assert m._KERNEL_SPECS and getattr(m, f"_{name}_KERNEL")["symbols"]["float64"] in used
    if "symbols" in (getattr(m, f"_{name}_vjp_SPEC")[5] or {}):  # the VJP ran on its kernel too (mixing's: cuBLAS)
        assert getattr(m, f"_{name}_vjp_KERNEL")["symbols"]["float64"] in used


def test_torch_compile_fullgraph_over_the_kernel_ops(gpu):
    m, s = gpu("tensornet")
    M, Y = (a.requires_grad_() for a in _args(m, "matmul_o3", np.random.default_rng(9)))

    def loss(M, Y):
        I, A, S = m.decompose(m.matmul_o3(M, Y))
        return m.tensor_norm(I + A + S).sum()

    compiled = torch.compile(loss, fullgraph=True, backend="aot_eager")
    value = compiled(M, Y)
    gM, gY = torch.autograd.grad(value, (M, Y))
    want = loss(M, Y)
    wM, wY = torch.autograd.grad(want, (M, Y))
    _same(value.detach(), want.detach())
    _same(gM, wM)
    _same(gY, wY)
    assert "diagc_matmul_o3_vjp_kernel_f64" in {symbol for symbol, *_ in s.launches}


# ---------------------------------------------------------------------------------------------
# the kernels themselves, compiled for the host


def _every_kernel():
    return [pytest.param(stem, s[5]["name"], id=f"{stem}.{s[5]['name']}")
            for stem in ("tensornet", "tensornet_so3", "products", "spherical") for s in _device_specs(_module(stem))]


@pytest.mark.parametrize("stem, name", _every_kernel())
def test_emulated_kernels_match_the_array_code(gpu, stem, name):
    """Each kernel (forward, VJP, second order), run as CUDA would run it (threads of a block in
    lockstep at every barrier) through the module's kernel path, at sizes with partial tiles, several
    GEMM chunks and output channels past one warp; float64 to 1e-12, float32 to 1e-5."""
    m, s = gpu(stem, emulate=True)
    rng = np.random.default_rng(len(name) + len(stem))
    fn = getattr(m, name)
    for dtype, tol, batch, channels in ((torch.float64, 1e-12, (37,), 5), (torch.float64, 1e-12, (3, 3), 40),
                                        (torch.float32, 1e-5, (37,), 5)):
        args = _args(m, name, rng, batch=batch, channels=channels, dtype=dtype)
        _same(fn(*args), fn(*args, kernels=False), tol)
    assert len(s.launches) == 3


@pytest.mark.parametrize("name", ["cross", "cross_vjp", "dot_vjp_vjp", "triple"])
def test_emulated_direct_kernels_match_the_array_code(gpu, name):
    """The direct form of the elementwise kernels (a thread's consecutive elements read and written
    as runs from registers, ElementwiseKernel.direct), forced on: partial runs, 16-byte aligned and
    misaligned inputs, a broadcast input; float64 to 1e-12, float32 to 1e-5."""
    m, s = gpu("products+direct", emulate=True)
    cfg = getattr(m, f"_{name}_KERNEL")
    assert "diagc_load_run" in m._CUDA_SOURCE and cfg["shared_words"] == {"float32": 0, "float64": 0}
    rng = np.random.default_rng(18)
    fn = getattr(m, name)
    for dtype, tol, batch, channels in ((torch.float64, 1e-12, (37,), 5), (torch.float32, 1e-5, (3, 3), 43)):
        args = _args(m, name, rng, batch=batch, channels=channels, dtype=dtype)
        _same(fn(*args), fn(*args, kernels=False), tol)
        first = args[0]
        base = torch.tensor(rng.standard_normal(first.numel() + 1), dtype=dtype)
        odd = base[1:].reshape(first.shape)  # 4 or 8 bytes past a 16-byte boundary: word at a time
        _same(fn(odd, *args[1:]), fn(odd, *args[1:], kernels=False), tol)
        one = [args[0][:1]] + args[1:]  # broadcast over the batch
        _same(fn(*one), fn(*one, kernels=False), tol)


def _one_call(m, name):
    """The function of diagram ``name`` run as one call, with its kernel (the public VJP of a staged
    diagram, compiler.planning.staging, runs the stages' VJPs instead when not given out=)."""
    spec = getattr(m, f"_{name}_SPEC")

    def fn(*args, kernels=True):
        return m._call(spec, args, None, False, kernels)
    return fn


@pytest.mark.parametrize("stem, name", [("linear", "mix"), ("linear+unstaged", "linear_cart2"),
                                        ("tensornet_layer+unstaged", "project"), ("mixing_forms+unstaged", "mix_forms")])
def test_emulated_gemm_kernels_in_every_mixing_form(gpu, stem, name):
    """The tiled GEMM with several staged weights (one per term), weights stored [c, d] and [d, c],
    several outputs and polynomials per channel: each weight shared by the batch (staged once for
    all rows) and with a batch axis (each row's weights staged), against the array code. A diagram
    the module runs in stages (compiler.planning.staging) has its one-call kernel in the module
    built without stages."""
    m, s = gpu(stem, emulate=True)
    cfg = getattr(m, f"_{name}_KERNEL")
    assert cfg["kind"] == "mixing"
    rng = np.random.default_rng(17)
    fn = _one_call(m, name)
    weights = [k for k, (_, chans, dims) in enumerate(cfg["inputs"]) if len(chans) == 2 and not dims]
    cin, cout = cfg["channels"]
    for dtype, tol, batch, sizes in ((torch.float64, 1e-12, (19,), {cin: 37, cout: 45}),
                                     (torch.float32, 1e-5, (3,), {cin: 70, cout: 33})):
        args = [torch.tensor(rng.standard_normal(batch + tuple(sizes[c] for c in chans) + tuple(dims)), dtype=dtype)
                for _, chans, dims in cfg["inputs"]]
        _same(fn(*args), fn(*args, kernels=False), tol)  # batched weights
        shared = [a[0] if k in weights else a for k, a in enumerate(args)]
        _same(fn(*shared), fn(*shared, kernels=False), tol)
    assert len(s.launches) == 4


def _mixing_vjp_args(cfg, rng, batch, sizes, dtype):
    """Random arguments of a derivative of channel mixing: its weight-shaped inputs without batch axes."""
    return [torch.tensor(rng.standard_normal((() if k in cfg["unbatched"] else batch)
                                             + tuple(sizes[c] for c in chans) + tuple(dims)), dtype=dtype)
            for k, (_, chans, dims) in enumerate(cfg["inputs"])]


@pytest.mark.parametrize("stem, name", [("linear", "mix_vjp"), ("linear", "mix_vjp_vjp"), ("linear", "linear_cart2_vjp"),
                                        ("tensornet", "mix_skew_vjp"),
                                        ("tensornet", "mix_skew_vjp_vjp"), ("tensornet+tile32", "mix_skew_vjp")])
def test_emulated_kernels_of_the_derivatives_of_channel_mixing(gpu, stem, name):
    """A derivative of channel mixing on the GPU (MIXING = "kernel"): each cotangent of a mixed input
    by its part's GEMM kernel, each weight's cotangent by its kernel summing tiles of [a, b] over
    spans of batch rows with atomicAdd into the zeroed output; emulated against the array code at
    channel counts past one tile and one GEMM block, a batch past one span, both precisions, and
    through autograd (the forward's backward and double backward run these kernels)."""
    m, s = gpu(stem, emulate=True)
    cfg = getattr(m, f"_{name}_KERNEL")
    assert cfg["kind"] == "mixing_vjp" and cfg["launches"] and cfg["totalled"]
    rng = np.random.default_rng(23)
    fn = _one_call(m, name)
    a, b = cfg["channels"]
    tile = {launch["tile"] for launch in cfg["launches"] if "tile" in launch}
    assert tile == ({32} if stem.endswith("+tile32") else {64})
    for dtype, tol, batch, sizes in ((torch.float64, 1e-12, (261,), {a: 37, b: 70}),  # past one tile on b,
                                     (torch.float32, 2e-5, (3,), {a: 70, b: 33})):  # then on a
        args = _mixing_vjp_args(cfg, rng, batch, sizes, dtype)
        _same(fn(*args), fn(*args, kernels=False), tol)
    assert len(s.launches) == 2 * len(cfg["launches"])
    span = next(launch["span"] for launch in cfg["launches"] if "span" in launch)
    assert any(grid[2] == -(-261 // span) > 1 for _, grid, _, _ in s.launches)  # 261 rows: several spans
    # a weight with batch axes (a cotangent per row) runs the array library's GEMMs; so does an empty batch
    args = _mixing_vjp_args(cfg, rng, (2,), {a: 3, b: 4}, torch.float64)
    k = cfg["unbatched"][0]
    args[k] = args[k].expand((2,) + tuple(args[k].shape))
    _same(fn(*args), fn(*args, kernels=False))
    empty = _mixing_vjp_args(cfg, rng, (0,), {a: 3, b: 4}, torch.float64)
    for got, want in zip(fn(*empty), fn(*empty, kernels=False)):
        assert got.shape == want.shape and not got.abs().max() if got.numel() else got.shape == want.shape
    assert len(s.launches) == 2 * len(cfg["launches"])
    for sizes in ({a: 3, b: 0}, {a: 0, b: 4}):  # an empty channel axis: zeros, and no launch writing nothing
        args = _mixing_vjp_args(cfg, rng, (5,), sizes, torch.float64)
        _same(fn(*args), fn(*args, kernels=False))
    launched = s.launches[2 * len(cfg["launches"]):]
    assert launched and all(0 not in grid for _, grid, _, _ in launched)


def test_a_derivative_of_channel_mixing_beyond_a_gpu_block_runs_the_array_code(gpu):
    """linear_cart2's second order: its mixing parts do not fit a GPU block (host loops only), so on
    the GPU the array library's GEMMs run, even with MIXING = "kernel"."""
    m, s = gpu("linear", emulate=True)
    cfg = m._linear_cart2_vjp_vjp_KERNEL
    assert cfg["kind"] == "mixing_vjp" and "launches" not in cfg and cfg["host"]
    args = _mixing_vjp_args(cfg, np.random.default_rng(3), (4,), {c: 5 for c in cfg["channels"]}, torch.float64)
    _same(m.linear_cart2_vjp_vjp(*args), m.linear_cart2_vjp_vjp(*args, kernels=False))
    assert s.launches == []


@pytest.mark.parametrize("stem, name", [("linear", "mix"), ("tensornet", "mix_skew")])
def test_emulated_backward_of_channel_mixing_through_its_kernels(gpu, stem, name):
    """gradcheck and gradgradcheck of a channel mixing whose forward, VJP and second order run the
    emulated GEMM and weight-cotangent kernels (torch custom ops)."""
    m, s = gpu(stem, emulate=True)
    cfg = getattr(m, f"_{name}_KERNEL")
    rng = np.random.default_rng(29)
    args = [torch.tensor(rng.standard_normal((() if len(chans) == 2 and not dims else (3,)) + (5,) * len(chans) + tuple(dims)),
                         dtype=torch.float64, requires_grad=True) for _, chans, dims in cfg["inputs"]]
    fn = getattr(m, name)
    assert torch.autograd.gradcheck(fn, args)
    assert torch.autograd.gradgradcheck(fn, args)
    names = {symbol for symbol, _, _, _ in s.launches}
    assert f"diagc_{name}_vjp_grad0_kernel_f64" in names and f"diagc_{name}_vjp_vjp_grad0_kernel_f64" in names


@pytest.mark.parametrize("name", ["residual_vjp", "residual_vjp_vjp", "matmul_o3_scaled_vjp",
                                  "matmul_o3_scaled_vjp_vjp"])
def test_emulated_summed_derivatives_of_the_layer(gpu, name):
    """The layer's derivatives whose cotangent of a per-row gate sums over the channels (summed
    outputs), emulated as above against the array code."""
    m, s = gpu("tensornet_layer", emulate=True)
    assert getattr(m, f"_{name}_KERNEL")["summed"]
    rng = np.random.default_rng(16)
    fn = getattr(m, name)
    for dtype, tol, batch, channels in ((torch.float64, 1e-12, (37,), 5), (torch.float32, 1e-5, (3,), 70)):
        args = _args(m, name, rng, batch=batch, channels=channels, dtype=dtype)
        _same(fn(*args), fn(*args, kernels=False), tol)
    assert len(s.launches) == 2


def test_emulated_kernels_with_broadcast_inputs_and_odd_alignment(gpu):
    m, s = gpu("tensornet", emulate=True)
    rng = np.random.default_rng(12)
    M, Y = _args(m, "matmul_o3", rng, batch=(7,), channels=5)
    _same(m.matmul_o3(M[:1], Y), m.matmul_o3(M[:1], Y, kernels=False))  # M read per element (flag 0)
    r = torch.tensor(rng.standard_normal((7, 3)))
    f = [torch.tensor(rng.standard_normal((7, 5))) for _ in range(3)]
    _same(m.edge_tensor(r, *f), m.edge_tensor(r, *f, kernels=False))
    A, W = _args(m, "mix_skew", rng, batch=(11,), channels=37)
    _same(m.mix_skew(A, W[0]), m.mix_skew(A, W[0], kernels=False))  # weight shared by the batch
    _same(m.mix_skew(A, W), m.mix_skew(A, W, kernels=False))  # a weight per batch row
    base = torch.tensor(rng.standard_normal(7 * 5 * 9 + 1))
    odd = base[1:].reshape(7, 5, 3, 3)  # 8-byte aligned, not 16: the word-at-a-time copies
    _same(m.matmul_o3(odd, Y), m.matmul_o3(odd, Y, kernels=False))


def test_gradcheck_through_the_emulated_kernels(gpu):
    m, s = gpu("tensornet", emulate=True)
    args = [a.requires_grad_() for a in _args(m, "matmul_o3", np.random.default_rng(13), batch=(1,), channels=1)]
    assert torch.autograd.gradcheck(m.matmul_o3, tuple(args))
    assert torch.autograd.gradgradcheck(m.matmul_o3, tuple(args))
    used = {symbol for symbol, *_ in s.launches}
    assert {"diagc_matmul_o3_vjp_kernel_f64", "diagc_matmul_o3_vjp_vjp_kernel_f64"} <= used


def test_cupy_arrays_run_the_kernels(gpu, monkeypatch):
    """cupy arrays (tests/fake_cupy.py, numpy underneath, given NVRTC and data pointers by the
    stand-in) through the kernel path with the kernels emulated: cupy results equal to the array
    code's; kernels=False runs the array code on them."""
    import fake_cupy

    m, s = gpu("tensornet", emulate=True)
    cp = cupy_arrays(s, monkeypatch)
    monkeypatch.setitem(m._CUDA, "available", None)  # looked up again: this cupy has RawModule
    rng = np.random.default_rng(14)
    M, Y = (rng.standard_normal((6, 5, 3, 3)) for _ in range(2))
    want = m.matmul_o3(M, Y)
    got = m.matmul_o3(cp.asarray(M), cp.asarray(Y))
    assert type(got).__module__ == "cupy" and s.launches[-1][0] == "diagc_matmul_o3_kernel_f64"
    assert np.max(np.abs(fake_cupy.asnumpy(got) - want)) <= 1e-12 * max(1.0, float(np.max(np.abs(want))))
    plain = m.matmul_o3(cp.asarray(M), cp.asarray(Y), kernels=False)
    assert len(s.launches) == 1 and np.max(np.abs(fake_cupy.asnumpy(plain) - want)) <= 1e-12 * np.max(np.abs(want))


_SUMS = """group O3
diagram sums(x: vec[a,b], y: scalar[a,b], r: vec) -> (z: vec[a,b], u: vec[b], w: scalar[a], t: scalar) {
    z[a,b,i] = y[a,b] x[a,b,i] + r[i] y[a,b]
    u[b,i] = y[a,b] x[a,b,i]
    w[a] = x[a,b,i] x[a,b,i] - 1/2 y[a,b] r[i] r[i]
    t = x[a,b,i] r[i]
}
"""


def test_emulated_kernel_sums_outputs_over_the_channel_axes_they_lack(gpu):
    """Outputs with fewer channel axes than the kernel's (u keeps the inner axis b: a warp's
    elements of one row of u are not adjacent; w keeps a; t keeps none) are summed by shuffles and
    atomicAdd into zeroed rows: equal to the array code at sizes whose rows cross warps and blocks,
    and where one warp holds many rows."""
    _MODULES.setdefault("sums", compiler.load_source(_SUMS, "sums"))
    m, s = gpu("sums", emulate=True)
    assert m._sums_KERNEL["summed"] == (1, 2, 3)
    rng = np.random.default_rng(15)
    for dtype, tol, batch, a, b in ((torch.float64, 1e-12, 6, 5, 7), (torch.float64, 1e-12, 3, 2, 45),
                                    (torch.float32, 1e-5, 37, 3, 2)):
        x = torch.tensor(rng.standard_normal((batch, a, b, 3)), dtype=dtype)
        y = torch.tensor(rng.standard_normal((batch, a, b)), dtype=dtype)
        r = torch.tensor(rng.standard_normal((batch, 3)), dtype=dtype)
        _same(m.sums(x, y, r), m.sums(x, y, r, kernels=False), tol)
        _same(m.sums(x, y, r[0]), m.sums(x, y, r[0], kernels=False), tol)  # r shared by the batch
    assert {symbol for symbol, *_ in s.launches} == {"diagc_sums_kernel_f64", "diagc_sums_kernel_f32"}
