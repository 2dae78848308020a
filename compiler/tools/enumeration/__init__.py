"""Enumerate every independent equivariant contraction between given tensor types, and prove the
list complete.

For inputs V_1..V_n used with polynomial degrees d_1..d_n and an output W (Cartesian types):

1. **candidates**: the legs of all input copies and of the output are joined pairwise by deltas
   (a perfect matching), with one eps on three legs when the number of legs is odd (never two:
   eps eps is a determinant of deltas). Contractions that vanish by a declared symmetry are
   skipped (the trace of a skew or traceless tensor, eps on two legs of a symmetric one, ...).
2. **dedupe** by a canonical form of each network, which treats the copies of one input, the legs
   of a symmetric tensor and the legs of eps as interchangeable.
3. **order**: fewest eps; then the fewest input factors on the part of the network that carries the
   output legs (delta before X before X·X: the classical generators); then the fewest scalar
   factors (traces, dot products); then the canonical form. Deterministic.
4. **independence**: every candidate, projected onto the output's symmetry, is evaluated at random
   integer points modulo a prime p (distinct inputs without symmetry: at random product points, one
   vector per leg); the first candidates (in the order above) whose evaluation vectors are
   independent mod p are kept (:class:`.modular.RankProfile`, which stops at the character count).
   Independence mod p implies independence over Q. Above MAX_DIMENSION (``allow_large``) distinct
   inputs without symmetry take the coupling basis instead (:func:`.coupling.enumerate_coupled`), which
   needs no rank step (:func:`.coupling._distinct`).
5. **completeness**: the number kept must equal dim Hom_G(⊗ S^{d_i} V_i, W) from character theory
   (:mod:`compiler.math.characters`). Since the kept elements are independent over Q and the space has
   exactly that dimension, they are a basis. A shortfall is an error, never a silent result.

Requests with a spherical type or a ``symt(l)`` (symmetric powers of spherical inputs, mixed
Cartesian/spherical requests) are enumerated by coupling paths instead: see
:func:`.coupling.enumerate_coupled`. Spherical inputs of degree 1 into a spherical output keep the plain
list of coupling paths (:func:`.coupling.enumerate_spherical`), which needs no rank step.

The package, one module per step (each a function of the one before, no module reads another's
state): ``request`` (the request, its limits and checks, the result types) -> ``candidates`` (the
matchings) -> ``canonical`` (dedupe and order) -> ``networks`` (a candidate as projected networks)
-> ``modular`` (evaluation mod p, the rank profile) -> ``search`` (the enumeration; ``coupling`` for
spherical requests) -> ``rendering`` (words, listing, JSON, .diag).
"""

from .coupling import MAX_COUPLING_CANDIDATES
from .modular import RankProfile, evaluate, random_points
from .rendering import describe, element_formula, listing, to_diag, to_json, words
from .request import (MAX_DIMENSION, MAX_LEGS, MAX_LEGS_GENERAL, PRIME, Basis, BasisSet, Element, EnumerationError,
                      InputSpec, Request, expected_dimension, refuse_large, rep_of, validate)
from .search import enumerate_basis, enumerate_degrees

__all__ = ["MAX_COUPLING_CANDIDATES", "MAX_DIMENSION", "MAX_LEGS", "MAX_LEGS_GENERAL", "PRIME", "Basis", "BasisSet",
           "Element", "EnumerationError", "InputSpec", "RankProfile", "Request", "describe", "element_formula",
           "enumerate_basis", "enumerate_degrees", "evaluate", "expected_dimension", "listing", "random_points",
           "refuse_large", "rep_of", "to_diag", "to_json", "validate", "words"]
