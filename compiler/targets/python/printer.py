"""The Python printer: the emit program (:mod:`compiler.planning.emit`) and the fused formulas as Python
source. One ``_print_<Node>`` per expression and statement kind; it keeps no state and reads no
text it printed: every decision is in the program.

Everything that comes from the user reaches the emitted text through :func:`py_string` (escaped
string literals) or as a name that the parser has already checked to be a safe identifier.
"""

from __future__ import annotations

import re

from ...planning import emit as E
from ...planning.plan import FunctionPlan
from ...ir.types import Channel, FixedSize


def channel_literal(c: Channel) -> str:
    """A channel axis in an emitted signature: a fixed size as an int literal, a name as a string."""
    return str(c.size) if isinstance(c, FixedSize) else py_string(c)


#: the characters py_string escapes (a newline too, unless in a triple-quoted literal)
_ESCAPED = re.compile("[\\\\\"\\x00-\\x1f\\x7f\\x85\\u2028\\u2029\\ud800-\\udfff]")


def _escape(ch: str, triple: bool) -> str:
    code = ord(ch)
    if ch == "\\":
        return "\\\\"
    if ch == '"':
        return '\\"'
    if ch == "\n":
        return "\n" if triple else "\\n"
    return f"\\u{code:04x}" if code > 0xFF else f"\\x{code:02x}"


def py_string(text: str, triple: bool = False) -> str:
    """A Python string literal whose value is exactly ``text``, whatever it contains.

    Backslashes, quotes and every control character except the newline are escaped, so the
    literal can never end early or smuggle code into the module.
    """
    quote = '"""' if triple else '"'
    return quote + _ESCAPED.sub(lambda m: _escape(m.group(), triple), text) + quote


