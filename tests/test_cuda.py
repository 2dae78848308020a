"""The CUDA target without a GPU.

* every emitted ``.cu`` (one per file of ``diagrams/``) compiles with ``nvcc -arch=sm_90 -c``
  (skipped, saying so, where nvcc is absent);
* the same sources compiled as plain C++ keep only the ``__host__ __device__`` element functions;
  they are called through ctypes over random inputs and compared with the numpy module in float64
  to 1e-12: every output component of every diagram with a fused form, and for channel mixing the
  per-channel polynomials summed against the weights as the kernel's terms say;
* what the target cannot express is refused with exit 2 and a message naming the construct.
"""

from __future__ import annotations

import ctypes
import dataclasses
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

import compiler
from compiler.api import checked_program
from compiler.errors import DiagError
from compiler.cli import main
from compiler.targets import TARGETS, get_target
from compiler.targets.cuda import generate_cuda
from compiler.targets.cuda.kernels import ElementwiseKernel, lower_program
from compiler.testing import random_input

ROOT = Path(__file__).resolve().parent.parent
FILES = sorted((ROOT / "diagrams").glob("*.diag"))
CHANNELS = 3  # every channel axis
BATCH = 5


#: example diagrams the cuda target refuses (README, "CUDA kernels": what the target cannot express),
#: with the words of the refusal; every other example diagram must compile. The refusal is tested,
#: so an entry goes stale (and fails) once the target learns to express it.
REFUSED = {
    ("tensornet_layer", "compose_mixed"): "channel axis 'c' is contracted",  # mixing scaled per output channel
}


def _program(path: Path):
    """The example file's checked program without the diagrams the cuda target refuses."""
    program = checked_program(path.read_text(), str(path))
    keep = tuple(d for d in program.diagrams if (path.stem, d.name) not in REFUSED)
    return dataclasses.replace(program, diagrams=keep)


def _emit(path: Path) -> str:
    return generate_cuda(_program(path))


@pytest.mark.parametrize("stem, name", sorted(REFUSED))
def test_refused_example_diagrams_get_a_positioned_message(stem, name):
    path = ROOT / "diagrams" / f"{stem}.diag"
    program = checked_program(path.read_text(), str(path))
    only = dataclasses.replace(program, diagrams=tuple(d for d in program.diagrams if d.name == name))
    with pytest.raises(DiagError) as info:
        generate_cuda(only)
    message = str(info.value)
    assert f"{stem}.diag:" in message and f"diagram '{name}'" in message and REFUSED[stem, name] in message


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cuda")
    out = {}
    for path in FILES:
        target = folder / f"{path.stem}.cu"
        target.write_text(_emit(path))
        out[path.stem] = target
    return out


def test_registry_lists_cuda_and_refuses_unknown_targets(capsys):
    assert {"numpy", "cuda"} <= set(TARGETS)
    with pytest.raises(compiler.DiagError, match="unknown target 'fortran' \\(known: numpy, cuda"):
        get_target("fortran")
    with pytest.raises(compiler.DiagError, match="known: numpy, cuda"):
        compiler.compile_source("diagram dot(a: vec, b: vec) -> s: scalar { s = a[i] b[i] }", target="fortran")


def test_cli_writes_cu(tmp_path, capsys):
    out = tmp_path / "ops.cu"
    assert main(["compile", str(ROOT / "diagrams/tensornet.diag"), "--target", "cuda", "-o", str(out)]) == 0
    text = out.read_text()
    assert text == _emit(ROOT / "diagrams/tensornet.diag")  # deterministic
    assert '#include "' not in text  # no diagc header: standalone
    for name in ("vector_to_skew", "decompose", "matmul_o3", "mix_skew", "edge_tensor"):
        bounds = "128, 4" if name == "mix_skew" else "128"  # the GEMM: 4 blocks an SM in float32 (128 registers)
        assert f"extern \"C\" __global__ void __launch_bounds__({bounds}) diagc_{name}_kernel_f32(" in text
        assert f"extern \"C\" int diagc_{name}_f64(" in text


