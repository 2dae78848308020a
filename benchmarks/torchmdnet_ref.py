"""torchmd-net 3.1.0's TensorNet (``torchmdnet/models/tensornet.py``, its pure-torch path), loaded
without its compiled dependencies: the one copy of this loader, shared by
``tests/test_tensornet_model.py`` and ``benchmarks/tensornet_bench.py``.

``models/tensornet.py`` imports four names from ``models/utils.py``, which imports ``warp`` (through
``extensions/ops.py``) and ``ase``. The loader executes ``tensornet.py`` unchanged in a fresh module
whose ``torchmdnet.models.utils`` is a stand-in holding the classes it needs, copied from utils.py's
own source text (``CosineCutoff``, ``OptimizedDistance``, ``GaussianSmearing``,
``ExpNormalSmearing``, ``ShiftedSoftplus``, ``Swish`` and the two class maps), with
``get_neighbor_pairs_kernel`` (warp's neighbour kernel) replaced by :func:`brute_neighbor_pairs`,
a brute-force torch version with the kernel's contract. ``torchmdnet.extensions.warp_ops`` is made
unimportable while the file runs, so its ``try: from ...warp_ops import ...`` takes the
pure-torch fallback (``OPT = False``) even where warp is installed.

Where torchmd-net is not installed (the GPU machine: 3.1.0 does not install there) the two files
are read from ``build/gpu_carry/torchmdnet/``, copied there unchanged by :func:`copy_for_carry`
(``python benchmarks/gpu_models.py --prepare``).
"""

from __future__ import annotations

import ast
import importlib.util
import math
import sys
import types
import warnings
from pathlib import Path

import torch

VERSION = "3.1.0"
_UTILS_NAMES = ("CosineCutoff", "OptimizedDistance", "GaussianSmearing", "ExpNormalSmearing",
                "ShiftedSoftplus", "Swish", "rbf_class_mapping", "act_class_mapping")


def brute_neighbor_pairs(strategy, positions, batch, box_vectors, use_periodic, cutoff_lower,
                         cutoff_upper, max_num_pairs, loop, include_transpose, num_cells):
    """warp's ``get_neighbor_pairs_kernel`` contract, brute force, no periodic boxes: pairs (i, j)
    of one batch with cutoff_lower <= |r_i - r_j| < cutoff_upper (self pairs when ``loop``, at
    distance 0 whatever cutoff_lower), both orders, deltas r_i - r_j, padded with -1 to
    ``max_num_pairs``; returns (edge_index, deltas, distances, num_pairs)."""
    if use_periodic:
        raise NotImplementedError("brute_neighbor_pairs: periodic boxes are not supported")
    if not include_transpose:
        raise NotImplementedError("brute_neighbor_pairs: include_transpose=False is not supported")
    n = positions.shape[0]
    delta = positions[:, None, :] - positions[None, :, :]
    dist2 = (delta * delta).sum(-1)
    same = batch[:, None] == batch[None, :]
    eye = torch.eye(n, dtype=torch.bool, device=positions.device)
    keep = same & (dist2 < cutoff_upper**2) & ((dist2 >= cutoff_lower**2) | eye)
    if not loop:
        keep = keep & ~eye
    i, j = keep.nonzero(as_tuple=True)
    num = i.shape[0]
    edge_index = torch.full((2, max_num_pairs), -1, dtype=torch.long, device=positions.device)
    deltas = torch.zeros((max_num_pairs, 3), dtype=positions.dtype, device=positions.device)
    distances = torch.zeros((max_num_pairs,), dtype=positions.dtype, device=positions.device)
    m = min(num, max_num_pairs)
    edge_index[0, :m], edge_index[1, :m] = i[:m], j[:m]
    d = positions[i[:m]] - positions[j[:m]]
    deltas[:m] = d
    # the kernel's backward gives no gradient through a zero distance (self pairs): sqrt is kept off 0
    d2 = (d * d).sum(-1)
    zero = d2 == 0
    distances[:m] = torch.where(zero, 0, torch.sqrt(d2.masked_fill(zero, 1)))
    return edge_index, deltas, distances, torch.tensor([num], device=positions.device)


#: where :func:`copy_for_carry` puts the two files for a machine without torchmd-net (the GPU machine)
CARRIED = Path(__file__).resolve().parent.parent / "build" / "gpu_carry" / "torchmdnet"
#: the only files of the package this loader reads
_FILES = ("models/tensornet.py", "models/utils.py")


