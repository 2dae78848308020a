"""The shipped testing module must catch what it is meant to catch."""

import numpy as np
import pytest

from compiler.testing import act, assert_equivariant, random_input, random_reflection, random_rotation


def test_rotations_and_reflections():
    rng = np.random.default_rng(0)
    r, m = random_rotation(rng), random_reflection(rng)
    for g, det in ((r, 1), (m, -1)):
        np.testing.assert_allclose(g @ g.T, np.eye(3), atol=1e-12)
        assert np.isclose(np.linalg.det(g), det)


def test_random_inputs_have_their_symmetry():
    rng = np.random.default_rng(1)
    s = random_input("sym2t[c]", rng, (3,), {"c": 2})
    assert s.shape == (3, 2, 3, 3)
    np.testing.assert_allclose(s, np.swapaxes(s, -1, -2))
    np.testing.assert_allclose(np.trace(s, axis1=-2, axis2=-1), 0, atol=1e-12)
    a = random_input("skew2", rng)
    np.testing.assert_allclose(a, -np.swapaxes(a, -1, -2))


def test_graded_action_flips_only_odd_parts():
    rng = np.random.default_rng(2)
    x = random_input("cart2", rng)
    mirror = -np.eye(3)
    y = act("cart2(0e+1o+2e)", mirror, x)
    np.testing.assert_allclose(y, (x + np.swapaxes(x, -1, -2)) / 2 - (x - np.swapaxes(x, -1, -2)) / 2)
    np.testing.assert_allclose(act("cart2", mirror, x), x)
    np.testing.assert_allclose(act("vec", mirror, x[..., 0]), -x[..., 0])
    np.testing.assert_allclose(act("axial", mirror, x[..., 0]), x[..., 0])


def test_detects_non_equivariant_functions():
    with pytest.raises(AssertionError, match="rotation"):
        assert_equivariant(lambda a: a * a, ["vec"], ["vec"])  # componentwise square
    with pytest.raises(AssertionError, match="reflection"):
        assert_equivariant(lambda a, b: np.cross(a, b), ["vec", "vec"], ["vec"])  # cross is axial
    assert_equivariant(lambda a, b: np.cross(a, b), ["vec", "vec"], ["axial"])
    assert_equivariant(lambda a, b: np.cross(a, b), ["vec", "vec"], ["vec"], group="SO3")


def test_spherical_l1_is_e3nn_order():
    """e3nn 0.6 stores l = 1 as (x, y, z): spherical_harmonics(1, r) = sqrt(3) r, D^1(R) = R."""
    rng = np.random.default_rng(3)
    g = random_rotation(rng)
    v = rng.normal(size=3)
    np.testing.assert_allclose(act("sph(1o)", g, v), g @ v)
    np.testing.assert_allclose(act("sph(1o)", -g, v), -(g @ v))  # improper: D^1(g) times p = -1


def test_spherical_l2_action_matches_the_cartesian_one():
    from compiler.math.spherical import cartesian_to_spherical_numeric

    rng = np.random.default_rng(4)
    g = random_rotation(rng)
    p2 = cartesian_to_spherical_numeric(2)
    s = random_input("sym2t", rng, ())
    np.testing.assert_allclose(act("sph(2e)", g, p2 @ s.reshape(-1)), p2 @ (g @ s @ g.T).reshape(-1), atol=1e-12)
