"""Proof certificates bound to the emitted code, and their verification.

``prove`` writes, for every diagram of a file, the structural proof of the checker (node lemmas,
matched edges, parity products, exact symmetry checks) and an algebraic proof run on the *emitted
module itself*: the identity f(rho(g) x) = rho(g) f(x) checked exactly, in rational arithmetic
(numpy object arrays of ``fractions.Fraction``), for

* two rotations given by the Cayley transform of rational skew matrices, R = I + 2(K + K²)/(1 + |w|²):
  exactly orthogonal with det 1; their angles have rational cosines other than 0, ±1/2, ±1, so by
  Niven's theorem they are irrational multiples of pi, and their axes differ. The set of g for which
  the identity holds is a closed subgroup of O(3); it then contains the two circle groups generated
  by R1 and R2, which together generate SO(3). So the identity for R1 and R2 is the identity for
  every rotation;
* a reflection (a rational mirror, det -1) when the group is O(3): with SO(3) it generates O(3).

The identity is a polynomial identity in the input entries, of degree at most D (the largest number
of input factors in a term). It is checked at random integer points drawn from a set of size S per
entry; a nonzero polynomial of degree D vanishes there with probability at most D/S
(Schwartz-Zippel), so a false pass over t independent points has probability at most
(number of group elements) × (D/S)^t, which the certificate states.

A diagram with cg or P constants is the exception: their values are square roots of rationals, which
the module holds rounded to float64. Its identity is then proved exactly on the source (exact surds,
exact Wigner D matrices), and the module is bound to the source by its sha256 and a numerical
agreement check (relative 1e-10 at random points).

For a stacked basis (a ``basis`` declaration) the certificate also holds the completeness claim:
the character-theory dimension and a rank witness, points at which the basis evaluations have full
rank (checked exactly).

``verify`` re-checks all of it from the certificate, the source and the module alone: hashes, the
claims against the source's declarations, the structural proof re-derived, the group elements
(orthogonality, determinant, Niven's condition, distinct axes), the identity at the recorded points
and at fresh points derived from the hashes, and the rank witness.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import shutil
import stat
import tempfile
from fractions import Fraction
from pathlib import Path

import numpy as np

from .. import __version__
from ..errors import DiagError, OutputError
from ..ir.program import sum_formula
from ..ir.types import FixedSize

FORMAT = "diagc-certificate/1"
SAMPLE_BITS = 20  # entries of random points are integers in [-2^19, 2^19): S = 2^20
TRIALS = 2
SYMBOLIC_ENTRIES = 40  # identities with at most this many input entries (one batch, channels of 2)
SYMBOLIC_DEGREE = 3  # and at most this degree are expanded symbolically and shown to be zero


class CertificateError(DiagError):
    """A certificate that does not verify (exit code 1)."""

    exit_code = 1
    kind = "verification failed"


# ------------------------------------------------------------------------------------------------
# exact group elements and their action (shared by prover and verifier; a few lines each)
# ------------------------------------------------------------------------------------------------

def cayley(w) -> list[list[Fraction]]:
    """R = I + 2(K + K²)/(1 + |w|²) for the skew K with axial vector w: exactly orthogonal, det 1."""
    a, b, c = (Fraction(x) for x in w)
    k = [[0, -c, b], [c, 0, -a], [-b, a, 0]]
    k2 = [[sum(k[i][m] * k[m][j] for m in range(3)) for j in range(3)] for i in range(3)]
    s = Fraction(2) / (1 + a * a + b * b + c * c)
    return [[Fraction(int(i == j)) + s * (k[i][j] + k2[i][j]) for j in range(3)] for i in range(3)]


def mirror(n) -> list[list[Fraction]]:
    """The reflection I - 2 n nᵀ/(n·n) through the plane normal to n: orthogonal, det -1."""
    n = [Fraction(x) for x in n]
    nn = sum(x * x for x in n)
    return [[Fraction(int(i == j)) - 2 * n[i] * n[j] / nn for j in range(3)] for i in range(3)]


def det3(m) -> Fraction:
    return (m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1]) - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
            + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0]))


def act_exact(typ, g, x):
    """rho(g) x exactly for an object array x of Fractions (the shipped testing.act, exact inputs)."""
    from ..testing import act

    return act(typ, np.array(g, dtype=object), np.asarray(x, dtype=object))


def with_symmetry(typ, x):
    """An object array of independent entries made symmetric, antisymmetric or symmetric traceless
    as ``typ`` declares (from its upper triangle; symt(l) from its free entries, compiler.math.stf)."""
    from ..math.stf import is_stf, stf_from_array

    if is_stf(typ):
        return stf_from_array(x, typ.rank)
    if typ.family == "cart" and typ.rank == 2 and typ.symmetry:
        if typ.symmetry == "skew":
            x = np.triu(x, 1) - np.swapaxes(np.triu(x, 1), -1, -2)
        else:
            x = np.triu(x) + np.swapaxes(np.triu(x, 1), -1, -2)
            if typ.symmetry == "sym_traceless":
                x[..., 2, 2] = -x[..., 0, 0] - x[..., 1, 1]
    return x


def random_point(typ, rng: random.Random, batch: int, channels: int):
    """Random integer entries in [-2^19, 2^19) with the type's symmetry, as Fractions."""
    shape = (batch,) + tuple(c.size if isinstance(c, FixedSize) else channels for c in typ.channels) + typ.geometric_dims
    half = 1 << (SAMPLE_BITS - 1)
    x = np.empty(shape, dtype=object)
    for idx in np.ndindex(*shape):
        x[idx] = Fraction(rng.randrange(-half, half))
    return np.vectorize(Fraction, otypes=[object])(with_symmetry(typ, x))


