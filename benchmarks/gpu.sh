#!/usr/bin/env bash
# The 7B measurements on one GPU, in one call (a lent machine is short of time, not memory): the card's two
# ceilings, a LoRA training step of lwm-7b on a 4,139-token sequence (tokens/s, peak memory, MFU), the engine's
# decoding at batch 1, 8 and 32 against HF generate, the Gymnasium env stepping with the video decoder, and the
# evaluation harness (`openvica eval video`) on 32 clips x 14 frames with a full-size random CLIP.
# Every model has random weights: a random 7B decodes and trains exactly as fast as a trained one.
# The fast-decoding steps (issue 18): which widths cuBLAS rounds alike, the gpu-marked tests (batch 1 = row of 8 and
# 32; the compiled CUDA-graph step = eager, no recompiles), the compiled step at batch 1, wavefront 2, int8 weights
# and the fp8 cache, and batch 32 at a full 16-frame context, each with its roofline. The first steps are the ones
# only a GPU can answer; STEPS="..." reruns a subset. ~9 minutes in all.
#
#   OUT=runs/gpu bash benchmarks/gpu.sh                 # on a machine with torch+CUDA; JSON lines in $OUT/results.jsonl
#
# Where packages are missing (an offline GPU machine), wheels in .whl/ are installed to /tmp/site first; on
# 2026-11-30 those were diffusers, gymnasium, zarr (+ numcodecs, donfig, google-crc32c), hydra-core, omegaconf,
# antlr4, importlib_metadata, farama-notifications, and transformers / peft at this project's pins, fetched with
# `pip download --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux_2_28_x86_64 -d .whl ...`.
set -u
OUT=${OUT:-runs/gpu}; mkdir -p "$OUT"
STEPS=${STEPS:-"batch_invariance pytest_gpu wm_fast wm_quant wm_full_context eval_video"}  # 2026-11-30's: train_wm
# wm_decode wm_generate env_step (STEPS="train_wm wm_decode wm_generate env_step" reruns them)
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
step batch_invariance 60 benchmarks/batch_invariance.py --json --preset lwm-7b --device cuda --dtype bf16 --max-width 64
if [[ " $STEPS " == *" pytest_gpu "* ]]; then
    echo "== pytest_gpu" >&2
    timeout 240 "$PY" -m pytest -q -m gpu tests/test_gpu.py -p no:cacheprovider > "$OUT/pytest_gpu.log" 2>&1
    echo "{\"bench\": \"pytest_gpu\", \"rc\": $?, \"tail\": \"$(tail -1 "$OUT/pytest_gpu.log" | tr -d '"')\"}" \
        | tee -a "$OUT/results.jsonl"
fi
step wm_fast 200 benchmarks/wm_decode.py --json --preset lwm-7b --device cuda --batch 1 --frames 2 --methods engine \
    --compile --peak-bandwidth-gbs "$BW"
step wm_fast 120 benchmarks/wm_decode.py --json --preset lwm-7b --device cuda --batch 1 8 --frames 2 --methods engine \
    --wavefront 2 --peak-bandwidth-gbs "$BW"
step wm_quant 150 benchmarks/wm_decode.py --json --preset lwm-7b --device cuda --batch 1 32 --frames 1 \
    --methods engine --quant int8 --kv-dtype fp8 --peak-bandwidth-gbs "$BW"
step wm_full_context 150 benchmarks/wm_decode.py --json --preset lwm-7b --device cuda --batch 32 --frames 1 \
    --context-frames 14 --methods engine --peak-bandwidth-gbs "$BW"
step train_wm 150 benchmarks/train_wm.py --json --preset lwm-7b --lora --device cuda --batch 1 2 --steps 3
step wm_decode 180 benchmarks/wm_decode.py --json --preset lwm-7b --device cuda --batch 1 8 32 --frames 3 \
    --methods engine --peak-bandwidth-gbs "$BW"
step wm_generate 70 benchmarks/wm_decode.py --json --preset lwm-7b --device cuda --batch 1 --frames 1 \
    --methods generate
step env_step 120 benchmarks/env_step.py --json --preset lwm-7b --device cuda --num-envs 1 8 --steps 2 \
    --modes vector
step eval_video 300 benchmarks/eval_video.py --json --preset lwm-7b --device cuda --clips 32 --frames 14 \
    --top-k 100 1000 --batch-size 32 --full-clip
