#!/bin/bash
# What the lent GPU ran for the stage table (docs/BENCHMARKS.md): bash kernels/trellis_bench/device_run.sh <phase>
#   phase 1: deps check, GPU tests of the fast path (tests/test_accel.py -m gpu), stage bench with tuning
#   phase 2: stage bench with the tuned conv table and Triton cache of phase 1 (.whl/triton_cache.tgz)
#   phase t2: TRELLIS.2 (issue 21): GPU tests of both families' fast paths (tests/test_trellis2_gpu.py on the
#     golden2 cases, tests/test_accel.py), then ONE bench run of the groups "trellis2" (4B sizes, modes
#     $T2_MODES, default 512,1024) and "stages" (TRELLIS re-measured, accel rows), within the time budget;
#     T2_MODES=1536 T2_GROUPS=trellis2 GPU_TESTS=none: the 1536 mode alone (a second call)
#   phase t2e2e: image -> GLB through Trellis2Pipeline per mode on a random 4B folder (made in /tmp/t2-4b once per
#     machine: the first call may spend its time making it; call again while the machine is warm)
#   phases 1 and 2 then time image -> GLB through TrellisPipeline.generate (trellis_bench.product_timing)
# Wheels of missing runtime deps (trimesh, plyfile, xatlas, fast-simplification) travel in .whl/ (see
# /work/.library/device/README.md).
# Carry: run(carry=[".whl", ".golden", ".golden2"]) after `cp -r ../shared/golden .golden; cp -r ../shared/golden2 .golden2`.
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
for m in ["safetensors", "numpy", "trimesh", "plyfile", "tqdm", "PIL", "xatlas", "fast_simplification"]:
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
# the same for TRELLIS.2: `cp -r ../shared/golden2 .golden2` (git-ignored, 10 MB), else tests/test_trellis2_gpu.py
# has no cases
[ -d .golden2 ] && export TRELLIS2_GOLDEN_DIR=$PWD/.golden2
if [ "$PHASE" = t2 ]; then  # the whole phase fits the device's 10-minute command limit: 170 + 360 s at most
  DEFAULT_TESTS="tests/test_trellis2_gpu.py tests/test_accel.py"; TEST_TIMEOUT=${TEST_TIMEOUT:-170}
else
  DEFAULT_TESTS="tests/test_accel.py tests/test_pipeline_gpu.py tests/test_kernels.py"
fi
echo "== GPU tests (golden: ${TRELLIS_GOLDEN_DIR:-none carried}; golden2: ${TRELLIS2_GOLDEN_DIR:-none carried})"
TRELLIS_KERNELS_AUTOTUNE=0 timeout ${TEST_TIMEOUT:-200} python3 -m pytest -q -m gpu ${GPU_TESTS:-$DEFAULT_TESTS} -s \
  -p no:cacheprovider > "$OUT/tests.log" 2>&1
TESTS_RC=$?
echo "tests rc=$TESTS_RC"
grep -E "rel err|GELU epilogue|passed|failed|Error|assert" "$OUT/tests.log" | tail -30
if [ "$PHASE" = t2e2e ]; then
  # image -> GLB through Trellis2Pipeline.generate per mode, on a random 4B folder made here once per machine
  # (/tmp/t2-4b; written under another name first, so a folder cut short is never used)
  if [ ! -f /tmp/t2-4b/pipeline.json ]; then
    echo "== make-random-model --family trellis2 --size official"
    rm -rf /tmp/t2-4b.partial
    timeout ${MAKE_TIMEOUT:-330} python3 -m trellis_lab make-random-model --family trellis2 --size official \
      --device cuda --out /tmp/t2-4b.partial > "$OUT/make_model.log" 2>&1 && mv /tmp/t2-4b.partial /tmp/t2-4b
    echo "make rc=$?"; tail -5 "$OUT/make_model.log"
  fi
  echo "== bench: trellis2_e2e"
  env TRELLIS2_BENCH_MODEL_DIR=/tmp/t2-4b TRELLIS2_BENCH_MODES=${T2_MODES:-512,1024} \
    timeout ${BENCH_TIMEOUT:-500} python3 -m trellis_bench.bench --groups trellis2_e2e \
    --time-budget ${BUDGET:-420} --out "$OUT/trellis2_e2e.md" > "$OUT/bench_e2e.log" 2>&1
  echo "bench rc=$?"
  grep -E "^\[|^  |Error|error" "$OUT/bench_e2e.log" | cut -c1-300 | tail -40
  exit 0
fi
if [ "$PHASE" = t2 ]; then
  # TRELLIS.2 at the 4B sizes, then TRELLIS re-measured (accel rows; TRELLIS_STAGE_PLAIN_FROM=<an earlier
  # stages.json> adds the plain baseline); cases that would start past the budget are listed as not run
  echo "== bench: trellis2 (TRELLIS.2-4B) + stages (TRELLIS), one run"
  env TRELLIS_STAGE_PLAIN_REPEATS=0 TRELLIS_STAGE_REPEATS=${REPEATS:-3} TRELLIS_STAGE_WARMUP=1 \
    TRELLIS_STAGE_EAGER2=0 TRELLIS_STAGE_PROFILE=0 TRELLIS2_BENCH_MODES=${T2_MODES:-512,1024} \
    timeout ${BENCH_TIMEOUT:-360} python3 -m trellis_bench.bench --groups ${T2_GROUPS:-trellis2,stages} \
    --time-budget ${BUDGET:-290} --out "$OUT/trellis2.md" > "$OUT/bench.log" 2>&1
  echo "bench rc=$?"
  grep -E "^\[|^  |Error|error" "$OUT/bench.log" | grep -v "^    " | cut -c1-230 | tail -80
  tar czf "$OUT/triton_cache.tgz" -C $TRITON_CACHE_DIR . 2>/dev/null
  ls -la "$OUT"
  exit 0
fi
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
