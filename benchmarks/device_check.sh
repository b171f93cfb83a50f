#!/usr/bin/env bash
# The library on one GPU, in one short run: the correctness tests of the Fisher, the
# distances, the search space and training; fisher_speed against PyTorch on the same card
# (the per-example loop, torch.func, BackPACK and Opacus, at batches of 32 and 128);
# one demo run. Every file it writes goes to $OUT (default /tmp/device_check).
#
#   OUT=/tmp/gpu bash benchmarks/device_check.sh
#
# BackPACK and Opacus come from the bench extra of pyproject.toml, installed beside the torch
# already there. A machine with no network installs them from wheels in $BENCH_WHEELS
# (default .bench_wheels), fetched beforehand where there is one and carried along:
#   pip download --no-deps -d .bench_wheels backpack-for-pytorch==1.7.1 unfoldNd==0.2.3 opacus==1.6.0
#   echo /.bench_wheels/ >> .git/info/exclude   # then carry .bench_wheels
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

BENCH_WHEELS=${BENCH_WHEELS:-.bench_wheels}
if ! "$PY" -c "import backpack, opacus" 2>/dev/null; then
  bench=$("$PY" -c "import tomllib; print(' '.join(tomllib.load(open('pyproject.toml', 'rb'))
['project']['optional-dependencies']['bench']))")
  if [ -d "$BENCH_WHEELS" ]; then
    "$PY" -m pip install -q --no-index --find-links "$BENCH_WHEELS" $bench
  else
    "$PY" -m pip install -q $bench
  fi >"$OUT/bench_install.txt" 2>&1 || tail -3 "$OUT/bench_install.txt"
fi

{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  "$PY" -c "import jax, flax, optax, torch; print('jax', jax.__version__, 'flax', flax.__version__,
'optax', optax.__version__, 'torch', torch.__version__, jax.devices())"
  "$PY" -c "import backpack, opacus; print('backpack', backpack.__version__, 'opacus',
opacus.__version__)" || echo "BackPACK or Opacus missing: their rows will show an error"
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

# --quick: one subprocess per framework and model and batch (each start imports and compiles),
# the loops on fewer examples; --reps 3 timed calls after the warm-up.
if stage "${SPEED_SECONDS:-240}"; then
  timeout "${SPEED_SECONDS:-240}" "$PY" -m benchmarks.fisher_speed --no-memory --quick --reps 3 \
    --batch-sizes 32,128 \
    --approaches jax_vmap_chunked,library,batched_grad,torch_loop,torch_func,torch_backpack,torch_opacus,torch_batched \
    --json "$OUT/fisher_speed_gpu.json" 2>&1 | tee "$OUT/fisher_speed.txt" | tail -60
fi

if stage "${DEMO_SECONDS:-110}"; then
  start=$(date +%s)
  timeout "${DEMO_SECONDS:-110}" "$PY" -m ldnas_jax demo --out /tmp/demo_gpu --no-progress \
    >"$OUT/demo.txt" 2>&1
  echo "demo: exit $? after $(($(date +%s) - start)) s" | tee -a "$OUT/demo.txt"
  cp /tmp/demo_gpu/results.json "$OUT/demo_results_gpu.json" 2>/dev/null
  tail -5 "$OUT/demo.txt"
fi
