"""Modular evaluation: networks evaluated at random integer points modulo a prime, and the exact rank
profile of the resulting rows (:class:`RankProfile`, float64 BLAS with no rounding). Independence
mod p implies independence over Q."""

from __future__ import annotations

import contextlib

import numpy as np

from ...math.stf import is_stf, stf_from_array
from .request import PRIME, EnumerationError, Request


def random_points(request: Request, n: int, seed: int, p: int = PRIME) -> dict[str, np.ndarray]:
    """n random integer points per input (entries mod p), with the input's symmetry built in."""
    rng = np.random.default_rng(seed)
    points = {}
    for spec in request.inputs:
        t = spec.type
        x = rng.integers(0, p, size=(n,) + t.geometric_dims, dtype=np.int64)
        if t.rank == 2 and t.symmetry:
            if t.symmetry == "skew":
                x = np.triu(x, 1)
                x = (x - np.swapaxes(x, -1, -2)) % p
            else:
                x = np.triu(x) + np.swapaxes(np.triu(x, 1), -1, -2)
                if t.symmetry == "sym_traceless":
                    x[..., 2, 2] = (-x[..., 0, 0] - x[..., 1, 1]) % p
        if is_stf(t):
            x = stf_from_array(x, t.rank)
        points[spec.name] = x % p
    return points


def evaluate(terms, points, out_labels, n, p: int = PRIME, surds: bool = False) -> np.ndarray:
    """Σ coefficient × network at every point, mod p, as an (n, out_size) int64 array; ``surds``: cg
    and P take their images under the homomorphism of :func:`compiler.math.spherical.surd_prime`."""
    from ...math.einsum import ModP, evaluate_term, term_einsum

    domain = ModP(p, error=EnumerationError, surds=surds)
    total = None
    for t in terms:
        value = evaluate_term(term_einsum(t, output=out_labels), points, domain)
        if value.ndim == len(out_labels):  # no input: the same value at every point
            value = np.broadcast_to(value, (n,) + value.shape)
        term = value.reshape(n, -1)
        total = term if total is None else (total + term) % p
    return total


_BLOCK = 512  # candidates evaluated and offered to the rank profile at a time


def block_profile(width: int, count: int, expected: int, rows_of, timings: dict) -> "RankProfile":
    """The rank profile of ``count`` candidates' coordinate rows (``width`` coordinates each),
    evaluated (``rows_of(first, last)``: the rows of candidates first..last-1) and offered to the
    profile in blocks of _BLOCK until it reaches ``expected``; the time of each step is added to
    ``timings`` ("evaluate", "rank")."""
    import time

    profile = RankProfile(width, expected)
    for first in range(0, count, _BLOCK):
        t0 = time.perf_counter()
        rows = rows_of(first, min(first + _BLOCK, count))
        t1 = time.perf_counter()
        with _one_blas_thread():
            profile.add(rows)
        timings["evaluate"] += t1 - t0
        timings["rank"] += time.perf_counter() - t1
        if profile.done:
            break
    return profile


_INNER = 4096  # the longest inner dimension of one product: 4096 products of balanced residues < 2**53
_LEAF = 16  # rows eliminated one by one; larger blocks are split in two


def _mod(x: np.ndarray, p: int) -> np.ndarray:
    """x reduced mod p in place to the balanced residue in [-p/2 - 1, p/2 + 1], for float64 integers
    |x| < 2**53: the quotient is rounded in floating point (exact up to one unit, hence the margin)
    and q * p, x - q * p are exact. Four passes over x; no correction step."""
    q = x * (1.0 / p)
    np.rint(q, out=q)
    q *= p
    x -= q
    return x


def _matmul_mod(a: np.ndarray, b: np.ndarray, p: int) -> np.ndarray:
    """a @ b mod p for balanced residues, exact: the inner dimension is cut into _INNER-long pieces."""
    n = a.shape[1]
    if n <= _INNER:
        return _mod(a @ b, p)
    out = np.zeros((a.shape[0], b.shape[1]))
    for k in range(0, n, _INNER):
        out += _mod(a[:, k:k + _INNER] @ b[k:k + _INNER], p)
    return _mod(out, p)


@contextlib.contextmanager
def _one_blas_thread():
    """Run numpy's OpenBLAS on one thread meanwhile, where it can be found (else change nothing).

    The rank profile makes many mid-sized products; on a shared, loaded machine the threads of one
    product wait for each other and two threads ran 5x slower than one (a 2,048-row profile, 20 s
    against 3.8 s on the project's 2-core box under load)."""
    setter = getter = None
    try:
        import ctypes

        with open("/proc/self/maps") as maps:
            paths = sorted({line.split()[-1] for line in maps if "openblas" in line.split()[-1]})
        for path in paths:
            lib = ctypes.CDLL(path)
            for set_name, get_name in (("scipy_openblas_set_num_threads64_", "scipy_openblas_get_num_threads64_"),
                                       ("openblas_set_num_threads64_", "openblas_get_num_threads64_"),
                                       ("openblas_set_num_threads", "openblas_get_num_threads")):
                if hasattr(lib, set_name) and hasattr(lib, get_name):
                    setter, getter = getattr(lib, set_name), getattr(lib, get_name)
                    break
            if setter:
                break
    except OSError:
        setter = None
    if setter is None:
        yield
        return
    before = getter()
    setter(1)
    try:
        yield
    finally:
        setter(before)