def _encode(x) -> list:
    return np.vectorize(str, otypes=[object])(np.asarray(x, dtype=object)).tolist()


def _decode(data):
    return np.vectorize(Fraction, otypes=[object])(np.array(data, dtype=object))


def _exact_equal(a, b) -> bool:
    a, b = np.asarray(a, dtype=object), np.asarray(b, dtype=object)
    if a.shape != b.shape:
        return False
    for x, y in zip(a.flat, b.flat):
        if x == y:
            continue
        import sympy

        if sympy.expand(sympy.sympify(x) - sympy.sympify(y)) != 0:  # square roots: compare expanded
            return False
    return True


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def symbolic_point(types):
    """Inputs made of independent symbols (one batch entry, channel axes of size 2), with the declared
    symmetry of each type built in."""
    import sympy

    args = []
    for k, typ in enumerate(types):
        shape = (1,) + (2,) * len(typ.channels) + typ.geometric_dims
        x = np.empty(shape, dtype=object)
        for idx in np.ndindex(*shape):
            x[idx] = sympy.Symbol(f"x{k}_{'_'.join(map(str, idx))}")
        args.append(with_symmetry(typ, x))
    return args


def symbolic_size(types) -> int:
    return sum(int(np.prod((1,) + (2,) * len(t.channels) + t.geometric_dims)) for t in types)


def check_identity_symbolic(fn, in_types, out_types, g) -> tuple[str | None, int]:
    """(None or what failed, number of expanded entries): f(g x) - g f(x) expanded to zero."""
    import sympy

    args = symbolic_point(in_types)
    try:
        plain = fn(*args)
        moved = fn(*[act_exact(t, g, a) for t, a in zip(in_types, args)])
    except Exception as exc:
        return f"the module raised {type(exc).__name__}: {exc}", 0
    if len(out_types) == 1:
        plain, moved = (plain,), (moved,)
    count = 0
    for t, y, y_moved in zip(out_types, plain, moved):
        diff = np.asarray(y_moved, dtype=object) - act_exact(t, g, np.asarray(y, dtype=object))
        for entry in np.asarray(diff, dtype=object).flat:
            count += 1
            if sympy.expand(entry) != 0:
                return "f(g x) - g f(x) does not expand to zero", count
    return None, count


def check_identity(fn, in_types, out_types, g, points) -> str | None:
    """None if f(rho(g) x) == rho(g) f(x) exactly at every point, else what failed."""
    for k, args in enumerate(points):
        try:
            plain = fn(*args)
            moved = fn(*[act_exact(t, g, a) for t, a in zip(in_types, args)])
        except Exception as exc:  # the module itself failed on exact inputs
            return f"the module raised {type(exc).__name__}: {exc}"
        if len(out_types) == 1:
            plain, moved = (plain,), (moved,)
        for t, y, y_moved in zip(out_types, plain, moved):
            if not _exact_equal(y_moved, act_exact(t, g, np.asarray(y, dtype=object))):
                return f"f(g x) != g f(x) at point {k}"
    return None


def exact_rank(rows) -> int:
    """Rank of a list of rows of Fractions (Gaussian elimination)."""
    m = [list(r) for r in rows]
    rank, col = 0, 0
    ncols = len(m[0]) if m else 0
    while rank < len(m) and col < ncols:
        piv = next((i for i in range(rank, len(m)) if m[i][col] != 0), None)
        if piv is None:
            col += 1
            continue
        m[rank], m[piv] = m[piv], m[rank]
        inv = 1 / m[rank][col]
        for i in range(rank + 1, len(m)):
            if m[i][col] != 0:
                f = m[i][col] * inv
                m[i] = [a - f * b for a, b in zip(m[i], m[rank])]
        rank += 1
        col += 1
    return rank


# ------------------------------------------------------------------------------------------------
# prove
# ------------------------------------------------------------------------------------------------