def test_the_file_has_the_derivatives_kernels_and_lists_those_it_cannot_express():
    """After each diagram its generated derivatives' kernels (elementwise, channel mixing's parts and
    weight cotangents with their launcher, an output zero everywhere stored by the others' kernel);
    a derivative the generator cannot express is listed in the header, with the reason, and has no
    kernel."""
    text = _emit(ROOT / "diagrams/tensornet.diag")
    for name in ("decompose_vjp", "decompose_vjp_vjp", "matmul_o3_vjp_vjp", "edge_tensor_vjp"):
        assert f"extern \"C\" __global__ void __launch_bounds__(128) diagc_{name}_kernel_f32(" in text
        assert f"extern \"C\" int diagc_{name}_f64(" in text
    for name in ("mix_skew_vjp", "mix_skew_vjp_vjp"):
        assert f"diagc_{name}_part0_kernel_f32(" in text and f"diagc_{name}_grad0_kernel_f64(" in text
        assert f"extern \"C\" int diagc_{name}_f32(" in text and f"extern \"C\" void diagc_{name}_host_f64(" in text
    assert "derivatives without a kernel" not in text
    layer = _emit(ROOT / "diagrams/tensornet_layer.diag")
    header = layer[:layer.index("#if")]
    for name in ("project_vjp", "project_vjp_vjp"):
        assert f"//   {name}: diagram '{name}': the cuda target cannot express it: " in header
        assert f"diagc_{name}_kernel_f32" not in layer and f"diagc_{name}_f32(" not in layer
    assert "diagc_project_kernel_f32(" in layer and "diagc_residual_vjp_vjp_kernel_f32(" in layer


def test_weight_cotangent_tiles_follow_shared_memory(monkeypatch):
    """A weight cotangent's GPU kernel takes the first tile of GRAD_TILES (64, then 32) whose staged
    rows (x and y of each row, in double) fit the block's shared memory, the most rows of
    GRAD_ROW_STEPS; none fitting leaves the derivative to host loops, saying why."""
    from compiler.ir.grad import with_derivatives
    from compiler.targets.cuda import kernels

    program = with_derivatives(checked_program((ROOT / "diagrams/tensornet.diag").read_text()), checked=True)
    vjp = next(d for d in program.diagrams if d.name == "mix_skew_vjp")

    def grad():
        k = kernels.lower_diagram(vjp)
        (g,) = k.grads
        return k, g

    k, g = grad()
    assert (g.tile, g.rows_step, len(g.x)) == (64, 4, 9) and k.device  # 2 x 4 x 64 x 9 doubles: 36 KiB of 48
    assert g.shared_words == 2 * 4 * 64 * 9
    monkeypatch.setattr(kernels, "SHARED_BYTES", 8192)  # one row in a tile of 64 takes 9 KiB
    k, g = grad()
    assert (g.tile, g.rows_step, g.shared_words) == (32, 1, 2 * 32 * 9)
    monkeypatch.setattr(kernels, "SHARED_BYTES", 4000)
    k, g = grad()
    assert g.rows_step == 0 and not k.device and k.host_only == "its weight cotangents' staged rows do not fit a GPU block"


