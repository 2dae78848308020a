"""Python code generation: a printer with one ``_print_<Node>`` method per plan node (sympy style),
and a jinja2 template (``templates/python_module.py.j2``) that holds the shape of the module.

Everything that comes from the user reaches the emitted text through :func:`py_string` (escaped
string literals) or as a name that the parser has already checked to be a safe identifier.
"""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import replace
from fractions import Fraction
from functools import lru_cache
from importlib import resources
from pathlib import Path

import jinja2

from . import __version__
from .constants import EPS
from .ir import Diagram, Program, sum_formula
from .fuse import FusedPlan
from .plan import broadcast_indexes
from .plan import Contraction, FlatMatmul, FunctionPlan, Matmul, OutputPlan, Product, Scaled, Unrolled, plan_diagram

TABLES = {
    "eps": tuple(tuple(tuple(int(EPS[i, j, k]) for k in range(3)) for j in range(3)) for i in range(3)),
    "eye": ((1, 0, 0), (0, 1, 0), (0, 0, 1)),
}


def py_string(text: str, triple: bool = False) -> str:
    """A Python string literal whose value is exactly ``text``, whatever it contains.

    Backslashes, quotes and every control character except the newline are escaped, so the
    literal can never end early or smuggle code into the module.
    """
    out = []
    for ch in text:
        code = ord(ch)
        if ch == "\\":
            out.append("\\\\")
        elif ch == '"':
            out.append('\\"')
        elif ch == "\n":
            out.append("\n" if triple else "\\n")
        elif code < 32 or code == 127 or 0xD800 <= code <= 0xDFFF or code in (0x85, 0x2028, 0x2029):
            out.append(f"\\u{code:04x}" if code > 0xFF else f"\\x{code:02x}")
        else:
            out.append(ch)
    quote = '"""' if triple else '"'
    return quote + "".join(out) + quote


