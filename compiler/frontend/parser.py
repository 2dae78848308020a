"""Text -> syntax tree. The grammar lives in ``grammar.lark``; this module holds its transformer."""

from __future__ import annotations

import builtins
import keyword
import re
from fractions import Fraction
from functools import lru_cache
from importlib import resources

from lark import Lark, Transformer, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken, VisitError

from . import ast
from ..errors import MAX_ERRORS, DiagError, DiagNameError, DiagSyntaxError, DiagTypeError, Position, raise_all
from ..ir.types import TYPE_NAMES, TypeSyntaxError, make_type

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
    threadIdx blockIdx blockDim gridDim warpSize diagram basis group delta eps cg P out fused kernels
    num_nodes""".split()
)

_NAMES = {
    "NAME": "a name",
    "INT": "a number",
    "DECIMAL": "a number",
    "IRREP": "an irrep such as 1o",
    "MULIRREP": "an irreps term such as 16x1o",
    "BLOCK": "a block selector such as .1o",
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
    "CALLNAME": "a name",  # a name directly followed by "(": a function call
    "CIRCUMFLEX": "'^'",
    "$END": "end of file",
}


class _AdjacentName(Exception):
    """A number written directly before a name (``2x``, ``1e``): raised by the post-lexer, positioned
    by :func:`parse`."""

    def __init__(self, number, name):
        super().__init__(str(number))
        self.number, self.name = number, name


_NUMBER_TOKENS = ("INT", "DECIMAL")
_NAME_TOKENS = ("NAME", "CONSTNAME", "CALLNAME")


class _Postlex:
    """Drop newlines inside ( ) and [ ], merge runs of newlines into one, and refuse a number written
    directly before a name (no look-ahead: the contextual lexer lexes each token in the parser's
    state at that moment)."""

    always_accept = ("_NL",)

    def process(self, stream):
        depth = 0
        last_nl = False
        previous = None
        for tok in stream:
            if (tok.type in _NAME_TOKENS and previous is not None and previous.type in _NUMBER_TOKENS
                    and previous.end_pos == tok.start_pos):
                raise _AdjacentName(previous, tok)
            previous = tok
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
        raise DiagNameError(f"{what} '{name}' is a reserved word (Python, C/CUDA or diagc)", pos,
                            f"rename it, e.g. '{name}_'" if name.isidentifier() else None)


class _ToAst(Transformer):
    def __init__(self, filename: str, source: str):
        super().__init__()
        self.filename = filename
        self.source = source
        self.errors: list[DiagError] = []  # errors after which the item's transformation goes on

    def _pos(self, item) -> Position:
        line = getattr(item, "line", None)
        col = getattr(item, "column", None)
        if line is None and hasattr(item, "meta"):
            line, col = item.meta.line, item.meta.column
        return Position(self.filename, line or 1, col or 1, self.source)

    def _check_name(self, name: str, pos: Position, what: str) -> None:
        """check_name, recording the error and going on (to find the item's other errors)."""
        try:
            check_name(name, pos, what)
        except DiagError as err:
            self.errors.append(err)

    # -- declarations -----------------------------------------------------------------------
    def group_decl(self, items):
        (name,) = items
        if str(name) not in GROUPS:
            raise DiagSyntaxError(f"unknown group '{name}' (known: {', '.join(GROUPS)})", self._pos(name),
                                  did_you_mean(str(name), GROUPS))
        return (str(name), self._pos(name))

    @v_args(meta=True)
    def diagram(self, meta, items):
        name, params, outputs, *equations = items
        pos = self._pos(name)
        self._check_name(str(name), pos, "diagram")
        return ast.Diagram(str(name), tuple(params or ()), tuple(outputs), tuple(equations), pos)

    def basis(self, items):
        name, params, output = items
        pos = self._pos(name)
        self._check_name(str(name), pos, "basis")
        return ast.Basis(str(name), tuple(params or ()), output, pos)

    def bparams(self, items):
        return list(items)

    def bparam(self, items):
        name, (typ, type_pos), degree = items
        pos = self._pos(name)
        self._check_name(str(name), pos, "tensor")
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
        self._check_name(str(name), pos, "tensor")
        return ast.Param(str(name), typ, pos, type_pos)

    def type(self, items):
        name, args, channels = items
        if isinstance(args, _FnArgs) or str(name) == "fn":
            return self._fn_type(name, args, channels)
        return self._type(str(name), args, channels, self._pos(name))

    def _fn_type(self, name, args, channels):
        """``fn(n -> m)``: a user function passed at call time."""
        pos = self._pos(name)
        if str(name) != "fn":
            self.errors.append(DiagTypeError(f"'{name}(n -> m)': only 'fn' takes '(n -> m)'", pos))
            return make_type("scalar", None, None), pos
        if not isinstance(args, _FnArgs):
            self.errors.append(DiagTypeError("a function argument is declared with its numbers of arguments and "
                                             "results: fn(n -> m)", pos, "e.g. 'phi: fn(3 -> 2)'"))
            return make_type("scalar", None, None), pos
        if channels is not None:
            self.errors.append(DiagTypeError("a function argument has no channel axes: it applies elementwise",
                                             pos))
        if not (1 <= args.n_in <= MAX_FN_ARITY and 1 <= args.n_out <= MAX_FN_ARITY):
            self.errors.append(DiagTypeError(f"fn({args.n_in} -> {args.n_out}): a function takes and gives "
                                             f"1 to {MAX_FN_ARITY} invariants", pos))
        return ast.FnType(args.n_in, args.n_out), pos

    def fn_args(self, items):
        n_in, n_out = items
        return _FnArgs(int(n_in), int(n_out))

    def _type(self, name, args, channels, pos):
        chan_names = None
        if channels is not None:
            chan_names = []
            for tok in channels:
                self._check_name(str(tok), self._pos(tok), "channel axis")
                chan_names.append(str(tok))
        try:
            typ = make_type(name, args, chan_names)
        except TypeSyntaxError as exc:
            self.errors.append(DiagTypeError(str(exc), pos, _type_help(name, args)))
            typ = make_type("scalar", None, None)  # a stand-in: the item is dropped after its errors
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

    def _block(self, tok):
        """``.1o`` -> the irrep text ``1o`` (None when no block is selected)."""
        return None if tok is None else str(tok)[1:]

    # -- equations ---------------------------------------------------------------------------
    def equation(self, items):
        target, block, indices, expr = items
        return ast.Equation(str(target), tuple(indices or ()), expr, self._pos(target), self._block(block))

    def indices(self, items):
        return [ast.Index(str(t), self._pos(t)) for t in items if t is not None]

    def factor(self, items):
        name, block, indices = items
        return ast.Factor(str(name), tuple(indices or ()), self._pos(name), self._block(block))

    def constant(self, items):
        name, *params, indices = items
        return ast.Constant(str(name), tuple(int(p) for p in params), tuple(indices or ()), self._pos(name))

    def number(self, items):
        (tok,) = items
        text = str(tok)
        mantissa, _, exponent = text.lower().partition("e")
        if len(mantissa.replace(".", "").lstrip("0")) > MAX_DIGITS:
            self.errors.append(DiagSyntaxError(f"a number of more than {MAX_DIGITS} digits", self._pos(tok)))
        elif exponent and abs(int(exponent)) > MAX_DIGITS:
            self.errors.append(DiagSyntaxError(f"the exponent of {text} is beyond ±{MAX_DIGITS}", self._pos(tok)))
        else:
            return ast.Number(Fraction(text), self._pos(tok))
        return ast.Number(Fraction(1), self._pos(tok))  # a stand-in: the item is dropped after its errors

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
        if isinstance(right, ast.Number):
            if right.value == 0:
                self.errors.append(DiagSyntaxError("division by zero", right.pos))
                return left
            return ast.BinOp("/", left, right, _expr_pos(left))
        # division by an expression: times its reciprocal, a function of an invariant
        return ast.BinOp("*", left, ast.Call("recip", (right,), None, _expr_pos(right)), _expr_pos(left))

    def call(self, items):
        name, *args, select = items
        pos = self._pos(name)
        chosen = None
        if select is not None:
            chosen = int(select)
        return ast.Call(str(name), tuple(args), chosen, pos)

    def select(self, items):
        (tok,) = items
        return tok

    @v_args(meta=True)
    def neg(self, meta, items):
        (operand,) = items
        return ast.Neg(operand, Position(self.filename, meta.line, meta.column, self.source))

    def signed(self, items):  # unary plus
        return items[0]


#: words people write for the types of the language
TYPE_ALIASES = {
    "vector": "vec", "polar": "vec", "pseudovector": "axial", "axialvector": "axial", "pseudoscalar": "pscalar",
    "symmetric": "sym2", "symmetric2": "sym2", "sym": "sym2", "antisymmetric": "skew2", "antisymmetric2": "skew2",
    "skew": "skew2", "skewsymmetric": "skew2", "traceless": "sym2t", "symmetric_traceless": "sym2t",
    "sym2traceless": "sym2t", "tensor": "cart", "matrix": "cart2", "tensor2": "cart2", "rank2": "cart2",
    "spherical": "sph", "irrep": "sph", "weights": "weight", "param": "weight", "parameter": "weight",
    "float": "scalar", "real": "scalar",
}


def _type_help(name: str, args) -> str | None:
    if name == "weight" and args is not None:
        return ("a weight has channel axes only (weight[c,d]); a learnable matrix acting on Cartesian legs is "
                "not equivariant: mix channels with it instead")
    if name not in TYPE_NAMES:
        return did_you_mean(name, TYPE_NAMES, TYPE_ALIASES)
    return None


#: the most arguments or results of a user function ``fn(n -> m)``
MAX_FN_ARITY = 64


class _FnArgs:
    """``(n -> m)`` after a type name, while transforming (only ``fn`` takes it)."""

    def __init__(self, n_in: int, n_out: int):
        self.n_in, self.n_out = n_in, n_out


def _expr_pos(expr) -> Position:
    return expr.pos


#: words of the language, for "did you mean" on a misspelt keyword
KEYWORDS = ("diagram", "basis", "group")


@lru_cache(maxsize=1)
def _terminal_words() -> dict[str, str]:
    """Every terminal of the grammar -> how a message names it (never lark's internal name)."""
    words = {}
    for term in _lark().terminals:
        if term.pattern.type == "str":
            words[term.name] = repr(term.pattern.value)
        else:
            words[term.name] = _NAMES.get(term.name, "a " + term.name.lower().strip("_").replace("_", " "))
    words.update(_NAMES)
    return words


def describe_terminal(name: str) -> str:
    """A readable name for one of lark's terminal names ('DIAGRAM' -> "'diagram'", '_NL' -> end of line)."""
    return _terminal_words().get(name, "a token")


def _describe(token_types) -> str:
    names = sorted({describe_terminal(t) for t in token_types})
    if len(names) > 6:
        return ", ".join(names[:6]) + ", ..."
    return ", ".join(names)


def did_you_mean(word: str, candidates, aliases: dict[str, str] | None = None) -> str | None:
    """``did you mean 'x'?`` for the closest candidate (or a known alias), else None."""
    import difflib

    candidates = [c for c in candidates if c != word]
    if aliases and aliases.get(word.lower()) in candidates:
        return f"did you mean '{aliases[word.lower()]}'?"
    close = difflib.get_close_matches(word, candidates, n=1, cutoff=0.6)
    if not close:  # case slips (Diagram, VEC)
        close = [c for c in candidates if c.lower() == word.lower()][:1]
    return f"did you mean '{close[0]}'?" if close else None


def _end_position(filename: str, source: str) -> Position:
    """The position just after the last character (lines counted by newlines, as the lexer does)."""
    lines = source.rstrip("\n").split("\n")
    last = lines[-1][:-1] if lines[-1].endswith("\r") else lines[-1]
    return Position(filename, len(lines), len(last) + 1, source)


_DEEP = "an expression is nested too deeply or is too long to compile"


def _syntax_error(exc: Exception, filename: str, source: str) -> DiagSyntaxError:
    """lark's exception (or the post-lexer's) -> one positioned message, with a help line if the fix is known."""
    if isinstance(exc, _AdjacentName):
        num, name = exc.number, exc.name
        pos = Position(filename, num.line, num.column, source)
        text = f"{num}{name}"
        help = f"write '{num} {name}' (or '{num} * {name}') for a product"
        if str(name).lower().startswith("e") and str(num).replace(".", "").isdigit():
            help += f"; scientific notation takes digits after e, e.g. {num}e-3"
        return DiagSyntaxError(f"'{text}': a number written directly before a name", pos, help)
    if isinstance(exc, UnexpectedCharacters):
        char = source[exc.pos_in_stream] if exc.pos_in_stream < len(source) else "?"
        return DiagSyntaxError(f"unexpected character {char!r}", Position(filename, exc.line, exc.column, source))
    if isinstance(exc, UnexpectedToken) and exc.token.type != "$END":
        tok = exc.token
        shown = "end of line" if tok.type == "_NL" else repr(str(tok))
        pos = Position(filename, tok.line, tok.column, source)
        help = None
        if tok.type == "NAME":
            keywords = [w for w in KEYWORDS if w.upper() in exc.expected]
            help = did_you_mean(str(tok), keywords) if keywords else None
        return DiagSyntaxError(f"unexpected {shown}; expected {_describe(exc.expected)}", pos, help)
    if isinstance(exc, (UnexpectedToken, UnexpectedEOF)):
        pos = _end_position(filename, source)
        return DiagSyntaxError(f"unexpected end of file; expected {_describe(exc.expected)}", pos)
    # other lark input errors
    return DiagSyntaxError(str(exc).splitlines()[0], Position(filename, exc.line, exc.column, source))  # pragma: no cover


_ITEM_START = re.compile(r"^[ \t]*(diagram|basis|group)\b", re.M)


def _blank_broken_item(text: str, err: DiagError) -> str:
    """``text`` with the top-level item that holds ``err`` replaced by spaces (newlines kept, so every
    position stays where it was); unchanged when there is nothing left to blank."""
    pos = err.position
    lines = text.split("\n")
    offset = sum(len(l) + 1 for l in lines[: pos.line - 1]) + pos.column - 1
    offset = min(offset, len(text))
    starts = [m.start() for m in _ITEM_START.finditer(text)]
    line_start = text.rfind("\n", 0, offset) + 1
    begin = max([s for s in starts if s < line_start] + [0]) if not text[line_start:offset].strip() else \
        max([s for s in starts if s <= line_start] + [0])
    end = min([s for s in starts if s > offset] + [len(text)])
    if not text[line_start:offset].strip() and line_start in starts and line_start > begin:
        end = line_start  # the error is at the start of the next item: the broken one ends before it
    blanked = re.sub(r"[^\n]", " ", text[begin:end])
    return text[:begin] + blanked + text[end:]


def parse(source: str, filename: str = "<string>") -> ast.Module:
    """Parse a whole .diag text; raise a positioned :class:`DiagError` on any mistake (every mistake
    found, up to ``MAX_ERRORS``, as :class:`DiagErrors`)."""
    module, errors = parse_collecting(source, filename)
    raise_all(errors)
    return module


def parse_collecting(source: str, filename: str = "<string>") -> tuple[ast.Module, list[DiagError]]:
    """The module of every well-formed top-level item, and the errors of the others.

    After a syntax error the broken item (from its ``diagram``/``basis``/``group`` line to the next)
    is blanked out and the text parsed again, so each broken item reports its first syntax error;
    items that parse report every name and type error they hold."""
    if "\x00" in source:
        before = source[: source.index("\x00")]
        line, column = before.count("\n") + 1, len(before) - (before.rfind("\n") + 1) + 1
        return ast.Module(filename, source, "O3", ()), [
            DiagSyntaxError("the file contains a NUL character", Position(filename, line, column, source))]
    errors: list[DiagError] = []
    text = source
    while True:
        try:
            tree = _lark().parse(text)
            break
        except RecursionError:
            return ast.Module(filename, source, "O3", ()), errors + [
                DiagSyntaxError(_DEEP, Position(filename, 1, 1, source))]
        except (UnexpectedInput, _AdjacentName) as exc:
            err = _syntax_error(exc, filename, source)
            errors.append(err)
            blanked = _blank_broken_item(text, err)
            if blanked == text or len(errors) > MAX_ERRORS:
                return ast.Module(filename, source, "O3", ()), errors
            text = blanked
    transformer = _ToAst(filename, source)
    group, group_pos, diagrams = "O3", None, []
    for child in tree.children:
        transformer.errors = []
        try:
            item = transformer.transform(child)
        except RecursionError:
            errors.append(DiagSyntaxError(_DEEP, Position(filename, 1, 1, source)))
            continue
        except VisitError as exc:
            if not isinstance(exc.orig_exc, DiagError):
                raise
            errors.extend(transformer.errors + [exc.orig_exc])
            continue
        if transformer.errors:
            errors.extend(transformer.errors)
            continue
        if isinstance(item, tuple):
            if group_pos is not None:
                errors.append(DiagSyntaxError("the group is declared twice", item[1]))
            elif diagrams:
                errors.append(DiagSyntaxError("'group' must come before the first diagram", item[1]))
            else:
                group, group_pos = item
        else:
            diagrams.append(item)
    return ast.Module(filename, source, group, tuple(diagrams)), errors
