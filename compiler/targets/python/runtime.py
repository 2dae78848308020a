"""The run-time support of an emitted Python module, as real code.

One small class per array library (``_Numpy``, ``_Cupy``, ``_Torch``, ``_Jax``) over a common base,
without a test of which library it is; the module-level functions around them (dispatch, autograd
and jax wiring, shape checks, the CUDA kernel launcher). Tests import and exercise this file
directly (tests/test_runtime.py). An emitted module does not import it: :func:`runtime_source`
copies into the module only the definitions its functions reach (methods included), extracted
from this file's source with :mod:`ast`, in this file's order.

The globals below are the module's own state; ``_TABLES`` (the constant tables) is defined by each
module from its plans and is empty here.
"""

_TABLES = {}
_CONSTANTS = {}
_COMPILED = {}
_BACKENDS = {}
_TorchFunction = None
_len = len  # the functions' own names may shadow builtins (an input named len)


class _Backend:
    """einsum and constants of one array library; what numpy, cupy, torch and jax do alike."""

    def einsum(self, spec, *operands):
        return self.xp.einsum(spec, *operands)

    def einsum_blas(self, spec, *operands):
        """A contraction shaped like a matrix product (numpy's optimize=True sends it to BLAS)."""
        return self.xp.einsum(spec, *operands)

    def asarray(self, x, like=None):
        return self.xp.asarray(x)

    def promote(self, args):
        """The inputs in one dtype, as numpy's rules give it (numpy, cupy and jax promote by
        themselves; torch's einsum and matmul refuse float32 with float64)."""
        return args

    def swap(self, x):
        """The last two axes exchanged (a transposed view)."""
        return self.xp.swapaxes(x, -1, -2)

    def zeros_like(self, x):
        return self.xp.zeros_like(x)

    def unflatten(self, x, dims):
        """The trailing axis (prod(dims) components, row-major) split into axes of sizes dims."""
        return x.reshape(tuple(x.shape[:-1]) + dims)

    def moveaxis(self, x, source, destination):
        return self.xp.moveaxis(x, source, destination)

    def const(self, name, like):
        """The constant table ``name`` as an array of ``like``'s dtype (and device), cached."""
        key = self.const_key(name, like)
        value = _CONSTANTS.get(key)
        if value is None:
            value = _CONSTANTS[key] = self.table(name, like)
        return value

    def table(self, name, like):
        return self.xp.asarray(_TABLES[name], dtype=like.dtype)

    def rational(self, numerator, denominator, like):
        return numerator / denominator

    def one(self, like):
        """A 0-d array holding 1, of ``like``'s dtype (and device)."""
        return self.xp.ones((), dtype=like.dtype)

    def filled(self, value, shape, like):
        """A new array of ``shape`` and ``like``'s dtype holding ``value`` (a constant, broadcast over
        the batch)."""
        return self.xp.broadcast_to(self.xp.asarray(value, dtype=like.dtype), shape).copy()

    def stack(self, arrays, axis):
        """Stack on a new axis, broadcasting first (a constant element has no batch axes)."""
        return self.xp.stack(self.xp.broadcast_arrays(*arrays), axis=axis)

    # -- preallocated outputs (out=) ------------------------------------------------------------
    def batch(self, *shapes):
        """The broadcast of the inputs' batch shapes."""
        import numpy

        return tuple(numpy.broadcast_shapes(*shapes))

    def result_type(self, inputs):
        return self.xp.result_type(*inputs) if inputs else self.xp.float64

    def out(self, out, shape, inputs, name):
        """``out`` after checking that it can take the result in place: an array of the inputs'
        library, dtype and device, of the result's shape, sharing no memory with an input."""
        if not isinstance(out, self.array):
            raise TypeError(f"{name} must be a {self.root} array like the inputs, not {type(out).__name__}")
        if tuple(out.shape) != tuple(shape):
            raise ValueError(f"{name} has shape {tuple(out.shape)}; the result has shape {tuple(shape)}")
        dtype = self.result_type(inputs)
        self.check_place(out, inputs, name)
        if out.dtype != dtype:
            raise TypeError(f"{name} has dtype {out.dtype}; the result has dtype {dtype}")
        for x in inputs:
            if self.overlap(out, x):
                raise ValueError(f"{name} shares memory with an input; pass a separate buffer")
        return out

    def check_place(self, out, inputs, name):
        if not getattr(out.flags, "writeable", True):
            raise ValueError(f"{name} is read-only")

    def writable(self, *inputs):
        """Whether results may be computed in place into new buffers."""
        return True

    def empty(self, shape, inputs):
        """A new array of the result's shape, dtype and device (its entries are all written next)."""
        return self.xp.empty(shape, dtype=self.result_type(inputs))

    def outs(self, out, shapes, inputs):
        """A tuple of checked outputs, one per result, no two sharing memory."""
        if not isinstance(out, (tuple, list)) or len(out) != len(shapes):
            raise TypeError(f"out must be a tuple of {len(shapes)} arrays, one per result")
        checked = tuple(self.out(o, s, inputs, f"out[{k}]") for k, (o, s) in enumerate(zip(out, shapes)))
        for k, a in enumerate(checked):
            for b in checked[:k]:
                if self.overlap(a, b):
                    raise ValueError("two arrays of out share memory; pass separate buffers")
        return checked

    def overlap(self, a, b):
        return self.xp.may_share_memory(a, b)

    def deliver(self, out, results, inputs):
        """``results`` (a tuple) as a function returns them (one array, or a tuple), or copied into
        ``out`` once it is checked to take them (:meth:`out`, :meth:`outs`); then ``out`` is returned."""
        if out is not None:
            shapes = tuple(tuple(r.shape) for r in results)
            out = self.outs(out, shapes, inputs) if len(shapes) > 1 else (self.out(out, shapes[0], inputs, "out"),)
            for o, r in zip(out, results):
                self.copyto(o, r)
            results = out
        return results if len(results) > 1 else results[0]

    def copyto(self, out, x):
        out[...] = x

    def add(self, x, y, out):
        self.xp.add(x, y, out=out)

    def subtract(self, x, y, out):
        self.xp.subtract(x, y, out=out)

    def multiply(self, x, y, out):
        self.xp.multiply(x, y, out=out)

    def negative(self, x, out):
        self.xp.negative(x, out=out)

    def matmul(self, x, y, out):
        self.xp.matmul(x, y, out=out)

    def mm(self, x, y):
        return x @ y

    def contiguous(self, x):
        """x in row-major order (a copy when it is a permuted view)."""
        return self.xp.ascontiguousarray(x)

    def matmul_flat(self, w, x, n, out=None):
        """w @ x over x's axis -n-1, with x's last n axes flattened for the product and restored."""
        tail = tuple(x.shape[-n:])
        size = __import__("math").prod(tail)  # (not -1: ambiguous when a channel axis is empty)
        flat = x.reshape(tuple(x.shape[:-n]) + (size,))
        if out is not None and out.flags.c_contiguous:  # a reshape of it is a view: BLAS writes in place
            self.xp.matmul(w, flat, out=out.reshape(tuple(out.shape[:-n]) + (size,)))
            return out
        result = self.xp.matmul(w, flat)
        result = result.reshape(tuple(result.shape[:-1]) + tail)
        if out is None:
            return result
        self.copyto(out, result)
        return out

    def einsum_into(self, out, spec, *operands, blas=False):
        self.copyto(out, self.xp.einsum(spec, *operands))

    def sum_product(self, x, y, summed):
        """x * y summed over the last ``summed`` axes (torch's einsum of it: a batched gemv)."""
        return (x * y).sum(axis=tuple(range(-summed, 0)))

    def diagonal(self, x):
        """A writeable view of the diagonal of the last two axes."""
        return self.xp.diagonal(x, axis1=-2, axis2=-1)

    def add_diagonal(self, out, x, factor):
        """out[..., i, i] += factor * x[...] for every i, through a view of the diagonal; returns out."""
        diagonal = self.diagonal(out)
        if factor == 1:
            diagonal += x[..., None]
        elif factor == -1:
            diagonal -= x[..., None]
        else:
            diagonal += factor * x[..., None]
        return out

    def fused(self, fn, args, outs=None, stacked=None):
        """fn(self, *args): the unrolled component formulas, each component written straight into its
        view of the checked buffers ``outs`` when given."""
        return fn(self, *args, outs)

    def copy(self, x):
        return x.copy()

    # -- derivatives: the generated NAME_vjp wired into torch autograd and jax ------------------
    def differentiable(self, args):
        """Whether a call must record its derivative (torch autograd, jax transformations)."""
        return False

    def exact(self, x):
        """Whether x holds exact Python numbers (numpy object arrays)."""
        return False

    def evaluate(self, spec, args, out, fused, body=None):
        """The emitted code of ``spec`` (or ``body``: its CUDA kernel); a derivative's results summed
        to its inputs' shapes: the cotangents of weights shared by the batch by contractions over
        the batch axes too where the module has them (``spec[6]``, emit.BatchSpec)."""
        weights = spec[6] if body is None else None  # the array code only
        body = body or spec[0]
        sum_to, trailing = spec[2], spec[3]
        if not sum_to:
            return body(*args, out=out, fused=fused)
        shapes = tuple(tuple(args[k].shape) for k in sum_to)
        if out is not None:
            try:
                batch = self.batch(*(tuple(a.shape)[:len(a.shape) - n] for a, n in zip(args, trailing)))
                direct = all(tuple(args[k].shape)[:len(args[k].shape) - trailing[k]] == batch for k in sum_to)
            except (ValueError, RuntimeError):  # batch shapes that do not broadcast: the checks below say which
                direct = False
            if direct:  # nothing to sum: written in place by the emitted code
                return body(*args, out=out, fused=fused)
        if weights is not None and all(args[k].ndim == trailing[k] for k in weights[2]) \
                and not self.exact(args[0]):
            summed = weights[1](self, *args)
            rest = () if weights[0] is None else weights[0](*args, fused=fused)
            rest = rest if isinstance(rest, tuple) else (rest,)
            result = tuple((rest, summed)[source][k] for source, k in weights[3])
        else:
            result = body(*args, fused=fused)
        results = result if isinstance(result, tuple) else (result,)
        # out= checked after the inputs (the emitted code checks them first), before it is written
        return self.deliver(out, tuple(self.sum_to(r, s) for r, s in zip(results, shapes)), args)

    def sum_to(self, x, shape):
        """``x`` summed over the axes that broadcasting added or stretched to reach its shape
        (autograd's rule for a broadcast input); broadcast to ``shape`` where it has fewer axes."""
        if tuple(x.shape) == tuple(shape):
            return x
        lead = len(x.shape) - len(shape)
        if lead > 0:
            x = x.sum(tuple(range(lead)))
        tail = tuple(x.shape)[max(0, -lead):] if lead < 0 else tuple(x.shape)
        offset = len(shape) - len(tail)
        axes = tuple(offset + k for k, (a, b) in enumerate(zip(tail, shape[offset:])) if b == 1 and a != 1)
        if axes:
            x = self.sum_kept(x, axes)
        if tuple(x.shape) != tuple(shape):
            x = self.expand(x, shape)
        return x

    def sum_kept(self, x, axes):
        return x.sum(axis=axes, keepdims=True)

    def expand(self, x, shape):
        """``x`` broadcast to ``shape``, as a new array."""
        return self.xp.array(self.copy(self.xp.broadcast_to(x, shape)))

    def unstack(self, g, axis, n):
        """The cotangent of a stacked result split into one per stacked output."""
        return tuple(self.xp.moveaxis(g, axis, 0)[k] for k in range(n))

    # -- functions of invariants (diagrams with function nodes), elementwise -----------------------
    def silu(self, x):
        return x * self.sigmoid(x)

    def sigmoid(self, x):
        """1/(1 + exp(-x)) without overflow."""
        return 0.5 * (1 + self.xp.tanh(0.5 * x))

    def tanh(self, x):
        return self.xp.tanh(x)

    def exp(self, x):
        return self.xp.exp(x)

    def sqrt(self, x):
        return self.xp.sqrt(x)

    def rsqrt(self, x):
        return 1 / self.xp.sqrt(x)

    def recip(self, x):
        """1/x (a division by an invariant), exact for arrays of Python objects."""
        return 1 / x

    # their derivatives written out: the cotangent of the argument ``a`` (result ``r``) for the
    # result's cotangent ``g``, g f'(a)
    def silu_vjp(self, a, r, g):
        s = self.sigmoid(a)
        return g * s * (1 + a * (1 - s))

    def sigmoid_vjp(self, a, r, g):
        return g * r * (1 - r)

    def tanh_vjp(self, a, r, g):
        return g * (1 - r * r)

    def exp_vjp(self, a, r, g):
        return g * r

    def sqrt_vjp(self, a, r, g):
        return g * 0.5 / r

    def rsqrt_vjp(self, a, r, g):
        return g * -0.5 * r * r * r

    def recip_vjp(self, a, r, g):
        return -g * r * r

    def fn_vjp(self, where, name, fn, x, g):
        """The cotangent of the input ``x`` of a user function ``fn`` for its result's cotangent ``g``:
        the array library's autograd (torch, jax); numpy and cupy have none."""
        raise TypeError(f"{where}: the derivative of function argument '{name}' needs torch or jax arrays "
                        f"({self.root} has no autograd)")

    def chain_vjp(self, where, forward, arrays, cotangents):
        """The cotangents of ``arrays`` for ``forward(*arrays)`` (a tuple) by the library's autograd."""
        raise TypeError(f"{where}: the derivative of a diagram with function nodes runs by autograd: pass torch "
                        "or jax arrays")