class PythonPrinter:
    """Prints plan nodes as Python source (one ``_print_<Node>`` method per node type)."""

    def doprint(self, node) -> str:
        return getattr(self, "_print_" + type(node).__name__)(node)

    def _print_Contraction(self, c: Contraction) -> str:
        args = ", ".join(f"_{o}" if o in TABLES or o.startswith("c_") else o for o in c.operands)
        lhs, _, rhs = c.spec.partition("->")
        if len(c.operands) == 1 and lhs == rhs:  # an identity: no work to do
            return f"{c.var} = {args}"
        if c.broadcast:
            return f"{c.var} = " + " * ".join(_broadcast(c.spec, args.split(", ")))
        how = "einsum_blas" if c.blas else "einsum"
        return f"{c.var} = _b.{how}({py_string(c.spec)}, {args})"

    def _print_FlatMatmul(self, m: FlatMatmul) -> str:
        w = f"_b.swap({m.operands[0]})" if m.transpose else m.operands[0]
        return f"{m.var} = _b.matmul_flat({w}, {m.operands[1]}, {m.n})"

    def _print_Matmul(self, m: Matmul) -> str:
        x, y = (f"_b.swap({o})" if t else o for o, t in zip(m.operands, m.transpose))
        return f"{m.var} = {x} @ {y}"

    def _print_Product(self, p: Product) -> str:
        """One signed product of sliced operands: plain * when the slices line up, einsum otherwise."""
        parts = []
        for name, idx in p.slices:
            parts.append(f"{name}[..., {', '.join(':' if i is None else str(i) for i in idx)}]"
                         if any(i is not None for i in idx) else name)
        lhs, out = p.spec.split("->")
        if all(sub == out for sub in lhs.split(",")):
            return " * ".join(parts)
        if broadcast_indexes(p.spec) is not None:
            return " * ".join(_broadcast(p.spec, parts))
        return f"_b.einsum({py_string(p.spec)}, {', '.join(parts)})"

    def _signed(self, p: Product) -> tuple[int, str]:
        """(sign, text of |coefficient| × product)."""
        text = self.doprint(p)
        magnitude = abs(p.coefficient)
        if magnitude != 1:
            text = f"{magnitude!r} * {text}"
        return (-1 if p.coefficient < 0 else 1), text

    def _shared_products(self, u: Unrolled):
        """(each cell's (sign, product text), lines naming the products used by several cells,
        text -> name): a product shared by components is computed once."""
        texts = [[self._signed(p) for p in products] for products in u.cells]
        counts: dict = {}
        for cell in texts:
            for _, t in cell:
                counts[t] = counts.get(t, 0) + 1
        lines, names = [], {}
        for t, n in counts.items():
            if n > 1 and ("einsum" in t or "*" in t):
                names[t] = f"{u.var}_{len(names)}"
                lines.append(f"{names[t]} = {t}")
        return texts, lines, names

    def _print_Unrolled(self, u: Unrolled) -> str:
        """Components of an unrolled contraction (eps, or a sparse constant table), stacked; a
        product used by several components is computed once, and a zero component is a zeros_like
        of a computed one."""
        texts, lines, names = self._shared_products(u)
        cells = []
        for cell in texts:
            text = ""
            for k, (sign, t) in enumerate(cell):
                t = names.get(t, t)
                text += (("-" if sign < 0 else "") if k == 0 else (" - " if sign < 0 else " + ")) + t
            cells.append(text or None)
        filler = next(c for c in cells if c is not None)
        zero = None
        if any(c is None for c in cells):
            zero = f"{u.var}_z"
            shape_of = filler[1:] if filler.startswith("-") and " " not in filler else filler  # no negation
            lines.append(f"{zero} = _b.zeros_like({shape_of})")
        cells = [c if c is not None else zero for c in cells]
        if not u.open_dims:
            value = cells[0]
        elif len(u.open_dims) == 1:
            value = "_b.stack((" + ", ".join(cells) + ("," if len(cells) == 1 else "") + "), -1)"
        else:  # one stack of all components (row-major), then the trailing axis split: a single copy
            value = "_b.unflatten(_b.stack((" + ", ".join(cells) + f"), -1), {u.open_dims})"
        if u.source:
            value = f"_b.moveaxis({value}, {u.source}, {u.destination})"
        lines.append(f"{u.var} = {value}")
        return "\n    ".join(lines)

    def _print_Scaled(self, s: Scaled) -> str:
        value = s.var
        if value is None and s.eye_spec is None:  # a number alone
            value = "_b.one(_like)"
        elif value is None:  # deltas only: a fresh constant array
            n = s.eye_spec.partition("->")[0].count(",") + 1
            value = f"_b.copy(_b.einsum({py_string(s.eye_spec)}, {', '.join(['_eye'] * n)}))"
        elif s.eye_spec is not None:
            value = self.eye_names.get((s.var, s.eye_spec)) or self._times_eye(value, s.eye_spec)
        c = abs(s.coefficient)
        if c == 0:
            return f"0 * {value}"
        if c == 1:
            return value
        if c.denominator == 1:
            return f"{c.numerator} * {value}"
        return f"{value} * _b.rational({c.numerator}, {c.denominator}, _like)"

    @staticmethod
    def _times_eye(var: str, spec: str) -> str:
        """var ⊗ delta: a broadcast multiply when the delta's legs are the trailing output axes (cheaper
        than an einsum outer product on every backend), else an einsum."""
        lhs, out = spec.split("->")
        core, *eyes = lhs.split(",")
        if len(eyes) == 1 and core.startswith("...") and out == core + eyes[0]:
            return f"{var}[..., None, None] * _eye"
        return f"_b.einsum({py_string(spec)}, {var}, _eye)"

    views: frozenset = frozenset()  # vars that may be views of an input (single-operand einsums)
    eye_names: dict = {}  # (var, eye_spec) -> name of a product with deltas used by several terms

    def _print_OutputPlan(self, o: OutputPlan) -> str:
        """sum of terms, grouped by coefficient magnitude: (t1 - t2) * c costs one pass fewer than
        t1 * c - t2 * c; a lone negative term takes its sign into its coefficient."""
        groups: dict = {}
        for s in o.terms:
            groups.setdefault(abs(s.coefficient), []).append(s)
        parts = []
        for magnitude, members in groups.items():
            unit = [Scaled(s.coefficient / magnitude if magnitude else s.coefficient, s.var, s.eye_spec)
                    for s in members]
            body = ""
            for k, s in enumerate(unit):
                text = self.doprint(s)
                neg = s.coefficient < 0
                body += (("-" if neg else "") if k == 0 else (" - " if neg else " + ")) + text
            if magnitude in (0, 1):
                parts.append(body if magnitude == 1 else f"0 * ({body})")
                continue
            sign = 1
            if len(unit) == 1 and unit[0].coefficient < 0:  # -t * c: fold the sign into c
                body, sign = body[1:], -1
            elif len(unit) > 1:
                body = f"({body})"
            factor = (str(sign * magnitude.numerator) if magnitude.denominator == 1
                      else f"_b.rational({sign * magnitude.numerator}, {magnitude.denominator}, _like)")
            parts.append(f"{body} * {factor}")
        expr = ""
        for k, text in enumerate(parts):
            if k == 0:
                expr = text
            elif text.startswith("-"):
                expr += " - " + text[1:]
            else:
                expr += " + " + text
        single = o.terms[0]
        if len(o.terms) == 1 and single.coefficient == 1 and single.eye_spec is None and single.var in self.views:
            expr = f"_b.copy({expr})"  # never hand back a view of an input
        return f"{o.name} = {expr}"

    def _print_FunctionPlan(self, f: FunctionPlan, doc: str, signature=(), def_name: str | None = None) -> str:
        """The function (named ``def_name`` when given); ``signature`` (the inputs as :class:`Tensor`)
        gives its shape checks."""
        params = ", ".join(f.inputs) + (", " if f.inputs else "") + "*, out=None, fused=False"
        lines = [f"def {def_name or f.name}({params}):", "    " + doc]
        lines.append(f"    _b = _backend({', '.join(f.inputs)})")
        if f.inputs:
            first = f.inputs[0]
            lines.append(f"    {first} = _b.asarray({first})")
            for name in f.inputs[1:]:
                lines.append(f"    {name} = _b.asarray({name}, {first})")
            lines.append(f"    _like = {first}")
            lines += input_checks(f.name, signature)
        else:  # no inputs: constants in float64 numpy
            lines.append("    _like = _b.asarray(0.0)")
        names = [o.name for o in f.outputs]
        if f.fused is not None and f.fused.outputs:
            args = _tuple_text(f.inputs)
            lines.append("    if fused:")
            lines.append("        if out is None:")
            lines.append(f"            return _b.fused(_{f.name}_fused, {args})")
            lines += ["    " + line for line in self._out_buffers(f)]
            whole = ", out" if f.stack_axis is not None else ""
            lines.append(f"        _b.fused(_{f.name}_fused, {args}, ({', '.join(names)},){whole})")
            lines.append(_return_out(f, "        "))
        if f.prefer_unrolled:  # the cost model's choice: the component formulas, into out= too
            lines.append("    if out is None:")
            lines.append(f"        return _{f.name}_fused(_b, {', '.join(f.inputs)})")
            lines += self._out_buffers(f)
            lines.append(f"    _{f.name}_fused(_b, {', '.join(f.inputs)}, ({', '.join(names)},))")
            lines.append(_return_out(f, "    "))
            return "\n".join(lines)
        for const in f.constants:
            lines.append(f"    _{const} = _b.const({py_string(const)}, _like)")
        self.views = frozenset(c.var for c in f.contractions
                               if isinstance(c, Contraction) and len(c.operands) == 1)
        outputs = [_reuse(o, list(f.outputs[:k])) for k, o in enumerate(f.outputs)]
        seeds = _direct_seeds(f, outputs)
        self.all_inputs = set(f.inputs)
        steps = {c.var: c for c in f.contractions}
        earlier = {o.name: o for o in outputs}

        def reads_of(s: Scaled) -> set:
            """The inputs a term reads (its batch shape is their broadcast)."""
            if s.var is None:
                return set()
            if s.var in earlier:
                return set().union(*(reads_of(t) for t in earlier[s.var].terms))
            return (_leaves(s.var, steps) if s.var in steps else {s.var}) & self.all_inputs

        for c in f.contractions:
            if c.var not in seeds:
                lines.append("    " + self.doprint(c))
        uses: dict = {}
        for o in outputs:
            for s in o.terms:
                if s.var is not None and s.eye_spec is not None:
                    uses[(s.var, s.eye_spec)] = uses.get((s.var, s.eye_spec), 0) + 1
        self.eye_names = {}
        for key, n in uses.items():
            if n > 1:
                name = f"_e{len(self.eye_names)}"
                lines.append(f"    {name} = {self._times_eye(key[0], key[1])}")
                self.eye_names[key] = name
        if any(isinstance(c, Unrolled) for c in seeds.values()):
            # components written into fresh buffers beat stacking them (not under autograd or jax)
            lines.append(f"    if out is None and _b.writable({', '.join(f.inputs)}):")
            lines += ["    " + line for line in self._out_buffers(f, fresh=True)]
        # the planned path: fresh results
        lines.append("    if out is None:")
        for c in f.contractions:
            if c.var in seeds:
                lines.append("        " + self.doprint(c).replace("\n    ", "\n        "))
        for o in outputs:
            single_eye = len(o.terms) == 1 and o.terms[0].eye_spec is not None and o.terms[0].coefficient != 1
            fresh = self._print_into(o, seeds, reads_of) if len(o.terms) > 1 or single_eye else None
            if all(s.var is None for s in o.terms) and f.inputs:  # a constant, given the batch shape
                value = self.doprint(o).partition(" = ")[2]
                fresh = [f"{o.name} = _b.filled({value}, {self._shape_text(_batch_text(f), o)}, _like)"]
            for line in fresh or [self.doprint(o)]:
                lines.append("        " + line)
        if f.stack_axis is not None:
            lines.append(f"        return _b.stack(({', '.join(names)},), {f.stack_axis})")
        else:
            lines.append("        return " + (names[0] if len(names) == 1 else "(" + ", ".join(names) + ")"))
        # the same results written into preallocated outputs, in place
        lines += self._out_buffers(f)
        for o in outputs:
            for line in self._print_into(o, seeds):
                lines.append("    " + line)
        lines.append(_return_out(f, "    "))
        return "\n".join(lines)

    def _print_FusedPlan(self, p: FusedPlan, stack_axis: int | None) -> str:
        """``_<name>_fused(_b, inputs, _out=None)``: every output component as one arithmetic
        expression, elementwise over batch and channels (a compiler fuses it into one pass); the
        components are stacked, or written into the views of ``_out`` (a tuple, one array per output)."""
        lines = [f"def _{p.name}_fused(_b, {', '.join(p.inputs)}, _out=None):",
                 f"    \"\"\"{p.name} with every output component written out ({p.products} products).\"\"\""]
        assembled, written = [], []
        for n, o in enumerate(p.outputs):
            cells, numbers, first_array, seen = [], [], None, {}
            for k, monomials in enumerate(o.components):
                text = self._polynomial(monomials, o.n_channels, p.inputs[0])
                var = f"_{o.name}_{k}" if o.geometric else o.name
                if not any(m.factors for m in monomials):  # a number: made an array when stacked
                    numbers.append(len(cells))
                    cells.append(text)
                elif text in seen:
                    cells.append(seen[text])
                else:
                    seen[text] = var
                    lines.append(f"    {var} = {text}")
                    first_array = first_array or var
                    cells.append(var)
            for k, index in enumerate(itertools.product(*(range(d) for d in o.geometric))):
                view = f"_out[{n}][..., {', '.join(map(str, index))}]" if index else f"_out[{n}][...]"
                written.append(f"{view} = {cells[k]}" if k in numbers else f"_b.copyto({view}, {cells[k]})")
            zero = f"_{o.name}_z"
            if numbers:
                assembled.append(f"    {zero} = _b.zeros_like({first_array})")
            for k in numbers:
                cells[k] = zero if cells[k] == "0" else f"{zero} + {cells[k]}"
            stacked = f"_b.stack(({', '.join(cells)}{',' if len(cells) == 1 else ''}), -1)"
            if not o.geometric:
                value = cells[0]
            elif o.spherical or len(o.geometric) == 1:
                value = stacked
            else:
                value = f"_b.unflatten({stacked}, {o.geometric})"
            if value != o.name:
                assembled.append(f"    {o.name} = {value}")
        lines.append("    if _out is not None:  # each component written once, into its place")
        lines += ["        " + w for w in written]
        lines.append("        return _out")
        lines += assembled
        names = [o.name for o in p.outputs]
        if stack_axis is not None:
            lines.append(f"    return _b.stack(({', '.join(names)},), {stack_axis})")
        else:
            lines.append("    return " + (names[0] if len(names) == 1 else "(" + ", ".join(names) + ")"))
        return "\n".join(lines)

    @staticmethod
    def _polynomial(monomials, n_channels: int, like: str) -> str:
        """Σ coefficient × Π entries, entries as ``x[..., None, :, i, j]`` (channels broadcast);
        monomials of equal coefficient magnitude share one multiplication."""
        if not monomials:
            return "0"
        groups: dict = {}
        for m in monomials:
            groups.setdefault(abs(m.coefficient), []).append(m)
        parts = []
        for magnitude, members in groups.items():
            body = ""
            for k, m in enumerate(members):
                factors = []
                for e in m.factors:
                    slots = [":" if q in e.channels else "None" for q in range(n_channels)]
                    slots = slots[slots.index("None"):] if "None" in slots else []
                    index = slots + [str(i) for i in e.component]
                    factors.append(f"{e.input}[..., {', '.join(index)}]" if index else e.input)
                text = " * ".join(factors) or "1"
                negative = m.coefficient < 0
                body += (("-" if negative else "") if k == 0 else (" - " if negative else " + ")) + text
            if isinstance(magnitude, Fraction):  # exact on object arrays of Fractions
                number = str(magnitude.numerator) if magnitude.denominator == 1 \
                    else f"_b.rational({magnitude.numerator}, {magnitude.denominator}, {like})"
            else:
                number = repr(float(magnitude))
            if number == "1":
                parts.append(body)
            elif len(members) == 1:
                negative = body.startswith("-")
                parts.append(("-" if negative else "") + (number if body.lstrip("-") == "1"
                                                          else f"{number} * {body.lstrip('-')}"))
            else:
                parts.append(f"{number} * ({body})")
        text = parts[0]
        for part in parts[1:]:
            text += " - " + part[1:] if part.startswith("-") else " + " + part
        return text

    def _out_buffers(self, f: FunctionPlan, fresh: bool = False) -> list[str]:
        """``out`` checked and bound to the output names (views of one array for a stacked basis);
        with ``fresh``, ``out`` made of new buffers of the result's shape and dtype instead."""
        names = [o.name for o in f.outputs]
        inputs = _tuple_text(f.inputs)
        batch = _batch_text(f)
        if f.stack_axis is not None:
            shapes = [self._shape_text(batch, f.outputs[0], (len(f.outputs),))]
        else:
            shapes = [self._shape_text(batch, o) for o in f.outputs]
        if fresh:
            made = ", ".join(f"_b.empty({shape}, {inputs})" for shape in shapes)
            return [f"    out = {made if len(shapes) == 1 else '(' + made + ')'}"]
        if f.stack_axis is not None:
            rest = ", :" * (-f.stack_axis - 1)
            return [f"    out = _b.out(out, {shapes[0]}, {inputs}, \"out\")"] + [
                f"    {name} = out[..., {k}{rest}]" for k, name in enumerate(names)]
        if len(names) == 1:
            return [f"    {names[0]} = _b.out(out, {shapes[0]}, {inputs}, \"out\")"]
        return [f"    {', '.join(names)} = _b.outs(out, ({', '.join(shapes)}), {inputs})"]

    @staticmethod
    def _shape_text(batch: str, o: OutputPlan, extra: tuple[int, ...] = ()) -> str:
        """The output's shape: the inputs' broadcast batch, then channel and geometric sizes."""
        dims = [str(k) for k in extra] + [f"{a.input}.shape[{a.axis}]" for a in o.channels] + [
            str(d) for d in o.geometric]
        if not dims:
            return batch
        return f"{batch} + ({', '.join(dims)}{',' if len(dims) == 1 else ''})"

    def _print_into(self, o: OutputPlan, seeds: dict, fresh_reads=None) -> list[str] | None:
        """``o`` evaluated in place into the array bound to its name: a seed written into it (a
        contraction computed straight into it, or a ufunc with ``out=``), then in-place adds, and
        one in-place scale per change of coefficient magnitude (Horner), so the sum needs no
        temporary the size of the output (other contractions are computed before, on their own).

        With ``fresh_reads`` (the inputs each term reads) the array is not given but created by the
        seed (a fresh contraction result, or the first sum or product), and the rest is done in
        place as above; None when no seed is known to have the output's full shape (it must read
        every input for in-place adds to broadcast)."""
        target = o.name
        fresh = fresh_reads is not None
        terms = list(o.terms)
        arrays = [k for k, s in enumerate(terms) if s.var is not None]
        if not arrays:  # constants only
            if fresh:
                return None
            return [f"_b.copyto({target}, {self.doprint(replace(o, name='_v')).partition(' = ')[2]})"]
        direct = [k for k in arrays if terms[k].var in seeds and terms[k].eye_spec is None]
        first = direct[0] if direct else next((k for k in arrays if terms[k].eye_spec is None), arrays[0])
        seed = terms.pop(first)
        mag = abs(seed.coefficient)
        terms.sort(key=lambda s: abs(s.coefficient) != mag)  # the seed's magnitude first (stable)
        lines = []
        scale = seed.coefficient
        covered = fresh_reads(seed) if fresh else None
        if seed.var in seeds and seed.eye_spec is None:
            lines += [f"{target} = {seed.var}"] if fresh else self._print_seed(seeds[seed.var], target)
        elif terms and abs(terms[0].coefficient) == mag and seed.eye_spec is None \
                and terms[0].var is not None and terms[0].eye_spec is None:
            nxt = terms.pop(0)
            op = "add" if nxt.coefficient == seed.coefficient else "subtract"
            if fresh:
                covered = covered | fresh_reads(nxt)
                lines.append(f"{target} = {self._value(seed)} {'+' if op == 'add' else '-'} {self._value(nxt)}")
            else:
                lines.append(f"_b.{op}({self._value(seed)}, {self._value(nxt)}, {target})")
        elif scale != 1:
            a, b = self._factors(seed)
            if b is None:
                lines.append(f"{target} = {a} * {self._number(scale)}" if fresh
                             else f"_b.multiply({a}, {self._number(scale)}, {target})")
                scale = Fraction(1)
            else:  # scale the small factor before it is broadcast: one pass over the output fewer
                small = a[: -len("[..., None, None]")] if a.endswith("[..., None, None]") else None
                if small is not None:
                    a = f"({small} * {self._number(scale)})[..., None, None]"
                    scale = Fraction(1)
                lines.append(f"{target} = {a} * {b}" if fresh else f"_b.multiply({a}, {b}, {target})")
        else:
            a, b = self._factors(seed)
            if fresh:
                lines.append(f"{target} = _b.copy({a})" if b is None else f"{target} = {a} * {b}")
            else:
                lines.append(f"_b.copyto({target}, {a})" if b is None else f"_b.multiply({a}, {b}, {target})")
        if fresh and not covered >= self.all_inputs:
            return None
        for s in terms:
            if s.var is not None and s.eye_spec is not None and (s.var, s.eye_spec) not in self.eye_names \
                    and self._times_eye(s.var, s.eye_spec).endswith("* _eye"):
                ratio = s.coefficient / scale  # a diagonal is cheap to scale: no rescale of the rest
                lines.append(f"{target} = _b.add_diagonal({target}, {s.var}, {self._number(ratio)})")
                continue
            if abs(s.coefficient) != abs(scale):
                lines.append(f"{target} *= {self._number(abs(scale) / abs(s.coefficient))}")
                scale = abs(s.coefficient) * (1 if scale > 0 else -1)
            sign = "+" if s.coefficient / scale > 0 else "-"
            lines.append(f"{target} {sign}= {self._value(s)}")
        if scale != 1:
            lines.append(f"{target} *= {self._number(scale)}")
        return lines

    def _print_seed(self, c, target: str) -> list[str]:
        """A contraction computed straight into ``target``."""
        if isinstance(c, FlatMatmul):
            w = f"_b.swap({c.operands[0]})" if c.transpose else c.operands[0]
            return [f"_b.matmul_flat({w}, {c.operands[1]}, {c.n}, {target})"]
        if isinstance(c, Matmul):
            x, y = (f"_b.swap({o})" if t else o for o, t in zip(c.operands, c.transpose))
            return [f"_b.matmul({x}, {y}, {target})"]
        if isinstance(c, Contraction) and c.broadcast:
            factors = _broadcast(c.spec, [f"_{o}" if o in TABLES or o.startswith("c_") else o for o in c.operands])
            if len(factors) == 2:
                return [f"_b.multiply({factors[0]}, {factors[1]}, {target})"]
            return [f"_b.copyto({target}, {' * '.join(factors)})"]
        if isinstance(c, Contraction):
            args = ", ".join(f"_{o}" if o in TABLES or o.startswith("c_") else o for o in c.operands)
            return [f"_b.einsum_into({target}, {py_string(c.spec)}, {args}{', blas=True' if c.blas else ''})"]
        return self._print_unrolled_into(c, target)

    def _print_unrolled_into(self, u: Unrolled, target: str) -> list[str]:
        """Each component of an unrolled contraction written into its place in ``target``."""
        lhs, out = u.spec.split("->")
        out_letters = out[3:] if out.startswith("...") else out
        const_letters = next(p for p in lhs.split(",") if not p.startswith("..."))
        open_legs = [ch for ch in const_letters if ch in out_letters]
        texts, lines, names = self._shared_products(u)
        for values, cell in zip(itertools.product(*(range(d) for d in u.open_dims)), texts):
            fixed = dict(zip(open_legs, values))
            index = ", ".join(str(fixed[ch]) if ch in fixed else ":" for ch in out_letters)
            view = f"{target}[..., {index}]" if index else f"{target}[...]"
            if not cell:
                lines.append(f"{view} = 0")
                continue
            cell = [(sign, names.get(t, t)) for sign, t in cell]
            single = [t for _, t in cell if " * " not in t and "(" not in t]  # plain slices or names
            if len(cell) == 2 and len(single) == 2:  # a ± b in one pass
                (sa, a), (sb, b) = cell
                if sa > 0:
                    lines.append(f"_b.{'add' if sb > 0 else 'subtract'}({a}, {b}, {view})")
                elif sb > 0:
                    lines.append(f"_b.subtract({b}, {a}, {view})")
                else:
                    lines.append(f"_b.add({a}, {b}, {view})")
                    lines.append(f"_b.negative({view}, {view})")
            elif len(cell) == 1:  # one product, straight into the view
                sign, t = cell[0]
                factors = t.split(" * ") if "(" not in t else [t]
                if len(factors) == 1:
                    lines.append(f"_b.copyto({view}, {t})" if sign > 0 else f"_b.negative({t}, {view})")
                else:
                    lines.append(f"_b.multiply({factors[0]}, {' * '.join(factors[1:])}, {view})")
                    if sign < 0:
                        lines.append(f"_b.negative({view}, {view})")
            else:  # a longer sum: component-sized temporaries, one strided write
                text = ""
                for k, (sign, t) in enumerate(cell):
                    text += (("-" if sign < 0 else "") if k == 0 else (" - " if sign < 0 else " + ")) + t
                lines.append(f"_b.copyto({view}, {text})")
        return lines

    def _value(self, s: Scaled) -> str:
        """The term without its coefficient."""
        return self.doprint(Scaled(Fraction(1), s.var, s.eye_spec))

    def _factors(self, s: Scaled) -> tuple[str, str | None]:
        """The term (without coefficient) as one array, or as two broadcast factors (var, _eye)."""
        text = self._value(s)
        if text.endswith("[..., None, None] * _eye"):
            return text[: -len(" * _eye")], "_eye"
        return text, None

    @staticmethod
    def _number(c: Fraction) -> str:
        if c.denominator == 1:
            return str(c.numerator) if c >= 0 else f"({c.numerator})"
        return f"_b.rational({c.numerator}, {c.denominator}, _like)"