class RankProfile:
    """The first rows, in the order given, that are independent of the rows before them, mod p.

    Rows come in blocks (``add``); the kept rows are held in reduced echelon form (each kept row is 1
    at its own pivot column and 0 at every other pivot column), so a new block is reduced against
    all of them with one matrix product, and the block itself is split in halves recursively (the
    second half reduced against the rows the first half kept, with one product). Every product has
    balanced residues (|x| <= p/2 + 1 with p < 2**21) and an inner dimension of at most 4096, so float64
    arithmetic is exact.
    ``target`` stops the work once that many rows are kept (the character count: no later row can be
    independent). Independence mod p implies independence over Q.
    """

    def __init__(self, width: int, target: int, p: int = PRIME):
        if p >= 2 ** 21:
            raise ValueError("RankProfile needs a prime below 2**21 (exact float64 products)")
        self.p = p
        self.target = target
        self.rows = np.zeros((max(target, 1), width))
        self.pivots: list[int] = []
        self.kept: list[int] = []  # the indices (in the order of all rows added) of the kept rows
        self.seen = 0

    @property
    def rank(self) -> int:
        return len(self.pivots)

    @property
    def done(self) -> bool:
        return self.rank >= self.target

    def add(self, block) -> None:
        """Offer the next rows (integers mod p); the independent ones are kept.

        With rows already kept, the block is first reduced on a sketch: len(block) + 16 columns
        that are not pivots (the residuals' values there are those of the block's residual span at
        that many more generic points, so the sketch's rank profile is the block's). Only the rows the
        sketch keeps are then reduced in full: the rejected ones never cost a full-width product.
        A row that the sketch keeps is independent for certain (its residual is non-zero there)."""
        p = self.p
        block = _mod(np.array(block, dtype=np.float64, ndmin=2), p)
        ids = np.arange(self.seen, self.seen + len(block))
        self.seen += len(block)
        if self.done or not len(block):
            return
        r0 = self.rank
        width = self.rows.shape[1]
        if r0 and 2 * (len(block) + 16) < width - r0:
            free = np.ones(width, dtype=bool)
            free[self.pivots] = False
            cols = np.flatnonzero(free)[:: max(1, (width - r0) // (len(block) + 16))][:len(block) + 16]
            sketch = _mod(block[:, cols] - _matmul_mod(block[:, self.pivots], self.rows[:r0, cols], p), p)
            profile = RankProfile(len(cols), min(len(block), self.target - r0), p)
            profile.add(sketch)
            if not profile.kept:
                return
            block, ids = block[profile.kept], ids[profile.kept]
        if r0:
            block = _mod(block - _matmul_mod(block[:, self.pivots], self.rows[:r0], p), p)
        self._absorb(block, ids)
        if self.rank > r0 and r0:  # keep the older rows reduced at the new pivots (in slices: bounded memory)
            new = self.rows[r0:self.rank]
            for k in range(0, r0, 2048):
                old = self.rows[k:min(k + 2048, r0)]
                old -= _matmul_mod(old[:, self.pivots[r0:]], new, p)
                _mod(old, p)

    def _absorb(self, block: np.ndarray, ids: np.ndarray) -> None:
        """``block`` is reduced against every kept row; its kept rows are reduced among themselves."""
        p = self.p
        start = self.rank
        if len(block) <= _LEAF:
            for k in range(len(block)):
                if self.done:
                    return
                row = block[k]
                r = self.rank
                if r > start:
                    row = _mod(row - _mod(row[self.pivots[start:r]] @ self.rows[start:r], p), p)
                nonzero = np.flatnonzero(row)
                if not len(nonzero):
                    continue
                c = int(nonzero[0])
                row = _mod(row * float(pow(int(row[c]) % p, p - 2, p)), p)
                if r > start:
                    lead = self.rows[start:r, c].copy()
                    self.rows[start:r] -= _mod(np.outer(lead, row), p)
                    _mod(self.rows[start:r], p)
                self.rows[r] = row
                self.pivots.append(c)
                self.kept.append(int(ids[k]))
            return
        half = len(block) // 2
        self._absorb(block[:half], ids[:half])
        if self.done:
            return
        mid = self.rank
        rest = block[half:]
        if mid > start:
            rest = _mod(rest - _matmul_mod(rest[:, self.pivots[start:mid]], self.rows[start:mid], p), p)
        self._absorb(rest, ids[half:])
        end = self.rank
        if end > mid > start:
            upper = self.rows[start:mid]
            upper -= _matmul_mod(upper[:, self.pivots[mid:end]], self.rows[mid:end], p)
            _mod(upper, p)
