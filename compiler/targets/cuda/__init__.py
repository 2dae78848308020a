"""The CUDA target: ``diagc compile FILE --target cuda -o OUT.cu``.

:mod:`.kernels` lowers each diagram's fused plan to a kernel program (data), :mod:`.printer` prints
it through ``templates/cuda/module.cu.j2``.
"""

from .printer import generate_cuda

__all__ = ["generate_cuda"]