def _broadcast(spec: str, operands: list[str]) -> list[str]:
    """The operands of an einsum that sums nothing, indexed so that their product broadcasts to it."""
    factors = []
    for text, (perm, index) in zip(operands, broadcast_indexes(spec)):
        if perm is not None:
            text = f"_b.einsum({py_string(perm)}, {text})"  # a view with the axes in output order
        factors.append(text + index)
    return factors


def _tuple_text(names) -> str:
    """Python source of a tuple of names: '(a,)', '(a, b)'."""
    return "(" + ", ".join(names) + ("," if len(names) == 1 else "") + ")"


def _batch_text(f: FunctionPlan) -> str:
    """Python source of the broadcast of the inputs' batch shapes."""
    return "_b.batch(" + ", ".join(f"{i}.shape[:{-n}]" if n else f"{i}.shape" for i, n in f.trailing) + ")"


def _return_out(f: FunctionPlan, indent: str) -> str:
    """The return statement after the outputs were written into ``out`` (bound to their names)."""
    names = [o.name for o in f.outputs]
    return indent + ("return out" if f.stack_axis is not None or len(names) == 1
                     else "return (" + ", ".join(names) + ")")


def _leaves(var: str, steps: dict) -> set[str]:
    """What the contraction chain ending in ``var`` reads: inputs and constant tables."""
    found = set()
    for o in steps[var].operands:
        found |= _leaves(o, steps) if o in steps else {o}
    return found


