"""Text -> syntax tree. The grammar lives in ``grammar.lark``; this module holds its transformer."""

from __future__ import annotations

import builtins
import keyword
from fractions import Fraction
from functools import lru_cache
from importlib import resources

from lark import Lark, Transformer, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken, VisitError

from . import ast
from .errors import DiagError, DiagNameError, DiagSyntaxError, DiagTypeError, Position
from .types import TypeSyntaxError, make_type

GROUPS = ("O3", "SO3")
CONSTANTS = ("delta", "eps")

#: keywords of Python and C/C++/CUDA, and words of the language itself: never valid names
RESERVED = frozenset(keyword.kwlist) | frozenset(getattr(keyword, "softkwlist", ())) | frozenset(
    """auto break case char const continue default do double else enum extern float for goto if inline
    int long register restrict return short signed sizeof static struct switch typedef union unsigned
    void volatile while _Bool _Complex _Imaginary bool catch class delete explicit export false friend
    mutable namespace new operator private protected public template this throw true try typeid
    typename using virtual nullptr constexpr decltype noexcept static_assert thread_local alignas
    alignof char16_t char32_t __global__ __device__ __host__ __shared__ __constant__ dim3
    threadIdx blockIdx blockDim gridDim warpSize diagram basis group delta eps cg P out fused""".split()
)

_NAMES = {
    "NAME": "a name",
    "INT": "a number",
    "DECIMAL": "a number",
    "IRREP": "an irrep such as 1o",
    "_NL": "end of line",
    "LPAR": "'('",
    "RPAR": "')'",
    "LSQB": "'['",
    "RSQB": "']'",
    "LBRACE": "'{'",
    "RBRACE": "'}'",
    "COMMA": "','",
    "COLON": "':'",
    "EQUAL": "'='",
    "PLUS": "'+'",
    "MINUS": "'-'",
    "STAR": "'*'",
    "SLASH": "'/'",
    "SEMICOLON": "';'",
    "__ANON_0": "'->'",
    "__ANON_1": "'<='",
    "CONSTNAME": "cg or P",
    "CIRCUMFLEX": "'^'",
    "$END": "end of file",
}


class _Postlex:
    """Drop newlines inside ( ) and [ ], and merge runs of newlines into one."""

    always_accept = ("_NL",)

    def process(self, stream):
        depth = 0
        last_nl = False
        for tok in stream:
            if tok.type in ("LPAR", "LSQB"):
                depth += 1
            elif tok.type in ("RPAR", "RSQB"):
                depth = max(depth - 1, 0)
            if tok.type == "_NL":
                if depth or last_nl:
                    continue
                last_nl = True
            else:
                last_nl = False
            yield tok


@lru_cache(maxsize=1)
def _lark() -> Lark:
    grammar = resources.files(__package__).joinpath("grammar.lark").read_text(encoding="utf-8")
    return Lark(grammar, parser="lalr", postlex=_Postlex(), propagate_positions=True, maybe_placeholders=True)


#: module-level names of the emitted module may not shadow the Python builtins it calls
BUILTINS = frozenset(dir(builtins))
MAX_DIGITS = 30


def check_name(name: str, pos: Position, what: str) -> None:
    """Reject names that are keywords of Python/C or reserved for generated code."""
    if what in ("diagram", "basis") and name in BUILTINS:
        raise DiagNameError(f"{what} '{name}' would shadow the Python builtin of that name in the emitted module",
                            pos)
    if name.startswith("_"):
        raise DiagNameError(f"{what} '{name}': names starting with '_' are reserved for generated code", pos)
    if name in RESERVED:
        raise DiagNameError(f"{what} '{name}' is a reserved word (Python, C/CUDA or diagc)", pos)