@pytest.mark.parametrize("source, construct", [
    ("diagram f(X: cart2[c]) -> n: scalar { n = X[c,i,i] }", "channel axis 'c' is contracted"),
    ("diagram f(X: vec[c], W: weight[c,d], V: weight[c,d]) -> Y: vec[d] {\n Y[d,i] = W[c,d] V[c,d] X[c,i]\n}",
     "is not channel mixing"),
    ("diagram f(a: vec[c], b: vec) -> (s: scalar[c], t: scalar) {\n s[c] = a[c,i] a[c,i]\n t = b[i] b[i]\n}",
     "term 'b[i] b[i]' of 't' does not carry channel axis 'c' once, which 't' is summed over"),
    ("diagram f(a: vec[c], b: vec[d]) -> (s: scalar[c], t: scalar[d]) {\n s[c] = a[c,i] a[c,i]\n t[d] = b[d,i] b[d,i]\n}",
     "outputs have different channel axes and no output carries all of them"),
    ("diagram f(a: vec[c], W: weight[c,d]) -> (s: vec[c], t: scalar[c,d]) {\n s[c,i] = W[c,d] a[c,i]\n"
     " t[c,d] = W[c,d] a[c,i] a[c,i]\n}", "input 'a' carries some of the channel axes (c, d) but not all"),
])
def test_refuses_what_it_cannot_express(tmp_path, capsys, source, construct):
    src = tmp_path / "bad.diag"
    src.write_text(source + "\n")
    out = tmp_path / "bad.cu"
    assert main(["compile", str(src), "--target", "cuda", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert construct in err and "the cuda target cannot express it" in err
    assert f"{src}:1:" in err  # file:line:col of the diagram
    assert "Traceback" not in err and not out.exists()


def test_nvcc_compiles_every_emitted_source(sources, tmp_path):
    nvcc = shutil.which("nvcc") or next((p for p in ("/usr/local/cuda/bin/nvcc",) if os.path.exists(p)), None)
    if nvcc is None:
        pytest.skip("nvcc not found: the emitted .cu files were not compiled (install the CUDA toolkit)")
    jobs = {stem: subprocess.Popen([nvcc, "-arch=sm_90", "-Xptxas", "-v", "-c", str(cu), "-o", str(tmp_path / f"{stem}.o")],
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for stem, cu in sources.items()}
    failed, gemms = {}, 0
    for stem, job in jobs.items():
        log, _ = job.communicate()
        if job.returncode != 0:
            failed[stem] = log[-3000:]
        elif "warning" in log:
            failed[stem] = "warnings:\n" + log[-3000:]
        # the channel-mixing GEMMs' launch bounds (128 registers in float32) cost no spills
        for name in re.findall(r"^// ---- (\w+) \(mixing\)", sources[stem].read_text(), re.M):
            for suffix in ("f32", "f64"):
                found = re.search(rf"Function properties for diagc_{name}_kernel_{suffix}\n\s*(\d+) bytes stack frame, "
                                  r"(\d+) bytes spill stores", log)
                gemms += 1
                if found is None or found.groups() != ("0", "0"):
                    failed[f"{stem}.{name}_{suffix}"] = found.group(0) if found else "no ptxas report"
    assert not failed, failed
    assert gemms >= 8  # mix, linear_cart2, project, mix_skew: float and double


# ---------------------------------------------------------------------------------------------
# the element functions as host code


def _harness(programs) -> str:
    """C++ calling each element function over n elements laid out one after another."""
    # the element functions only (DIAGC_HOST_ONLY naming no loop: the host loops are test_host_kernels.py's,
    # and theirs are extern "C" names that two files may share); their headers outside the namespaces
    lines = ['#include <cstddef>', '#include <cstdlib>', '#include <cstring>', '#include <pthread.h>', '#define DIAGC_HOST_ONLY']
    for stem, (cu, program) in programs.items():
        lines += [f"namespace f_{stem} {{", f'#include "{cu}"', "}"]
        for k in program.kernels:
            fn = f"f_{stem}::diagc_{k.name}" + ("" if isinstance(k, ElementwiseKernel) else "_z")
            if isinstance(k, ElementwiseKernel):
                outs = [(f"o[{j}] + e * {r.size}") for j, r in enumerate(k.results)]
            else:
                outs = [f"o[0] + e * {max(len(k.z_components), 1)}"]
            args = [f"v[{j}] + e * {v.size}" for j, v in enumerate(k.views)] + outs
            lines += [f'extern "C" void host_{stem}_{k.name}(const double* const* v, double* const* o, long long n) {{',
                      f"    (void)v; for (long long e = 0; e < n; ++e) {fn}<double>({', '.join(args)});",
                      "}"]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def host_library(sources, tmp_path_factory):
    compiler_cmd = shutil.which("g++") or shutil.which("c++")
    if compiler_cmd is None:
        pytest.skip("no C++ compiler (g++) found: the element functions were not compiled as host code")
    folder = tmp_path_factory.mktemp("host")
    programs = {stem: (cu, lower_program(_program(ROOT / "diagrams" / f"{stem}.diag")))
                for stem, cu in sources.items()}
    harness = folder / "harness.cpp"
    harness.write_text(_harness(programs))
    lib = folder / "libdiagc_host.so"
    run = subprocess.run([compiler_cmd, "-O1", "-std=c++17", "-Wall", "-Wextra", "-Werror", "-shared", "-fPIC",
                          str(harness), "-o", str(lib)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-4000:]
    return ctypes.CDLL(str(lib)), programs


def _pointers(arrays):
    ptrs = (ctypes.c_void_p * max(len(arrays), 1))()
    for j, a in enumerate(arrays):
        ptrs[j] = a.ctypes.data
    return ptrs


def _per_element(x: np.ndarray, input_channels: int, places, n_out_channels: int, size: int) -> np.ndarray:
    """x (batch, its channels, geometric) broadcast to (batch, output channels, geometric), flattened
    to (elements, size): what the kernel hands the element function for this view."""
    geo = x.shape[1 + input_channels:]
    shape = [x.shape[0]] + [1] * n_out_channels + list(geo)
    for k, p in enumerate(places):
        shape[1 + p] = x.shape[1 + k]
    full = np.broadcast_to(x.reshape(shape), (x.shape[0],) + (CHANNELS,) * n_out_channels + tuple(geo))
    return np.ascontiguousarray(full).reshape(-1, size)


def _cases():
    out = []
    for path in FILES:
        for d in _program(path).diagrams:
            out.append(pytest.param(path.stem, d.name, id=f"{path.stem}.{d.name}"))
    return out


@pytest.mark.parametrize("stem, name", _cases())
def test_element_functions_match_numpy_module(host_library, stem, name):
    lib, programs = host_library
    program = programs[stem][1]
    kernel = next(k for k in program.kernels if k.name == name)
    module = compiler.load(ROOT / "diagrams" / f"{stem}.diag")
    diagram = next(d for d in checked_program((ROOT / "diagrams" / f"{stem}.diag").read_text()).diagrams
                   if d.name == name)
    rng = np.random.default_rng(sum(map(ord, stem + name)))
    sizes = {c: CHANNELS for t in diagram.inputs + diagram.outputs for c in t.type.channels}
    args = [random_input(t.type, rng, batch=(BATCH,), channel_sizes=sizes) for t in diagram.inputs]
    expected = getattr(module, name)(*args)
    expected = expected if isinstance(expected, tuple) else (expected,)
    fn = getattr(lib, f"host_{stem}_{name}")
    fn.restype = None
    if isinstance(kernel, ElementwiseKernel):
        n_ch = len(kernel.channels)
        n = BATCH * CHANNELS ** n_ch
        views = [_per_element(args[v.position], len(diagram.inputs[v.position].type.channels), v.places, n_ch,
                              v.size) for v in kernel.views]
        outs = [np.full((n, r.size), np.nan) for r in kernel.results]
        fn(_pointers(views), _pointers(outs), ctypes.c_longlong(n))
        assert len(expected) == len(outs)
        for r, got, want in zip(kernel.results, outs, expected):
            want = np.asarray(want, dtype=np.float64).reshape(n, r.size)
            scale = max(1.0, float(np.max(np.abs(want))))
            assert np.max(np.abs(got - want)) <= 1e-12 * scale, r.name
        return
    # channel mixing: z per (batch, c) from the element function, then the terms' weighted sums
    n = BATCH * CHANNELS
    views = [_per_element(args[v.position], len(diagram.inputs[v.position].type.channels), v.places, 1, v.size)
             for v in kernel.views]
    z_words = max(len(kernel.z_components), 1)
    z = np.full((n, z_words), np.nan)
    fn(_pointers(views), _pointers([z]), ctypes.c_longlong(n))
    z = z.reshape(BATCH, CHANNELS, z_words)
    for r, want in zip(kernel.results, expected):
        got = np.zeros((BATCH, CHANNELS, r.size))
        for term in r.terms:
            w = args[term.weight]
            w = w if term.contracted_first else np.swapaxes(w, -1, -2)  # [batch, c, d]
            got += np.einsum("bcd,bcg->bdg", w, z[:, :, term.z_offset:term.z_offset + r.size])
        want = np.asarray(want).reshape(BATCH, CHANNELS, r.size)
        assert np.max(np.abs(got - want)) <= 1e-12 * max(1.0, float(np.max(np.abs(want)))), r.name
