import pytest

from compiler.ir.types import FixedSize, Irrep, TensorType, TypeSyntaxError


@pytest.mark.parametrize("text, canonical, inversion, dims", [
    ("scalar", "scalar", 1, ()),
    ("pscalar", "pscalar", -1, ()),
    ("vec", "vec", -1, (3,)),
    ("cart(1)", "vec", -1, (3,)),
    ("axial", "axial", 1, (3,)),
    ("pcart(1)", "axial", 1, (3,)),
    ("cart2", "cart2", 1, (3, 3)),
    ("cart(2)", "cart2", 1, (3, 3)),
    ("cart2(0e+1e+2e)", "cart2", 1, (3, 3)),
    ("cart2(0o+1o+2o)", "pcart(2)", -1, (3, 3)),
    ("cart2(0e+1o+2e)[c]", "cart2(0e+1o+2e)[c]", None, (3, 3)),
    ("sym2", "sym2", 1, (3, 3)),
    ("skew2(1o)[c,d]", "skew2(1o)[c,d]", -1, (3, 3)),
    ("sym2t", "sym2t", 1, (3, 3)),
    ("cart(3)", "cart(3)", -1, (3, 3, 3)),
    ("pcart(3)", "pcart(3)", 1, (3, 3, 3)),
    ("cart(0)", "scalar", 1, ()),
    ("sph(2e)[c]", "sph(2e)[c]", 1, (5,)),
    ("sph(1o)", "sph(1o)", -1, (3,)),
    ("weight[c,d]", "weight[c,d]", 1, ()),
])
def test_parse_print_roundtrip(text, canonical, inversion, dims):
    t = TensorType.parse(text)
    assert str(t) == canonical
    assert TensorType.parse(str(t)) == t
    assert repr(t) == f"TensorType('{canonical}')"
    assert t.inversion == inversion
    assert t.geometric_dims == dims


def test_equal_types_compare_equal_and_hash_alike():
    assert TensorType.parse("cart(1)") == TensorType.parse("vec")
    assert len({TensorType.parse("cart2"), TensorType.parse("cart(2)"), TensorType.parse("cart2(0e+1e+2e)")}) == 1
    assert TensorType.parse("vec") != TensorType.parse("axial")
    assert TensorType.parse("vec[c]") != TensorType.parse("vec[d]")


def test_parts_of_graded_rank2():
    t = TensorType.parse("cart2(0e+1o+2e)")
    assert [str(p) for p in t.parts] == ["0e", "1o", "2e"]
    assert t.graded and t.pseudo is None


@pytest.mark.parametrize("text, message", [
    ("vector", "unknown type 'vector'"),
    ("cart(x)", "needs a rank"),
    ("cart(99)", "above the supported maximum"),
    ("sym2(0e+1e+2e)", "irreducible parts l = 0, 2"),
    ("vec(1o)", "takes no arguments"),
    ("weight", "at least one channel axis"),
    ("vec[c,c]", "repeat a name"),
    ("sph(3)", "not an irrep"),
])
def test_bad_types(text, message):
    with pytest.raises(TypeSyntaxError, match=message.replace("(", r"\(")):
        TensorType.parse(text)


def test_irrep():
    assert Irrep.parse("3o") == Irrep(3, -1) and str(Irrep(2, 1)) == "2e" and Irrep(2, 1).dim == 5
    with pytest.raises(ValueError):
        Irrep(1, 0)


def test_fixed_size_channels_are_typed():
    """A number among a type's channel axes is a FixedSize (never a digit string); names stay str."""
    t = TensorType.parse("weight[16,c,16]")
    assert t.channels == (FixedSize(16), "c", FixedSize(16)) and str(t) == "weight[16,c,16]"
    assert TensorType.parse(str(t)) == t
    h = TensorType.parse("irreps(32x0e+8x1o)")
    assert h.block_type(Irrep.parse("1o")).channels == (FixedSize(8),)
    assert str(h.block_type(Irrep.parse("0e"))) == "scalar[32]"
    with pytest.raises(TypeSyntaxError, match="repeat a name"):
        TensorType.parse("weight[c,16,c]")


def test_emitted_signature_writes_fixed_sizes_as_ints():
    import numpy as np

    import compiler

    src = "diagram mix(W: weight[4,c], x: vec[c]) -> y: vec[4] {\n  y[d,i] = W[d,c] x[c,i]\n}\n"
    assert '_check_shapes((("W", (4, "c"), ()), ("x", ("c",), (3,)),), (W, x))' in compiler.compile_source(src)
    mix = compiler.load_source(src).mix
    assert mix(np.ones((4, 5)), np.ones((2, 5, 3))).shape == (2, 4, 3)
    with pytest.raises(ValueError, match=r"W has shape \(3, 5\); expected \(\.\.\., 4, c\)"):
        mix(np.ones((3, 5)), np.ones((2, 5, 3)))
