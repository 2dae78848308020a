"""e3nn's tensor product of features with spherical harmonics, every path, as one diagram.

NequIP's and MACE's convolutions contract node features ``x: Irreps("Kx0e + Kx1o + Kx2e")`` with the
spherical harmonics of an edge ``y: Irreps("0e + 1o + 2e")`` along every path (l1, l2 -> l3) that
the triangle rule and parity allow, into ``Kx0e + Kx1o + Kx2e``: 11 paths for l <= 2. ``source(K,
mode)`` writes that product as one ``.diag`` diagram, one term per path (e3nn's instruction
``(i1, i2, i_out, mode, True)``, mode "uvw" or "uvu"), and ``e3nn_tensor_product(K, mode)`` builds the
e3nn ``o3.TensorProduct`` with the same instructions. ``diagram_weights(tp, weight)`` maps e3nn's
flat weight vector onto the diagram's weights (README, "e3nn irreps and instructions"): instruction
k's block times its path weight, divided by sqrt(2l + 1) for a path written without its cg (a path
through an l = 0 leg: cg(l,0,l), cg(0,l,l) and cg(l,l,0) are delta / sqrt(2l + 1)).

Used by ``tests/test_irreps.py`` (values against e3nn in float64) and
``benchmarks/e3nn_cpu_bench.py`` (timings on the CPU).
"""

from __future__ import annotations

import math

IRREPS = ("0e", "1o", "2e")


def paths() -> list[tuple[int, int, int]]:
    """(l1, l2, l3) of every path from (0e, 1o, 2e) x (0e, 1o, 2e) to (0e, 1o, 2e)."""
    return [(l1, l2, l3) for l1 in range(3) for l2 in range(3) for l3 in range(abs(l1 - l2), min(l1 + l2, 2) + 1)
            if (l1 + l2 + l3) % 2 == 0]


def _channels(mode: str) -> tuple[str, str]:
    """(the weight's indices, the output's channel) of a path in e3nn's ``mode``."""
    if mode == "uvw":
        return "u,v,w", "w"
    if mode == "uvu":
        return "u,v", "u"
    raise ValueError(f"mode {mode!r}: 'uvw' or 'uvu'")


def source(K: int, mode: str = "uvw", name: str = "tp") -> str:
    """The .diag text of the product, ``name(x, y, W0, ..., W10) -> o``, x and o with K channels per l."""
    w_idx, out_channel = _channels(mode)
    w_shape = f"weight[{K},1,{K}]" if mode == "uvw" else f"weight[{K},1]"
    irreps = "+".join(f"{K}x{ir}" for ir in IRREPS)
    terms: dict[int, list[str]] = {0: [], 1: [], 2: []}
    for k, (l1, l2, l3) in enumerate(paths()):
        a, b = IRREPS[l1], IRREPS[l2]
        if min(l1, l2, l3) > 0:
            factors = f"cg({l1},{l2},{l3})[i,j,m] x.{a}[u,i] y.{b}[v,j]"
        elif l1 == l2 == 0:
            factors = f"x.{a}[u] y.{b}[v]"
        elif l1 == 0:
            factors = f"x.{a}[u] y.{b}[v,m]"
        elif l2 == 0:
            factors = f"x.{a}[u,m] y.{b}[v]"
        else:  # l3 == 0: a dot product of the two legs
            factors = f"x.{a}[u,i] y.{b}[v,i]"
        terms[l3].append(f"W{k}[{w_idx}] {factors}")
    weights = ", ".join(f"W{k}: {w_shape}" for k in range(len(paths())))
    lines = [f"diagram {name}(x: irreps({irreps}), y: irreps(0e+1o+2e), {weights}) -> o: irreps({irreps}) {{"]
    for l3, ts in terms.items():
        legs = f"[{out_channel}]" if l3 == 0 else f"[{out_channel},m]"
        lines.append(f"    o.{IRREPS[l3]}{legs} = " + " + ".join(ts))
    lines.append("}")
    return "\n".join(lines) + "\n"


def e3nn_tensor_product(K: int, mode: str = "uvw"):
    """e3nn's ``o3.TensorProduct`` of the same paths, its weights given at call time (shared); its
    tables computed in float64 (cast it with ``.to(dtype)``)."""
    import torch
    from e3nn import o3

    irreps = "+".join(f"{K}x{ir}" for ir in IRREPS)
    instructions = [(l1, l2, l3, mode, True) for l1, l2, l3 in paths()]
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # e3nn's Wigner 3j tables in the default dtype
    try:
        return o3.TensorProduct(irreps, "0e+1o+2e", irreps, instructions, shared_weights=True,
                                internal_weights=False)
    finally:
        torch.set_default_dtype(old)


def diagram_weights(tp, weight) -> list:
    """e3nn's flat weight vector -> one array per instruction (its path_shape) for the diagram."""
    out, offset = [], 0
    for ins in tp.instructions:
        n = math.prod(ins.path_shape)
        w = weight[offset:offset + n].reshape(ins.path_shape) * ins.path_weight
        offset += n
        ls = (tp.irreps_in1[ins.i_in1].ir.l, tp.irreps_in2[ins.i_in2].ir.l, tp.irreps_out[ins.i_out].ir.l)
        if min(ls) == 0:
            w = w / math.sqrt(2 * max(ls) + 1)
        out.append(w)
    if offset != weight.shape[0]:
        raise ValueError(f"weight has {weight.shape[0]} entries; the instructions take {offset}")
    return out
