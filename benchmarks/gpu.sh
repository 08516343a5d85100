#!/usr/bin/env bash
# The 7B measurements on one GPU, in one call (a lent machine is short of time, not memory): the card's two
# ceilings, a LoRA training step of lwm-7b on a 4,139-token sequence (tokens/s, peak memory, MFU), the engine's
# decoding at batch 1, 8 and 32 against HF generate, and the Gymnasium env stepping with the video decoder.
# Every model has random weights: a random 7B decodes and trains exactly as fast as a trained one.
#
#   OUT=runs/gpu bash benchmarks/gpu.sh                 # on a machine with torch+CUDA; JSON lines in $OUT/results.jsonl
#
# Where packages are missing (an offline GPU machine), wheels in .whl/ are installed to /tmp/site first; on
# 2026-11-30 those were diffusers, gymnasium, zarr (+ numcodecs, donfig, google-crc32c), hydra-core, omegaconf,
# antlr4, importlib_metadata, farama-notifications, and transformers / peft at this project's pins, fetched with
# `pip download --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux_2_28_x86_64 -d .whl ...`.
set -u
OUT=${OUT:-runs/gpu}; mkdir -p "$OUT"
STEPS=${STEPS:-"train_wm wm_decode wm_generate env_step"}   # a subset, to rerun some
export PYTHONUNBUFFERED=1
PY=${PY:-python3}
if [ -d .whl ]; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || exit 1
    export PYTHONPATH=/tmp/site
fi
"$PY" -m pip install -q --upgrade --no-deps --no-build-isolation --no-index --no-compile --target /tmp/site . >/dev/null 2>&1 \
    || { echo "installing openvica-sim failed"; exit 1; }
export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem --format=csv | tee "$OUT/gpu.txt"

# The two ceilings (METHOD.md): a large device-to-device copy and a large bf16 matrix product, random data.
"$PY" - <<'EOF' | tee -a "$OUT/results.jsonl"
import json, torch
def median_ms(fn, n=10):
    for _ in range(3): fn()
    times = []
    for _ in range(n):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record(); fn(); b.record(); torch.cuda.synchronize(); times.append(a.elapsed_time(b))
    return sorted(times)[n // 2]
x = torch.randn(2**30, device="cuda", dtype=torch.float32); y = torch.empty_like(x)
copy = median_ms(lambda: y.copy_(x))
a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16); b = torch.randn_like(a)
mm = median_ms(lambda: a @ b)
print(json.dumps({"bench": "ceilings", "device": torch.cuda.get_device_name(), "torch": torch.__version__,
                  "copy_gbs": round(2 * x.numel() * 4 / copy / 1e6, 1),
                  "bf16_matmul_tflops": round(2 * 8192**3 / mm / 1e9, 1)}))
EOF
BW=$(tail -1 "$OUT/results.jsonl" | "$PY" -c "import json,sys; print(json.loads(sys.stdin.read())['copy_gbs'])" 2>/dev/null || echo 4300)

step() {  # name, time limit (s), script and arguments: JSON lines to results.jsonl, chatter to NAME.log
    local name=$1 limit=$2; shift 2
    [[ " $STEPS " == *" $name "* ]] || return 0
    echo "== $name" >&2
    timeout "$limit" "$PY" "$@" 2>"$OUT/$name.log" | tee -a "$OUT/results.jsonl"
    echo "== $name rc=${PIPESTATUS[0]}" >&2; tail -3 "$OUT/$name.log" >&2
}
step train_wm 150 benchmarks/train_wm.py --json --preset lwm-7b --lora --device cuda --batch 1 2 --steps 3
step wm_decode 180 benchmarks/wm_decode.py --json --preset lwm-7b --device cuda --batch 1 8 32 --frames 3 \
    --methods engine --peak-bandwidth-gbs "$BW"
step wm_generate 70 benchmarks/wm_decode.py --json --preset lwm-7b --device cuda --batch 1 --frames 1 \
    --methods generate
step env_step 120 benchmarks/env_step.py --json --preset lwm-7b --device cuda --num-envs 1 8 --steps 2 \
    --modes vector