def _direct_seeds(f: FunctionPlan, outputs: list[OutputPlan]) -> dict:
    """Contractions that may be computed straight into their output: the last step of a chain, used
    by one term of one output only, not a view, and reading every input (so its batch shape is the
    output's)."""
    uses: dict[str, int] = {}
    for o in outputs:
        for s in o.terms:
            if s.var is not None:
                uses[s.var] = uses.get(s.var, 0) + 1
    steps = {c.var: c for c in f.contractions}
    operand_vars = {o for c in f.contractions for o in c.operands}
    candidates = set()
    for var, c in steps.items():
        if uses.get(var) != 1 or var in operand_vars:
            continue
        if isinstance(c, Contraction) and len(c.operands) == 1:
            continue
        if set(f.inputs) <= _leaves(var, steps):
            candidates.add(var)
    seeds = {}
    for o in outputs:  # one seed per output: its first candidate term without deltas
        var = next((s.var for s in o.terms if s.var in candidates and s.eye_spec is None), None)
        if var is not None:
            seeds[var] = steps[var]
    return seeds


def _reuse(o: OutputPlan, earlier: list[OutputPlan]) -> OutputPlan:
    """Write ``o`` with an earlier output in place of the terms they share up to a factor
    (TensorNet's S = sym(X) - I reuses I instead of recomputing it)."""
    terms = {(s.var, s.eye_spec): s.coefficient for s in o.terms}
    for prev in earlier:
        if not prev.terms or len(prev.terms) >= len(o.terms) or any(s.var is None for s in prev.terms):
            continue
        keys = [(s.var, s.eye_spec) for s in prev.terms]
        if not all(k in terms for k in keys):
            continue
        factor = terms[keys[0]] / prev.terms[0].coefficient
        if all(terms[k] == factor * s.coefficient for k, s in zip(keys, prev.terms)):
            rest = tuple(s for s in o.terms if (s.var, s.eye_spec) not in keys)
            return replace(o, terms=rest + (Scaled(factor, prev.name, None),))
    return o