class PythonPrinter:
    """Prints emit-program nodes as Python source (one ``_print_<Node>`` method per node type)."""

    def doprint(self, node) -> str:
        return getattr(self, "_print_" + type(node).__name__)(node)

    # ---- expressions
    def _print_Ref(self, e: E.Ref) -> str:
        return e.name

    def _print_Table(self, e: E.Table) -> str:
        return "_" + e.name

    def _print_Int(self, e: E.Int) -> str:
        return str(e.value)

    def _print_Real(self, e: E.Real) -> str:
        return repr(e.value)

    def _print_Literal(self, e: E.Literal) -> str:
        return repr(e.value)

    def _print_Rational(self, e: E.Rational) -> str:
        return f"_b.rational({e.numerator}, {e.denominator}, {e.like})"

    def _print_Str(self, e: E.Str) -> str:
        return py_string(e.value)

    def _print_Shape(self, e: E.Shape) -> str:
        """The inputs' broadcast batch, then extra, channel and geometric sizes."""
        batch = _batch_text(e.trailing)
        dims = [str(k) for k in e.extra] + [f"{a.input}.shape[{a.axis}]" for a in e.channels] + [
            str(d) for d in e.geometric]
        if not dims:
            return batch
        return f"{batch} + ({', '.join(dims)}{',' if len(dims) == 1 else ''})"

    def _print_Index(self, e: E.Index) -> str:
        slots = ", ".join(":" if s == E.Slot.ALL else "None" if s == E.Slot.NEW else str(s) for s in e.slots)
        return f"{self.doprint(e.base)}[..., {slots}]" if slots else f"{self.doprint(e.base)}[...]"

    def _print_Mul(self, e: E.Mul) -> str:
        return " * ".join(self.doprint(f) for f in e.factors)

    def _print_SignedSum(self, e: E.SignedSum) -> str:
        text = ""
        for k, (sign, t) in enumerate(e.terms):
            text += (("-" if sign < 0 else "") if k == 0 else (" - " if sign < 0 else " + ")) + self.doprint(t)
        return text

    def _print_Paren(self, e: E.Paren) -> str:
        return f"({self.doprint(e.value)})"

    def _print_MatMul(self, e: E.MatMul) -> str:
        return f"_b.mm({self.doprint(e.left)}, {self.doprint(e.right)})"

    def _print_Tuple(self, e: E.Tuple) -> str:
        return _tuple_text([self.doprint(x) for x in e.items])

    def _print_Call(self, e: E.Call) -> str:
        return f"_b.{e.method}({', '.join(self.doprint(a) for a in e.args)})"

    def _print_Invoke(self, e: E.Invoke) -> str:
        args = [self.doprint(a) for a in e.args] + [f"{k}={self.doprint(v)}" for k, v in e.keywords]
        return f"{e.function}({', '.join(args)})"

    def _print_Einsum(self, e: E.Einsum) -> str:
        args = ", ".join(self.doprint(a) for a in e.operands)
        return f"_b.{'einsum_blas' if e.blas else 'einsum'}({py_string(e.spec)}, {args})"

    # ---- statements
    def _print_Assign(self, s: E.Assign) -> str:
        return f"{self.doprint(s.target)} = {self.doprint(s.value)}"

    def _print_AddInPlace(self, s: E.AddInPlace) -> str:
        return f"{s.target} {'+' if s.sign > 0 else '-'}= {self.doprint(s.value)}"

    def _print_ScaleInPlace(self, s: E.ScaleInPlace) -> str:
        return f"{s.target} *= {self.doprint(s.factor)}"

    def _print_AddDiagonal(self, s: E.AddDiagonal) -> str:
        return f"{s.target} = _b.add_diagonal({s.target}, {self.doprint(s.value)}, {self.doprint(s.factor)})"

    def _print_CopyInto(self, s: E.CopyInto) -> str:
        return f"_b.copyto({self.doprint(s.target)}, {self.doprint(s.value)})"

    def _print_BinaryInto(self, s: E.BinaryInto) -> str:
        return f"_b.{s.op}({self.doprint(s.left)}, {self.doprint(s.right)}, {self.doprint(s.target)})"

    def _print_NegateInto(self, s: E.NegateInto) -> str:
        return f"_b.negative({self.doprint(s.value)}, {self.doprint(s.target)})"

    def _print_MatmulInto(self, s: E.MatmulInto) -> str:
        return f"_b.matmul({self.doprint(s.left)}, {self.doprint(s.right)}, {s.target})"

    def _print_FlatMatmulInto(self, s: E.FlatMatmulInto) -> str:
        return f"_b.matmul_flat({self.doprint(s.weight)}, {self.doprint(s.x)}, {s.n}, {s.target})"

    def _print_EinsumInto(self, s: E.EinsumInto) -> str:
        args = ", ".join(self.doprint(a) for a in s.operands)
        return f"_b.einsum_into({s.target}, {py_string(s.spec)}, {args}{', blas=True' if s.blas else ''})"

    def _print_Evaluate(self, s: E.Evaluate) -> str:
        return self.doprint(s.value)

    def _print_Return(self, s: E.Return) -> str:
        return f"return {self.doprint(s.value)}"

    def block(self, stmts, indent: str) -> list[str]:
        return [indent + self.doprint(s) for s in stmts]

    # ---- a planned function
    def _print_FunctionProgram(self, p: E.FunctionProgram, doc: str, signature=(), def_name: str | None = None,
                               entry: str | None = None) -> str:
        """The function (named ``def_name`` when given); ``signature`` (the inputs as :class:`Tensor`)
        gives its shape checks; ``entry`` is the public function on the same arguments (default
        ``f.name``; ``_NAME_blocks`` for a diagram with irreps tensors), which unbatched object arrays re-enter."""
        f = p.plan
        params = ", ".join(f.inputs) + (", " if f.inputs else "") + "*, out=None, fused=False"
        lines = [f"def {def_name or f.name}({params}):", "    " + doc]
        lines.append(f"    _b = _backend({', '.join(f.inputs)})")
        if f.inputs:
            first = f.inputs[0]
            lines.append(f"    {first} = _b.asarray({first})")
            for name in f.inputs[1:]:
                lines.append(f"    {name} = _b.asarray({name}, {first})")
            lines.append(f"    _like = {first}")
            lines += input_checks(entry or f.name, signature, p.unbatched)
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
        lines += self.block(p.tables + p.steps, "    ")
        if p.fresh_buffers:
            # components written into fresh buffers beat stacking them (not under autograd or jax)
            lines.append(f"    if out is None and _b.writable({', '.join(f.inputs)}):")
            lines += ["    " + line for line in self._out_buffers(f, fresh=True)]
        # the planned path: fresh results
        lines.append("    if out is None:")
        lines += self.block(p.fresh, "        ")
        if f.stack_axis is not None:
            lines.append(f"        return _b.stack(({', '.join(names)},), {f.stack_axis})")
        else:
            lines.append("        return " + (names[0] if len(names) == 1 else "(" + ", ".join(names) + ")"))
        # the same results written into preallocated outputs, in place
        lines += self._out_buffers(f)
        lines += self.block(p.into, "    ")
        lines.append(_return_out(f, "    "))
        return "\n".join(lines)

    def _print_BatchSumProgram(self, p: E.BatchSumProgram, signature=()) -> str:
        """``_<name>_batch_summed(_b, inputs)``: its inputs checked (``signature``: the inputs as
        :class:`Tensor`), the contractions over the batch, the summed outputs as a tuple."""
        n_sums = len(p.outputs) - p.others
        lines = [f"def _{p.name}_batch_summed(_b, {', '.join(p.inputs)}):",
                 f"    \"\"\"{p.name}: each cotangent of a weight without batch axes as contractions over the batch "
                 "axes too" + (", then the other outputs from the same copies" if len(p.outputs) > n_sums else "")
                 + ".\"\"\"",
                 f"    _like = {p.inputs[0]}"]
        lines += input_checks(p.name, signature, unbatched=False)
        lines += self.block(p.bound + p.steps, "    ")
        lines.append(f"    return {_tuple_text(p.outputs)}")
        return "\n".join(lines)

    def _print_BatchSpec(self, s: E.BatchSpec) -> str:
        return f"({s.rest or 'None'}, {s.summed}, {s.weights!r}, {s.order!r})"

    def _print_ChainFunction(self, f: E.ChainFunction) -> str:
        params = list(f.params) + (["*"] + [f"{k}={self.doprint(v)}" for k, v in f.keywords] if f.keywords else [])
        return "\n".join([f"def {f.name}({', '.join(params)}):", "    " + py_string(f.doc, triple=True)]
                         + self.block(f.body, "    "))

    def _print_Item(self, e: E.Item) -> str:
        return f"{self.doprint(e.base)}[{e.k}]"

    def _print_FusedProgram(self, p: E.FusedProgram) -> str:
        """``_<name>_fused(_b, inputs, _out=None)``: every output component as one arithmetic
        expression, elementwise over batch and channels (a compiler fuses it into one pass); the
        components are stacked, or written into the views of ``_out`` (a tuple, one array per output)."""
        lines = [f"def _{p.name}_fused(_b, {', '.join(p.inputs)}, _out=None):",
                 f"    \"\"\"{p.name} with every output component written out ({p.products} products).\"\"\""]
        lines += self.block(p.computed, "    ")
        lines.append("    if _out is not None:  # each component written once, into its place")
        lines += self.block(p.written, "        ")
        lines.append("        return _out")
        lines += self.block(p.assembled, "    ")
        if p.stack_axis is not None:
            lines.append(f"    return _b.stack(({', '.join(p.outputs)},), {p.stack_axis})")
        else:
            lines.append("    return " + (p.outputs[0] if len(p.outputs) == 1 else "(" + ", ".join(p.outputs) + ")"))
        return "\n".join(lines)

    def _out_buffers(self, f: FunctionPlan, fresh: bool = False) -> list[str]:
        """``out`` checked and bound to the output names (views of one array for a stacked basis);
        with ``fresh``, ``out`` made of new buffers of the result's shape and dtype instead."""
        names = [o.name for o in f.outputs]
        inputs = _tuple_text(f.inputs)
        if f.stack_axis is not None:
            shapes = [self.doprint(E.Shape(f.trailing, (len(f.outputs),), f.outputs[0].channels, f.outputs[0].geometric))]
        else:
            shapes = [self.doprint(E.Shape(f.trailing, (), o.channels, o.geometric)) for o in f.outputs]
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


