"""Golden text: the emitted Python module (default target) of every example, and of a one-line
diagram, pinned byte for byte in tests/golden/. A change to code generation that changes a module
shows here as a diff; when the change is meant, refresh the files with

    DIAGC_UPDATE_GOLDEN=1 python -m pytest tests/test_golden.py

and commit them with the change (the diff is the review of what the emitted code now does)."""

import difflib
import os

import pytest

import compiler
from conftest import DIAGRAMS, ROOT

GOLDEN = ROOT / "tests" / "golden"
DOT = "diagram dot(a: vec, b: vec) -> s: scalar {\n    s = a[i] b[i]\n}\n"
UPDATE = os.environ.get("DIAGC_UPDATE_GOLDEN") == "1"


def cases():
    out = [pytest.param(f"diagrams/{p.name}", p.read_text(), f"{p.stem}.py", id=p.stem) for p in DIAGRAMS]
    out.append(pytest.param("dot.diag", DOT, "dot.py", id="dot"))
    return out


@pytest.mark.parametrize("filename, source, golden", cases())
def test_emitted_module_is_pinned(filename, source, golden):
    text = compiler.compile_source(source, filename)
    path = GOLDEN / golden
    if UPDATE:
        path.write_text(text, encoding="utf-8")
    expected = path.read_text(encoding="utf-8")
    if text != expected:
        diff = "".join(difflib.unified_diff(expected.splitlines(True), text.splitlines(True),
                                            f"tests/golden/{golden}", "emitted", n=2))
        pytest.fail(f"emitted module differs from tests/golden/{golden} "
                    f"(DIAGC_UPDATE_GOLDEN=1 refreshes it if the change is meant):\n{diff[:6000]}")


def test_every_example_has_a_golden_file():
    names = {p.stem for p in DIAGRAMS} | {"dot"}
    assert {p.stem for p in GOLDEN.glob("*.py")} == names