def input_checks(function: str, tensors) -> list[str]:
    """Lines (indented for a function body) that check the arrays bound to ``tensors``' names, in
    the order given (a sequence of :class:`Tensor`: the emitted function's signature), before any
    computing: trailing axes (channel sizes, then 3 per Cartesian leg, 2l+1 per spherical leg),
    channel sizes shared by several arguments agreeing, batch axes broadcasting. The inline test
    reads shape tuples only (a few comparisons per argument, no call, nothing a tracer of
    torch.compile or jax.jit cannot follow); when it fails, the module's ``_check_shapes`` builds
    the message naming the argument (or finds that unequal batch shapes still broadcast).

    Numpy object arrays (exact arithmetic) with an argument without batch axes then go through
    ``_unbatched``, which gives each such argument a leading axis of size 1 (0-d object results
    would be bare Python objects) and drops it from the results. Reused by every emitted function
    with array arguments, whatever computes it. Builtins are reached through the module's ``_len``:
    an argument may be named ``len``."""
    tensors = list(tensors)
    if not tensors:
        return []
    lines, tests, first_axis = [], [], {}
    ranks = []
    for k, t in enumerate(tensors):
        shape = f"_sh{k}"
        lines.append(f"    {shape} = {t.name}.shape")
        dims, channels = t.type.geometric_dims, t.type.channels
        rank = len(channels) + len(dims)
        ranks.append(rank)
        if rank:
            tests.append(f"_len({shape}) < {rank}")
        for j, d in enumerate(dims):
            tests.append(f"{shape}[{j - len(dims)}] != {d}")
        for j, c in enumerate(channels):
            axis = f"{shape}[{j - rank}]"
            if c in first_axis:
                tests.append(f"{axis} != {first_axis[c]}")
            else:
                first_axis[c] = axis
    if len(tensors) > 1:  # batch shapes: empty (a weight shared by the batch) or equal to the first's,
        # compared without slicing for one batch axis (a slice of a torch.Size costs more than the rest)
        for k, rank in enumerate(ranks):
            lines.append(f"    _n{k} = _len(_sh{k}) - {rank}" if rank else f"    _n{k} = _len(_sh{k})")
        for k in range(1, len(tensors)):
            tests.append(f"(_n{k} and (_n{k} != _n0 or (_sh{k}[0] != _sh0[0] if _n0 == 1 "
                         f"else _sh{k}[:_n0] != _sh0[:_n0])))")
    signature = "(" + ", ".join(
        f"({py_string(t.name)}, {_tuple_text([py_string(c) for c in t.type.channels])}, "
        f"{_tuple_text([str(d) for d in t.type.geometric_dims])})" for t in tensors) + ",)"
    names = _tuple_text([t.name for t in tensors])
    if tests:
        lines.append(f"    if ({tests[0]}" + "".join(f"\n            or {t}" for t in tests[1:]) + "):")
        lines.append(f"        _check_shapes({signature}, {names})")
    unbatched = " or ".join(f"_len(_sh{k}) == {rank}" for k, rank in enumerate(ranks))
    lines.append(f"    if ({unbatched}) and _b.root == \"numpy\" and _like.dtype.hasobject:")
    lines.append(f"        return _unbatched({function}, _b, {names}, {_tuple_text([str(r) for r in ranks])}, out, fused)")
    return lines


