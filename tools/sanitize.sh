#!/usr/bin/env bash
# Build the engine and its Python module with AddressSanitizer + UndefinedBehaviorSanitizer
# (CMake option LSTMFAST_SANITIZE) and run the engine's tests against that build: the ops (forward,
# backward, every SIMD level), the GEMM, the fused optimizer, bad input and the ops fuzz tests.
# Any finding stops the run with the sanitizer's report (UBSan does not recover; ASan aborts).
#
#   tools/sanitize.sh [pytest args...]     (from an environment with the test extra installed)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
python="${PYTHON:-python3}"
build="$root/build/sanitize"
stage="$build/stage"

generator=()
if command -v ninja >/dev/null; then generator=(-G Ninja); fi
cmake -S "$root" -B "$build" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release -DLSTMFAST_SANITIZE=ON \
  -DPython_EXECUTABLE="$(command -v "$python")" -Dpybind11_DIR="$("$python" -m pybind11 --cmakedir)" >/dev/null
cmake --build "$build" --parallel

# The package's Python files with the sanitized module beside them, ahead of any installed copy.
rm -rf "$stage" && mkdir -p "$stage"
cp -r "$root/python/lstmfast" "$stage/"
cp "$build"/_core*.so "$stage/lstmfast/"
# An editable install's import hook would find the unsanitized module before PYTHONPATH: drop it.
cat > "$stage/sitecustomize.py" <<'PY'
import sys
sys.meta_path[:] = [f for f in sys.meta_path if not type(f).__module__.startswith("_editable_")]
PY

# Python itself is not instrumented: the ASan runtime must be loaded first, and libstdc++ with it
# (ASan finds the real __cxa_throw at start-up; Python does not link libstdc++). Python's
# allocations at exit are not ours: no leak report.
export LD_PRELOAD="$(g++ -print-file-name=libasan.so) $(g++ -print-file-name=libstdc++.so)"
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:strict_string_checks=1:detect_stack_use_after_return=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
export PYTHONPATH="$stage${PYTHONPATH:+:$PYTHONPATH}"
"$python" -c "import lstmfast._core as c, sys; f = c.__file__; print('sanitize: engine', f); \
sys.exit(0 if f.startswith('$stage') else 'the sanitized module was not the one imported')"
cd "$root"
"$python" -m pytest -q -p no:cacheprovider tests/test_ops.py tests/test_gemm.py tests/test_fused_optim.py \
  tests/test_bad_input.py tests/test_fuzz_ops.py "$@"
