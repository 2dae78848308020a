"""benchmarks/cuda_variants.py without a GPU: ``--prepare`` emits each variant's modules with the
generator's rules set as the variant says (and restores them), and ``--run`` launches every kernel
it times through the tests' cupy stand-in (tests/test_cuda_module.py: the launch's arguments, grid,
block and shared memory checked against the kernel's config; the module's array code computes), so
the GPU run meets no plumbing error. Timings here mean nothing."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import cuda_variants  # noqa: E402
from compiler.targets.cuda import kernels  # noqa: E402
from test_cuda_module import StandIn, host_gpu  # noqa: E402


def _install(m):
    host_gpu(m, StandIn(m).cupy)


def test_prepare_and_run_through_the_stand_in(tmp_path, monkeypatch):
    variants = {k: cuda_variants.VARIANTS[k] for k in ("chosen", "direct", "GEMM 4x1")}
    monkeypatch.setattr(cuda_variants, "VARIANTS", variants)
    rules = (kernels.DIRECT_ROW_WORDS, kernels.MIX_SHAPES)
    cuda_variants.prepare(tmp_path / "v")
    assert (kernels.DIRECT_ROW_WORDS, kernels.MIX_SHAPES) == rules  # restored
    manifest = json.loads((tmp_path / "v" / "manifest.json").read_text())
    assert manifest["variants"]["GEMM 4x1"] == {"folder": "GEMM_4x1", "files": ["tensornet"]}
    direct = (tmp_path / "v" / "direct" / "products.py").read_text()
    assert '"shared_words": {"float32": 0, "float64": 0}' in direct  # the direct form, no shared memory
    assert cuda_variants.run(tmp_path / "v", tmp_path / "out", 4, 5, "cpu", _install) == 0
    report = (tmp_path / "out" / "cuda_variants.md").read_text()
    assert "| products.cross | " in report and "torch.linalg.cross" in report
    mixing = json.loads((tmp_path / "out" / "cuda_variants_mixing.json").read_text())
    routes = {(r["dtype"], r["route"]) for r in mixing if "ms" in r}
    assert {("float32", "kernel chosen"), ("float64", "kernel GEMM 4x1"),
            ("float32", "torch (kernels=False: cuBLAS)")} <= routes


def test_a_folder_from_the_older_script_is_refused(tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps({"diagc": "0", "variants": {"chosen": "chosen"}}))
    with pytest.raises(SystemExit, match="prepared by an older cuda_variants.py"):
        cuda_variants.run(tmp_path, tmp_path / "out", 4, 5, "cpu")