class _Numpy(_Backend):
    """numpy: einsum into out=, BLAS for matrix-shaped contractions, exact object arrays."""

    root = "numpy"

    def __init__(self):
        import numpy

        self.xp, self.array = numpy, numpy.ndarray

    def asarray(self, x, like=None):
        if isinstance(x, self.xp.ndarray):
            return x
        return self.xp.asarray(x)

    def einsum_blas(self, spec, *operands):
        return self.xp.einsum(spec, *operands, optimize=True)

    def const_key(self, name, like):
        return (name, like.dtype)

    def rational(self, numerator, denominator, like):
        """numerator/denominator, exact for arrays of Python objects (e.g. fractions.Fraction)."""
        if like.dtype == object:
            from fractions import Fraction

            return Fraction(numerator, denominator)
        return numerator / denominator

    def einsum_into(self, out, spec, *operands, blas=False):
        self.xp.einsum(spec, *operands, out=out, optimize=blas)

    def sum_product(self, x, y, summed):  # einsum's loops: no product temporary
        letters = "abcdefghijklmnopqrstuvwxyz"[:summed]  # (at most the letters a diagram's einsum has)
        return self.xp.einsum(f"...{letters},...{letters}->...", x, y)

    def exact(self, x):
        return x.dtype.hasobject

    def diagonal(self, x):
        return self.xp.einsum("...ii->...i", x)  # numpy's einsum gives a writeable view


class _Cupy(_Backend):
    """cupy: numpy's interface on a CUDA device."""

    root = "cupy"

    def __init__(self):
        import cupy

        self.xp, self.array = cupy, cupy.ndarray

    def const_key(self, name, like):
        return ("cupy", name, like.dtype, like.device.id)  # cupy's Device is not hashable: its id is


class _Compiling(_Backend):
    """torch and jax: fused formulas compiled once per function (torch.compile, jax.jit)."""

    def fused(self, fn, args, outs=None, stacked=None):
        """fn(self, *args) compiled once per function; with ``outs`` (the checked buffers) the fresh
        result is copied in (compiled code writing into strided views of its inputs measured several
        times slower than a fresh result copied once; ``stacked``: the array ``outs`` are views of)."""
        key = (self.root, fn)
        compiled = _COMPILED.get(key)
        if compiled is None:  # compiled as fn itself: its own code, its own recompile budget
            compiled = _COMPILED[key] = self.compile(fn)
        result = compiled(self, *args)
        if outs is None:
            return result
        if stacked is not None:
            outs = (stacked,)
        for o, r in zip(outs, result if isinstance(result, tuple) else (result,)):
            self.copyto(o, r)
        return outs


class _Torch(_Compiling):
    """torch: tensors keep their device; autograd records the generated derivatives."""

    root = "torch"

    def __init__(self):
        import torch

        self.xp, self.array = torch, torch.Tensor

    def asarray(self, x, like=None):
        if isinstance(x, self.xp.Tensor):
            return x
        if like is None:
            return self.xp.as_tensor(x)
        if isinstance(x, (int, float)) and like.device.type != "cpu":  # filled there: no copy, no sync
            return self.xp.full((), x, dtype=like.dtype, device=like.device)
        return self.xp.as_tensor(x, dtype=like.dtype, device=like.device)

    def einsum_blas(self, spec, *operands):
        """``...pa,...pb->ab`` (a weight's cotangent summed over the batch) as one torch.mm, where
        torch.einsum makes it a batched product of batch 1; anything else by torch.einsum."""
        terms, out = spec.split("->")
        x, y = (terms.split(",") + ["", ""])[:2] if terms.count(",") == 1 else ("", "")
        if x[:3] == "..." and x[:-1] == y[:-1] and out in (x[-1] + y[-1], y[-1] + x[-1]) and out[0] != out[1] \
                and not set(out) & set(x[3:-1]) and operands[0].shape[:-1] == operands[1].shape[:-1]:
            a, b = operands if out[0] == x[-1] else operands[::-1]
            rows = a.shape[:-1].numel()  # (not -1: ambiguous when a channel axis is empty)
            return self.xp.mm(a.reshape(rows, a.shape[-1]).t(), b.reshape(rows, b.shape[-1]))
        return self.xp.einsum(spec, *operands)

    def promote(self, args):
        if len(args) < 2:
            return args
        common = args[0].dtype
        for a in args[1:]:
            common = self.xp.promote_types(common, a.dtype)
        return tuple(a if a.dtype == common else a.to(common) for a in args)

    def swap(self, x):
        return x.transpose(-1, -2)

    def mm(self, x, y):  # a batch times one matrix as one GEMM (torch's @ loops over a permuted batch)
        if x.ndim == 2 < y.ndim:
            return self.mm(y.transpose(-1, -2), x.transpose(-1, -2)).transpose(-1, -2)
        if y.ndim == 2 < x.ndim:
            return (x.reshape(x.shape[:-1].numel(), x.shape[-1]) @ y).reshape(tuple(x.shape[:-1]) + (y.shape[-1],))
        return x @ y

    def moveaxis(self, x, source, destination):
        return self.xp.movedim(x, source, destination)

    def const_key(self, name, like):
        return ("torch", name, like.dtype, like.device)

    def table(self, name, like):
        return self.xp.tensor(_TABLES[name], dtype=like.dtype, device=like.device)

    def one(self, like):
        return self.xp.ones((), dtype=like.dtype, device=like.device)

    def filled(self, value, shape, like):
        return self.xp.as_tensor(value, dtype=like.dtype, device=like.device).expand(shape).clone()

    def stack(self, arrays, axis):
        return self.xp.stack(self.xp.broadcast_tensors(*arrays), dim=axis)

    def batch(self, *shapes):
        return tuple(self.xp.broadcast_shapes(*shapes))

    def result_type(self, inputs):
        dtype = inputs[0].dtype if inputs else self.xp.float64
        for x in inputs[1:]:
            dtype = self.xp.promote_types(dtype, x.dtype)
        return dtype

    def check_place(self, out, inputs, name):
        if inputs and out.device != inputs[0].device:
            raise ValueError(f"{name} is on {out.device}; the inputs are on {inputs[0].device}")

    def writable(self, *inputs):
        """Not for tensors that autograd tracks (out= operations do not record gradients)."""
        return not any(x.requires_grad for x in inputs)

    def empty(self, shape, inputs):
        return self.xp.empty(shape, dtype=self.result_type(inputs), device=inputs[0].device if inputs else None)

    def overlap(self, a, b):
        return a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr() and a.numel() and b.numel()

    def copyto(self, out, x):
        out.copy_(x)

    def subtract(self, x, y, out):
        self.xp.sub(x, y, out=out)

    def multiply(self, x, y, out):
        self.xp.mul(x, y, out=out)

    def negative(self, x, out):
        self.xp.neg(x, out=out)

    def contiguous(self, x):
        return x.contiguous()

    def matmul_flat(self, w, x, n, out=None):
        """x copied with the mixed axis last and one GEMM over everything else, the result a view
        with the axis moved back (measured ~2x faster than torch's einsum, which copies into a
        channel-first order)."""
        moved = self.xp.movedim(x, -n - 1, -1).contiguous()
        wt = w.transpose(-1, -2)
        if wt.ndim > 2:  # per-entry weights: their batch axes before x's trailing ones
            wt = wt.reshape(tuple(wt.shape[:-2]) + (1,) * (n - 1) + tuple(wt.shape[-2:]))
        result = self.xp.movedim(self.xp.matmul(moved, wt), -1, -n - 1)
        if out is None:
            return result
        self.copyto(out, result)
        return out

    def add_diagonal(self, out, x, factor):
        out.diagonal(dim1=-2, dim2=-1).add_(x[..., None], alpha=factor)
        return out

    def compile(self, fn):
        return self.xp.compile(fn)

    def copy(self, x):
        return x.clone()

    def differentiable(self, args):
        return self.xp.is_grad_enabled() and any(isinstance(a, self.xp.Tensor) and a.requires_grad for a in args)

    def differentiate(self, spec, args, out, fused):
        """The function of ``spec`` run inside a torch.autograd.Function whose backward is the
        generated NAME_vjp, itself differentiable the same way."""
        return _TorchFunction.apply(spec, out, fused, *args)

    def sum_kept(self, x, axes):
        return x.sum(axes, keepdim=True)

    def expand(self, x, shape):
        return x.expand(shape).clone()

    def unstack(self, g, axis, n):
        return tuple(g.unbind(axis))

    def silu(self, x):
        return self.xp.nn.functional.silu(x)

    def sigmoid(self, x):
        return self.xp.sigmoid(x)

    def rsqrt(self, x):
        return self.xp.rsqrt(x)

    def fn_vjp(self, where, name, fn, x, g):
        with self.xp.enable_grad():
            leaf = x if x.requires_grad else x.detach().requires_grad_(True)
            (gx,) = self.xp.autograd.grad(fn(leaf), leaf, g, create_graph=True)
        return gx

    def chain_vjp(self, where, forward, arrays, cotangents):
        with self.xp.enable_grad():
            leaves = tuple(a if a.requires_grad else a.detach().requires_grad_(True) for a in arrays)
            return self.xp.autograd.grad(forward(*leaves), leaves, tuple(cotangents), create_graph=True,
                                         allow_unused=True, materialize_grads=True)


