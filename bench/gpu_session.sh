#!/usr/bin/env bash
# One call on a lent GPU machine (the device tool): build lstmfast there, run the CUDA tests and
# the cuDNN comparison, graphs and whole training steps, and leave logs under $OUT. Arguments go to
# compare_cudnn.py.
#   bash bench/gpu_session.sh [--repeats 50]
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/lstmfast_gpu}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)"
# The versions bench/RESULTS.md records with every table: GPU, driver, CUDA (runtime and driver API), CuPy, torch.
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader; lscpu | grep -E 'Model name|^CPU\(s\)'
  python3 -c "import sys, numpy, cupy, torch; r = cupy.cuda.runtime; print(sys.version); print('numpy', numpy.__version__, 'cupy', cupy.__version__, 'CUDA runtime', r.runtimeGetVersion(), 'driver API', r.driverGetVersion(), 'torch', torch.__version__, 'torch CUDA', torch.version.cuda, 'cuDNN', torch.backends.cudnn.version())"; } >"$OUT/build.log" 2>&1
cat "$OUT/build.log"
start=$SECONDS
# A wheel built beforehand for the device's Python (carry it: the device tool's carry=[".whl"]):
#   PYENV_VERSION=3.12.1 python3.12 -m pip wheel . --no-deps -w .whl
wheel=$(ls .whl/lstmfast-*-cp312-*.whl 2>/dev/null | head -1)
if [ -n "$wheel" ] && [ "$(python3 -c 'import sys; print(sys.version_info[:2] == (3, 12))')" = True ]; then
  python3 -m pip install --no-deps -q --force-reinstall "$wheel" >>"$OUT/build.log" 2>&1 || { tail -40 "$OUT/build.log"; exit 1; }
  echo "installed $wheel"
elif ! python3 -m pip install --no-build-isolation --no-deps -q . >>"$OUT/build.log" 2>&1; then
  tail -40 "$OUT/build.log"; exit 1
fi
echo "build: $((SECONDS - start)) s"
# Each stage has its own time limit (the device tool's call ends at 600 s): a slow stage costs its
# own results only; what ran is in $OUT either way.
stage() { local limit=$1; shift; timeout "$limit" "$@"; local rc=$?; [ $rc -eq 124 ] && echo "(stopped after $limit s)"; return $rc; }
stage 240 python3 -m pytest tests/test_cuda.py tests/test_cuda_activations.py tests/test_cuda_graphs.py \
  tests/test_cuda_dropout.py tests/test_cuda_losses.py tests/test_cuda_tasks.py tests/test_cuda_sequence.py \
  tests/test_mixed_precision.py tests/test_loss_scale.py -q -rs -p no:cacheprovider >"$OUT/test_cuda.log" 2>&1
echo "test_cuda exit $?"; tail -15 "$OUT/test_cuda.log"
stage 150 python3 bench/compare_cudnn.py --bf16 "$@" --markdown "$OUT/cudnn.md" 2>&1 | tail -45
# Issue 17 item 3: the large batches with the sequence kernels forced (forward h staged in chunks of rows)
stage 60 python3 bench/compare_cudnn.py --only "large batch" --sequence-kernels always --repeats 10 \
  --markdown "$OUT/cudnn_sequence_always.md" 2>&1 | tail -14
stage 50 python3 bench/gpu_graphs.py --batches 100 --chars 300 2>&1 | tail -12
stage 70 python3 bench/gpu_fit.py --batches 100 --repeats 2 2>&1 | tail -8
