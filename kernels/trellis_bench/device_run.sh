#!/bin/bash
# What the lent GPU ran for the stage table (docs/BENCHMARKS.md): bash kernels/trellis_bench/device_run.sh <phase>
#   phase 1: deps check, GPU tests of the fast path (tests/test_accel.py -m gpu), stage bench with tuning
#   phase 2: stage bench with the tuned conv table and Triton cache of phase 1 (.whl/triton_cache.tgz)
#   every phase then times image -> GLB through TrellisPipeline.generate (trellis_bench.product_timing)
# Wheels of missing runtime deps (trimesh, plyfile) travel in .whl/ (see /work/.library/device/README.md).
# Carry: run(carry=[".whl", ".golden"]).
set -o pipefail
cd "$(dirname "$0")/../.."
PHASE=${1:-1}
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
export PYTHONPATH=backend:kernels PYTHONUNBUFFERED=1 TRITON_CACHE_DIR=/tmp/triton-cache
mkdir -p $TRITON_CACHE_DIR
[ -f .whl/triton_cache.tgz ] && tar xzf .whl/triton_cache.tgz -C $TRITON_CACHE_DIR
echo "== runtime deps on this machine"
python3 - <<'PY'
import importlib
for m in ["safetensors", "numpy", "trimesh", "plyfile", "tqdm", "PIL"]:
    try:
        mod = importlib.import_module(m)
        print(f"  {m} {getattr(mod, '__version__', '?')}")
    except Exception as e:
        print(f"  {m} MISSING ({type(e).__name__})")
PY
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl \
  && export PYTHONPATH=$PYTHONPATH:/tmp/site
nvidia-smi --query-gpu=name,memory.used,memory.total,utilization.gpu,clocks.sm --format=csv,noheader
nvidia-smi --query-compute-apps=pid,used_memory --format=csv,noheader
# the golden cases live in ../shared/golden, which does not travel to the device: carry a copy as .golden
# (`cp -r ../shared/golden .golden`, git-ignored, 22 MB) or the golden GPU tests (tuned path vs CPU float32) skip
[ -d .golden ] && export TRELLIS_GOLDEN_DIR=$PWD/.golden
echo "== GPU tests (golden cases: ${TRELLIS_GOLDEN_DIR:-none carried, golden tests skip})"
TRELLIS_KERNELS_AUTOTUNE=0 timeout ${TEST_TIMEOUT:-200} python3 -m pytest -q -m gpu ${GPU_TESTS:-tests/test_accel.py \
  tests/test_pipeline_gpu.py tests/test_kernels.py} -s \
  -p no:cacheprovider > "$OUT/tests.log" 2>&1
TESTS_RC=$?
echo "tests rc=$TESTS_RC"
grep -E "rel err|GELU epilogue|passed|failed|Error|assert" "$OUT/tests.log" | tail -30
if [ "$PHASE" = 1 ]; then
  EXTRA="TRELLIS_STAGE_PLAIN_REPEATS=1 TRELLIS_STAGE_REPEATS=3"
else
  EXTRA="TRELLIS_STAGE_PLAIN_REPEATS=${PLAIN_REPEATS:-1} TRELLIS_STAGE_REPEATS=${REPEATS:-5}"
  if [ "$TESTS_RC" != 0 ]; then  # never time a path that failed its checks: drop the newest shortcut
    echo "GPU tests failed: timing with TRELLIS_ACCEL_UNIFORM_CONTEXT=0"
    export TRELLIS_ACCEL_UNIFORM_CONTEXT=0
  fi
fi
echo "== stage bench"
env $EXTRA TRELLIS_STAGE_PROFILE=${PROFILE:-1} TRELLIS_STAGE_BUDGET=${BUDGET:-140} \
  timeout ${BENCH_TIMEOUT:-165} python3 -m trellis_bench.bench --groups stages --out "$OUT/stages.md" \
  --save-tuned "$OUT/tuned_conv.json" > "$OUT/bench.log" 2>&1
echo "bench rc=$?"
grep -E "^\[|^  |Error|error" "$OUT/bench.log" | grep -v "^    " | cut -c1-230 | tail -60
echo "== product path: image -> GLB through TrellisPipeline.generate"
timeout ${PRODUCT_TIMEOUT:-170} python3 -m trellis_bench.product_timing --repeats ${PRODUCT_REPEATS:-3} \
  --out "$OUT/product_timing.json" > "$OUT/product.log" 2>&1
echo "product rc=$?"
tail -40 "$OUT/product.log"
tar czf "$OUT/triton_cache.tgz" -C $TRITON_CACHE_DIR . 2>/dev/null
ls -la "$OUT"
