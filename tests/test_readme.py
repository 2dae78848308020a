"""What the README promises about names, exit codes, arguments, spherical constants and pictures holds."""

import math
import re

import numpy as np
import pytest

import compiler
from compiler import cli
from conftest import ROOT

README = (ROOT / "README.md").read_text(encoding="utf-8")


def check(tmp_path, capsys, text: str) -> tuple[int, str]:
    path = tmp_path / "x.diag"
    path.write_text(text)
    code = cli.main(["check", str(path)])
    return code, capsys.readouterr().err


# -- reserved names ----------------------------------------------------------------------------------

RESERVED = ["eps", "delta", "cg", "P", "out", "fused", "diagram", "basis", "group", "lambda", "class", "match",
            "case", "float", "double", "new", "this", "threadIdx"]


@pytest.mark.parametrize("name", RESERVED)
def test_reserved_names_are_documented_and_refused(tmp_path, capsys, name):
    assert f"`{name}`" in README
    code, err = check(tmp_path, capsys, f"diagram f({name}: vec) -> s: scalar {{\n    s = 1\n}}\n")
    assert code == 2 and f"'{name}' is a reserved word" in err and "Traceback" not in err


def test_the_documented_replacements_for_lame_constants_work(tmp_path, capsys):
    assert "write `lam` and\n`mu`" in README or "write `lam` and `mu`" in README
    code, _ = check(tmp_path, capsys, "diagram hooke(E: sym2, lam: scalar, mu: scalar) -> S: sym2 {\n"
                    "    S[i,j] = lam E[k,k] delta[i,j] + 2 mu E[i,j]\n}\n")
    assert code == 0
    code, err = check(tmp_path, capsys, "diagram builtin_name(a: vec) -> s: scalar {\n    s = a[i] a[i]\n}\n"
                      "diagram sum(a: vec) -> s: scalar {\n    s = a[i] a[i]\n}\n")
    assert code == 2 and "shadow the Python builtin" in err
    # index names are free
    code, _ = check(tmp_path, capsys, "diagram f(a: vec) -> s: scalar {\n    s = a[lambda] a[lambda]\n}\n")
    assert code == 0


# -- index mistakes: exit 1 or 2, as the README's table says ---------------------------------------------

SIGNATURE = "a: vec, b: vec, d: vec, X: cart2, x: sph(1o), v: vec[c]"
OUTPUT_OF = {"c": "c: vec", "s": "s: scalar", "C": "C: cart2", "s[c]": "s: scalar[c]"}


def _index_table():
    rows = re.findall(r"^\| ([^|`]+) \| `([^`]+)` \| ([12]) \|$", README, flags=re.M)
    return [(what.strip(), example, int(code)) for what, example, code in rows]


def test_the_readme_documents_both_kinds_of_index_mistake():
    rows = _index_table()
    kinds = {what: code for what, _, code in rows}
    assert kinds["a geometric index on three or more legs"] == 1
    assert kinds["a summed index on one leg only"] == 1
    assert sorted(code for _, _, code in rows) == [1, 1, 1, 2, 2, 2, 2]


@pytest.mark.parametrize("what, example, code", _index_table(), ids=[r[0] for r in _index_table()])
def test_index_mistakes_exit_as_documented(tmp_path, capsys, what, example, code):
    lhs = example.split("=")[0].strip()
    key = lhs if lhs == "s[c]" else lhs.split("[")[0]
    got, err = check(tmp_path, capsys, f"diagram f({SIGNATURE}) -> {OUTPUT_OF[key]} {{\n    {example}\n}}\n")
    assert got == code, err
    assert "x.diag:2:" in err and "Traceback" not in err
    assert ("not equivariant" in err) == (code == 1)


# -- arguments: scalars, libraries, dtypes ----------------------------------------------------------------

OPS = """
diagram scale(g: scalar, a: vec) -> b: vec { b[i] = g a[i] }
diagram dot(a: vec, b: vec) -> s: scalar { s = a[i] b[i] }
diagram mm(A: cart2, B: cart2) -> C: cart2 { C[i,j] = A[i,k] B[k,j] }
"""


@pytest.fixture(scope="module")
def ops():
    return compiler.load_source(OPS, "ops")


def test_a_scalar_is_a_python_float_or_a_batch_array(ops):
    torch = pytest.importorskip("torch")
    assert "pass a Python float\n(`scale(2.0, a)`)" in README
    a = np.array([1.0, -2.0, 3.0])
    np.testing.assert_array_equal(ops.scale(2.0, a), 2 * a)
    np.testing.assert_array_equal(ops.scale(np.array(2.0), a), 2 * a)
    batch = ops.scale(np.arange(4.0), np.ones((4, 3)))
    np.testing.assert_array_equal(batch, np.arange(4.0)[:, None] * np.ones((4, 3)))
    t = ops.scale(2.0, torch.tensor(a))
    assert isinstance(t, torch.Tensor) and t.dtype == torch.float64 and t.tolist() == [2.0, -4.0, 6.0]
    assert np.shape(ops.dot(np.ones((5, 3)), np.ones((5, 3)))) == (5,)  # a scalar output: batch shape