class _Jax(_Compiling):
    """jax: immutable arrays (no out=), constants never cached (a traced constant must not leak out
    of jit), derivatives through jax.custom_vjp."""

    root = "jax"

    def __init__(self):
        import jax.numpy

        self.xp = jax.numpy

    def const(self, name, like):
        return self.table(name, like)

    def filled(self, value, shape, like):
        return self.xp.broadcast_to(self.xp.asarray(value, dtype=like.dtype), shape)

    def out(self, out, shape, inputs, name):
        raise TypeError(f"{name}=: jax arrays are immutable; call without out=")

    def writable(self, *inputs):
        return False

    def contiguous(self, x):
        """x itself (XLA chooses layouts)."""
        return x

    def add_diagonal(self, out, x, factor):
        """A new array (jax arrays are immutable)."""
        return out + factor * x[..., None, None] * self.xp.eye(3, dtype=out.dtype)

    def compile(self, fn):
        import jax

        return jax.jit(fn, static_argnums=0)

    def copy(self, x):
        return x

    def differentiable(self, args):
        return True

    def differentiate(self, spec, args, out, fused):
        """The function of ``spec`` as a jax.custom_vjp whose backward is the generated NAME_vjp."""
        key = ("jax", spec[0], fused)
        f = _COMPILED.get(key)
        if f is None:
            f = _COMPILED[key] = _jax_function(self, spec, fused)
        return f(*args)

    def expand(self, x, shape):
        return self.xp.broadcast_to(x, shape)

    def silu(self, x):
        import jax

        return jax.nn.silu(x)

    def sigmoid(self, x):
        import jax

        return jax.nn.sigmoid(x)

    def rsqrt(self, x):
        import jax

        return jax.lax.rsqrt(x)

    def fn_vjp(self, where, name, fn, x, g):
        import jax

        _, pull = jax.vjp(fn, x)
        (gx,) = pull(g)
        return gx

    def chain_vjp(self, where, forward, arrays, cotangents):
        import jax

        _, pull = jax.vjp(forward, *arrays)
        return tuple(pull(tuple(cotangents)))


_LIBRARIES = {"numpy": _Numpy, "cupy": _Cupy, "torch": _Torch, "jax": _Jax}


def _call(spec, args, out, fused, kernels=True):
    """A public function: the emitted code, recording its derivative where autograd or jax needs it
    (a module without CUDA kernels: ``kernels`` changes nothing)."""
    _b = _backend(*args)
    if args:
        first = _b.asarray(args[0])  # the others take its dtype and device where they are converted
        args = _b.promote((first,) + tuple(_b.asarray(a, first) for a in args[1:]))
    if spec[1] is not None and _b.differentiable(args) and not (out is not None and _b.root == "jax"):
        return _b.differentiate(spec, args, out, fused)
    return _b.evaluate(spec, args, out, fused)


def _call_kernels(spec, args, out, fused, kernels=True):
    """A public function: the generated CUDA kernel for CUDA arrays (see _use_kernel), else the
    emitted code, recording its derivative where autograd or jax needs it."""
    _b = _backend(*args)
    if args:
        first = _b.asarray(args[0])  # the others take its dtype and device where they are converted
        args = _b.promote((first,) + tuple(_b.asarray(a, first) for a in args[1:]))
    if kernels and _use_kernel(_b, spec, args, fused):
        if out is None or spec[1] is None or not _b.differentiable(args):
            return _kernel_call(_b, spec, args, out)
        fused = False  # out= under autograd: the array code, recorded (a kernel's out= records no gradient)
    if kernels and fused and spec[5] is not None and spec[5]["kind"] == "mixing" and _host_possible(_b, args):
        fused = False  # channel mixing on the host: the planned code's GEMM (the library's, as cuBLAS on a GPU)
    if spec[1] is not None and _b.differentiable(args) and not (out is not None and _b.root == "jax"):
        return _b.differentiate(spec, args, out, fused)
    return _b.evaluate(spec, args, out, fused)


def _as_tuple(result):
    return result if isinstance(result, tuple) else (result,)


def _vjp(b, spec, args, grads, fused=False):
    """The generated NAME_vjp of ``spec`` at ``args`` for the results' cotangents ``grads`` (a
    stacked result's split into one per output): the inputs' cotangents, a tuple. The one backward
    of torch autograd, jax custom_vjp and the kernels' torch custom ops."""
    if spec[4] is not None:
        grads = b.unstack(grads[0], spec[4], None)
    return _as_tuple(spec[1](*args, *grads, fused=fused))


def _torch_function():
    import torch

    class _DiagcFunction(torch.autograd.Function):
        """Forward: the emitted code; backward: the generated NAME_vjp (differentiable again)."""

        @staticmethod
        def forward(ctx, spec, out, fused, *args):
            ctx.spec, ctx.fused = spec, fused
            kept = _kept_views(spec, args)
            ctx.kept = tuple(kept)
            ctx.save_for_backward(*args, *kept.values())
            return _backend(*args).evaluate(spec, tuple(kept.get(k, a) for k, a in enumerate(args)), out, fused)

        @staticmethod
        def backward(ctx, *grads):
            saved = ctx.saved_tensors
            args = saved[:len(saved) - len(ctx.kept)]
            if not torch.is_grad_enabled():  # a first-order backward reads the forward's copies (a double
                kept = dict(zip(ctx.kept, saved[len(args):]))  # backward differentiates the inputs)
                args = tuple(kept.get(k, a) for k, a in enumerate(args))
            result = _vjp(_BACKENDS["torch"], ctx.spec, args, grads, ctx.fused)
            return (None, None, None) + tuple(r if need else None
                                              for r, need in zip(result, ctx.needs_input_grad[3:]))

    return _DiagcFunction


def _kept_views(spec, args):
    """{position: view} per copy of ``spec[7]`` (input position, its trailing axes' order): the input
    copied contiguous with its trailing axes in that order, then viewed back in the input's order
    (equal values; the forward's channel mixing and its derivative's batch sums read the copy
    through it without copying again, plan.KeptCopy)."""
    kept = {}
    for k, axes in spec[7]:
        lead = args[k].ndim - len(axes)
        if lead >= 0:  # else a shape that the emitted code's checks reject, with their message
            order = tuple(range(lead)) + tuple(lead + a for a in axes)
            back = tuple(sorted(range(len(order)), key=order.__getitem__))
            kept[k] = args[k].detach().permute(order).contiguous().permute(back)
    return kept


def _jax_function(b, spec, fused):
    """``spec``'s function as a jax.custom_vjp whose backward is the generated NAME_vjp."""
    import jax

    @jax.custom_vjp
    def f(*args):
        return b.evaluate(spec, args, None, fused)

    def forward(*args):
        return b.evaluate(spec, args, None, fused), args

    def backward(args, g):
        return _vjp(b, spec, args, _as_tuple(g), fused)

    f.defvjp(forward, backward)
    return f


# -- graph diagrams: edge lists, gathers and sums over edges -------------------------------------
def _graph_args(function, signature, arrays, list_names, lists, num_nodes=None):
    """The checked arguments of a graph diagram's function, before any computing: every array has
    no batch axis (per-node and per-edge arrays lead with the node or edge axis), its trailing axes
    and channel sizes fit (_check_shapes), and each edge list is a 1-d integer array of one entry
    per edge with every node number in 0..n-1. The number of nodes n comes from the first per-node
    array, or from ``num_nodes`` (a non-negative int; required when no array is per node, and
    equal to the per-node arrays' when both are given). A ValueError (TypeError for a num_nodes
    that is not an int) names the argument. Returns the backend, the arrays in one library and
    dtype, the edge lists as index arrays of that library (on the arrays' device) and n."""
    b = _backend(*arrays)
    first = b.asarray(arrays[0])  # the others take its dtype and device where they are converted
    arrays = b.promote((first,) + tuple(b.asarray(a, first) for a in arrays[1:]))
    for (name, channels, dims, role), x in zip(signature, arrays):
        _graph_unbatched(function, name, channels, dims, x)
    _check_shapes(tuple(s[:3] for s in signature), arrays)
    sizes = {}
    for (name, channels, dims, role), x in zip(signature, arrays):
        if role and role not in sizes:
            sizes[role] = (int(x.shape[0]), name)
    if num_nodes is not None:
        if isinstance(num_nodes, bool) or not hasattr(num_nodes, "__index__"):
            raise TypeError(f"num_nodes is {type(num_nodes).__name__}; the number of nodes is an int")
        num_nodes = num_nodes.__index__()
        if num_nodes < 0:
            raise ValueError(f"num_nodes is {num_nodes}; the number of nodes is not negative")
        if "n" in sizes and sizes["n"][0] != num_nodes:
            raise ValueError(f"num_nodes is {num_nodes} but {sizes['n'][1]} has n = {sizes['n'][0]} nodes")
        sizes.setdefault("n", (num_nodes, "num_nodes"))
    if "n" not in sizes:
        raise ValueError(f"{function} has no per-node array argument: give num_nodes=, the number of nodes")
    n, n_from = sizes["n"]
    checked, unchecked = [], []
    for name, given in zip(list_names, lists):
        idx = _edge_list(b, name, given, arrays[0])
        if "e" in sizes and tuple(idx.shape) != (sizes["e"][0],):
            raise ValueError(f"{name} has shape {tuple(idx.shape)}; expected ({sizes['e'][0]},), one node per "
                             f"edge, e = {sizes['e'][0]} from {sizes['e'][1]}")
        sizes.setdefault("e", (int(idx.shape[0]), name))
        if idx.shape[0] and not _traced(b, idx) and not _range_known(b, idx, n):
            unchecked.append((name, idx))
        checked.append(idx)
    if unchecked:  # one read back from the device for every edge list not seen before
        if b.root == "torch":
            bounds = b.xp.stack([v for _, idx in unchecked for v in (idx.min(), idx.max())]).tolist()
        else:
            bounds = [int(v) for _, idx in unchecked for v in (idx.min(), idx.max())]
        for k, (name, idx) in enumerate(unchecked):
            low, high = bounds[2 * k], bounds[2 * k + 1]
            if low < 0 or high >= n:
                bad = low if low < 0 else high
                raise ValueError(f"{name} holds node {bad}, outside 0..{n - 1} (n = {n} from {n_from})")
        for _, idx in unchecked:
            _range_checked(b, idx, n)
    return b, arrays, tuple(checked), n


#: torch edge lists whose range was checked: key -> (weak reference to the tensor owning the memory,
#: version counter then); a layer stack reusing one edge list reads it back from the device once
_CHECKED_LISTS = {}


def _list_key(idx, n):
    """Where an edge list's values live (its memory's owner, offset, shape, strides) and the node count."""
    base = idx if idx._base is None else idx._base
    return base, (id(base), idx.data_ptr(), tuple(idx.shape), tuple(idx.stride()), str(idx.device), n)