def _shape_text(typ) -> str:
    dims = ["..."] + [str(c) for c in typ.channels] + [str(d) for d in typ.geometric_dims]
    return "(" + ", ".join(dims) + ")"


def function_doc(d: Diagram, fused: FusedPlan | None = None, kernel: bool = False) -> str:
    lines = [f"{d.name}: equivariant under {d.group}.", "", "Arguments:"]
    for t in d.inputs:
        lines.append(f"    {t.name}: {t.type}, shape {_shape_text(t.type)}")
    if d.basis is not None:
        lines.append("    out: optional preallocated result (one array of the stacked shape), numpy or torch, "
                     "written in place")
    else:
        lines.append("    out: optional preallocated result (a tuple for several), numpy or torch, written in place")
    if fused is not None and fused.outputs:
        lines.append(f"    fused: every component as one formula ({fused.products} products), one pass;")
        lines.append("        torch inputs run it through torch.compile (compiled on the first call)")
    else:
        reason = fused.reason if fused is not None else "no inputs"
        if d.basis is not None:  # the elements' internal names are no business of the reader
            for k, (t, words) in enumerate(zip(d.outputs, d.basis.words)):
                reason = reason.replace(f"output '{t.name}'", f"element {k} ({words})")
        lines.append(f"    fused: no fused form ({reason}); the planned code runs")
    if kernel:
        lines.append("    kernels: CUDA torch tensors (or cupy arrays) run the generated CUDA kernel when cupy is")
        lines.append("        importable (compiled at first use; float32/float64, one dtype and device; a")
        lines.append("        non-contiguous input is copied); kernels=False runs the array-library code")
    else:
        lines.append("    kernels: no CUDA kernel for this function; the array-library code runs everywhere")
    if d.sum_to:
        lines.append("The vector-Jacobian product (compiler.grad): the cotangent of each input, the plain partial")
        lines.append("derivative of the formula as written (as autograd gives; for a symmetric input not")
        lines.append("symmetrised), summed over the batch axes that input was broadcast over.")
    if d.basis is not None:  # one array: the elements stacked before the geometric axes
        out = d.basis.output
        n = len(d.outputs)
        stacked = "(" + ", ".join(["...", str(n)] + [str(k) for k in out.type.geometric_dims]) + ")"
        lines.append("Returns:")
        lines.append(f"    {out.name}: the {n} basis elements of {out.type} stacked, shape {stacked};")
        after = ", :" * out.type.n_geometric
        lines.append(f"        {out.name}[..., n{after}] is element n:")
        lines.append("")
        width = max(len(w) for w in d.basis.words)
        for k, (words, eq) in enumerate(zip(d.basis.words, d.equations)):
            legs = eq.terms[0].output if eq.terms else ()
            target = f"{out.name}[{','.join(legs)}]" if legs else out.name
            lines.append(f"    {k:>3}. {words:<{width}}   {target} = " + sum_formula(eq.terms))
    else:
        lines.append("Returns:" if len(d.outputs) == 1 else "Returns a tuple:")
        for t in d.outputs:
            lines.append(f"    {t.name}: {t.type}, shape {_shape_text(t.type)}")
        lines.append("")
        for eq in d.equations:
            lines.append(f"    {eq.target} = " + sum_formula(eq.terms))
    return py_string("\n".join(("    " + line).rstrip() for line in lines).lstrip() + "\n    ", triple=True)


