#!/usr/bin/env bash
# The GPU check, as one call of the `device` tool (a lent GPU machine; see docs/serving.md):
#   here:   make gpu-wheels          (once: the Python 3.12 wheels the machine lacks, into .whl/)
#   device: run(command="bash scripts/gpu-check.sh", carry=[".whl"], timeout_s=420)
# The machine has python3 with CUDA torch and numpy but not medgate's other dependencies, and
# nothing can be fetched there, so they travel as wheels. Prints the GPU, then bench/gpu.py:
# medgate's predictors on CUDA against the CPU, and the network's own batch-16 gain on the GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl
export PYTHONPATH="/tmp/site:$PWD/src" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || true
python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available())'
out="${OUT:-/tmp}"
python3 bench/gpu.py --device cuda --studies 8 2>&1 | tee "$out/gpu-check.txt"