def _group_elements(seed: str, group: str):
    """Two Cayley rotations meeting Niven's condition with distinct axes, and a mirror for O3."""
    rng = random.Random(seed)
    rotations = []
    while len(rotations) < 2:
        w = [Fraction(rng.randrange(-9, 10), rng.randrange(1, 10)) for _ in range(3)]
        if all(x == 0 for x in w):
            continue
        r = cayley(w)
        cos = (r[0][0] + r[1][1] + r[2][2] - 1) / 2
        if cos in (0, Fraction(1, 2), Fraction(-1, 2), 1, -1):
            continue
        if rotations and _parallel(rotations[0][0], w):
            continue
        rotations.append((w, r))
    elements = [{"kind": "rotation", "w": [str(x) for x in w], "matrix": _encode(r)} for w, r in rotations]
    if group == "O3":
        n = [Fraction(rng.randrange(1, 10), rng.randrange(1, 10)) for _ in range(3)]
        elements.append({"kind": "reflection", "normal": [str(x) for x in n], "matrix": _encode(mirror(n))})
    return elements


def _parallel(u, v) -> bool:
    cross = [u[1] * v[2] - u[2] * v[1], u[2] * v[0] - u[0] * v[2], u[0] * v[1] - u[1] * v[0]]
    return all(c == 0 for c in cross)


def _degree(diagram) -> int:
    return max((sum(1 for n in t.nodes if n.kind == "input") for eq in diagram.equations for t in eq.terms),
               default=0)


def _points(diagram, seed: str, trials: int = TRIALS, batch: int = 1, channels: int = 2):
    rng = random.Random(seed)
    return [[random_point(t.type, rng, batch, channels) for t in diagram.inputs] for _ in range(trials)]


def prove_source(source: str, filename: str):
    """(certificate dict, module text) for every diagram of a source; raises DiagError if it fails."""
    from ..api import checked_program, module_from_text
    from ..ir.check import check_program
    from ..targets.python.codegen import generate_python

    from ..frontend.graph import split_program
    from ..ir.grad import with_derivatives

    program = checked_program(source, filename)
    module_text = generate_python(program)
    program, graphs = split_program(program)  # a graph diagram: its per-edge and per-node diagrams
    program = with_derivatives(program, checked=True, second=False)  # NAME_vjp certified like NAME
    module = module_from_text(module_text, "certified")
    verdicts = {v.diagram: v for v in check_program(program)}
    src_hash, mod_hash = sha256(source), sha256(module_text)
    diagrams = []
    for d in program.diagrams:
        verdict = verdicts[d.name]
        fn = getattr(module, f"_{d.name}_blocks" if d.irreps else d.name)  # irreps: the block-level function
        in_types = [t.type for t in d.inputs]
        out_types = [t.type for t in d.outputs] if not d.stacked else [d.outputs[0].type]
        elements = _group_elements(f"{src_hash}:{d.name}:elements", d.group)
        points = _points(d, f"{src_hash}:{d.name}:points")
        degree = _degree(d)
        symbolic = symbolic_size(in_types) <= SYMBOLIC_ENTRIES and degree <= SYMBOLIC_DEGREE
        irrational = _irrational(d)
        # every code path of the function (planned, out=, fused=True) against the source
        agreement = module_agreement(fn, ir_function(d), in_types, f"{src_hash}:{d.name}:agreement")
        if agreement > AGREEMENT_TOLERANCE:
            raise DiagError(f"internal error: the emitted code for '{d.name}' differs from its source by "
                            f"{agreement:.1e}")
        if irrational:  # the module's constants are rounded: prove the source exactly, bind the module
            fn = ir_function(d)
        results = []
        for el in elements:
            g = _decode(el["matrix"]).tolist()
            problem = check_identity(fn, in_types, out_types, g, points)
            expanded = 0
            if problem is None and symbolic:
                problem, expanded = check_identity_symbolic(fn, in_types, out_types, g)
            if problem is not None:
                raise DiagError(f"internal error: the emitted code for '{d.name}' fails the exact identity "
                                f"for a {el['kind']}: {problem}")
            results.append({**el, "holds": True, **({"expanded_entries": expanded} if symbolic else {})})
        bound = Fraction(0) if symbolic else Fraction(len(elements)) * Fraction(degree, 2 ** SAMPLE_BITS) ** TRIALS
        entry = {
            "name": d.name,
            "group": d.group,
            "inputs": [{"name": t.name, "type": str(t.type)} for t in d.inputs],
            "outputs": [{"name": t.name, "type": str(t.type)} for t in d.outputs] if not d.stacked
            else [{"name": "stack", "type": str(d.outputs[0].type), "count": len(d.outputs)}],
            "stacked": d.stacked,
            "equations": [{"output": eq.target, "formula": sum_formula(eq.terms)} for eq in d.equations],
            "structural": {
                "terms": [{"formula": p.formula, "lemmas": list(p.lemmas), "edges": list(p.edges),
                           "parity": p.parity} for p in verdict.proofs],
                "exact_checks": list(verdict.exact_checks),
            },
            "algebraic": {
                "method": ("symbolic: f(g x) - g f(x) expanded to zero, and checked at random integer points"
                           if symbolic else "exact identity at random integer points (Schwartz-Zippel)"),
                "symbolic": symbolic,
                **checked_on(irrational),
                "module_agreement": agreement,
                "degree": degree,
                "sample_size": 2 ** SAMPLE_BITS,
                "trials": TRIALS,
                "elements": results,
                "points": [[_encode(a) for a in args] for args in points],
                "false_pass_bound": str(bound),
            },
        }
        if d.stacked:
            entry["completeness"] = _completeness(d, fn, src_hash, source)
        diagrams.append(entry)
    cert = {
        "format": FORMAT,
        "diagc": __version__,
        "source": {"file": "source.diag", "name": os.path.basename(filename), "sha256": src_hash},
        "module": {"file": "module.py", "sha256": mod_hash},
        "diagrams": diagrams,
    }
    if graphs:
        cert["graphs"] = [graph_claim(g) for g in graphs.values()]
    if program.composites:  # diagrams with function nodes: their stages are proved above
        cert["functions"] = function_axioms(program)
    return cert, module_text, program


