#!/usr/bin/env bash
# Every GPU check and benchmark of the project as one command, under a total wall-time guard:
#
#   benchmarks/gpu_all.sh OUT [SECONDS]      # default 520 s in all
#
# In order (the checks first, then what the open issues' targets need most):
# 1. benchmarks/cuda_paths_check.py: every example function on CUDA tensors against numpy (75 s at most);
# 2. benchmarks/gpu_bench.py --run build/gpu --out OUT/gpu_bench (TensorNet's operations: the probe
#    of every kernel, the forward tables with torch.compile of the expert as a contender, channel
#    mixing's GEMM routes, forward + VJP + second order), BENCH_SECONDS (default 170) at most, extra
#    arguments GPU_BENCH_ARGS (default "--no-fused": fused=True compiles for minutes);
# 3. benchmarks/gpu_models.py --run OUT/gpu_models (TensorNet end to end against torchmd-net, graph
#    message steps and the fused graph kernel, spherical products against e3nn), MODELS_SECONDS
#    (default 150);
# 4. benchmarks/mace_gpu_bench.py --out OUT/mace_gpu --channels 128 (against mace-torch and
#    cuEquivariance where it imports), MACE_SECONDS (default 70; 0 leaves it out);
# 5. benchmarks/gpu_profile.py --out OUT/profile (torch.profiler: where each contender's host and device
#    time goes; TensorNet end to end and the spherical products), PROFILE_SECONDS (default 60; 0 leaves it out);
# 6. benchmarks/cuda_variants.py --run build/variants --out OUT/variants with what is left.
# build/gpu and build/variants are prepared first when they were not carried (diagc imports on the
# GPU machine); build/gpu_carry (python benchmarks/gpu_models.py --prepare) must be carried:
# torchmd-net's two files, and last on PYTHONPATH a copy of opt_einsum_fx. Each step's output is kept
# in OUT/*.log; at the end every result is packed into OUT.tgz beside OUT (one file to bring back).
# Exit status 0 when every step ran and passed its checks. A CPU smoke test:
#   MODELS_ARGS="--device cpu --small --repeats 3" MACE_ARGS="--device cpu --nodes 64" PATHS_ARGS="--device cpu" \
#   GPU_BENCH_ARGS="--device cpu --rows 64 --channels 8 --no-fused --no-compiled" VARIANTS_SECONDS=0 \
#   PROFILE_ARGS="--device cpu --small" \
#   benchmarks/gpu_all.sh /tmp/g 600
set -u
out=${1:?usage: benchmarks/gpu_all.sh OUT [SECONDS]}
total=${2:-520}
py=${PYTHON:-python3}
cd "$(dirname "$0")/.." || exit 2
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$PWD/build/gpu_carry/site"
start=$(date +%s)
left() { echo $(( total - ($(date +%s) - start) )); }
mkdir -p "$out"
status=0
bench=${BENCH_SECONDS:-170}
models=${MODELS_SECONDS:-150}
mace=${MACE_SECONDS:-70}
variants=${VARIANTS_SECONDS:-1}
profile=${PROFILE_SECONDS:-60}

# step NAME SECONDS COMMAND...: runs COMMAND under `timeout SECONDS` (capped by what is left), its
# output in OUT/NAME.log; a failure or a stop sets the exit status and the next step goes on.
step() {
    local name=$1 limit=$2
    shift 2
    local room=$(( $(left) - 5 ))
    [ "$limit" -gt "$room" ] && limit=$room
    if [ "$limit" -lt 20 ]; then
        echo "$name: skipped, only $(left) s left of $total"
        status=1
        return
    fi
    echo "== $name (${limit} s at most, $(left) s left in all)"
    timeout "$limit" "$@" > "$out/$name.log" 2>&1
    local code=$?
    tail -n 25 "$out/$name.log"
    [ "$code" -eq 0 ] || status=1
    [ "$code" -eq 124 ] && echo "$name: stopped after ${limit} s (its log is $out/$name.log)"
}

[ -f build/gpu/manifest.json ] || $py benchmarks/gpu_bench.py --prepare build/gpu > "$out/prepare.log" 2>&1 || status=1
[ -d build/variants ] || $py benchmarks/cuda_variants.py --prepare build/variants >> "$out/prepare.log" 2>&1 || status=1

# shellcheck disable=SC2086  # the *_ARGS variables are lists of arguments
step cuda_paths 75 $py benchmarks/cuda_paths_check.py --out "$out/cuda_paths.txt" ${PATHS_ARGS-}
# shellcheck disable=SC2086
step gpu_bench "$bench" $py benchmarks/gpu_bench.py --run build/gpu --out "$out/gpu_bench" \
    --budget $(( bench / 2 )) ${GPU_BENCH_ARGS---no-fused}
# shellcheck disable=SC2086
step gpu_models $(( models + 20 )) $py benchmarks/gpu_models.py --run "$out/gpu_models" --budget "$models" ${MODELS_ARGS-}
if [ "$mace" -gt 0 ]; then
    # shellcheck disable=SC2086
    step mace_gpu "$mace" $py benchmarks/mace_gpu_bench.py --out "$out/mace_gpu" --channels 128 ${MACE_ARGS-}
fi
if [ "$profile" -gt 0 ]; then
    # shellcheck disable=SC2086
    step profile "$profile" $py benchmarks/gpu_profile.py --out "$out/profile" --budget $(( profile - 15 )) ${PROFILE_ARGS-}
fi
if [ "$variants" -gt 0 ]; then
    step variants $(( $(left) - 10 )) $py benchmarks/cuda_variants.py --run build/variants --out "$out/variants"
fi
echo "gpu_all: $(( $(date +%s) - start )) s of $total, exit $status; results under $out"
tar czf "$out.tgz" -C "$(dirname "$out")" "$(basename "$out")"
exit $status