def _range_known(b, idx, n):
    """Whether a torch edge list (the same memory, unchanged since: its version counter, shared with
    every view of that memory, bumps at each in-place edit) was already checked against n nodes."""
    if b.root != "torch" or idx.requires_grad or b.xp.is_inference(idx):
        return False
    base, key = _list_key(idx, n)
    seen = _CHECKED_LISTS.get(key)
    return seen is not None and seen[0]() is base and seen[1] == idx._version


def _range_checked(b, idx, n):
    if b.root != "torch" or idx.requires_grad or b.xp.is_inference(idx):
        return
    import weakref

    base, key = _list_key(idx, n)
    try:
        ref = weakref.ref(base)
    except TypeError:
        return
    while len(_CHECKED_LISTS) >= 64:  # the oldest first
        del _CHECKED_LISTS[next(iter(_CHECKED_LISTS))]
    _CHECKED_LISTS[key] = (ref, idx._version)


def _edge_list(b, name, idx, like):
    """An edge list as a 1-d integer index array of the backend's library (ValueError otherwise)."""
    xp = b.xp
    if b.root == "torch":
        if not isinstance(idx, xp.Tensor):
            import numpy

            idx = xp.as_tensor(numpy.asarray(idx))
        integer = not (idx.dtype.is_floating_point or idx.dtype.is_complex or idx.dtype == xp.bool)
    else:
        idx = xp.asarray(idx)
        integer = idx.dtype.kind in "iu"
    if not integer:
        raise ValueError(f"{name} has dtype {idx.dtype}; an edge list holds integer node numbers")
    if _len(idx.shape) != 1:
        raise ValueError(f"{name} has shape {tuple(idx.shape)}; an edge list is one-dimensional (e,)")
    if b.root == "torch":
        if idx.dtype != xp.int64:
            idx = idx.to(xp.int64)
        if idx.device != like.device:
            idx = idx.to(like.device)
    return idx


def _traced(b, idx):
    """Whether an edge list is a jax tracer (under jax.jit its values are not known: no range check)."""
    if b.root != "jax":
        return False
    import jax

    return isinstance(idx, jax.core.Tracer)


def _gather(b, x, idx):
    """x read at each edge: x[idx] along the leading (node) axis."""
    if b.root == "torch":
        return x.index_select(0, idx)
    return x[idx]


def _scatter(b, x, idx, n, into=None):
    """The sum of the per-edge x into n nodes along the leading axis (node idx[e] receives x[e]), added
    into ``into`` (a run of edges' share after the earlier runs'), or into zeros when it is None."""
    xp = b.xp
    if into is None:
        shape = (n,) + tuple(x.shape[1:])
        into = x.new_zeros(shape) if b.root == "torch" else xp.zeros(shape, dtype=x.dtype)
    if b.root == "torch":
        return into.index_add_(0, idx, x)
    if b.root == "jax":
        return into.at[idx].add(x)
    if b.root == "cupy":
        import cupyx

        cupyx.scatter_add(into, idx, x)
    else:
        xp.add.at(into, idx, x)
    return into


#: bytes of gathered and per-edge rows a graph function's host code works on at a time (about 4 MB:
#: they stay in cache, and no fresh per-edge array is paged in); 0: every edge at once, and torch
#: autograd traced through the gathers and sums (no autograd function around NAME)
EDGE_CHUNK_BYTES = 4 << 20