#: why the gathers and sums over edges of a graph diagram need no proof beyond its parts'
GRAPH_AXIOM = ("an edge list is an incidence matrix on the node and edge axes, which are not geometric: rho(g) "
               "acts on geometric axes only, so a gather (x read at each edge's node) and a sum over the edges "
               "arriving at a node commute with every group element; the diagram is the gathers, its per-edge "
               "diagram, the sums over edges and its per-node diagram, each part proved below")


def graph_claim(g) -> dict:
    """What a certificate records of a graph diagram: how it splits, and the axiom it rests on."""
    return {
        "name": g.diagram.name,
        "edge_lists": list(g.edge_lists),
        "gathers": [{"argument": x.name, "input": x.source, "edge_list": x.edges} for x in g.gathers],
        "sums_over_edges": [{"output": s.output, "message": s.message, "edge_list": s.edges} for s in g.scatters],
        "parts": [p.name for p in (g.edge_part, g.node_part) if p is not None],
        "axiom": GRAPH_AXIOM,
    }



#: the axiom a function node is taken as (the stage after it receives its results as typed inputs)
FUNCTION_AXIOM = ("a function of invariants is invariant: its arguments are outputs of a proved stage "
                  "(declared scalar, or pscalar into an odd function), its results enter the next stage as "
                  "inputs of the type stated")


def function_axioms(program) -> list:
    """For each diagram with function nodes: its stages in order (each proved as a diagram of this
    certificate) and each function node, stated as an axiom with its typed arguments and results."""
    from ..frontend.functions import shown
    from ..ir.program import Apply, Sum

    out = []
    for c in program.composites:
        steps = []
        for step in c.steps:
            if isinstance(step, Sum):  # a sum of invariants (broadcast over channel axes) is invariant
                steps.append({"sum": [p.name for p in step.parts], "result": {"name": step.target.name,
                                                                             "type": str(step.target.type)}})
            elif isinstance(step, Apply):
                steps.append({"apply": shown(step.function), "builtin": step.builtin,
                              "arguments": [{"name": a.name, "type": str(a.type)} for a in step.arguments],
                              "results": [{"name": r.name, "type": str(r.type)} for r in step.results],
                              "axiom": FUNCTION_AXIOM})
            else:
                steps.append({"stage": step})
        out.append({"name": c.name, "steps": steps})
    return out


AGREEMENT_TOLERANCE = 1e-10

#: what the algebraic proof ran on, by ``checked_on``: the certificate states it, the report prints it
CHECKED = {
    "module": "the emitted module itself, in exact rational arithmetic (numpy object arrays of Fraction): "
              "its constants (delta, eps, rational coefficients) are exact",
    "source": "the source, with exact constants (cg/P as square roots of rationals) and exact Wigner D "
              "matrices, because the module holds those constants rounded to float64; the module is bound "
              "to the source by its sha256 and the numerical agreement below",
}


def checked_on(irrational: bool) -> dict:
    """The certificate's statement of where the identity was proved: {"checked_on", "checked"}."""
    where = "source" if irrational else "module"
    return {"checked_on": where, "checked": CHECKED[where]}


def _irrational(d) -> bool:
    """True if the diagram uses cg or P, whose values the module holds rounded to float64."""
    return any(n.kind in ("cg", "P") for eq in d.equations for t in eq.terms for n in t.nodes)


