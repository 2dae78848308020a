"""TensorNet's embedding step: examples/tensornet.py with the embedding's sums over edges as the
graph diagram ``embed`` of examples/tensornet_graph.diag (what the model runs) against the same model with the former torch glue
(``index_add_`` of the scaled edge parts), and torchmd-net 3.1.0; forward + forces, CPU float32, the
three alternating, best of R (the figures of benchmarks/results/tensornet.md).

    python benchmarks/tensornet_embedding_ab.py [ATOMS,...] [THREADS,...] [R]     # default 1000 1 3
"""
import copy
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "examples"))
import torch  # noqa: E402
import tensornet_bench as tb  # noqa: E402
import torchmdnet_ref  # noqa: E402
import tensornet  # noqa: E402
from tensornet import LAYER  # noqa: E402
kw = dict(hidden_channels=64, num_layers=2, num_rbf=32, cutoff_upper=4.5, max_num_neighbors=64, static_shapes=False, dtype=torch.float32)
torch.manual_seed(0)
ref = torchmdnet_ref.reference_tensornet(**kw)
ours = tensornet.TensorNet(**kw); ours.load_state_dict(ref.state_dict(), strict=True)
glue = copy.deepcopy(ours)
emb = glue.tensor_embedding
def old_forward(z, edge_index, edge_weight, edge_unit, edge_attr, self=emb):
    C = self.hidden_channels
    nn = torch.nn
    Zij = self.emb2(self.emb(z).index_select(0, edge_index.t().reshape(-1)).view(-1, 2 * C))
    CZij = self.cutoff(edge_weight).unsqueeze(-1) * Zij
    projs = (self.distance_proj1, self.distance_proj2, self.distance_proj3)
    proj = nn.functional.linear(edge_attr, torch.cat([p.weight for p in projs]), torch.cat([p.bias for p in projs]))
    fI, fA, fS = (CZij * f for f in proj.view(-1, 3, C).unbind(1))
    dst = edge_index[0]
    i = fI.new_zeros((len(z), C)).index_add_(0, dst, fI)
    a = fA.new_zeros((len(z), C, 3)).index_add_(0, dst, fA[:, :, None] * edge_unit[:, None, :])
    t = fS.new_zeros((len(z), C, 5)).index_add_(0, dst, fS[:, :, None] * LAYER.edge_sph2(edge_unit)[:, None, :])
    norm = self.init_norm(LAYER.parts_norm(i, a, t))
    for linear in self.linears_scalar:
        norm = self.act(linear(norm))
    n0, n1, n2 = norm.reshape(-1, 3, C).unbind(1)
    W0, W1, W2 = (tensornet.weight(lin) for lin in self.linears_tensor)
    return LAYER.compose_mixed(i, a, t, W0, W1, W2, n0, n1, n2)
emb.forward = old_forward
atoms = [int(a) for a in sys.argv[1].split(",")] if len(sys.argv) > 1 else [1000]
threads = [int(a) for a in sys.argv[2].split(",")] if len(sys.argv) > 2 else [1]
R = int(sys.argv[3]) if len(sys.argv) > 3 else 3
print("| atoms | threads | torchmd-net (ms) | glue (ms) | graph diagram (ms) | glue ratio | graph ratio |")
print("|---:|---:|---:|---:|---:|---:|---:|")
for n in atoms:
    z, pos, batch = tb.system(n)
    calls = {"torchmd-net": tb.forward_and_forces(ref, z, pos, batch), "glue": tb.forward_and_forces(glue, z, pos, batch),
             "graph": tb.forward_and_forces(ours, z, pos, batch)}
    outs = {k: f() for k, f in calls.items()}
    for k in ("glue", "graph"):
        assert (outs[k][0] - outs["torchmd-net"][0]).abs().max() < 1e-3
        assert ((outs[k][1] - outs["torchmd-net"][1]).abs().max() / outs["torchmd-net"][1].abs().max()) < 1e-3
    for nt in threads:
        torch.set_num_threads(nt)
        best = {k: 1e9 for k in calls}
        for _ in range(R):
            for k, f in calls.items():
                s = time.perf_counter(); f(); best[k] = min(best[k], time.perf_counter() - s)
        r = best["torchmd-net"]
        print(f"| {n} | {nt} | {r*1e3:.0f} | {best['glue']*1e3:.0f} | {best['graph']*1e3:.0f} | {best['glue']/r:.2f} | {best['graph']/r:.2f} |", flush=True)