def _package_dir() -> Path:
    """The installed torchmdnet package, else the copy under :data:`CARRIED`."""
    spec = importlib.util.find_spec("torchmdnet")
    if spec is not None and spec.submodule_search_locations:
        return Path(list(spec.submodule_search_locations)[0])
    if all((CARRIED / f).is_file() for f in _FILES):
        return CARRIED
    raise ImportError(f"torchmd-net is not installed (pip install --no-deps torchmd-net=={VERSION}) and no copy "
                      f"of its files is at {CARRIED} (python benchmarks/gpu_models.py --prepare)")


def copy_for_carry(dest: Path = CARRIED) -> Path:
    """Copy the files this loader reads (``models/tensornet.py``, ``models/utils.py``, unchanged)
    and the package's licence from the installed torchmd-net into ``dest``, for a machine where
    torchmd-net cannot be installed; :func:`load_tensornet_module` reads them from there."""
    import shutil

    spec = importlib.util.find_spec("torchmdnet")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"torchmd-net is not installed here (pip install --no-deps torchmd-net=={VERSION})")
    pkg = Path(list(spec.submodule_search_locations)[0])
    for f in _FILES:
        (dest / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(pkg / f, dest / f)
    from importlib import metadata

    try:
        dist = metadata.distribution("torchmd-net")
        licences = [f for f in dist.files or () if "LICENSE" in f.name.upper()]
        for f in licences[:1]:
            shutil.copyfile(f.locate(), dest / "LICENSE")
        (dest / "VERSION").write_text(dist.version + "\n")
    except metadata.PackageNotFoundError:
        pass
    return dest


def _utils_stand_in(utils_path: Path) -> types.ModuleType:
    """A module with utils.py's needed classes, executed from their own source text."""
    source = utils_path.read_text()
    tree = ast.parse(source)
    wanted = []
    for node in tree.body:
        names = [node.name] if isinstance(node, (ast.ClassDef, ast.FunctionDef)) else [
            t.id for t in getattr(node, "targets", []) if isinstance(t, ast.Name)]
        if any(name in _UTILS_NAMES for name in names):
            wanted.append(ast.get_source_segment(source, node))
    module = types.ModuleType("torchmdnet.models.utils")
    module.__file__ = str(utils_path)
    module.__dict__.update(math=math, torch=torch, nn=torch.nn, Tensor=torch.Tensor,
                           F=torch.nn.functional, warnings=warnings,
                           get_neighbor_pairs_kernel=brute_neighbor_pairs)
    import typing

    module.__dict__.update(Optional=typing.Optional, Tuple=typing.Tuple)
    exec(compile("\n\n".join(wanted), str(utils_path), "exec"), module.__dict__)
    missing = [name for name in _UTILS_NAMES if name not in module.__dict__]
    if missing:
        raise ImportError(f"{utils_path} does not define {', '.join(missing)}")
    return module


_CACHE: dict[str, types.ModuleType] = {}


def load_tensornet_module() -> types.ModuleType:
    """torchmd-net's ``models/tensornet.py`` as a module (pure-torch path, ``OPT`` False)."""
    if "module" in _CACHE:
        return _CACHE["module"]
    pkg = _package_dir()
    utils = _utils_stand_in(pkg / "models" / "utils.py")
    path = pkg / "models" / "tensornet.py"
    saved = {k: sys.modules.get(k) for k in ("torchmdnet.models.utils", "torchmdnet.extensions.warp_ops")}
    sys.modules["torchmdnet.models.utils"] = utils
    sys.modules["torchmdnet.extensions.warp_ops"] = None  # import raises ImportError: the fallback
    try:
        module = types.ModuleType("torchmdnet_tensornet_reference")
        module.__file__ = str(path)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ImportWarning)
            exec(compile(path.read_text(), str(path), "exec"), module.__dict__)
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
    if module.OPT:
        raise ImportError("torchmd-net's TensorNet did not take its pure-torch path")
    _CACHE["module"] = module
    return module


def reference_tensornet(**kwargs) -> torch.nn.Module:
    """torchmd-net's ``TensorNet(**kwargs)`` (pure torch)."""
    return load_tensornet_module().TensorNet(**kwargs)
