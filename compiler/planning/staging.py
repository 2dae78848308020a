"""Channel mixing scaled per channel, run in stages: an elementwise diagram, plain mixings, an
elementwise diagram.

A term such as ``n0[d] W0[c,d] i[c] delta[i,j]`` (TensorNet's embedding) or ``W1[c,d] s[c]
eps[k,i,j] X[c,i,j]`` (its projection) contracts a weight ``W[c,d]`` with factors read at the
contracted channel ``c`` (the *pre* side) and factors read at the output channel ``d`` (the *post*
side). No single kernel does both a GEMM and per-channel arithmetic on either side well: on a GPU
the fastest form measured (session 15) was one elementwise kernel for the pre sides, one library
GEMM per weight, one elementwise kernel for the post sides. :func:`stage_diagram` writes that form
as three diagrams:

* ``_NAME_pre``: each distinct pre side as an output ``u[c, L]`` (``L``: its geometric legs that the
  post side or the output reads; the constants go to whichever side makes ``L`` smallest);
* ``_mix_HASH``: ``v[d, L] = W[c,d] u[c, L]`` for each (pre side, weight) pair, plain channel mixing,
  under names of its own (``u0, W0 -> v0``) and named after its content, so that equal mixings of
  several diagrams are one function (a :class:`~compiler.ir.program.StageCall` passes the values);
* ``_NAME_post``: the diagram's outputs from the ``v``, the post-side factors and the terms that
  contract no channel.

A pre side that is an input as it stands (``i[c]``) is passed to the mixing directly. Each stage is
a diagram like any other (planned code, fused code, kernels, generated derivatives) and is checked
by the equivariance checker; an intermediate's type (its inversion parities) is the one the checker
accepts. The stages and their order form a :class:`~compiler.ir.program.Composite`, whose function
and chain-rule VJP :mod:`compiler.planning.fnemit` writes; the diagram's public function calls it.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace
from fractions import Fraction
from math import prod

from ..ir.check import check_diagram
from ..ir.program import Composite, Diagram, Equation, Node, StageCall, Tensor, TensorNetwork, sum_formula
from ..ir.types import Irrep, TensorType

#: at most this many constant nodes in a term are placed by trying every split (2**n)
MAX_CONSTANTS = 8


@dataclass(frozen=True)
class Staging:
    """A diagram run in stages: the composite chaining them (``_NAME_staged``) and the stage diagrams."""

    source: str  # the diagram's name
    composite: Composite
    diagrams: tuple[Diagram, ...]


@dataclass(frozen=True)
class _Split:
    """One mixing term cut at its weight: ``coefficient * post * W * pre``."""

    weight: Node
    c: str  # the contracted channel label (on the weight and the pre side)
    y: str  # the output channel label on the weight
    pre: tuple[Node, ...]
    post: tuple[Node, ...]
    legs: tuple[str, ...]  # L: the pre side's open geometric legs, in order of first appearance


@dataclass(frozen=True)
class _Intermediate:
    """One mixed intermediate ``u[c, L]``: the pre sides ``sums`` of a group of terms (sharing a weight
    and a post side), the group's first split and term, and the input ``u`` is as it stands, if any
    (mixed directly, no pre stage output)."""

    split: _Split
    term: TensorNetwork
    sums: tuple[TensorNetwork, ...]
    direct: Tensor | None


def stage_diagram(d: Diagram) -> Staging | None:
    """The staged form of ``d``, or None where it does not apply: ``d`` contracts no channel, a term
    is not one weight times factors read at its two channels, an intermediate has Cartesian and
    spherical legs together or no type the checker accepts, or nothing would be gained (every pre
    side an input as it stands and no post side reads an input: plain channel mixing already)."""
    if d.stacked or d.basis is not None or d.irreps or d.sum_to or d.in_runs or d.origin:
        return None
    if any(t.type.family == "edges" for t in d.inputs):
        return None
    splits: list[list[_Split | None]] = []
    for eq in d.equations:
        row = []
        for term in eq.terms:
            split = _split(term)
            if split is False:
                return None
            row.append(split)
        splits.append(row)
    if not any(s for row in splits for s in row):
        return None
    # group the mixing terms of an equation that share a weight and a post side: one intermediate
    groups: dict[tuple, list] = {}
    for k, (eq, row) in enumerate(zip(d.equations, splits)):
        for term, s in zip(eq.terms, row):
            if s is not None:
                key = (k, s.weight.name, s.weight.indices.index(s.c), _post_key(term, s))
                groups.setdefault(key, []).append((term, s))
    inters: dict[tuple, int] = {}  # (weight, orientation, pre sum) -> intermediate number
    members: list[_Intermediate] = []
    post_of: dict[int, tuple[int, Fraction] | None] = {}  # id(term) -> (intermediate, post coefficient)
    inputs = {t.name: t for t in d.inputs}
    for items in groups.values():
        (lead_term, s0), lead = items[0], items[0][0].coefficient
        sums = tuple(TensorNetwork(term.coefficient / lead, s.pre, (s.c,) + s.legs, _kinds(s.pre, (s.c,) + s.legs, term))
                     for term, s in items)
        post_coef = lead
        direct = _as_input(sums, s0, inputs)
        if direct is None:  # computed anyway: the coefficient with it (which may make it an input: (1/2)(2 x))
            sums = tuple(TensorNetwork(n.coefficient * lead, n.nodes, n.output, n.kinds) for n in sums)
            post_coef = Fraction(1)
            direct = _as_input(sums, s0, inputs)
        pre_key = (s0.weight.name, s0.weight.indices.index(s0.c), tuple(sorted((n.coefficient, n.shape_key()) for n in sums)))
        if pre_key not in inters:
            inters[pre_key] = len(members)
            members.append(_Intermediate(s0, lead_term, sums, direct))
        post_of[id(lead_term)] = (inters[pre_key], post_coef)
        for term, _ in items[1:]:
            post_of[id(term)] = None  # its pre side is in the first term's intermediate
    name = d.name
    pre_eqs: list[Equation] = []
    u_tensors: dict[int, Tensor] = {}
    for j, m in enumerate(members):
        if m.direct is not None:
            u_tensors[j] = m.direct
            continue
        u = _intermediate(d, f"_{name}_u{j}", m.sums, m.split, m.term)
        if u is None:
            return None
        u_tensors[j] = u[0]
        pre_eqs.append(u[1])
    if not pre_eqs and not any(s.post and any(n.kind == "input" for n in s.post)
                               for row in splits for s in row if s is not None):
        return None  # plain channel mixing already
    # the post stage's terms; an output that is one intermediate as it stands is the mixing's output
    post_terms: list[list] = []
    for eq, row in zip(d.equations, splits):
        terms = []
        for term, s in zip(eq.terms, row):
            if s is None:
                terms.append(term)
            elif post_of[id(term)] is not None:  # else summed into its group's first intermediate
                j, coef = post_of[id(term)]
                terms.append((j, coef, s, term))
        post_terms.append(terms)
    named = {}  # intermediate -> the output it is
    for eq, terms in zip(d.equations, post_terms):
        if len(terms) == 1 and isinstance(terms[0], tuple):
            j, coef, s, term = terms[0]
            if coef == 1 and not s.post and (s.y,) + s.legs == term.output:
                named.setdefault(j, eq)
    if len(named) != len(d.equations) or len(named) != len(members):
        named = {}
    stages = []
    if pre_eqs:
        pre = _diagram(d, f"_{name}_pre", pre_eqs, [Tensor(eq.target, eq.type, d.pos) for eq in pre_eqs])
        if pre is None:
            return None
        stages.append(pre)
    mix_eqs, v_tensors = [], {}
    for j, m in enumerate(members):
        target = named[j] if j in named else None
        v, eq = _mixing(d, target.target if target else f"_{name}_v{j}", m.split, m.term, u_tensors[j],
                        target.type if target else None)
        v_tensors[j] = v
        mix_eqs.append(eq)
    outputs = list(d.outputs) if named else list(v_tensors.values())
    mix = _diagram(d, f"_{name}_mix", mix_eqs, outputs, extra=[u_tensors[j] for j in range(len(members))])
    if mix is None:
        return None
    shared, args = _shared(mix)  # under names of its own: one function (and one host loop) for equal mixings
    steps: list = [s.name for s in stages]
    steps.append(StageCall(shared.name, args, tuple(t.name for t in mix.outputs)))
    stages.append(shared)
    if not named:
        post_eqs = []
        for eq, terms in zip(d.equations, post_terms):
            networks = []
            for t in terms:
                if not isinstance(t, tuple):
                    networks.append(t)
                    continue
                j, coef, s, term = t
                v = v_tensors[j]
                nodes = s.post + (Node("input", v.name, v.type, (s.y,) + s.legs, term.pos),)
                networks.append(TensorNetwork(coef, nodes, term.output, _kinds(nodes, term.output, term), term.pos))
            post_eqs.append(Equation(eq.target, eq.type, tuple(networks), eq.pos))
        post = _diagram(d, f"_{name}_post", post_eqs, list(d.outputs), extra=list(v_tensors.values()))
        if post is None:
            return None
        stages.append(post)
        steps.append(post.name)
    composite = Composite(f"_{name}_staged", d.group, d.inputs, d.outputs, tuple(steps), d.pos)
    return Staging(name, composite, tuple(stages))


def _channels(node: Node) -> tuple[str, ...]:
    return node.indices[:node.n_channels] if node.kind == "input" else ()


def _split(term: TensorNetwork) -> _Split | None | bool:
    """The term cut at its weight; None for a term contracting no channel (it goes to the post
    stage as it is); False where the term is not of the staged form."""
    kinds = dict(term.kinds)
    out_channels = {i for i in term.output if not kinds[i].geometric}
    contracted = {i for n in term.nodes for i in _channels(n)} - out_channels
    if not contracted:
        return None
    if len(contracted) != 1:
        return False
    (c,) = contracted
    carriers = [k for k, n in enumerate(term.nodes) if c in _channels(n)]
    weights = [n for n in (term.nodes[k] for k in carriers) if n.n_channels == 2 and len(n.indices) == 2 and len(set(n.indices)) == 2
               and (set(n.indices) - {c}) <= out_channels]
    if len(weights) != 1:
        return False
    w = weights[0]
    y = next(i for i in w.indices if i != c)
    pre_inputs = [k for k in carriers if term.nodes[k] is not w]
    if not pre_inputs or any(set(_channels(term.nodes[k])) != {c} for k in pre_inputs):
        return False
    constants = [k for k, n in enumerate(term.nodes) if n.kind != "input"]
    if len(constants) > MAX_CONSTANTS:
        return False
    best = None
    for mask in range(1 << len(constants)):
        chosen = {k for j, k in enumerate(constants) if mask >> j & 1}
        pre = tuple(n for k, n in enumerate(term.nodes) if k in chosen or k in pre_inputs)  # in the term's order
        legs = _open_legs(pre, kinds)
        if legs is None:
            continue
        size = prod(3 if kinds[i].kind == "cart" else 2 * int(kinds[i].dim) + 1 for i in legs)
        score = (size, len(chosen))
        if best is None or score < best[0]:
            post = tuple(n for k, n in enumerate(term.nodes)
                         if k not in chosen and k not in pre_inputs and n is not w)
            best = (score, pre, post, legs)
    if best is None:
        return False
    _, pre, post, legs = best
    return _Split(w, c, y, pre, post, legs)


def _open_legs(nodes: tuple[Node, ...], kinds: dict) -> tuple[str, ...] | None:
    """The geometric labels met once among ``nodes`` (joined to the other side or open), in order;
    None where they mix Cartesian and spherical legs, or hold more than one spherical leg."""
    count: dict[str, int] = {}
    for n in nodes:
        for i in n.indices:
            if kinds[i].geometric:
                count[i] = count.get(i, 0) + 1
    legs = tuple(i for i, k in count.items() if k == 1)
    families = {kinds[i].kind for i in legs}
    if len(families) > 1 or ("sph" in families and len(legs) > 1):
        return None
    return legs


def _kinds(nodes, output, term: TensorNetwork) -> tuple:
    used = {i for n in nodes for i in n.indices} | set(output)
    return tuple((i, k) for i, k in term.kinds if i in used)


def _post_key(term: TensorNetwork, s: _Split) -> tuple:
    """The post side with a placeholder for the mixed intermediate: terms of an equation with the
    same weight and equal keys add their pre sides into one intermediate."""
    holder = Node("input", "\0v", TensorType("cart", 0, "", (1,)), (s.y,) + s.legs)
    nodes = s.post + (holder,)
    return TensorNetwork(Fraction(1), nodes, term.output, _kinds(nodes, term.output, term)).shape_key()


def _as_input(sums, s: _Split, inputs: dict) -> Tensor | None:
    """The input an intermediate is as it stands (one node, coefficient 1, its legs in order), else None."""
    if len(sums) != 1 or sums[0].coefficient != 1 or len(sums[0].nodes) != 1:
        return None
    (node,) = sums[0].nodes
    if node.kind != "input" or node.indices != (s.c,) + s.legs or len(set(node.indices)) != len(node.indices):
        return None
    return inputs.get(node.name)


def _candidates(legs: tuple[str, ...], kinds: dict, channel) -> list[TensorType]:
    """The types an intermediate with geometric legs ``legs`` may have, the likeliest first."""
    if not legs:
        return [TensorType("cart", 0, "", (p,), channels=(channel,)) for p in (1, -1)]
    if kinds[legs[0]].kind == "sph":
        l = int(kinds[legs[0]].dim)
        return [TensorType("sph", irrep=Irrep(l, p), channels=(channel,)) for p in ((-1) ** l, -(-1) ** l)]
    r = len(legs)
    if r == 2:
        return [TensorType("cart", 2, "", ps, channels=(channel,)) for ps in itertools.product((1, -1), repeat=3)]
    return [TensorType("cart", r, "", (p,), channels=(channel,)) for p in (1, -1)]


def _intermediate(d: Diagram, name: str, sums, s: _Split, term: TensorNetwork) -> tuple[Tensor, Equation] | None:
    """The pre stage's output for one intermediate, with the type the checker accepts."""
    kinds = dict(term.kinds)
    channel = kinds[s.c].dim
    used = {n.name for net in sums for n in net.nodes if n.kind == "input"}
    ins = tuple(t for t in d.inputs if t.name in used)
    for typ in _candidates(s.legs, kinds, channel):
        eq = Equation(name, typ, tuple(sums), d.pos)
        trial = Diagram(name, d.group, ins, (Tensor(name, typ, d.pos),), (eq,), d.pos, origin=d.name)
        if check_diagram(trial).ok:
            return Tensor(name, typ, d.pos), eq
    return None


