#!/usr/bin/env bash
# The GPU check (issue 15): run ONCE on a CUDA machine, under 8 minutes, and record its numbers
# (with the date and the GPU) in BENCHMARKS.md.  It runs
#   1. the CUDA-marked tests,
#   2. bench_speed.py's GPU rows (D = 10 to 10,000: our eager and captured steps, stock Pyro),
#   3. bench_flows.py's throughput rows on the GPU,
#   4. a short IAF-VAE run on MNIST.
# Outputs go to $OUT (the device tool's return folder) or ./outputs/gpu_check.
#
# The lent H200 has torch, numpy, scipy, matplotlib, pandas, xarray and numpyro, but not pyro-ppl
# or arviz.  Carry them as wheels (pure Python) in .whl/ (ignored by git), fetched here with:
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 -d .whl \
#       pyro-ppl==1.9.1 pyro-api==0.1.2 arviz==0.22.0 h5netcdf==1.6.4 xarray-einstats==0.9.1
# and name .whl (and ../shared's MNIST copied into .data/, for step 4) in the run's carry.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-outputs/gpu_check}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
if [ -d .whl ]; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD
fi
export PYTHONPATH=${PYTHONPATH:-$PWD} PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu.txt"
$PY -c "import torch, pyro; print('torch', torch.__version__, 'pyro', pyro.__version__)" | tee -a "$OUT/gpu.txt"
echo "== 1. CUDA tests"
timeout 120 $PY -m pytest -q -m cuda -p no:cacheprovider tests 2>&1 | tail -15 | tee "$OUT/cuda_tests.txt"
echo "== 2. speed rows"
timeout 200 $PY benchmarks/bench_speed.py --device cuda --guides flow-eager flow-script \
  flow-inductor pyro-normal pyro-iaf --targets eight_schools hier_logistic gauss1000 gauss10000 \
  --rounds 3 --steps 20 --converge-steps 0 --out "$OUT/speed" 2>&1 | tail -40 | tee "$OUT/speed.txt"
echo "== 3. flows throughput"
timeout 60 $PY benchmarks/bench_flows.py --device cuda --out "$OUT/flows" 2>&1 | tail -30 \
  | tee "$OUT/flows.txt"
echo "== 4. short VAE run"
timeout 90 $PY -m pyro_flowvi.lab.cli vae --flow iaf --epochs 1 --device cuda --data-dir .data \
  --out "$OUT/vae" 2>&1 | tail -10 | tee "$OUT/vae.txt"