@lru_cache(maxsize=1)
def _template() -> jinja2.Template:
    text = template_text("python_module.py.j2")
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                             trim_blocks=True, lstrip_blocks=True, autoescape=False)
    return env.from_string(text)


def template_text(name: str) -> str:
    """A template's text: from the installed ``compiler.templates`` package, else the source tree."""
    try:
        return resources.files("compiler.templates").joinpath(name).read_text(encoding="utf-8")
    except (ModuleNotFoundError, FileNotFoundError):
        return (Path(__file__).resolve().parent.parent / "templates" / name).read_text(encoding="utf-8")


def source_sha256(source: str) -> str:
    return hashlib.sha256(source.encode("utf-8")).hexdigest()


def generate_python(program: Program) -> str:
    """The text of a standalone Python module with one function per diagram, and beside each its
    derivative functions ``NAME_vjp`` and ``NAME_vjp_vjp`` (:mod:`compiler.grad`)."""
    from .graph import split_program
    from .grad import with_derivatives

    source_names = [d.name for d in program.diagrams]
    program, graphs = split_program(program)  # graph diagrams: their edge and node diagrams
    program = with_derivatives(program, checked=True)
    printer = PythonPrinter()
    plans = [plan_diagram(d) for d in program.diagrams]
    by_name = {d.name: d for d in program.diagrams}
    cuda_source, kernels = kernel_configs(program, plans)
    functions, specs = [], []
    for p, d in zip(plans, program.diagrams):
        if p.fused is not None and p.fused.outputs:
            functions.append(printer._print_FusedPlan(p.fused, p.stack_axis))
        body = f"_{d.name}_planned"
        functions.append(printer._print_FunctionPlan(p, py_string(f"{d.name}: the emitted code (see {d.name}).",
                                                                  triple=True), d.inputs, body))
        functions.append(_print_public(d, function_doc(d, p.fused, d.name in kernels)))
        second = d.sum_to and d.name.endswith("_vjp") and bool(getattr(by_name.get(d.name[:-4]), "sum_to", ()))
        vjp = d.name + "_vjp" if d.name + "_vjp" in by_name and not second else None
        positions = {t.name: k for k, t in enumerate(d.inputs)}
        sum_to = tuple(positions[n] for n in d.sum_to)
        trailing = tuple(n for _, n in p.trailing)
        kernel = f"_{d.name}_KERNEL" if d.name in kernels else None
        specs.append(f"_{d.name}_SPEC = ({body}, {vjp}, {sum_to!r}, {trailing!r}, {p.stack_axis!r}, {kernel})")
    exports = [d.name for d in program.diagrams if not d.name.startswith("_")]
    if graphs:  # the public functions of graph diagrams: gathers and scatters around those diagrams
        from .graph_emit import graph_function, graph_vjp_function

        for g in graphs.values():
            functions.append(graph_function(g))
            exports.append(g.diagram.name)
            vjp_text = graph_vjp_function(g, by_name)
            if vjp_text is not None:
                functions.append(vjp_text)
                exports.append(g.diagram.name + "_vjp")
    used = sorted({c for p in plans for c in p.constants})
    values = dict(TABLES)
    for p in plans:
        values.update(dict(p.tables))
    tables = [("_TABLES", "{" + ", ".join(f"{py_string(n)}: {values[n]!r}" for n in used) + "}")]
    doc = (
        f"Generated by diagc {__version__} from {program.filename}\n"
        f"source sha256: {source_sha256(program.source)}\n"
        f"functions: {', '.join(source_names)} (and their derivatives NAME_vjp, NAME_vjp_vjp)\n\n"
        "Diagram source:\n\n" + program.source
    )
    text = _template().render(
        docstring=py_string(doc, triple=True),
        version=__version__,
        tables=tables,
        functions=functions,
        specs=specs,
        cuda_source=py_string(cuda_source, triple=True) if kernels else None,
        kernel_configs=[(f"_{name}_KERNEL", literal(cfg)) for name, cfg in kernels.items()],
        kernel_names=list(kernels),
        op_namespace=py_string("diagc_" + source_sha256(__version__ + "\n" + program.source)[:16]),
        exports=", ".join(py_string(name) for name in exports),
    )
    return text