def ir_function(d):
    """The diagram evaluated from its IR, exactly: constants as exact sympy values (square roots of
    rationals), inputs as given (object arrays of Fractions or symbols). Same signature as the module's."""
    import sympy

    from ..math.einsum import Exact, evaluate_sum

    domain = Exact(coefficient=lambda c: sympy.Rational(c.numerator, c.denominator))

    def f(*args):
        arrays = {t.name: np.asarray(a, dtype=object) for t, a in zip(d.inputs, args)}
        outs = [np.asarray(evaluate_sum(eq.terms, arrays, domain), dtype=object) for eq in d.equations]
        if d.stacked:
            outs = np.broadcast_arrays(*outs)
            return np.stack(outs, axis=-(d.outputs[0].type.n_geometric + len(d.outputs[0].type.channels)) - 1)
        return outs[0] if len(outs) == 1 else tuple(outs)

    return f


def module_agreement(fn, exact_fn, in_types, seed: str) -> float:
    """max |module(x) - source(x)| / max(1, |source(x)|) at random float points, over every code
    path of the module's function: the planned one, ``out=`` buffers, ``fused=True`` and both
    (``fused=True`` in a module with kernels: its fused array code, and its host loops where a C++
    compiler is found)."""
    rng = np.random.default_rng(int(hashlib.sha256(seed.encode()).hexdigest()[:8], 16))
    from ..testing import random_input

    args = [random_input(t, rng, (3,), {c: 2 for c in t.channels}) for t in in_types]
    want = exact_fn(*args)
    want = want if isinstance(want, tuple) else (want,)
    want = [np.vectorize(float, otypes=[float])(np.asarray(w, dtype=object)) for w in want]
    planned = fn(*args)
    buffers = tuple(np.full(np.shape(p), np.nan) for p in (planned if isinstance(planned, tuple) else (planned,)))
    import inspect

    if not {"out", "fused"} <= set(inspect.signature(fn).parameters):  # not a module diagc emits
        raise CertificateError(f"the module's function '{fn.__name__}' does not take out= and fused=")
    written = fn(*args, out=buffers if len(buffers) > 1 else buffers[0])
    paths = [planned, written]
    # fused=True twice where the module has host loops: its fused array code (HOST_KERNELS off) and,
    # where a C++ compiler is found, the host loops (the C++ in its embedded source)
    module = getattr(fn, "__globals__", {})
    settings = [None]
    if "HOST_KERNELS" in module:
        settings = [False] + ([True] if module["_CUDA_SOURCE"] is not None and module["_host_compiler"]() else [])
    for setting in settings:
        with _host_kernels(module, setting):
            both = tuple(np.full(np.shape(b), np.nan) for b in buffers)
            paths += [fn(*args, fused=True), fn(*args, fused=True, out=both if len(both) > 1 else both[0])]
    return _worst(paths, want)


@contextlib.contextmanager
def _host_kernels(module, setting):
    """The module's HOST_KERNELS switch set to ``setting`` for the block (None: left alone). With host
    loops on, a loop that could not be built (the module then warns and runs its array code) fails the
    check: the certificate would otherwise claim a path it never ran."""
    if setting is None:
        yield
        return
    saved = module["HOST_KERNELS"]
    module["HOST_KERNELS"] = setting
    try:
        yield
    finally:
        module["HOST_KERNELS"] = saved
    if setting and module["_HOST"].get("failed"):
        raise CertificateError("the module's host loops (fused=True on CPU arrays) could not be built with "
                               f"{module['_HOST'].get('compiler')}, so they were not checked; see the warning above "
                               "(the cache folder is DIAGC_CACHE, the compiler CXX)")


def _worst(paths, want) -> float:
    worst = 0.0
    for got in paths:
        got = got if isinstance(got, tuple) else (got,)
        for g, w in zip(got, want):
            worst = max(worst, float(np.max(np.abs(np.asarray(g, dtype=float) - w), initial=0.0))
                        / max(1.0, float(np.max(np.abs(w), initial=0.0))))
    return worst