def _edge_chunks(b, lists, arrays, fused):
    """The runs of edges (slices of the edge axis) a graph function's host code takes one after the
    other: numpy and torch CPU arrays, no gradient recorded, not fused, and more edges than a run
    holds (EDGE_CHUNK_BYTES over the bytes of one row of every array); else one run of every edge."""
    edges = int(lists[0].shape[0])
    if fused or not EDGE_CHUNK_BYTES or b.root not in ("numpy", "torch") or _recording(b, arrays):
        return (slice(None),)
    if b.root == "torch" and (b.xp.compiler.is_compiling() or any(x.device.type != "cpu" for x in arrays)):
        return (slice(None),)
    step = max(1, EDGE_CHUNK_BYTES // max(1, sum(int(x[:1].nbytes) for x in arrays)))
    if edges <= step:
        return (slice(None),)
    return tuple(slice(lo, lo + step) for lo in range(0, edges, step))


def _recording(b, arrays):
    """Whether torch autograd records operations on these arrays."""
    return b.root == "torch" and b.xp.is_grad_enabled() and any(x.requires_grad for x in arrays)


def _edge_rows(b, into, x, part, edges):
    """Per-edge results of the run of edges ``part`` stored in rows of ``into`` (made at the first run;
    one run of every edge: x itself)."""
    if part == slice(None):
        return x
    if into is None:
        shape = (edges,) + tuple(x.shape[1:])
        into = x.new_empty(shape) if b.root == "torch" else b.xp.empty(shape, dtype=x.dtype)
    into[part] = x
    return into


def _edge_total(into, x):
    """A sum over the runs of edges (a cotangent summed over every edge, as a weight's)."""
    return x if into is None else into + x


def _graph_recorded(b, arrays, fused):
    """Whether a graph function runs inside the autograd function (forward: the host code with no
    gradient recorded, in runs of edges; backward: NAME_vjp): torch CPU arrays wanting a gradient,
    not fused, not traced by torch.compile, EDGE_CHUNK_BYTES not 0."""
    if fused or not EDGE_CHUNK_BYTES or not _recording(b, arrays) or b.xp.compiler.is_compiling():
        return False
    return all(x.device.type == "cpu" for x in arrays)


def _arrays_only(cotangents):
    """NAME_vjp's cotangents without the None of each edge list."""
    return tuple(c for c in cotangents if c is not None)


def _graph_out(b, results, out, arrays):
    """The results (one array, or a tuple for several), copied into ``out`` when it is given."""
    if out is None:
        return results if _len(results) > 1 else results[0]
    if _len(results) == 1:
        b.copyto(b.out(out, tuple(results[0].shape), arrays, "out"), results[0])
        return out
    for o, r in zip(b.outs(out, [tuple(r.shape) for r in results], arrays), results):
        b.copyto(o, r)
    return out


def _use_graph_kernel(b, cfg, arrays, vjp, fused=False, vjp_cfg=None):
    """Whether a graph diagram's function runs its fused CUDA kernel: CUDA arrays (torch or cupy) of
    float32 or float64, cupy importable, and for torch arrays wanting a gradient, a NAME_vjp. Or,
    with ``fused``, the kernel's host loop on CPU arrays of one of those dtypes (_host_possible);
    when a gradient is being recorded, the build of NAME_vjp's loop (``vjp_cfg``) starts too."""
    recording = _recording(b, arrays)
    if not arrays or not (vjp is not None or not recording):
        return False
    if b.root in ("torch", "cupy") and _on_gpu(b, arrays):
        return _dtype_name(b, arrays[0]) is not None and _cupy_importable()
    dtype = _host_dtype(b, arrays)
    later = [vjp_cfg["host"][dtype]] if vjp_cfg is not None and dtype and recording else []
    return bool(fused and dtype and _host_possible(b, arrays) and _host_ready([cfg["host"][dtype]], later))


def _graph_kernel(b, cfg, arrays, lists, n, vjp, fused=False):
    """The results of a graph diagram's function by its fused kernel (or its host loop); with torch
    arrays wanting a gradient, through the autograd function whose backward is ``vjp`` (NAME_vjp,
    called with the same ``fused``)."""
    if not _recording(b, arrays):
        return _graph_launch(b, cfg, arrays, lists, n)

    def backward(*args):
        xs, grads = args[:_len(arrays)], args[_len(arrays):]
        return _arrays_only(vjp(*(xs[k] if kind == "a" else lists[k] for kind, k in cfg["order"]), *grads,
                                fused=fused))

    return _graph_autograd().apply(lambda *xs: _graph_launch(b, cfg, xs, lists, n), backward, *arrays)


def _graph_launch(b, cfg, arrays, lists, n):
    """One launch of the fused kernel: a thread per channel element and run of consecutive edges
    reads its gathered and per-edge inputs, computes the per-edge products in registers, adds the
    messages into their nodes (outputs zeroed first) and stores per-edge outputs; in the block form
    a block owns whole runs and sums the outputs without channel axes over its threads. Arguments
    were checked by _graph_args."""
    import math

    import numpy

    torch = b.root == "torch"
    host = b.root == "numpy" or not _on_gpu(b, arrays)
    dtype, device = _dtype_name(b, arrays[0]), arrays[0].device
    index = None if host else _device_index(b, device)
    edges = int(lists[0].shape[0]) if lists else 0
    sizes = {}
    xs, strides = [], []
    for k, lead, chans, dims in cfg["inputs"]:
        x = arrays[k]
        for j, c in enumerate(chans):
            sizes[c] = int(x.shape[lead + j])
        stride = _row_stride(b, x) if lead else None  # rows of a wider array (unbind's views) are read in place
        if stride is None:
            x = x.contiguous() if torch else b.xp.ascontiguousarray(x)
            stride = math.prod(x.shape[1:])
        xs.append(x)
        if lead:
            strides.append(stride)
    chans = [sizes[c] for c in cfg["channels"]]
    runs = (edges + cfg["edges_per_thread"] - 1) // cfg["edges_per_thread"]
    elements = math.prod(chans)
    outs = []
    for role, och, dims in cfg["outputs"]:
        shape = (n if role == "n" else edges,) + tuple(sizes[c] for c in och) + tuple(dims)
        # per node: added into; per edge: stored, except a sum over no channel element (zeros), and
        # on the host in the block form (its loop adds each channel element's share into the edge's row)
        make = b.xp.zeros if role == "n" or elements == 0 or (host and cfg["form"] == "block") else b.xp.empty
        if torch:
            outs.append(make(shape, dtype=arrays[0].dtype, device=device))
        elif host:
            outs.append(make(shape, dtype=arrays[0].dtype))
        else:
            with b.xp.cuda.Device(index):
                outs.append(make(shape, dtype=arrays[0].dtype))
    results = tuple(outs[j] if kind == "out" else b.xp.zeros_like(arrays[j]) for kind, j in cfg["results"])
    if runs * elements == 0:
        return results
    if host:
        lists = [idx.contiguous() if torch else b.xp.ascontiguousarray(idx, dtype="int64") for idx in lists]
        _host_call(b, cfg["host"][dtype], [lists[j] for j in cfg["lists"]] + xs, outs, [edges] + chans + strides)
        return results
    if cfg["form"] == "block":  # a block owns block // min(elements, block) runs of consecutive edges
        slots = cfg["block"] // min(elements, cfg["block"])
        grid = ((runs + slots - 1) // slots, 1, 1)
        shared = cfg["shared_words"] * (4 if dtype == "float32" else 8)
    else:  # a thread per channel element and run of consecutive edges
        grid = ((runs * elements + cfg["block"] - 1) // cfg["block"], 1, 1)
        shared = 0
    if torch:  # int64 already (_edge_list); a strided view is copied
        lists = [idx.contiguous() for idx in lists]
    else:
        with b.xp.cuda.Device(index):
            lists = [b.xp.ascontiguousarray(idx.astype("int64", copy=False)) for idx in lists]
    ptr = (lambda x: numpy.uint64(x.data_ptr())) if torch else (lambda x: numpy.uint64(x.data.ptr))
    params = [ptr(lists[j]) for j in cfg["lists"]]
    order = None  # (held until the launch)
    if cfg["visit"] is not None:  # the kernel visits the edges sorted by the nodes it adds into
        order = _edge_order(b, lists[cfg["visit"]], index) if GRAPH_ORDER else None
        params.append(numpy.uint64(0) if order is None else ptr(order))
    params += [ptr(x) for x in xs] + [ptr(o) for o in outs]
    params += [numpy.int64(edges)] + [numpy.int64(c) for c in chans] + [numpy.int64(r) for r in strides]
    if grid[0] > 2147483647:
        raise ValueError(f"the graph is too large for one launch of the kernel ({grid[0]} blocks)")
    fn = _cuda_function(cfg["symbols"][dtype], index)
    cp = _CUDA["cupy"]
    with cp.cuda.Device(index):
        if torch:
            with cp.cuda.ExternalStream(_torch_stream(b, device), index):
                fn(grid, (cfg["block"], 1, 1), tuple(params), shared_mem=shared)
        else:
            fn(grid, (cfg["block"], 1, 1), tuple(params), shared_mem=shared)
    return results


def _row_stride(b, x):
    """The distance in elements between the rows (axis 0) of array ``x`` when each row is contiguous
    and the distance is a non-negative whole number of elements, else None (then copied)."""
    if b.root == "torch":
        strides = tuple(x.stride())
    else:
        if any(s % x.itemsize for s in x.strides):
            return None
        strides = tuple(s // x.itemsize for s in x.strides)
    shape, expected = tuple(x.shape), 1
    for n, s in zip(reversed(shape[1:]), reversed(strides[1:])):
        if n != 1 and s != expected:
            return None
        expected *= n
    return strides[0] if strides[0] >= 0 else None


#: whether a graph VJP kernel that adds its messages into the nodes of an edge list the forward
#: gathered from visits the edges sorted by that list (a stable sort on the device per call, so that
#: runs of consecutive edges go into one node: one atomicAdd per run, not one per edge); False: the
#: edges' own order (benchmarks compare the two)
GRAPH_ORDER = True


def _edge_order(b, nodes, index):
    """The permutation (int64, on the device of ``nodes``) that sorts edge list ``nodes`` stably."""
    if b.root == "torch":
        return b.xp.sort(nodes, stable=True)[1]
    with b.xp.cuda.Device(index):
        return b.xp.argsort(nodes).astype("int64", copy=False)


#: the torch autograd function of graph diagrams' functions (made at the first use)
_GRAPH_AUTOGRAD = []


def _graph_autograd():
    if _GRAPH_AUTOGRAD:
        return _GRAPH_AUTOGRAD[0]
    import torch

    class _GraphFunction(torch.autograd.Function):
        """Forward: ``run(*arrays)``, the fused kernel or the host code, no gradient recorded.
        Backward: ``backward(*arrays, *cotangents)``, NAME_vjp's cotangents of the arrays (its own
        fused kernel or host code when no gradient of the gradient is wanted, else differentiable
        array code)."""

        @staticmethod
        def forward(ctx, run, backward, *arrays):
            ctx.backward = backward
            ctx.save_for_backward(*arrays)
            return run(*arrays)

        @staticmethod
        def backward(ctx, *grads):
            result = ctx.backward(*ctx.saved_tensors, *grads)
            return (None, None) + tuple(r if need else None for r, need in zip(result, ctx.needs_input_grad[2:]))

    _GRAPH_AUTOGRAD.append(_GraphFunction)
    return _GraphFunction


# -- diagrams with function nodes: their stages chained, function applications between them -----
def _check_callable(where, name, declared, fn):
    if not callable(fn):
        raise TypeError(f"{where}: argument '{name}' ({declared}) must be a callable of the array library (a "
                        f"function or an nn.Module); got {type(fn).__name__}")


def _aligned(a, pos, rank):
    """``a`` with size-1 axes inserted so that its channel axes sit at positions ``pos`` of ``rank``."""
    if _len(pos) < rank:
        a = a[(Ellipsis,) + tuple(slice(None) if j in pos else None for j in range(rank))]
    return a


def _apply_fn(where, name, declared, fn, args, channels, rank, n_out):
    """A user function ``fn`` of ``args`` (each with its channel axes at positions ``channels`` of the
    ``rank`` channel axes of the results): the arguments broadcast together, stacked on a new last
    axis, and the callable's result (last axis ``n_out``) split into its ``n_out`` values."""
    b = _backend(*args)
    x = b.stack([_aligned(a, pos, rank) for a, pos in zip(args, channels)], -1)
    y = fn(x)
    shape = getattr(y, "shape", None)
    if shape is None or tuple(shape) != tuple(x.shape[:-1]) + (n_out,):
        got = f"shape {tuple(shape)}" if shape is not None else f"a {type(y).__name__}"
        raise ValueError(f"{where}: function argument '{name}' ({declared}) returned {got}; expected "
                         f"{tuple(x.shape[:-1]) + (n_out,)} (its {_len(args)} arguments are stacked on the last "
                         f"axis of its input, shape {tuple(x.shape)})")
    return tuple(y[..., j] for j in range(n_out))


def _apply_fn_vjp(where, name, fn, args, channels, rank, cotangents):
    """The cotangents of the arguments of a user function (see _apply_fn) for its results'
    cotangents, by the array library's own derivative of ``fn`` (the backend's fn_vjp)."""
    b = _backend(*args)
    aligned = [_aligned(a, pos, rank) for a, pos in zip(args, channels)]
    gx = b.fn_vjp(where, name, fn, b.stack(aligned, -1), b.stack(cotangents, -1))
    return tuple(b.sum_to(gx[..., k], tuple(al.shape)).reshape(tuple(a.shape))
                 for k, (a, al) in enumerate(zip(args, aligned)))


def _sum_parts(parts, channels, rank):
    """An argument whose terms carry different channel axes: its parts broadcast and added."""
    total = _aligned(parts[0], channels[0], rank)
    for p, pos in zip(parts[1:], channels[1:]):
        total = total + _aligned(p, pos, rank)
    return total


def _sum_parts_vjp(parts, channels, rank, g):
    b = _backend(g)
    return tuple(b.sum_to(g, tuple(_aligned(p, pos, rank).shape)).reshape(tuple(p.shape))
                 for p, pos in zip(parts, channels))


def _graph_nodes(function, num_nodes, arrays):
    """The number of nodes for the stages of a graph diagram with functions: ``num_nodes`` where given
    (each stage checks it), else the node axis of the first per-node array of ``arrays`` ((name,
    channel axes, geometric sizes, array) each: arguments of a graph diagram have no batch axis)."""
    if num_nodes is not None:
        return num_nodes
    _graph_unbatched(function, *arrays[0])
    return int(arrays[0][3].shape[0])


def _graph_unbatched(function, name, channels, dims, x):
    """A ValueError unless ``x`` (argument ``name`` of graph function ``function``) has exactly its
    channel and geometric axes: arguments of a graph diagram have no batch axis."""
    if _len(x.shape) != _len(channels) + _len(dims):
        axes = ", ".join(tuple(str(c) for c in channels) + tuple(str(d) for d in dims))
        raise ValueError(f"{name} has shape {tuple(x.shape)}; expected ({axes}): arguments of {function} "
                         "have no batch axes (the node or edge axis leads)")


def _composite_vjp(where, fn, args, at, cotangents, fused, kernels, *num_nodes):
    """The cotangents of the arrays ``args[k]`` (k in ``at``) for ``fn(*args)`` (a diagram with
    function nodes), by the array library's autograd (the backend's chain_vjp), which runs the
    stages' generated NAME_vjp and the functions' own derivatives. A graph diagram's ``num_nodes``
    (given as one more argument) is passed on."""
    arrays = tuple(args[k] for k in at)
    nodes = {"num_nodes": num_nodes[0]} if num_nodes else {}

    def forward(*leaves):
        full = list(args)
        for k, a in zip(at, leaves):
            full[k] = a
        return _as_tuple(fn(*full, fused=fused, kernels=kernels, **nodes))

    return _backend(*arrays).chain_vjp(where, forward, arrays, cotangents)


# -- the generated CUDA kernels (torch CUDA tensors or cupy arrays, when cupy is importable) -----
# A module with kernels defines its own _CUDA_SOURCE (the text `diagc compile --target cuda` prints
# for its functions that have one), _OP_NAMESPACE, _CUDA, MIXING and _KERNEL_SPECS; these stand-ins
# let the launcher below be imported and tested on its own.
_CUDA_SOURCE = None
_OP_NAMESPACE = "diagc_runtime"
_CUDA = {"available": None, "cupy": None, "modules": {}, "functions": {}, "ops": None, "plans": {},
         "autograd": None, "specs": None}
MIXING = None
_KERNEL_SPECS = ()


def _cupy_importable():
    """Whether cupy can be imported with NVRTC (cupy.RawModule): looked up once, without importing
    it (it is imported only when CUDA arrays arrive)."""
    if _CUDA["available"] is None:
        import sys

        cp = sys.modules.get("cupy")
        if cp is not None:
            _CUDA["available"] = hasattr(cp, "RawModule")
        else:
            import importlib.util

            try:
                _CUDA["available"] = importlib.util.find_spec("cupy") is not None
            except (ImportError, ValueError):
                _CUDA["available"] = False
    return _CUDA["available"]


def _kernels_possible(b):
    """Whether this process could run a kernel on ``b``'s arrays at all (a CUDA device, cupy)."""
    if _CUDA_SOURCE is None or b.root not in ("torch", "cupy"):
        return False
    if b.root == "torch" and not b.xp.cuda.is_available():
        return False
    return _cupy_importable()


def _on_gpu(b, args):
    """Whether any argument lives on a CUDA device (cupy arrays always do)."""
    if b.root == "cupy":
        return True
    return any(a.is_cuda for a in args)


def _use_kernel(b, spec, args, fused=False):
    """The dispatch decision: a kernel exists for ``spec`` (and for channel mixing and its
    derivatives the kernel spec does not choose the array library's GEMM, ``library_gemm``, or
    MIXING overrides it with "kernel"; a derivative needs GPU kernels, ``launches``, and weights
    without batch axes), the arguments are CUDA arrays, and cupy is importable. Or, with ``fused``, an
    elementwise kernel whose host loop runs on CPU arrays (_host_possible), compiled (its VJP's build
    started when a gradient is being recorded: the backward will want it)."""
    cfg = spec[5]
    if cfg is None or not args:
        return False
    if b.root in ("torch", "cupy") and _on_gpu(b, args):
        if cfg["kind"] == "mixing_vjp" and ("launches" not in cfg or  # host loops only
                                            any(_len(args[k].shape) != 2 for k in cfg["unbatched"])):
            return False  # (a weight with batch axes has a cotangent per row: the array library's GEMMs)
        gemm = cfg["kind"] != "elementwise" and (cfg["library_gemm"] if MIXING is None else MIXING != "kernel")
        return not gemm and _cupy_importable()
    if not fused or not _host_possible(b, args):
        return False
    dtype = _host_dtype(b, args)
    if dtype is None or any(_len(args[k].shape) != 2 for k in cfg.get("unbatched", ())):
        return False  # a weight with batch axes (one per batch row): the array library's batched GEMMs
    vjp = _kernel_specs().get(spec[1].__name__) if spec[1] is not None else None
    later = [vjp[5]["host"][dtype]] if vjp is not None and b.differentiable(args) else []
    return _host_ready([cfg["host"][dtype]], later)


def _host_dtype(b, arrays):
    """The dtype every array has, when a kernel takes it ("float32" or "float64"), else None."""
    dtype = _dtype_name(b, arrays[0])
    return dtype if all(_dtype_name(b, a) == dtype for a in arrays[1:]) else None


def _dtype_name(b, x):
    if x.dtype == b.xp.float32:
        return "float32"
    if x.dtype == b.xp.float64:
        return "float64"
    return None


def _kernel_plan(b, cfg, args):
    """The arguments checked against the kernel's signature: (dtype, device, batch shape, channel
    sizes, per input how its batch axes are read). Shapes as every emitted function checks them
    (_check_shapes: ValueError naming the argument), then TypeError for a dtype the kernels do not
    take and ValueError for an argument on another device, each naming the argument."""
    import math

    _check_shapes(cfg["inputs"], args)
    dtype = device = first = None
    sizes, batches = {}, []
    for (name, chans, dims), x in zip(cfg["inputs"], args):
        kind = _dtype_name(b, x)
        if kind is None:
            raise TypeError(f"{name} has dtype {x.dtype}; the CUDA kernels take float32 or float64 "
                            "(kernels=False runs the array-library code)")
        if dtype is None:
            dtype, device, first = kind, x.device, name
        elif kind != dtype:
            raise TypeError(f"{name} has dtype {x.dtype} but {first} has {args[0].dtype}; the CUDA kernels "
                            "take one dtype (cast the inputs, or kernels=False)")
        if x.device != device:
            raise ValueError(f"{name} is on {x.device} but {first} is on {device}")
        shape = tuple(x.shape)
        own = len(chans) + len(dims)
        for k, c in enumerate(chans):  # checked to agree above
            sizes[c] = (shape[len(shape) - own + k], name)
        batches.append(shape[:len(shape) - own])
    batch = b.batch(*batches)  # _check_shapes has proved that they broadcast
    modes = [1 if s == batch else 0 if math.prod(s) == 1 else 2 for s in batches]  # own, broadcast, copied
    return dtype, device, batch, {c: n for c, (n, _) in sizes.items()}, tuple(modes), batches


def _kernel_outputs(cfg, plan):
    """The kernel's output shapes: the broadcast batch (none for an output totalled over it), the
    output's channel sizes, its dims."""
    batch, sizes = plan[2], plan[3]
    totalled = cfg.get("totalled", ())
    return [(() if k in totalled else batch) + tuple(sizes[c] for c in chans) + tuple(dims)
            for k, (_, chans, dims) in enumerate(cfg["outputs"])]


def _cuda_function(symbol, device):
    """The kernel ``symbol`` for device number ``device``: NVRTC compiles _CUDA_SOURCE at its first
    use on that device (cupy caches the binary on disk); cached here per (device, symbol)."""
    key = (device, symbol)
    fn = _CUDA["functions"].get(key)
    if fn is None:
        cp = _CUDA["cupy"]
        if cp is None:
            import cupy as cp

            _CUDA["cupy"] = cp
        with cp.cuda.Device(device):
            module = _CUDA["modules"].get(device)
            if module is None:
                module = _CUDA["modules"][device] = cp.RawModule(code=_CUDA_SOURCE, options=("-std=c++17",))
            fn = _CUDA["functions"][key] = module.get_function(symbol)
    return fn


def _launch_plan(b, cfg, args):
    """What a launch of ``cfg``'s kernel on ``args`` needs that depends only on their dtypes, devices,
    shapes and strides (the key of _CUDA["plans"], see _kernel_launch): the arguments checked by
    _kernel_plan (the same errors; nothing is cached for bad arguments), per input whether it is
    passed as it is (None), copied to row-major order (True) or broadcast to the batch and copied
    (the shape), the outputs' shapes and which are zeroed first (added into), the grid (None: nothing
    to launch), the kernel's batch flags and size arguments, its symbol and shared memory, and for
    a derivative of channel mixing with GPU kernels its launches in turn (_part_launch; None else)."""
    import math

    import numpy

    dtype, device, batch, sizes, modes, batches = _kernel_plan(b, cfg, args)
    torch = b.root == "torch"
    copies = []
    for x, mode, s in zip(args, modes, batches):
        if mode == 2:  # broadcast over some but not all batch axes: expanded and copied
            copies.append(batch + tuple(x.shape)[_len(s):])
        elif not (x.is_contiguous() if torch else x.flags.c_contiguous):
            copies.append(True)
        else:
            copies.append(None)
    shapes = tuple(tuple(s) for s in _kernel_outputs(cfg, (dtype, device, batch, sizes)))
    summed = tuple(k in cfg.get("summed", cfg.get("totalled", ())) for k in range(_len(shapes)))
    rows = math.prod(batch)
    parts = None
    if cfg["kind"] == "mixing_vjp":  # the host loop, or on a GPU its kernels in turn
        tail = [rows] + [sizes[c] for c in cfg["channels"]]
        grid = (1, 1, 1)
        empty = rows == 0
        if "launches" in cfg and not empty and b.root != "numpy" and _on_gpu(b, args):  # (a CPU call: the loop)
            parts = tuple(_part_launch(launch, rows, sizes, dtype) for launch in cfg["launches"])
            parts = tuple(p for p in parts if 0 not in p[1])  # a channel axis of size 0: nothing to add
    elif cfg["kind"] == "elementwise":
        chans = [sizes[c] for c in cfg["channels"]]
        n = rows * math.prod(chans)
        grid = ((n + cfg["per_block"][dtype] - 1) // cfg["per_block"][dtype], 1, 1)
        tail = [n] + chans
        empty = n == 0
    else:
        cin, cout = sizes[cfg["channels"][0]], sizes[cfg["channels"][1]]
        grid = ((rows + cfg["rows"] - 1) // cfg["rows"], (cout + cfg["cols"] - 1) // cfg["cols"], 1)
        tail = [rows, cin, cout]
        empty = rows == 0 or cout == 0
        if grid[1] > 65535:
            raise ValueError(f"channel axis '{cfg['channels'][1]}' of size {cout} is too large for the kernel")
    if not empty and grid[0] > 2147483647:
        raise ValueError(f"the batch is too large for one launch of the kernel ({grid[0]} blocks)")
    device_only = "symbols" in cfg
    return (tuple(copies) if any(c is not None for c in copies) else None, shapes, summed,
            None if empty else grid, (cfg.get("block", 1), 1, 1), tuple(numpy.int32(mode != 0) for mode in modes),
            tuple(numpy.int64(v) for v in tail), cfg["symbols"][dtype] if device_only else None,
            cfg["shared_words"][dtype] * (4 if dtype == "float32" else 8) if device_only else 0, parts)


def _part_launch(launch, rows, sizes, dtype):
    """One kernel of a derivative of channel mixing (``launch``: an entry of its cfg's ``launches``):
    (symbol, grid, block, size arguments, shared memory in bytes, the output it writes)."""
    import numpy

    first, second = (sizes[c] for c in launch["channels"])
    if "tile" in launch:  # a weight's cotangent: tiles of [a, b], spans of batch rows (at most 65535, strided)
        tile = launch["tile"]
        grid = ((first + tile - 1) // tile, (second + tile - 1) // tile,
                min((rows + launch["span"] - 1) // launch["span"], 65535))
    else:  # a mixing part: batch rows x output channels
        grid = ((rows + launch["rows"] - 1) // launch["rows"], (second + launch["cols"] - 1) // launch["cols"], 1)
        if grid[0] > 2147483647:
            raise ValueError(f"the batch is too large for one launch of the kernel ({grid[0]} blocks)")
    if grid[1] > 65535:
        raise ValueError(f"channel axis '{launch['channels'][1]}' of size {second} is too large for the kernel")
    return (launch["symbols"][dtype], grid, (launch["block"], 1, 1),
            tuple(numpy.int64(v) for v in (rows, first, second)),
            launch["shared_words"][dtype] * (4 if dtype == "float32" else 8), launch["output"])


def _kernel_launch(b, cfg, args):
    """Runs the kernel of ``cfg`` on CUDA arrays ``args`` (checked; a non-contiguous input, or one
    broadcast over some but not all batch axes, is copied first) into new outputs, on the current
    stream (torch's for tensors, cupy's for cupy arrays); returns the outputs (a list). Everything
    that depends only on the inputs' dtypes, devices, shapes and strides (checks, copies, output
    shapes, grid, size arguments) is planned once per such key (_launch_plan) and cached: a call
    then allocates the outputs, reads the data pointers and launches. Nothing waits for the device.
    CPU arrays (numpy, torch CPU tensors) run the kernel's host loop instead (loaded by _host_ready)."""
    import contextlib

    import numpy

    torch = b.root == "torch"
    host = b.root == "numpy" or not _on_gpu(b, args)
    if torch:
        key = (cfg["name"],) + tuple((x.dtype, x.device, x.shape, x.stride()) for x in args)
    else:
        key = (cfg["name"],) + tuple((x.dtype, None if host else x.device.id, x.shape, x.strides) for x in args)
    plans = _CUDA["plans"]
    plan = plans.get(key)
    if plan is None:
        plan = _launch_plan(b, cfg, args)
        if _len(plans) >= 4096:  # shapes that keep changing: start again rather than grow
            plans.clear()
        plans[key] = plan
    copies, shapes, summed, grid, block, flags, tail, symbol, shared, parts = plan
    like = args[0]
    index = None if host else _device_index(b, like.device)
    if torch:
        xs = args if copies is None else [x if c is None else x.contiguous() if c is True else x.expand(c).contiguous()
                                          for x, c in zip(args, copies)]
        outs = [like.new_zeros(s) if z else like.new_empty(s) for s, z in zip(shapes, summed)]  # summed: added into
    else:
        with contextlib.nullcontext() if host else b.xp.cuda.Device(index):  # on the inputs' device
            xs = args if copies is None else [
                x if c is None else b.xp.ascontiguousarray(x if c is True else b.xp.broadcast_to(x, c))
                for x, c in zip(args, copies)]
            outs = [(b.xp.zeros if z else b.xp.empty)(s, dtype=like.dtype) for s, z in zip(shapes, summed)]
    if grid is None:
        return outs
    if host:
        _host_call(b, cfg["host"][_dtype_name(b, like)], list(zip(xs, flags)), outs, tail)
        return outs
    params = []
    for x, flag in zip(xs, flags):
        params += (numpy.uint64(x.data_ptr() if torch else x.data.ptr), flag)
    pointers = [numpy.uint64(o.data_ptr() if torch else o.data.ptr) for o in outs]
    # one kernel writing every output, or (the derivative of channel mixing) several, one output each
    launches = ((symbol, grid, block, tail, shared, None),) if parts is None else parts
    fns = [_CUDA["functions"].get((index, launch[0])) or _cuda_function(launch[0], index) for launch in launches]
    if not fns:  # a channel axis of size 0: the zeroed outputs are the result
        return outs
    cp = _CUDA["cupy"]
    with cp.cuda.Device(index):
        with cp.cuda.ExternalStream(_torch_stream(b, like.device), index) if torch else contextlib.nullcontext():
            for fn, (_, grid, block, tail, shared, k) in zip(fns, launches):
                fn(grid, block, tuple(params) + tuple(pointers if k is None else (pointers[k],)) + tail,
                   shared_mem=shared)
    return outs


def _device_index(b, device):
    """The CUDA device number of ``device`` (torch.device or cupy.cuda.Device)."""
    if b.root == "cupy":
        return device.id
    return device.index if device.index is not None else b.xp.cuda.current_device()


def _torch_stream(b, device):
    """The handle of torch's current stream on ``device``: the kernel runs in order with torch's work
    (torch's raw-stream query where it has one: no Stream object made per call)."""
    raw = getattr(b.xp._C, "_cuda_getCurrentRawStream", None)
    if raw is not None:
        return raw(_device_index(b, device))
    return b.xp.cuda.current_stream(device).cuda_stream


#: fused=True on CPU arrays (numpy, torch on the CPU) of a module with kernels: the kernels' element
#: functions in host loops (C++, ``diagc_NAME_host_f32/64`` in _CUDA_SOURCE), compiled at their first
#: use by the C++ compiler (CXX, else g++ or c++ on PATH) and cached on disk (DIAGC_CACHE, else
#: ~/.cache/diagc); channel mixing and its derivatives too (register-tiled loops, no channels-last
#: copies), where every weight has no batch axes (else the planned code's GEMMs). False, or no
#: compiler: fused=True runs the fused array code (torch.compile on torch), as without kernels.
HOST_KERNELS = True
_HOST_FLAGS = ("-O3", "-march=native", "-std=c++17", "-shared", "-fPIC", "-pthread", "-fopenmp", "-x", "c++")
_HOST = {"compiler": None, "dir": None, "functions": {}, "failed": False,
         "building": {}, "started": set(), "pid": None, "flags": None, "swept": False}


def _host_possible(b, args):
    """Whether host loops may run on ``args``: HOST_KERNELS, a module with kernels, numpy arrays or
    torch CPU tensors (not while torch.compile traces), a C++ compiler found, and no build has
    failed in this process."""
    if not HOST_KERNELS or _CUDA_SOURCE is None or _HOST["failed"] or b.root not in ("numpy", "torch"):
        return False
    if b.root == "torch" and (b.xp.compiler.is_compiling() or any(a.is_cuda for a in args)):
        return False  # traced by torch.compile: the fused array code, which it compiles
    return _host_compiler() is not None


def _host_compiler():
    """The C++ compiler: CXX if set (a name on PATH or a path), else g++ or c++; looked up once, with
    the folder its builds go to: one per source text, compiler, flags and CPU (``-march=native``: a
    binary is kept only for the CPU it was built for)."""
    if _HOST["compiler"] is None:
        import hashlib
        import os
        import platform
        import shutil

        named = os.environ.get("CXX")
        cxx = (shutil.which(named) if named else shutil.which("g++") or shutil.which("c++")) or ""
        try:
            with open("/proc/cpuinfo") as f:
                cpu = next((line for line in f if line.startswith(("flags", "Features"))), "")
        except OSError:
            cpu = ""
        key = "\0".join((_CUDA_SOURCE, cxx, " ".join(_HOST_FLAGS), platform.machine(), cpu))
        root = os.environ.get("DIAGC_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "diagc")
        _HOST["dir"] = os.path.join(root, "host", hashlib.sha256(key.encode()).hexdigest()[:24])
        _HOST["compiler"] = cxx
    return _HOST["compiler"] or None


def _host_ready(symbols, later=()):
    """Whether host loops ``symbols`` are loaded: each built at its first use (a shared library of its
    own, ``DIAGC_HOST_ONLY``: the compiler sees one loop), the missing ones in parallel, and loaded.
    ``later``: loops wanted soon (a VJP's, while its forward runs), started now and not waited for;
    a later call for them waits for their build. One thread at a time builds and loads. A failed
    build warns once (the compiler's message) and turns host loops off for the process."""
    functions = _HOST["functions"]
    missing = [s for s in symbols if s not in functions]
    if not missing and all(s in functions or s in _HOST["started"] for s in later):
        return True
    import ctypes
    import os
    import threading
    import warnings

    with _HOST.setdefault("lock", threading.RLock()):
        try:
            for s in (*missing, *later):
                if s not in functions:
                    _host_start(s)
            for s in missing:
                if s not in functions:
                    _host_finish(s)
                    fn = getattr(ctypes.CDLL(os.path.join(_HOST["dir"], s + ".so")), s)
                    fn.restype = None
                    functions[s] = fn
        except (OSError, AttributeError) as error:
            _HOST["failed"] = True
            warnings.warn(f"the kernels' host loops could not be built ({error}); fused=True runs the array code",
                          RuntimeWarning, stacklevel=3)
            return False
    return True


def _host_start(symbol):
    """Starts the build of host loop ``symbol`` (the compiler on the module's source, written once to
    the cache folder), unless it is on disk or being built; either way ``symbol`` is then in
    ``_HOST["started"]``. The first build of a process removes the partial files of builds whose
    process is gone (one killed, or ended by os._exit, before its builds finished)."""
    import os
    import subprocess

    d = _HOST["dir"]
    lib = os.path.join(d, symbol + ".so")
    if symbol in _host_jobs() or os.path.exists(lib):
        _HOST["started"].add(symbol)
        return
    os.makedirs(d, exist_ok=True)
    if not _HOST["swept"]:
        _HOST["swept"] = True
        _host_sweep(d)
    source = os.path.join(d, "source.cpp")
    if not os.path.exists(source):
        part = f"{source}.{os.getpid()}"
        with open(part, "w") as f:
            f.write(_CUDA_SOURCE)
        os.replace(part, source)
    part = f"{lib}.{os.getpid()}"
    flags = _HOST["flags"] or _HOST_FLAGS  # (None until a build without -fopenmp was needed)
    cmd = [_HOST["compiler"], *flags, "-DDIAGC_HOST_ONLY", f"-DDIAGC_HOST_{symbol}", source, "-o", part]
    if not _HOST["building"]:
        import atexit

        atexit.register(_host_abandon)  # once per batch of builds (a later run finds none left)
    job = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    _HOST["building"][symbol] = (lib, part, job, flags)
    _HOST["started"].add(symbol)


def _host_sweep(d):
    """Removes the partial files (``NAME.so.PID``, ``source.cpp.PID``) in ``d`` of processes that are gone."""
    import os

    for name in os.listdir(d):
        stem, _, pid = name.rpartition(".")
        if not (stem.endswith((".so", ".cpp")) and pid.isdigit()) or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            try:
                os.remove(os.path.join(d, name))
            except OSError:
                pass
        except OSError:
            pass  # a process of another user: alive


def _host_jobs():
    """The builds this process started and has not waited for, by symbol. A child made by fork()
    starts with none: its parent's builds are not its to wait for or stop."""
    import os

    if _HOST["pid"] != os.getpid():
        _HOST["pid"], _HOST["building"], _HOST["started"] = os.getpid(), {}, set(_HOST["functions"])
    return _HOST["building"]


def _host_abandon():
    """At exit: builds never waited for (a VJP's, when no backward came) are kept when they have
    finished and stopped, their partial files removed, when they have not."""
    import os

    for lib, part, job, flags in _host_jobs().values():
        if job.poll() is None:
            job.kill()
        try:
            if job.wait() == 0:
                os.replace(part, lib)
            else:
                os.remove(part)
        except OSError:
            pass
    _HOST["building"].clear()


def _host_finish(symbol):
    """Waits for the build of ``symbol`` (if one runs) and puts the library in place; a compiler
    without OpenMP (Apple's clang: its message names the option) gets it built again without
    -fopenmp, on POSIX threads, as every later build. Raises OSError with the compiler's message
    when it fails. Interrupted while waiting, the build stays this process's (stopped at exit)."""
    import os

    jobs = _host_jobs()
    if symbol not in jobs:
        return
    lib, part, job, flags = jobs[symbol]
    text = job.communicate()[0]
    del jobs[symbol]
    if job.returncode == 0:
        os.replace(part, lib)
        return
    plain = tuple(f for f in _HOST_FLAGS if f != "-fopenmp")
    if flags != plain and b"openmp" in text.lower():
        _HOST["flags"] = plain
        _host_start(symbol)
        return _host_finish(symbol)
    raise OSError(text.decode(errors="replace")[-2000:])


def _host_call(b, symbol, inputs, outs, sizes):
    """Calls host loop ``symbol``: per input its array and flag (or the array alone: an edge list, a
    graph kernel's input), the outputs, the sizes, then the threads it may use (torch's intra-op
    threads for torch, for numpy the CPUs this process may run on: its affinity)."""
    import ctypes
    import os

    def pointer(x):
        return ctypes.c_void_p(x.data_ptr() if b.root == "torch" else x.ctypes.data)

    params = [p for item in inputs for p in ((pointer(item[0]), ctypes.c_int(int(item[1])))
                                             if isinstance(item, tuple) else (pointer(item),))]
    params += [pointer(o) for o in outs] + [ctypes.c_longlong(int(v)) for v in sizes]
    threads = b.xp.get_num_threads() if b.root == "torch" else len(os.sched_getaffinity(0)) \
        if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    _HOST["functions"][symbol](*params, ctypes.c_int(threads))


def _kernel_body(b, cfg):
    """The kernel as a body for _Backend.evaluate: fresh outputs, or copied into ``out``."""
    def body(*args, out=None, fused=False):
        return b.deliver(out, tuple(_kernel_launch(b, cfg, args)), args)
    return body


def _kernel_call(b, spec, args, out):
    """``spec``'s function on its CUDA kernel. torch tensors: launched from here (recorded for autograd
    by _kernel_autograd, whose backward is the generated NAME_vjp) when _kernel_eager says so, else
    through the function's custom op (torch.compile, torch.func, tensor subclasses); with ``out``,
    written into it (out= records no gradient). cupy arrays: launched directly."""
    if b.root == "torch" and out is None:
        ops = _torch_ops()  # registered at the first call (a later torch.compile finds them made)
        if not _kernel_eager(b, args):
            return ops[spec[5]["name"]](*args)
        if spec[1] is not None and b.differentiable(args):
            return _kernel_autograd()(spec, *args)
        return _kernel_result(b, spec, args)
    return b.evaluate(spec, args, out, False, _kernel_body(b, spec[5]))


def _kernel_eager(b, args):
    """Whether a torch call may launch its kernel without the custom op: plain tensors, outside
    torch.compile's tracing and torch.func's transforms (which need the op's fake and vmap rules).
    The same kernels and derivatives either way; the op costs a dispatcher round trip per call."""
    torch = b.xp
    if torch.compiler.is_compiling() or torch._C._are_functorch_transforms_active():
        return False
    for a in args:
        if type(a) is not torch.Tensor and type(a) is not torch.nn.Parameter:
            return False
    return True


def _kernel_result(b, spec, args):
    """``spec``'s results computed by its kernel (fresh, contiguous; a derivative's summed to its
    inputs' shapes, as _Backend.evaluate sums them): the custom op's implementation, and the eager
    call's."""
    outs = _kernel_launch(b, spec[5], args)
    if spec[2]:
        outs = [b.sum_to(r, tuple(args[k].shape)).contiguous() for r, k in zip(outs, spec[2])]
    return outs[0] if _len(outs) == 1 else tuple(outs)


def _kernel_autograd():
    """A torch.autograd.Function over the kernels, made once per module: forward ``spec``'s kernel,
    backward its generated NAME_vjp (itself a kernel, differentiable the same way: double backward).
    What the custom op registers (register_autograd), without the dispatcher in between. Returned
    is its C++ ``apply``: Function.apply's Python prologue only binds setup_context arguments (none
    here) and unwraps torch.func's wrappers (_kernel_eager has excluded its transforms)."""
    apply = _CUDA["autograd"]
    if apply is None:
        import torch

        class _DiagcKernel(torch.autograd.Function):
            @staticmethod
            def forward(ctx, spec, *args):
                ctx.spec = spec
                ctx.save_for_backward(*args)
                return _kernel_result(_BACKENDS["torch"], spec, args)

            @staticmethod
            def backward(ctx, *grads):  # grads of unused outputs arrive as zeros (materialised)
                b, spec, args = _BACKENDS["torch"], ctx.spec, ctx.saved_tensors
                vjp = None if b.xp.is_grad_enabled() or spec[4] is not None else _kernel_specs().get(spec[1].__name__)
                if vjp is not None and _use_kernel(b, vjp, args + grads, True) and _kernel_eager(b, grads):
                    result = _as_tuple(_kernel_result(b, vjp, args + grads))  # NAME_vjp's own kernel call
                else:
                    result = _vjp(b, spec, args, grads)
                return (None,) + tuple(r if need else None for r, need in zip(result, ctx.needs_input_grad[1:]))

        apply = _CUDA["autograd"] = super(torch.autograd.Function, _DiagcKernel).apply
    return apply


def _kernel_specs():
    """The specs of the functions with a kernel, by name (made once per module)."""
    specs = _CUDA["specs"]
    if specs is None:
        specs = _CUDA["specs"] = {spec[5]["name"]: spec for spec in _KERNEL_SPECS}
    return specs


def _torch_ops():
    """One torch custom op (torch.library) per kernel, registered once per process and module text
    (namespace _OP_NAMESPACE): its fake implementation gives the output shapes to torch.compile,
    its backward is the generated NAME_vjp (itself a kernel op where it has one)."""
    ops = _CUDA["ops"]
    if ops is not None:
        return ops
    import torch

    ops = {}
    for spec in _KERNEL_SPECS:
        cfg = spec[5]
        name = cfg["name"]
        n_out = len(spec[2]) if spec[2] else len(cfg["outputs"])
        schema = "(" + ", ".join(f"Tensor x{k}" for k in range(len(cfg["inputs"]))) + ") -> " + (
            "Tensor" if n_out == 1 else "(" + ", ".join(["Tensor"] * n_out) + ")")
        try:
            op = torch.library.custom_op(f"{_OP_NAMESPACE}::{name}", _op_impl(spec), mutates_args=(), schema=schema)
        except RuntimeError:  # the same module text loaded twice in this process: the same op
            ops[name] = getattr(getattr(torch.ops, _OP_NAMESPACE), name).default
            continue
        op.register_fake(_op_fake(spec))
        if spec[1] is not None:
            op.register_autograd(_op_backward(spec), setup_context=_op_setup)
        ops[name] = op
    _CUDA["ops"] = ops
    return ops


def _op_impl(spec):
    def impl(*args):
        return _kernel_result(_BACKENDS["torch"], spec, args)
    return impl


def _op_fake(spec):
    def fake(*args):
        b = _BACKENDS["torch"]
        if spec[2]:  # a derivative: results of its summed inputs' shapes
            shapes = [tuple(args[k].shape) for k in spec[2]]
        else:
            shapes = _kernel_outputs(spec[5], _kernel_plan(b, spec[5], args))
        result = tuple(args[0].new_empty(s) for s in shapes)
        return result if len(result) > 1 else result[0]
    return fake


def _op_setup(ctx, inputs, output):
    ctx.save_for_backward(*inputs)
    outputs = output if isinstance(output, tuple) else (output,)
    ctx.shapes = tuple(tuple(o.shape) for o in outputs)


def _op_backward(spec):
    def backward(ctx, *grads):
        args = ctx.saved_tensors
        grads = tuple(g if g is not None else args[0].new_zeros(s) for g, s in zip(grads, ctx.shapes))
        return _vjp(_BACKENDS["torch"], spec, args, grads)
    return backward


def _irreps_split(b, x, name, width, irreps, layout):
    """The blocks of a flat e3nn feature array (last axis ``width`` = sum of mul * (2l+1), e3nn's
    multiplicity-major layout): per block (offset, mul, 2l+1 or 0 for l = 0) the slice of the last axis
    reshaped to (..., mul, 2l+1) (l = 0: (..., mul)), a view wherever the library has views."""
    x = b.asarray(x)
    shape = tuple(x.shape)
    if not shape or shape[-1] != width:
        raise ValueError(f"{name} has shape {shape}; expected (..., {width}) for {irreps}")
    lead = shape[:-1]
    blocks = []
    for offset, mul, dim in layout:
        part = x[..., offset:offset + mul * max(dim, 1)]
        blocks.append(part.reshape(lead + ((mul, dim) if dim else (mul,))))
    return tuple(blocks)


def _irreps_join(b, parts, ranks):
    """Blocks (..., mul, 2l+1) / (..., mul) as one flat e3nn feature array (..., sum of mul * (2l+1)),
    their batch axes broadcast first: one copy; none for a single block, whose (..., mul, 2l+1) is
    reshaped to (..., mul * (2l+1)) (a view where the library has views and the block is contiguous)."""
    lead = b.batch(*(tuple(p.shape)[:len(p.shape) - r] for p, r in zip(parts, ranks)))
    flat = []
    for p, r in zip(parts, ranks):
        n = 1
        for d in tuple(p.shape)[len(p.shape) - r:]:
            n *= d
        p = p.reshape(tuple(p.shape)[:len(p.shape) - r] + (n,))
        if tuple(p.shape[:-1]) != lead:
            p = p.expand(lead + (n,)) if b.root == "torch" else b.xp.broadcast_to(p, lead + (n,))
        flat.append(p)
    if len(flat) == 1:
        return flat[0]
    if b.root == "torch":
        return b.xp.cat(flat, dim=-1)
    return b.xp.concatenate(flat, axis=-1)


def _irreps_results(b, results, out, inputs):
    """The results of a function with irreps tensors, written into ``out`` (checked) when given."""
    return b.deliver(out, results, tuple(b.asarray(x) for x in inputs) if out is not None else inputs)


def _check_shapes(signature, arrays):
    """Raise ValueError naming the first argument whose shape does not fit its type: trailing axes
    (channel sizes, then 3 per Cartesian leg and 2l+1 per spherical leg), channel sizes agreeing
    with the argument that fixed them first, batch axes that broadcast. ``signature`` holds
    (name, channel axes, geometric sizes) per argument; a channel axis is its name (str) or a fixed
    size (int: an irreps block's multiplicity, weight[16,32]). A diagram's function calls it only when
    its inline check failed (a batch mismatch may still broadcast: then it returns); graph functions
    and composites (staged diagrams, diagrams with functions) on every call."""
    known = {}  # channel name -> (size, argument that fixed it)
    batches = []
    for (name, channels, dims), x in zip(signature, arrays):
        shape = tuple(x.shape)
        rank = len(channels) + len(dims)
        fixed = [c for k, c in enumerate(channels) if isinstance(c, str) and c in known and c not in channels[:k]]
        ok = len(shape) >= rank and shape[len(shape) - len(dims):] == dims
        sizes = shape[len(shape) - rank:len(shape) - len(dims)] if ok else ()
        for c, n in zip(channels, sizes):
            if isinstance(c, int) and c != n or c in known and known[c][0] != n:  # an int: a fixed size
                ok = False
            known.setdefault(c, (n, name))
        if not ok:
            expected = ", ".join(("...",) + tuple(str(c) for c in channels) + tuple(str(d) for d in dims))
            where = ", ".join(f"{c} = {known[c][0]} from {known[c][1]}" for c in fixed)
            where = f" with {where}" if where else ""
            raise ValueError(f"{name} has shape {shape}; expected ({expected}){where}")
        batches.append((name, shape[:len(shape) - rank]))
    result, source = (), None
    for name, batch in batches:
        n = max(len(result), len(batch))
        a, b = (1,) * (n - len(result)) + result, (1,) * (n - len(batch)) + batch
        if any(p != q and p != 1 and q != 1 for p, q in zip(a, b)):
            raise ValueError(f"{name} has batch shape {batch}, which does not broadcast with the batch "
                             f"shape {result} of {source}")
        result = tuple(p if q == 1 else q for p, q in zip(a, b))
        source = name if source is None else f"{source} and {name}"


def _unbatched(fn, b, arrays, ranks, out, fused):
    """fn(*arrays) on numpy object arrays (exact arithmetic) where some input has no batch axis:
    numpy turns 0-d results of object arithmetic into bare Python objects (a Fraction, not an
    array), so each such input gets a leading axis of size 1, dropped from the results again when
    no input had one (then a given ``out`` is checked as usual and the results copied into it)."""
    lifted = tuple(x[None] if x.ndim == n else x for x, n in zip(arrays, ranks))
    if not all(x.ndim == n for x, n in zip(arrays, ranks)):
        return fn(*lifted, out=out, fused=fused)
    result = fn(*lifted, fused=fused)
    return b.deliver(out, tuple(r.reshape(r.shape[1:]) for r in _as_tuple(result)), arrays)


def _backend(*arrays):
    """The backend of the first input that belongs to torch, jax or cupy; numpy otherwise."""
    root = "numpy"
    for a in arrays:
        r = type(a).__module__.partition(".")[0]
        if r in ("torch", "cupy"):
            root = r
            break
        if r in ("jax", "jaxlib"):
            root = "jax"
            break
    b = _BACKENDS.get(root)
    if b is None:
        b = _make_backend(root)
    return b


def _make_backend(root):
    global _TorchFunction
    b = _BACKENDS[root] = _LIBRARIES[root]()
    if root == "torch" and _TorchFunction is None:
        _TorchFunction = _torch_function()
    return b


def _make_backend_kernels(root):
    global _TorchFunction
    b = _BACKENDS[root] = _LIBRARIES[root]()
    if root == "torch" and _TorchFunction is None:
        _TorchFunction = _torch_function()
        if "_KERNEL_SPECS" in globals() and _kernels_possible(b):  # the module is complete
            _torch_ops()
    return b


def _prepare():
    """The torch backend and its autograd.Function made at import when torch is already imported, so
    that a call under torch.compile never has to build them."""
    import sys

    if "torch" in sys.modules:
        _make_backend("torch")
        return True
    return False