def literal(value) -> str:
    """A Python literal of plain data (str through :func:`py_string`, int, float, bool, None, tuples,
    lists and dicts with str keys)."""
    if isinstance(value, str):
        return py_string(value)
    if isinstance(value, (bool, int, float)) or value is None:
        return repr(value)
    if isinstance(value, (tuple, list)):
        return "(" + ", ".join(literal(v) for v in value) + ("," if len(value) == 1 else "") + ")"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{py_string(k)}: {literal(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"not plain data: {type(value).__name__}")


def kernel_configs(program: Program, plans) -> tuple[str, dict]:
    """The CUDA source the module embeds (the cuda target's printer, over the diagrams it can
    express) and, per such diagram, its launch configuration as plain data. A diagram the kernel
    generator refuses, or one whose outputs are stacked into one array (a basis), has none: it runs
    the array-library code on the GPU too."""
    from .errors import DiagError
    from .targets.cuda.kernels import CudaProgram, lower_diagram, module_config
    from .targets.cuda.printer import print_program

    lowered = []
    for p, d in zip(plans, program.diagrams):
        if p.stack_axis is not None or not d.inputs:
            continue
        try:
            lowered.append(lower_diagram(d, p.fused))
        except DiagError:
            continue
    if not lowered:
        return "", {}
    source = print_program(CudaProgram(program.filename, source_sha256(program.source), tuple(lowered)))
    return source, {k.name: module_config(k) for k in lowered}


def _print_public(d: Diagram, doc: str) -> str:
    """The public function: the emitted code, differentiable through the generated derivatives
    (torch autograd, jax custom_vjp) where they exist, and summed to its inputs' shapes for a
    derivative diagram."""
    params = ", ".join(t.name for t in d.inputs)
    sig = params + (", " if params else "") + "*, out=None, fused=False, kernels=True"
    args = _tuple_text([t.name for t in d.inputs])
    return "\n".join([f"def {d.name}({sig}):", "    " + doc,
                      f"    return _call(_{d.name}_SPEC, {args}, out, fused, kernels)"])