def _completeness(d, fn, seed: str, source: str) -> dict:
    """The character-theory dimension and points at which the stacked basis has full rank."""
    k = len(d.outputs)
    out = d.outputs[0].type
    rng = random.Random(f"{seed}:{d.name}:witness")
    n = max(1, -(-(k + 2) // max(1, 3 ** out.rank // 2)))
    args = [random_point(t.type, rng, n, 2) for t in d.inputs]
    values = np.asarray(fn(*args), dtype=object)  # (n, k, ...)
    rows = [values[:, j].reshape(-1).tolist() for j in range(k)]
    rank = exact_rank(rows)
    return {"dimension": k, "character_dimension": _basis_dimension(source, d.name), "rank": rank,
            "witness_points": [_encode(a) for a in args]}


def write_certificate(source_path: str, out_dir: str) -> dict:
    """Prove every diagram of a file and write the certificate folder atomically."""
    from ..api import current_umask, read_source
    from .draw import draw_diagram

    source = read_source(source_path)
    cert, module_text, program = prove_source(source, source_path)
    out = Path(out_dir)
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise OutputError(f"cannot write {out}: folder {parent} does not exist")
    if out.exists() and not (out.is_dir() and (out / "certificate.json").is_file()):
        raise OutputError(f"cannot write {out}: it exists and is not a certificate folder")
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=parent))
    except OSError as exc:
        raise OutputError(f"cannot write {out}: {exc.strerror or exc}") from None
    try:
        # mkdtemp's folder is private (0o700): give it the mode a plain mkdir would, or keep the old one's
        os.chmod(tmp, stat.S_IMODE(out.stat().st_mode) if out.is_dir() else 0o777 & ~current_umask())
        (tmp / "source.diag").write_text(source, encoding="utf-8")
        (tmp / "module.py").write_text(module_text, encoding="utf-8")
        pictures = {}
        for d in program.diagrams:
            name = f"{d.name}.svg"
            (tmp / name).write_text(draw_diagram(d), encoding="utf-8")
            pictures[d.name] = name
        (tmp / "certificate.json").write_text(json.dumps(cert, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        (tmp / "report.md").write_text(report(cert, pictures), encoding="utf-8")
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise OutputError(f"cannot write {out}: {exc.strerror or exc}") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return cert


def report(cert: dict, pictures: dict) -> str:
    lines = [f"# Certificate: {cert['source']['name']}", "",
             f"diagc {cert['diagc']}; source sha256 `{cert['source']['sha256']}`; "
             f"module sha256 `{cert['module']['sha256']}`.", "",
             "Re-check with `diagc verify` on this folder.", ""]
    for d in cert["diagrams"]:
        sig = ", ".join(f"{i['name']}: {i['type']}" for i in d["inputs"])
        outs = ", ".join(f"{o['name']}: {o['type']}" + (f" × {o['count']}" if "count" in o else "")
                         for o in d["outputs"])
        lines += [f"## {d['name']}: ({sig}) -> {outs}, equivariant under {d['group']}", ""]
        if d["name"] in pictures:
            lines += [f"![{d['name']}]({pictures[d['name']]})", ""]
        lines += ["### Formula", "", "```"]
        for eq in d["equations"]:
            lines.append(f"{eq['output']} = {eq['formula']}")
        lines += ["```", "", "### Structural proof (composition lemma)", ""]
        for k, t in enumerate(d["structural"]["terms"]):
            lines.append(f"{k + 1}. term `{t['formula']}`")
            for lemma in t["lemmas"]:
                lines.append(f"   - node {lemma}")
            for edge in t["edges"]:
                lines.append(f"   - edge {edge}: both legs carry the same representation")
            if t["parity"] is not None:
                lines.append(f"   - parity product {t['parity']:+d} equals the output's")
        for c in d["structural"]["exact_checks"]:
            lines.append(f"- {c}")
        a = d["algebraic"]
        lines += ["", f"### Algebraic proof (on the {a['checked_on']})", "",
                  f"- f is {a['checked']}"]
        for el in a["elements"]:
            what = f"Cayley rotation w = ({', '.join(el['w'])})" if el["kind"] == "rotation" else \
                f"mirror with normal ({', '.join(el['normal'])})"
            lines.append(f"- f(g x) = g f(x) holds for the {what} at {a['trials']} random points")
        lines.append(f"- every code path of the module (planned, out=, fused=True) agrees with the source, "
                     f"evaluated exactly, to {a['module_agreement']:.1e} (relative, float64)")
        if a.get("symbolic"):
            lines.append("- for each element, every entry of f(g x) - g f(x) on symbolic inputs was expanded and is "
                         "zero: the identity holds exactly, for all inputs")
        else:
            lines.append(f"- polynomial degree ≤ {a['degree']}, entries from a set of {a['sample_size']} integers: "
                         f"probability of a false pass ≤ {a['false_pass_bound']}")
        lines += [
                  "- the two rotations have irrational angles (rational cosines other than 0, ±1/2, ±1: "
                  "Niven) about different axes, so they generate a dense subgroup of SO(3)", ""]
        if "completeness" in d:
            c = d["completeness"]
            lines += ["### Completeness", "",
                      f"- {c['dimension']} elements; character theory gives dimension {c['character_dimension']}; "
                      f"the elements have rank {c['rank']} at the witness points, so they are a basis", ""]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------
# verify (its own path: it trusts nothing but the certificate, the source and the module)
# ------------------------------------------------------------------------------------------------

def verify(path: str) -> str:
    """Re-check a certificate folder (or its certificate.json); return a one-line summary or raise."""
    p = Path(path)
    folder = p if p.is_dir() else p.parent
    cert_path = folder / "certificate.json" if p.is_dir() else p
    try:
        cert = json.loads(cert_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise OutputError(f"cannot read {cert_path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise OutputError(f"cannot read {cert_path}: {exc}") from None
    except json.JSONDecodeError as exc:
        raise CertificateError(f"{cert_path} is not valid JSON (truncated or edited?): {exc.msg} at line "
                               f"{exc.lineno}") from None
    try:
        return _verify(cert, folder)
    except CertificateError:
        raise
    except DiagError as err:
        raise CertificateError(f"the certified source does not check: {err}") from None
    except (KeyError, TypeError, ValueError, IndexError, AttributeError, ZeroDivisionError) as exc:
        raise CertificateError(f"the certificate is malformed ({type(exc).__name__}: {exc})") from None


def _verify(cert: dict, folder: Path) -> str:
    from ..api import module_from_text
    from ..ir.check import check_program
    from ..frontend.lower import lower_source
    from ..ir.types import TensorType

    if cert.get("format") != FORMAT:
        raise CertificateError(f"unknown certificate format {cert.get('format')!r}")
    try:
        source = (folder / cert["source"]["file"]).read_text(encoding="utf-8")
        module_text = (folder / cert["module"]["file"]).read_text(encoding="utf-8")
    except OSError as exc:
        raise CertificateError(f"missing file: {exc.filename}") from None
    failures = []
    if sha256(source) != cert["source"]["sha256"]:
        failures.append("the source does not match its sha256 in the certificate")
    if sha256(module_text) != cert["module"]["sha256"]:
        failures.append("the module does not match its sha256 in the certificate")
    if sha256(source) not in module_text:
        failures.append("the module was not generated from this source (its docstring names another sha256)")
    if failures:
        raise CertificateError("; ".join(failures))
    from ..frontend.graph import split_program
    from ..ir.grad import with_derivatives

    program, graphs = split_program(lower_source(source, cert["source"].get("name", "source.diag")))
    if cert.get("graphs", []) != [graph_claim(g) for g in graphs.values()]:
        raise CertificateError("the certificate's graph diagrams (gathers, sums over edges, parts) differ from "
                               "the source's")
    program = with_derivatives(program, second=False)
    declared = {d.name: d for d in program.diagrams}
    verdicts = {v.diagram: v for v in check_program(program)}
    module = module_from_text(module_text, "certified")
    if cert.get("functions", []) != (function_axioms(program) if program.composites else []):
        failures.append("the function nodes (stages and axioms) claimed differ from the source's")
    if [d["name"] for d in cert["diagrams"]] != list(declared):
        raise CertificateError("the certificate does not cover exactly the source's diagrams and their "
                               "derivatives (NAME_vjp)")
    n_checks = 0
    for entry in cert["diagrams"]:
        name = entry["name"]
        d = declared[name]
        where = f"diagram '{name}'"
        # the claims must be the source's declarations
        if entry["group"] != d.group:
            failures.append(f"{where}: certificate claims group {entry['group']}, source says {d.group}")
        if [(i["name"], i["type"]) for i in entry["inputs"]] != [(t.name, str(t.type)) for t in d.inputs]:
            failures.append(f"{where}: the inputs claimed differ from the source")
        claimed = [(o["name"], o["type"]) for o in entry["outputs"]]
        actual = ([(t.name, str(t.type)) for t in d.outputs] if not d.stacked
                  else [("stack", str(d.outputs[0].type))])
        if claimed != actual:
            failures.append(f"{where}: certificate claims outputs {claimed}, source declares {actual}")
        # the structural proof, re-derived
        v = verdicts[name]
        if not v.ok:
            failures.append(f"{where}: the source is not equivariant: {v.error.message}")
        recorded = [(t["formula"], t["lemmas"], t["edges"], t["parity"]) for t in entry["structural"]["terms"]]
        derived = [(p.formula, list(p.lemmas), list(p.edges), p.parity) for p in v.proofs]
        if recorded != derived:
            failures.append(f"{where}: the structural proof does not match the one re-derived from the source")
        # the algebraic proof, re-run on the module with the *claimed* types
        fn = getattr(module, f"_{name}_blocks" if d.irreps else name, None)
        if fn is None:
            failures.append(f"{where}: the module has no function '{name}'")
            continue
        # every code path must agree with the source numerically; with irrational constants the
        # identity is then proved on the source exactly
        err = module_agreement(fn, ir_function(d), [t.type for t in d.inputs], f"verify:{name}")
        if err > AGREEMENT_TOLERANCE:
            failures.append(f"{where}: the module differs from the source by {err:.1e}")
        if entry["algebraic"].get("checked_on") != checked_on(_irrational(d))["checked_on"]:
            failures.append(f"{where}: the certificate says the identity was checked on the "
                            f"{entry['algebraic'].get('checked_on')}, but it is checked on the "
                            f"{checked_on(_irrational(d))['checked_on']}")
        if _irrational(d):
            fn = ir_function(d)
        in_types = [TensorType.parse(i["type"]) for i in entry["inputs"]]
        out_types = [TensorType.parse(o["type"]) for o in entry["outputs"]]
        elements = entry["algebraic"]["elements"]
        rotations = [e for e in elements if e["kind"] == "rotation"]
        mirrors = [e for e in elements if e["kind"] == "reflection"]
        if len(rotations) < 2 or (entry["group"] == "O3" and not mirrors):
            failures.append(f"{where}: too few group elements for {entry['group']}")
        for e in rotations:
            g = _decode(e["matrix"]).tolist()
            if g != cayley([Fraction(x) for x in e["w"]]):
                failures.append(f"{where}: a rotation is not the Cayley transform of its w")
            cos = (g[0][0] + g[1][1] + g[2][2] - 1) / 2
            if cos in (0, Fraction(1, 2), Fraction(-1, 2), 1, -1):
                failures.append(f"{where}: a rotation has a rational angle (Niven's condition fails)")
        if len(rotations) >= 2 and _parallel([Fraction(x) for x in rotations[0]["w"]],
                                             [Fraction(x) for x in rotations[1]["w"]]):
            failures.append(f"{where}: the two rotations share an axis")
        for e in mirrors:
            g = _decode(e["matrix"]).tolist()
            if g != mirror([Fraction(x) for x in e["normal"]]) or det3(g) != -1:
                failures.append(f"{where}: the reflection is not a mirror")
        recorded_points = [[_decode(a) for a in args] for args in entry["algebraic"]["points"]]
        fresh = _points(d, f"verify:{cert['module']['sha256']}:{name}")
        for e in elements:
            g = _decode(e["matrix"]).tolist()
            for pts, what in ((recorded_points, "recorded"), (fresh, "fresh")):
                problem = check_identity(fn, in_types, out_types, g, pts)
                n_checks += 1
                if problem is not None:
                    failures.append(f"{where}: the algebraic check fails for a {e['kind']} at the {what} "
                                    f"points ({problem}) under the claimed types")
        degree = _degree(d)
        symbolic = bool(entry["algebraic"].get("symbolic"))
        if symbolic:
            for e in elements:
                problem, _ = check_identity_symbolic(fn, in_types, out_types, _decode(e["matrix"]).tolist())
                n_checks += 1
                if problem is not None:
                    failures.append(f"{where}: the symbolic check fails for a {e['kind']} ({problem}) under the "
                                    "claimed types")
        bound = Fraction(0) if symbolic else Fraction(len(elements)) * Fraction(degree, 2 ** SAMPLE_BITS) ** TRIALS
        if Fraction(entry["algebraic"]["false_pass_bound"]) < bound:
            failures.append(f"{where}: the stated false-pass bound is smaller than the true one ({bound})")
        if d.stacked:
            c = entry.get("completeness")
            if c is None:
                failures.append(f"{where}: a basis certificate needs its completeness claim")
            else:
                expected = _basis_dimension(source, name)
                args = [_decode(a) for a in c["witness_points"]]
                values = np.asarray(fn(*args), dtype=object)
                rows = [values[:, j].reshape(-1).tolist() for j in range(values.shape[1])]
                if c["dimension"] != len(d.outputs) or c["dimension"] != expected \
                        or c.get("character_dimension") != expected:
                    failures.append(f"{where}: {c['dimension']} elements but character theory gives {expected}")
                if exact_rank(rows) != len(d.outputs):
                    failures.append(f"{where}: the basis evaluations do not have full rank at the witness points")
    if failures:
        raise CertificateError("; ".join(failures))
    n_irrational = sum(1 for d in declared.values() if _irrational(d))
    where_checked = "on the module" if not n_irrational else \
        f"on the module ({n_irrational} with irrational constants: on the source, the module agreeing numerically)"
    return (f"verified {len(cert['diagrams'])} diagram(s) of {cert['source'].get('name')}: structure re-derived, "
            f"{n_checks} exact identity checks passed {where_checked}")


def _basis_dimension(source: str, name: str) -> int:
    """The character-theory dimension for a basis declaration of the source."""
    from ..math.characters import hom_dimension
    from .enumeration import rep_of
    from ..frontend.parser import parse
    from ..frontend import ast

    module = parse(source)
    for decl in module.diagrams:
        if isinstance(decl, ast.Basis) and decl.name == name:
            import itertools

            ranges = [range(i.degree + 1) if i.up_to else [i.degree] for i in decl.inputs]
            total = 0
            for combo in itertools.product(*ranges):
                total += hom_dimension([(rep_of(i.param.type), k) for i, k in zip(decl.inputs, combo)],
                                       rep_of(decl.output.type), module.group)
            return total
    return -1
