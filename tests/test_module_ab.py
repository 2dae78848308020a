"""benchmarks/module_ab.py: two builds' modules alternated in one process; it refuses builds that
disagree (a regression check must not time a wrong result)."""

import shutil

import pytest

import compiler
from conftest import ROOT
import reference  # noqa: F401  (puts benchmarks/ on the path)
import module_ab


def _build(tmp_path, name, text):
    folder = tmp_path / name
    folder.mkdir()
    (folder / "products.py").write_text(text)
    return folder


def test_module_ab_times_both_builds_and_refuses_a_wrong_one(tmp_path, capsys):
    diags = tmp_path / "diagrams"
    diags.mkdir()
    shutil.copy(ROOT / "diagrams" / "products.diag", diags)
    text = compiler.compile_file(diags / "products.diag")
    old, new = _build(tmp_path, "old", text), _build(tmp_path, "new", text)
    argv = [str(old), str(new), "--diagrams", str(diags), "--sizes", "100", "--repeats", "1",
            "--dtypes", "float64", "--libraries", "numpy", "torch", "--only", "products:"]
    assert module_ab.main(argv) == 0
    printed = capsys.readouterr().out
    for name in ("dot", "cross", "triple"):
        for lib in ("numpy", "torch"):
            assert f"| products:{name} | {lib} | float64 | 1e+02 | 1 |" in printed
    assert "all cases: new / old geomean" in printed and "over 6 cases" in printed
    # a new build whose cross product has the wrong sign is refused before anything is timed
    wrong = _build(tmp_path, "wrong", text + "\n_right = cross\n\n\ndef cross(a, b, **kw):\n"
                                              "    return -_right(a, b, **kw)\n")
    with pytest.raises(SystemExit, match="products:cross numpy float64: old and new disagree"):
        module_ab.main([str(old), str(wrong)] + argv[2:])
