#!/usr/bin/env bash
# The GPU check in one call (see bench/README.md). Without a CUDA GPU it does the CPU-side preparation and exits 0:
#   bash bench/gpu_check.sh          -> .gpu-check/assets (configs + tokenizer) and .whl/ (wheels), both git-ignored
# On a machine with an NVIDIA GPU, PyTorch, transformers and accelerate (no network needed), with .gpu-check and .whl
# copied along, the same command installs the wheels, builds random-weight models, runs the gpu-marked tests and
# measures bf16/fp16/int8/nf4/fp4, writing everything to one results file:
#   $OUT/gpu-check.json (or .gpu-check/gpu-check.json), plus the tests' log beside it. Under 8 minutes on an H200.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
RESULTS=${OUT:-.gpu-check}
mkdir -p "$RESULTS" .gpu-check
start=$(date +%s)
say() { printf '[gpu-check %3ss] %s\n' "$(( $(date +%s) - start ))" "$*"; }

has_cuda=$("$PY" -c 'import torch; print(int(torch.cuda.is_available()))' 2>/dev/null || echo 0)

if [ "$has_cuda" != 1 ]; then
  say "no CUDA GPU here: preparing what the GPU machine needs"
  "$PY" bench/gpu_check.py prepare .gpu-check/assets || exit 1
  if ! ls .whl/*.whl >/dev/null 2>&1; then
    say "downloading the wheels in bench/gpu_wheels.txt into .whl/ (Python 3.12, x86-64)"
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
      --platform manylinux2014_x86_64 -d .whl -r bench/gpu_wheels.txt || exit 1
  fi
  say "ready: $(du -sh .gpu-check .whl | tr '\n' ' ')"
  say "on the GPU machine, with .gpu-check and .whl carried along: bash bench/gpu_check.sh"
  exit 0
fi

export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
if ls .whl/*.whl >/dev/null 2>&1; then
  say "installing $(ls .whl/*.whl | wc -l) carried wheels"
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/kb-site .whl/*.whl \
    || exit 1
  export PYTHONPATH=$PYTHONPATH:/tmp/kb-site
fi
"$PY" -c 'import kani, kanibook, bitsandbytes' || { say "missing packages: see bench/gpu_wheels.txt"; exit 1; }
[ -d .gpu-check/assets ] || { say "no .gpu-check/assets: run this script once on a machine without a GPU first"; exit 1; }

models=/tmp/kb-gpu-models
say "building random-weight models"
"$PY" bench/gpu_check.py build .gpu-check/assets "$models" || exit 1

say "gpu-marked tests"
KANIBOOK_TEST_MODEL=$models/smollm2-135m-arch timeout 240 "$PY" -m pytest -q -m gpu -o addopts="" -p no:cacheprovider \
  tests/unit > "$RESULTS/gpu-tests.log" 2>&1
tests_rc=$?
tail -3 "$RESULTS/gpu-tests.log"

say "measuring bf16, fp16, int8, nf4, fp4"
timeout 300 "$PY" bench/gpu_check.py measure "$models" "$RESULTS/gpu-check.json" --device cuda
measure_rc=$?
say "done: tests exit $tests_rc, measurements exit $measure_rc; results in $RESULTS/gpu-check.json"
exit $(( tests_rc != 0 || measure_rc != 0 ))