def _mixing(d: Diagram, name: str, s: _Split, term: TensorNetwork, u: Tensor,
            typ: TensorType | None) -> tuple[Tensor, Equation]:
    """``v[y, L] = W u[c, L]`` for one intermediate, with fresh labels (of type ``typ``, a declared
    output's, else the intermediate's with the output channel)."""
    kinds = dict(term.kinds)
    legs = tuple(f"k{n}" for n in range(len(s.legs)))
    rename = dict(zip(s.legs, legs)) | {s.c: "c", s.y: "d"}
    w = Node("input", s.weight.name, s.weight.type, tuple(rename[i] for i in s.weight.indices), s.weight.pos)
    un = Node("input", u.name, u.type, ("c",) + legs)
    typ = typ or replace(u.type, channels=(kinds[s.y].dim,))
    table = tuple([("c", kinds[s.c]), ("d", kinds[s.y])] + [(rename[i], kinds[i]) for i in s.legs])
    network = TensorNetwork(Fraction(1), (w, un), ("d",) + legs, table, term.pos)
    return Tensor(name, typ, d.pos), Equation(name, typ, (network,), d.pos)


def _shared(mix: Diagram) -> tuple[Diagram, tuple[str, ...]]:
    """The mixing stage with its inputs named ``u0, u1, ...`` then its weights ``W0, ...``, its outputs
    ``v0, ...``, named after its content (``_mix_`` and a hash): two staged diagrams with equal
    mixings (TensorNet's project and compose_mixed: three parts, three weights) share one function.
    Also the names of the values it takes, in the order of its inputs."""
    import hashlib

    ordered = [t for t in mix.inputs if t.type.family != "weight"] + [t for t in mix.inputs if t.type.family == "weight"]
    mix = replace(mix, inputs=tuple(ordered))
    counts = {"u": 0, "W": 0}
    rename = {}
    for t in mix.inputs:
        kind = "W" if t.type.family == "weight" else "u"
        rename[t.name] = f"{kind}{counts[kind]}"
        counts[kind] += 1
    rename.update({t.name: f"v{k}" for k, t in enumerate(mix.outputs)})

    def tensors(ts):
        return tuple(replace(t, name=rename[t.name]) for t in ts)

    equations = tuple(replace(eq, target=rename[eq.target], terms=tuple(
        replace(term, nodes=tuple(replace(n, name=rename[n.name]) if n.kind == "input" else n for n in term.nodes))
        for term in eq.terms)) for eq in mix.equations)
    inputs, outputs = tensors(mix.inputs), tensors(mix.outputs)
    text = "\n".join([mix.group, repr([(t.name, str(t.type)) for t in inputs + outputs])]
                     + [f"{eq.target} = {sum_formula(eq.terms)}" for eq in equations])
    name = "_mix_" + hashlib.sha256(text.encode()).hexdigest()[:12]
    return replace(mix, name=name, inputs=inputs, outputs=outputs, equations=equations), tuple(t.name for t in ordered)


def _diagram(d: Diagram, name: str, equations, outputs, extra=()) -> Diagram | None:
    """A stage of ``d``: its inputs are those of ``d`` its equations read, in ``d``'s order, then
    the intermediates among ``extra`` they read; None when the checker does not accept it."""
    used = {n.name for eq in equations for t in eq.terms for n in t.nodes if n.kind == "input"}
    ins = [t for t in d.inputs if t.name in used]
    ins += [t for t in extra if t.name in used and t not in ins]
    stage = Diagram(name, d.group, tuple(ins), tuple(outputs), tuple(equations), d.pos, origin=d.name)
    return stage if check_diagram(stage).ok else None
