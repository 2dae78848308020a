"""The back ends, one per target, behind one registry.

A target turns a checked :class:`~compiler.ir.program.Program` into the text of one standalone source file.
``diagc compile --target NAME`` and :func:`compiler.compile_source` take their names from
:data:`TARGETS`; an unknown name is a :class:`~compiler.errors.DiagError` listing the known ones.
Each target's generator is imported only when it is used.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from typing import TYPE_CHECKING

from ..errors import DiagError

if TYPE_CHECKING:
    from ..ir.program import Program


@dataclass(frozen=True)
class Target:
    """One back end: ``generate`` (``module:function``) maps a checked program to source text."""

    name: str
    suffix: str  # the file name ending of what it writes
    generate: str
    summary: str
    staging: bool = False  # its generator takes ``staging`` (runs some diagrams in stages); else all as written

    def generator(self):
        module, _, function = self.generate.partition(":")
        return getattr(importlib.import_module(module, __package__), function)


TARGETS: dict[str, Target] = {
    t.name: t
    for t in (
        Target("numpy", ".py", ".python.codegen:generate_python",
               "a Python module running on numpy, torch, jax or cupy arrays (default)", staging=True),
        Target("cuda", ".cu", ".cuda:generate_cuda",
               "one CUDA C++ source: per diagram a __host__ __device__ element function, float and "
               "double kernels, extern \"C\" launchers"),
    )
}


def get_target(name: str) -> Target:
    """The target called ``name``, or a DiagError listing the known ones."""
    try:
        return TARGETS[name]
    except KeyError:
        raise DiagError(f"unknown target '{name}' (known: {', '.join(TARGETS)})") from None


def generate(program: Program, target: str = "numpy", staging: bool = True) -> str:
    """The text ``target`` emits for a checked program; ``staging``: passed to a target that stages
    (:attr:`Target.staging`), which then runs channel mixing scaled per channel in stages
    (:mod:`compiler.planning.staging`), or, False, every diagram as one call."""
    t = get_target(target)
    return t.generator()(program, staging) if t.staging else t.generator()(program)
