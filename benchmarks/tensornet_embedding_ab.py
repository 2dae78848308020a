"""TensorNet's embedding step: examples/tensornet.py with the embedding's sums over edges as the
graph diagram ``embed`` of examples/tensornet_graph.diag (what the model runs) against the same model
with the former torch glue (emb2 of each edge's atom pair, then ``index_add_`` of the scaled edge
parts: benchmarks/tensornet_embedding_step.py's ``glue_sums``), and torchmd-net 3.1.0; forward +
forces, CPU float32, the three alternating, best of R (the figures of benchmarks/results/tensornet.md).

    python benchmarks/tensornet_embedding_ab.py                   # --atoms 1000 --threads 1 --repeats 3
    python benchmarks/tensornet_embedding_ab.py --atoms 1000 2000 --threads 1 2 --repeats 3
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
KW = dict(hidden_channels=64, num_layers=2, num_rbf=32, cutoff_upper=4.5, max_num_neighbors=64, static_shapes=False)


def glue_embedding(emb, tensornet):
    """``emb`` (a TensorEmbedding of examples/tensornet.py) made to run the former glue forward."""
    import torch

    from tensornet_embedding_step import glue_sums

    LAYER, nn = tensornet.LAYER, torch.nn

    def forward(z, edge_index, edge_weight, edge_unit, edge_attr, self=emb):
        C = self.hidden_channels
        Zij = self.emb2(self.emb(z).index_select(0, edge_index.t().reshape(-1)).view(-1, 2 * C))
        CZij = self.cutoff(edge_weight).unsqueeze(-1) * Zij
        projs = (self.distance_proj1, self.distance_proj2, self.distance_proj3)
        proj = nn.functional.linear(edge_attr, torch.cat([p.weight for p in projs]), torch.cat([p.bias for p in projs]))
        i, a, t = glue_sums(len(z), edge_index[0], CZij, *proj.view(-1, 3, C).unbind(1), edge_unit,
                            LAYER.edge_sph2(edge_unit))
        norm = self.init_norm(LAYER.parts_norm(i, a, t))
        for linear in self.linears_scalar:
            norm = self.act(linear(norm))
        n0, n1, n2 = norm.reshape(-1, 3, C).unbind(1)
        W0, W1, W2 = (tensornet.weight(lin) for lin in self.linears_tensor)
        return LAYER.compose_mixed(i, a, t, W0, W1, W2, n0, n1, n2)

    emb.forward = forward


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--atoms", type=int, nargs="+", default=[1000])
    ap.add_argument("--threads", type=int, nargs="+", default=[1])
    ap.add_argument("--repeats", type=int, default=3, help="best of this many alternating rounds")
    args = ap.parse_args(argv)
    if min(args.atoms + args.threads + [args.repeats]) < 1:
        ap.error("--atoms, --threads and --repeats must be positive")

    import torch

    sys.path.insert(0, str(HERE))
    sys.path.insert(0, str(HERE.parent / "examples"))
    import tensornet
    import tensornet_bench as tb
    import torchmdnet_ref

    torch.manual_seed(0)
    ref = torchmdnet_ref.reference_tensornet(**KW, dtype=torch.float32)
    ours = tensornet.TensorNet(**KW, dtype=torch.float32)
    ours.load_state_dict(ref.state_dict(), strict=True)
    glue = copy.deepcopy(ours)
    glue_embedding(glue.tensor_embedding, tensornet)
    print("| atoms | threads | torchmd-net (ms) | glue (ms) | graph diagram (ms) | glue ratio | graph ratio |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for n in args.atoms:
        z, pos, batch = tb.system(n)
        calls = {"torchmd-net": tb.forward_and_forces(ref, z, pos, batch),
                 "glue": tb.forward_and_forces(glue, z, pos, batch),
                 "graph": tb.forward_and_forces(ours, z, pos, batch)}
        outs = {k: f() for k, f in calls.items()}
        x_ref, f_ref = outs["torchmd-net"]
        for k in ("glue", "graph"):
            x, f = outs[k]
            if not ((x - x_ref).abs().max() < 1e-3 and (f - f_ref).abs().max() / f_ref.abs().max() < 1e-3):
                raise SystemExit(f"{k} disagrees with torchmd-net at {n} atoms")
        for nt in args.threads:
            torch.set_num_threads(nt)
            best = {k: 1e9 for k in calls}
            for _ in range(args.repeats):
                for k, f in calls.items():
                    s = time.perf_counter()
                    f()
                    best[k] = min(best[k], time.perf_counter() - s)
            r = best["torchmd-net"]
            print(f"| {n} | {nt} | {r*1e3:.0f} | {best['glue']*1e3:.0f} | {best['graph']*1e3:.0f} | "
                  f"{best['glue']/r:.2f} | {best['graph']/r:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
