#!/usr/bin/env bash
# The GPU check, for a machine with a CUDA device when one is at hand (the project never needs one).
# Under 8 minutes: the tests on the GPU, the training step at fp32 / bf16 / fp16 with compile off and on,
# the translate benchmark, and a torchrun NCCL run. Each section has its own time limit and a failure
# is reported, not fatal, so one run gives the whole table.
#
#   bash benchmarks/device_check.sh            # uses python3 (or PY=...), with the package from src/
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" OMP_WAIT_POLICY=PASSIVE
started=$SECONDS

section() { echo; echo "== $1 (at $((SECONDS - started)) s)"; }
limited() {  # limited SECONDS COMMAND...: run it, say how it ended
    local limit=$1; shift
    timeout "$limit" "$@"
    local rc=$?
    [ $rc -eq 0 ] || echo "(ended with exit $rc$([ $rc -eq 124 ] && echo ": past its ${limit} s"))"
}

section "machine"
nvidia-smi --query-gpu=name,memory.total,driver_version,compute_cap --format=csv 2>/dev/null || echo "no nvidia-smi"
missing=$($PY - <<'EOF'
import importlib.util
print(" ".join(m for m in ("torch", "numpy", "PIL", "safetensors", "tqdm", "yaml", "pytest")
               if importlib.util.find_spec(m) is None))
EOF
)
if [ -n "$missing" ]; then echo "$PY lacks: $missing; install them (pip install -e '.[dev]') and rerun"; exit 0; fi
$PY benchmarks/machine.py
if ! $PY -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "torch sees no CUDA device here: nothing to check (this script is for a GPU machine)"
    exit 0
fi
gpus=$($PY -c "import torch; print(torch.cuda.device_count())")

section "tests, with CUDA as the default device"
limited 150 $PY -m pytest -q -x -p no:cacheprovider tests/test_training.py tests/test_devices.py tests/test_recipes.py \
    tests/test_translate.py tests/test_checkpoint.py

section "training step, 128 px resnet_6blocks: trainer against the official fp32 step (paired rounds)"
for options in "precision=fp32" "precision=bf16" "precision=fp16" "precision=auto" \
               "precision=fp32 compile=true" "precision=bf16 compile=true"; do
    flags=(); for option in $options; do flags+=(--option "$option"); done
    echo "-- $options"
    limited 75 $PY benchmarks/train_speed.py --device cuda --rounds 6 "${flags[@]}" --quick 2>&1 | grep -v "^machine:"
done
limited 60 $PY benchmarks/train_speed.py --device cuda --rounds 4 --option precision=bf16 2>&1 | grep -v "^machine:"

section "translate: 256x256 and 1024x768 through resnet_9blocks, translate against an eager loop"
limited 60 $PY benchmarks/translate_speed.py --device cuda --rounds 2 2>&1 | grep -v "^machine:"

section "torchrun with NCCL"
data=$(mktemp -d)
$PY - "$data" <<'EOF'
import sys
from pathlib import Path
import numpy as np
from PIL import Image
rng = np.random.default_rng(0)
for domain in ("trainA", "trainB"):
    (Path(sys.argv[1]) / domain).mkdir(parents=True)
    for i in range(4):
        Image.fromarray(rng.integers(0, 256, (72, 72, 3), dtype=np.uint8)).save(Path(sys.argv[1]) / domain / f"{i}.png")
EOF
processes=$(( gpus >= 2 ? 2 : 1 ))
[ "$gpus" -ge 2 ] || echo "one GPU: NCCL needs a GPU per process, so this runs 1 process under torchrun"
limited 90 $PY -m torch.distributed.run --nproc_per_node "$processes" -m cyclegan train --dataroot "$data" \
    --checkpoints_dir "$data/runs" --name nccl --netG resnet_6blocks --ngf 16 --ndf 16 --load_size 72 --crop_size 64 \
    --max_iters 20 --device cuda --num_threads 0 --quiet 2>&1 | grep -E "distributed:|effective batch|precision:|done|Error" || true
rm -rf "$data"

echo; echo "device check done in $((SECONDS - started)) s"
