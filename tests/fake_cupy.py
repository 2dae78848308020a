"""A stand-in for cupy, built over numpy, for testing the emitted modules' cupy path without a GPU.

It behaves like cupy for the calls the emitted runtime makes: its arrays are a class of module
``cupy`` (how the runtime recognises them), carry a ``device`` whose object is not hashable (as
``cupy.cuda.Device`` is not), refuse to mix with numpy arrays in arithmetic (cupy raises
TypeError there), have ``flags`` without ``writeable``, and ``diagonal`` returns a writeable view
(numpy's is read-only). Install it with ``install(monkeypatch)``; read results back with
``asnumpy``.
"""

from __future__ import annotations

import sys
import types

import numpy


class Device:
    """Like cupy.cuda.Device: compared by id, not hashable."""

    __hash__ = None

    def __init__(self, id: int = 0):
        self.id = id

    def __eq__(self, other):
        return isinstance(other, Device) and other.id == self.id

    def __repr__(self):
        return f"<CUDA Device {self.id}>"


class _Flags:
    def __init__(self, flags):
        self.c_contiguous = flags.c_contiguous
        self.f_contiguous = flags.f_contiguous
        self.owndata = flags.owndata


def _base(x):
    """A cupy array as a plain numpy view; a numpy array (not a cupy one) is refused, as cupy does."""
    if isinstance(x, ndarray):
        return x.view(numpy.ndarray)
    if isinstance(x, numpy.ndarray):
        raise TypeError(f"Unsupported type {type(x)}")
    if isinstance(x, (tuple, list)):
        return type(x)(_base(v) for v in x)
    return x


def _wrap(x):
    if isinstance(x, numpy.ndarray) and not isinstance(x, ndarray):
        return x.view(ndarray)
    if isinstance(x, numpy.generic):  # cupy has no scalars: a 0-d array
        return numpy.asarray(x).view(ndarray)
    if isinstance(x, (tuple, list)):
        return type(x)(_wrap(v) for v in x)
    return x


class ndarray(numpy.ndarray):
    """A 'device' array: numpy's, under the module name cupy."""

    __module__ = "cupy"

    @property
    def device(self):
        return Device(0)

    @property
    def flags(self):
        return _Flags(super().flags)

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        if "out" in kwargs:
            kwargs["out"] = tuple(_base(o) for o in kwargs["out"])
        result = getattr(ufunc, method)(*(_base(x) for x in inputs), **kwargs)
        return _wrap(result)

    def get(self):
        return numpy.array(self.view(numpy.ndarray))


def asarray(x, dtype=None):
    if isinstance(x, ndarray):
        return x if dtype is None or x.dtype == dtype else x.astype(dtype)
    if isinstance(x, numpy.ndarray) and x.dtype == object:
        raise ValueError("Unsupported dtype object")
    return numpy.array(x, dtype=dtype).view(ndarray)


def asnumpy(x):
    return numpy.array(x.view(numpy.ndarray)) if isinstance(x, ndarray) else numpy.asarray(x)


def _function(name):
    f = getattr(numpy, name)

    def call(*args, **kwargs):
        if "out" in kwargs:
            kwargs["out"] = _base(kwargs["out"])
        return _wrap(f(*(_base(a) for a in args), **kwargs))

    call.__name__ = name
    return call


def diagonal(a, offset=0, axis1=0, axis2=1):
    """A writeable view, as cupy's (numpy's diagonal is read-only)."""
    assert offset == 0
    moved = numpy.moveaxis(_base(a), (axis1, axis2), (-2, -1))
    return numpy.einsum("...ii->...i", moved).view(ndarray)


def argsort(a, axis=-1):
    """cupy's argsort (a radix sort: stable)."""
    return numpy.argsort(_base(a), axis=axis, kind="stable").view(ndarray)


def may_share_memory(a, b):
    return numpy.may_share_memory(_base(a), _base(b))


def module() -> types.ModuleType:
    """A fresh module named cupy with the stand-in's functions."""
    m = types.ModuleType("cupy")
    m.ndarray = ndarray
    m.asarray = asarray
    m.asnumpy = asnumpy
    m.diagonal = diagonal
    m.may_share_memory = may_share_memory
    m.argsort = argsort
    m.float32, m.float64 = numpy.float32, numpy.float64
    for name in ("einsum", "swapaxes", "zeros_like", "moveaxis", "ones", "zeros", "empty", "stack",
                 "broadcast_arrays", "broadcast_to", "result_type", "add", "subtract", "multiply",
                 "negative", "matmul"):
        setattr(m, name, _function(name))
    return m


def install(monkeypatch) -> types.ModuleType:
    """Make ``import cupy`` give the stand-in for the duration of a test."""
    m = module()
    monkeypatch.setitem(sys.modules, "cupy", m)
    return m