def test_mixed_libraries_return_torch_and_numpy_promotes(ops):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    A, B = rng.normal(size=(2, 4, 3, 3))
    want = A @ B
    for args in ((A, torch.tensor(B)), (torch.tensor(A), B)):
        got = ops.mm(*args)
        assert isinstance(got, torch.Tensor) and got.dtype == torch.float64
        np.testing.assert_allclose(got.numpy(), want, atol=1e-12)
    for f, x, y in ((ops.mm, A, B), (ops.dot, A[..., 0], B[..., 0]), (ops.scale, A[..., 0, 0], B[..., 0])):
        assert f(x.astype(np.float32), y).dtype == np.float64
        assert f(x, y.astype(np.float32)).dtype == np.float64
        assert f(x.astype(np.float32), y.astype(np.float32)).dtype == np.float32
    # a numpy array beside a tensor takes the first input's dtype when that is a tensor (documented)
    got = ops.mm(torch.tensor(A, dtype=torch.float32), B)
    assert got.dtype == torch.float32
    # a Python number takes the first input's dtype
    assert ops.scale(2.0, torch.tensor(B[..., 0], dtype=torch.float32)).dtype == torch.float32


def test_torch_float32_with_float64_promotes(ops):
    torch = pytest.importorskip("torch")
    A = torch.ones(4, 3, 3, dtype=torch.float32)
    for x, y in ((A, A.double()), (A.double(), A)):
        got = ops.mm(x, y)
        assert got.dtype == torch.float64
        torch.testing.assert_close(got, torch.full((4, 3, 3), 3.0, dtype=torch.float64))
    assert ops.dot(A[..., 0], A[..., 0].double()).dtype == torch.float64


# -- the exact constants of e3nn's spherical harmonics ----------------------------------------------------

def _constants_table() -> dict[int, float]:
    ls = re.search(r"^\| l \| (0 \| .+) \|$", README, flags=re.M).group(1).split(" | ")
    cs = re.search(r"^\| c_l \| (.+) \|$", README, flags=re.M).group(1).split(" | ")

    def value(text):
        m = re.fullmatch(r"√\(?(\d+)(?:/(\d+))?\)?|(\d+)", text)
        if m.group(3):
            return float(m.group(3))
        return math.sqrt(int(m.group(1)) / int(m.group(2) or 1))
    return {int(l): value(c) for l, c in zip(ls, cs)}


def test_readme_spherical_harmonic_constants_match_e3nn():
    torch = pytest.importorskip("torch")
    pytest.importorskip("e3nn")
    from e3nn import o3

    from compiler.math.spherical import sh_component_constant

    table = _constants_table()
    assert sorted(table) == [0, 1, 2, 3, 4]
    assert table[1] == math.sqrt(3) and table[2] == math.sqrt(15 / 2) and table[3] == math.sqrt(35 / 2)
    rng = np.random.default_rng(7)
    r = rng.normal(size=(6, 3)) * 1.7  # not unit: the constant must not depend on |r|
    for l, c in table.items():
        assert abs(float(sh_component_constant(l)) - c) < 1e-15
        if l == 0:
            continue
        idx = "ijkl"[:l]
        src = (f"diagram y(r: vec) -> Y: sph({l}{'e' if l % 2 == 0 else 'o'}) {{\n"
               f"    Y[m] = P({l})[m,{','.join(idx)}] " + " ".join(f"r[{i}]" for i in idx) + "\n}\n")
        mine = c * compiler.load_source(src, f"sh{l}").y(r)
        ref = o3.spherical_harmonics(l, torch.tensor(r), normalize=False, normalization="component").numpy()
        np.testing.assert_allclose(mine, ref, rtol=1e-12, atol=1e-12)


# -- the legend of the pictures ------------------------------------------------------------------------

LEGEND_DEMO = """
diagram demo(X: cart2[c], v: vec[c], W: weight[c,d], x: sph(1o), y: sph(1o)) -> (Y: cart2[d], a: axial[d], t: sph(2e), s: scalar) {
    Y[d,i,j] = W[c,d] X[c,i,k] X[c,k,j] + 1/3 X[c,k,k] W[c,d] delta[i,j]
    a[d,i] = W[c,d] eps[i,j,k] v[c,j] v[c,k]
    t[m] = cg(1,1,2)[a,b,m] x[a] y[b]
    s = delta[i,i]
}
"""


def test_every_mark_of_the_legend_is_drawn_as_described():
    from compiler.tools.draw import draw_program
    from compiler.frontend.lower import lower_source

    svg = draw_program(lower_source(LEGEND_DEMO, "demo.diag"))
    legend = README[README.index("| in a picture | means |"):]
    legend = legend[:legend.index("\n\n")]
    # each row of the legend, and the SVG element that draws it
    marks = {
        "blue circle or ellipse with a name": r'<g class="tensor"><title>X: cart2\[c\]</title><circle[^>]*fill="#eaf1fb"',
        "green rounded box": r'<g class="tensor sph"><title>x: sph\(1o\)</title><rect[^>]*fill="#e9f6ec"',
        "yellow diamond": r'<g class="weight"><title>W: weight\[c,d\]</title><polygon[^>]*fill="#fff3d1"',
        "small black dot marked ε": r'<g class="eps"><title>eps</title><circle[^>]*fill="#1d1d1f"/><text[^>]*>(ε|&#949;)',
        "dashed grey line": r'<path class="channel"[^>]*stroke-dasharray',
        "small grey square": r'<rect class="hub"',
        "numbered beads 1, 2, 3 on legs": r'<g class="axis"><circle[^>]*/><text[^>]*>3</text>',
        "solid line to an italic label": r'<text class="index"[^>]*font-style="italic"[^>]*>i</text>',
    }
    for words, pattern in marks.items():
        assert words in legend, words
        assert re.search(pattern, svg), words
    assert re.search(r'<g class="tensor"><title>cg\(1,1,2\): [^<]*</title><ellipse[^>]*fill="#eaf1fb"', svg)
    assert len(re.findall(r'<circle class="leg"[^>]*r="9" fill="none"', svg)) == 1  # delta[i,i]
