#!/usr/bin/env bash
# The library on one GPU, in one short run: the correctness tests of the Fisher, the
# distances, the search space and training; fisher_speed against PyTorch on the same card;
# one demo run. Every file it writes goes to $OUT (default /tmp/device_check).
#
#   OUT=/tmp/gpu bash benchmarks/device_check.sh
#
# TEST_SECONDS, SPEED_SECONDS and DEMO_SECONDS bound each stage; 0 skips it.
#
# The tests run at float32 matmul precision (JAX_DEFAULT_MATMUL_PRECISION=highest): their
# references are float32 loops, and GPUs otherwise may use TF32 for float32 matrix products.
# The benchmark and the demo run at JAX's and PyTorch's default precisions.
set -u
OUT=${OUT:-/tmp/device_check}
mkdir -p "$OUT"
export XLA_PYTHON_CLIENT_PREALLOCATE=false PYTHONUNBUFFERED=1 TQDM_DISABLE=1
PY=${PYTHON:-python3}

{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  "$PY" -c "import jax, flax, optax, torch; print('jax', jax.__version__, 'flax', flax.__version__,
'optax', optax.__version__, 'torch', torch.__version__, jax.devices())"
} 2>&1 | tee "$OUT/machine.txt"

TESTS="tests/test_fisher.py tests/test_fisher_layerwise.py tests/test_fisher_compile.py
  tests/test_distance.py tests/test_nas_operations.py tests/test_nas_switch.py
  tests/test_conv_gradient.py tests/test_nas_fuse.py tests/test_train.py
  tests/test_fast_routes.py ldnas_jax/fisher ldnas_jax/distances ldnas_jax/nas"
stage() { [ "${1:-1}" != 0 ]; }

if stage "${TEST_SECONDS:-150}"; then
  start=$(date +%s)
  JAX_DEFAULT_MATMUL_PRECISION=highest timeout "${TEST_SECONDS:-150}" \
    "$PY" -m pytest -q -n 8 -p no:cacheprovider -rfE $TESTS >"$OUT/tests.txt" 2>&1
  echo "tests: exit $? after $(($(date +%s) - start)) s" | tee -a "$OUT/tests.txt"
  tail -25 "$OUT/tests.txt"
fi

if stage "${SPEED_SECONDS:-240}"; then
  timeout "${SPEED_SECONDS:-240}" "$PY" -m benchmarks.fisher_speed --no-memory \
    --approaches jax_vmap_chunked,library,library_pure_function,batched_grad,batched_grad_fast_routes,torch_func,torch_batched \
    --json "$OUT/fisher_speed_gpu.json" 2>&1 | tee "$OUT/fisher_speed.txt" | tail -40
fi

if stage "${DEMO_SECONDS:-110}"; then
  start=$(date +%s)
  timeout "${DEMO_SECONDS:-110}" "$PY" -m ldnas_jax demo --out /tmp/demo_gpu --no-progress \
    >"$OUT/demo.txt" 2>&1
  echo "demo: exit $? after $(($(date +%s) - start)) s" | tee -a "$OUT/demo.txt"
  cp /tmp/demo_gpu/results.json "$OUT/demo_results_gpu.json" 2>/dev/null
  tail -5 "$OUT/demo.txt"
fi