class _ToAst(Transformer):
    def __init__(self, filename: str, source: str):
        super().__init__()
        self.filename = filename
        self.source = source

    def _pos(self, item) -> Position:
        line = getattr(item, "line", None)
        col = getattr(item, "column", None)
        if line is None and hasattr(item, "meta"):
            line, col = item.meta.line, item.meta.column
        return Position(self.filename, line or 1, col or 1, self.source)

    # -- declarations -----------------------------------------------------------------------
    def start(self, items):
        group, group_pos, diagrams = "O3", None, []
        for item in items:
            if isinstance(item, tuple):
                if group_pos is not None:
                    raise DiagSyntaxError("the group is declared twice", item[1])
                if diagrams:
                    raise DiagSyntaxError("'group' must come before the first diagram", item[1])
                group, group_pos = item
            else:
                diagrams.append(item)
        return ast.Module(self.filename, self.source, group, tuple(diagrams))

    def group_decl(self, items):
        (name,) = items
        if str(name) not in GROUPS:
            raise DiagSyntaxError(f"unknown group '{name}' (known: {', '.join(GROUPS)})", self._pos(name))
        return (str(name), self._pos(name))

    @v_args(meta=True)
    def diagram(self, meta, items):
        name, params, outputs, *equations = items
        pos = self._pos(name)
        check_name(str(name), pos, "diagram")
        return ast.Diagram(str(name), tuple(params or ()), tuple(outputs), tuple(equations), pos)

    def basis(self, items):
        name, params, output = items
        pos = self._pos(name)
        check_name(str(name), pos, "basis")
        return ast.Basis(str(name), tuple(params or ()), output, pos)

    def bparams(self, items):
        return list(items)

    def bparam(self, items):
        name, (typ, type_pos), degree = items
        pos = self._pos(name)
        check_name(str(name), pos, "tensor")
        d, up_to = degree if degree is not None else (1, False)
        return ast.BasisInput(ast.Param(str(name), typ, pos, type_pos), d, up_to)

    def exact_degree(self, items):
        return int(items[0]), False

    def max_degree(self, items):
        return int(items[0]), True

    def outputs(self, items):
        (item,) = items
        return item if isinstance(item, list) else [item]

    def params(self, items):
        return list(items)

    def param(self, items):
        name, (typ, type_pos) = items
        pos = self._pos(name)
        check_name(str(name), pos, "tensor")
        return ast.Param(str(name), typ, pos, type_pos)

    def type(self, items):
        name, args, channels = items
        return self._type(str(name), args, channels, self._pos(name))

    def _type(self, name, args, channels, pos):
        chan_names = None
        if channels is not None:
            chan_names = []
            for tok in channels:
                check_name(str(tok), self._pos(tok), "channel axis")
                chan_names.append(str(tok))
        try:
            typ = make_type(name, args, chan_names)
        except TypeSyntaxError as exc:
            raise DiagTypeError(str(exc), pos) from None
        return typ, pos

    def irrep_type(self, items):
        """``1o`` is shorthand for ``sph(1o)`` (e3nn's notation)."""
        irrep, channels = items
        return self._type("sph", [str(irrep)], channels, self._pos(irrep))

    def type_args(self, items):
        return [str(a) for a in items]

    def type_arg(self, items):
        return items[0]

    def channels(self, items):
        return [t for t in items if t is not None]

    # -- equations ---------------------------------------------------------------------------
    def equation(self, items):
        target, indices, expr = items
        return ast.Equation(str(target), tuple(indices or ()), expr, self._pos(target))

    def indices(self, items):
        return [ast.Index(str(t), self._pos(t)) for t in items if t is not None]

    def factor(self, items):
        name, indices = items
        return ast.Factor(str(name), tuple(indices or ()), self._pos(name))

    def constant(self, items):
        name, *params, indices = items
        return ast.Constant(str(name), tuple(int(p) for p in params), tuple(indices or ()), self._pos(name))

    def number(self, items):
        (tok,) = items
        if len(str(tok).replace(".", "").lstrip("0")) > MAX_DIGITS:
            raise DiagSyntaxError(f"a number of more than {MAX_DIGITS} digits", self._pos(tok))
        return ast.Number(Fraction(str(tok)), self._pos(tok))

    def _binop(self, op, items, meta):
        left, right = items
        return ast.BinOp(op, left, right, _expr_pos(left))

    @v_args(meta=True)
    def add(self, meta, items):
        return self._binop("+", items, meta)

    @v_args(meta=True)
    def sub(self, meta, items):
        return self._binop("-", items, meta)

    @v_args(meta=True)
    def mul(self, meta, items):
        return self._binop("*", items, meta)

    @v_args(meta=True)
    def div(self, meta, items):
        left, right = items
        if right.value == 0:
            raise DiagSyntaxError("division by zero", right.pos)
        return ast.BinOp("/", left, right, _expr_pos(left))

    @v_args(meta=True)
    def neg(self, meta, items):
        (operand,) = items
        return ast.Neg(operand, Position(self.filename, meta.line, meta.column, self.source))

    def signed(self, items):  # unary plus
        return items[0]


def _expr_pos(expr) -> Position:
    return expr.pos


def _describe(token_types) -> str:
    names = sorted({_NAMES.get(t, repr(t)) for t in token_types})
    if len(names) > 6:
        return ", ".join(names[:6]) + ", ..."
    return ", ".join(names)


def _end_position(filename: str, source: str) -> Position:
    """The position just after the last character (lines counted by newlines, as the lexer does)."""
    lines = source.rstrip("\n").split("\n")
    last = lines[-1][:-1] if lines[-1].endswith("\r") else lines[-1]
    return Position(filename, len(lines), len(last) + 1, source)


def parse(source: str, filename: str = "<string>") -> ast.Module:
    """Parse a whole .diag text; raise a positioned :class:`DiagError` on any mistake."""
    if "\x00" in source:
        before = source[: source.index("\x00")]
        line, column = before.count("\n") + 1, len(before) - (before.rfind("\n") + 1) + 1
        raise DiagSyntaxError("the file contains a NUL character", Position(filename, line, column, source))
    try:
        tree = _lark().parse(source)
    except RecursionError:
        raise DiagSyntaxError("an expression is nested too deeply or is too long to compile",
                              Position(filename, 1, 1, source)) from None
    except UnexpectedCharacters as exc:
        char = source[exc.pos_in_stream] if exc.pos_in_stream < len(source) else "?"
        raise DiagSyntaxError(f"unexpected character {char!r}", Position(filename, exc.line, exc.column, source)) from None
    except UnexpectedToken as exc:
        tok = exc.token
        if tok.type == "$END":
            pos = _end_position(filename, source)
            raise DiagSyntaxError(f"unexpected end of file; expected {_describe(exc.expected)}", pos) from None
        shown = "end of line" if tok.type == "_NL" else repr(str(tok))
        pos = Position(filename, tok.line, tok.column, source)
        raise DiagSyntaxError(f"unexpected {shown}; expected {_describe(exc.expected)}", pos) from None
    except UnexpectedEOF as exc:
        pos = _end_position(filename, source)
        raise DiagSyntaxError(f"unexpected end of file; expected {_describe(exc.expected)}", pos) from None
    except UnexpectedInput as exc:  # pragma: no cover - other lark input errors
        raise DiagSyntaxError(str(exc).splitlines()[0], Position(filename, exc.line, exc.column, source)) from None
    try:
        return _ToAst(filename, source).transform(tree)
    except RecursionError:
        raise DiagSyntaxError("an expression is nested too deeply or is too long to compile",
                              Position(filename, 1, 1, source)) from None
    except VisitError as exc:
        if isinstance(exc.orig_exc, DiagError):
            raise exc.orig_exc from None
        raise