def _tuple_text(names) -> str:
    """Python source of a tuple of names: '(a,)', '(a, b)'."""
    return "(" + ", ".join(names) + ("," if len(names) == 1 else "") + ")"


def _batch_text(trailing) -> str:
    """Python source of the broadcast of the inputs' batch shapes ((input, trailing axes) each)."""
    return "_b.batch(" + ", ".join(f"{i}.shape[:{-n}]" if n else f"{i}.shape" for i, n in trailing) + ")"


def _return_out(f: FunctionPlan, indent: str) -> str:
    """The return statement after the outputs were written into ``out`` (bound to their names)."""
    names = [o.name for o in f.outputs]
    return indent + ("return out" if f.stack_axis is not None or len(names) == 1
                     else "return (" + ", ".join(names) + ")")


def input_checks(function: str, tensors, unbatched: bool = True) -> list[str]:
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
    with array arguments, whatever computes it (``unbatched=False``: not for a function never called
    with object arrays). Builtins are reached through the module's ``_len``: an argument may be
    named ``len``."""
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
            if isinstance(c, FixedSize):  # an irreps block's multiplicity, weight[16,32]
                tests.append(f"{axis} != {c.size}")
            elif c in first_axis:
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
        f"({py_string(t.name)}, {_tuple_text([channel_literal(c) for c in t.type.channels])}, "
        f"{_tuple_text([str(d) for d in t.type.geometric_dims])})" for t in tensors) + ",)"
    names = _tuple_text([t.name for t in tensors])
    if tests:
        lines.append(f"    if ({tests[0]}" + "".join(f"\n            or {t}" for t in tests[1:]) + "):")
        lines.append(f"        _check_shapes({signature}, {names})")
    if not unbatched:
        return lines
    bare = " or ".join(f"_len(_sh{k}) == {rank}" for k, rank in enumerate(ranks))
    lines.append(f"    if ({bare}) and _b.root == \"numpy\" and _like.dtype.hasobject:")
    lines.append(f"        return _unbatched({function}, _b, {names}, {_tuple_text([str(r) for r in ranks])}, out, fused)")
    return lines
