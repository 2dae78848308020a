#!/usr/bin/env bash
# Every GPU benchmark of the project as one command, under a total wall-time guard:
#
#   benchmarks/gpu_all.sh OUT [SECONDS]      # default 450 s in all
#
# 1. benchmarks/gpu_models.py --run OUT/gpu_models (TensorNet end to end against torchmd-net, graph
#    message steps and the fused graph kernel, spherical products against e3nn), its budget
#    MODELS_SECONDS (default 42% of SECONDS, at most 240);
# 2. benchmarks/mace_gpu_bench.py --out OUT/mace_gpu --channels 128 (MACE's symmetric contraction
#    against mace-torch, and cuEquivariance where it imports), stopped after MACE_SECONDS (default
#    90; MACE_SECONDS=0 leaves it out);
# 3. benchmarks/gpu_bench.py --run build/gpu --out OUT/gpu_bench (TensorNet's operations, with
#    torch.compile of the expert as a contender) with what is left, stopped 10 s before the end;
#    its extra arguments GPU_BENCH_ARGS (default "--no-fused": fused=True was measured in an earlier
#    run and compiles for minutes).
# build/gpu is prepared first when it was not carried (diagc imports on the GPU machine);
# build/gpu_carry (python benchmarks/gpu_models.py --prepare) must be carried: torchmd-net's two
# files, and last on PYTHONPATH a copy of opt_einsum_fx. Each step's output is kept in OUT/*.log;
# exit status 0 when every step ran and passed its checks. A CPU smoke test:
#   MODELS_ARGS="--device cpu --small --repeats 3" MACE_ARGS="--device cpu --nodes 64" \
#   GPU_BENCH_ARGS="--device cpu --rows 64 --channels 8 --no-fused --no-compiled" benchmarks/gpu_all.sh /tmp/g 450
set -u
out=${1:?usage: benchmarks/gpu_all.sh OUT [SECONDS]}
total=${2:-450}
py=${PYTHON:-python3}
cd "$(dirname "$0")/.." || exit 2
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$PWD/build/gpu_carry/site"
start=$(date +%s)
left() { echo $(( total - ($(date +%s) - start) )); }
mkdir -p "$out"
status=0
models=${MODELS_SECONDS:-$(( total * 42 / 100 < 240 ? total * 42 / 100 : 240 ))}
mace=${MACE_SECONDS:-90}

if [ ! -f build/gpu/manifest.json ]; then
    $py benchmarks/gpu_bench.py --prepare build/gpu 2>&1 | tee "$out/gpu_bench_prepare.log" || status=1
fi

echo "== gpu_models (budget ${models} s, $(left) s left in all)"
# shellcheck disable=SC2086  # MODELS_ARGS is a list of arguments
timeout $(( models + 20 )) $py benchmarks/gpu_models.py --run "$out/gpu_models" --budget "$models" ${MODELS_ARGS-} 2>&1 \
    | tee "$out/gpu_models.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

if [ "$mace" -gt 0 ] && [ "$(left)" -gt $(( mace + 70 )) ]; then
    echo "== mace_gpu_bench (${mace} s at most, $(left) s left in all)"
    # shellcheck disable=SC2086
    timeout "$mace" $py benchmarks/mace_gpu_bench.py --out "$out/mace_gpu" --channels 128 ${MACE_ARGS-} 2>&1 \
        | tee "$out/mace_gpu.log"
    code=${PIPESTATUS[0]}
    [ "$code" -eq 0 ] || status=1
    [ "$code" -eq 124 ] && echo "mace_gpu_bench: stopped after ${mace} s (its log is $out/mace_gpu.log)"
elif [ "$mace" -gt 0 ]; then
    echo "mace_gpu_bench: skipped, only $(left) s left of $total"
fi

rest=$(( $(left) - 10 ))
if [ "$rest" -ge 60 ]; then
    echo "== gpu_bench ($rest s)"
    # shellcheck disable=SC2086  # GPU_BENCH_ARGS is a list of arguments
    timeout "$rest" $py benchmarks/gpu_bench.py --run build/gpu --out "$out/gpu_bench" \
        --budget $(( rest * 6 / 10 )) ${GPU_BENCH_ARGS---no-fused} 2>&1 | tee "$out/gpu_bench.log"
    code=${PIPESTATUS[0]}
    [ "$code" -eq 0 ] || status=1
    [ "$code" -eq 124 ] && echo "gpu_bench: stopped by the total time guard (its log is $out/gpu_bench.log)"
else
    echo "gpu_bench: skipped, only $(left) s left of $total"
    status=1
fi
echo "gpu_all: $(( $(date +%s) - start )) s of $total, exit $status; results under $out"
exit $status
