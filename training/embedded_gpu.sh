#!/usr/bin/env bash
# The embedded default's second generation on one lent GPU machine (issue 19), in one run of at most 9 minutes:
# render the drivable synthetic world on every CPU core (one `openvica synthetic store` shard per core, tokenised by
# the shipped TOK), train the action-conditioned world model and the ego-motion probe on the GPU, assemble the
# bundle with the shipped TOK+DEC and VDEC, evaluate it with the harness, and leave everything under $OUT.
#
#   OUT=$OUT bash training/embedded_gpu.sh                                   # the GPU machine (device tool)
#   OUT=/tmp/toy DEVICE=cpu DRIVES=4 VAL_DRIVES=2 WM_STEPS=3 PROBE_STEPS=3 EVAL_CLIPS=2 bash training/embedded_gpu.sh
#                                                                             # the same script at toy size, on a CPU
#
# Packages the GPU machine lacks travel as wheels in .whl/ (benchmarks/gpu.sh installs them the same way). The CPU
# recipe, which trains less, is training/embedded.sh. Times per step go to $OUT/times.txt, the bundle to
# $OUT/bundle, the probe to $OUT/ego_probe, the harness's folder to $OUT/eval.
set -euo pipefail
OUT=${OUT:?set OUT}; mkdir -p "$OUT"
DEVICE=${DEVICE:-cuda}
JOBS=${JOBS:-$(nproc)}
DRIVES=${DRIVES:-960}; VAL_DRIVES=${VAL_DRIVES:-12}; SECONDS_PER_DRIVE=${SECONDS_PER_DRIVE:-10}
WM_STEPS=${WM_STEPS:-3000}; WM_BATCH=${WM_BATCH:-32}; WM_PRESET=${WM_PRESET:-embedded}
PROBE_STEPS=${PROBE_STEPS:-1500}; EVAL_CLIPS=${EVAL_CLIPS:-12}
PY=${PY:-python3}
TOK=openvica_sim/embedded/bundle/tokenizer; VDEC=openvica_sim/embedded/bundle/video_decoder
TIMES="$OUT/times.txt"
step() { echo "== $(date +%T) $*" >&2; echo "$(date +%s) $*" >> "$TIMES"; }
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
if [ -d .whl ]; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    "$PY" -m pip install -q --upgrade --no-deps --no-build-isolation --no-index --no-compile --target /tmp/site . \
        >/dev/null 2>&1
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
OPENVICA=("$PY" -m openvica_sim.cli)
CUDA_TRAIN=$([ "$DEVICE" = cuda ] && echo true || echo false)

step "1. render $DRIVES training and $VAL_DRIVES held-out drives on $JOBS cores"
for ((i = 0; i < JOBS; i++)); do
    "${OPENVICA[@]}" synthetic store --out "$OUT/train.zarr" --drives "$DRIVES" --seconds "$SECONDS_PER_DRIVE" \
        --seed 0 --tokenizer "$TOK" --shard "$i/$JOBS" > "$OUT/render-$i.log" 2>&1 &
done
"${OPENVICA[@]}" synthetic store --out "$OUT/val.zarr" --drives "$VAL_DRIVES" --seconds "$SECONDS_PER_DRIVE" \
    --seed 1 --split val --tokenizer "$TOK" > "$OUT/render-val.log" 2>&1 &
wait
"$PY" -c "from openvica_sim.data.store import consolidate; print(len(consolidate('$OUT/train.zarr')['clips']), 'clips')"

step "2. the action-conditioned world model ($WM_PRESET, $WM_STEPS steps of $WM_BATCH windows of 8 frames)"
OMP_NUM_THREADS=$JOBS "$PY" training/wm.py +experiment=embedded_wm data.store="$OUT/train.zarr" run.dir="$OUT/wm" \
    model.preset="$WM_PRESET" scaling.use_gpu=$CUDA_TRAIN trainer.max_steps="$WM_STEPS" \
    trainer.batch_size="$WM_BATCH" optim.decay_steps=$((WM_STEPS > 60 ? WM_STEPS - 50 : WM_STEPS)) \
    optim.warmup_steps=$((WM_STEPS > 60 ? 50 : 1)) trainer.checkpoint_every=500 data.loader_workers=4

step "3. the ego-motion probe ($PROBE_STEPS steps)"
OMP_NUM_THREADS=$JOBS "$PY" training/probe.py data.store="$OUT/train.zarr" data.val_store="$OUT/val.zarr" \
    run.dir="$OUT/probe" scaling.use_gpu=$CUDA_TRAIN trainer.max_steps="$PROBE_STEPS" \
    optim.decay_steps=$((PROBE_STEPS > 60 ? PROBE_STEPS - 100 : PROBE_STEPS)) \
    optim.warmup_steps=$((PROBE_STEPS > 60 ? 100 : 1)) trainer.batch_size=64 data.loader_workers=4
cp -r "$OUT/probe/ego_probe" "$OUT/ego_probe"

step "4. the bundle: shipped TOK+DEC and VDEC, the new world model, an 8-frame context"
"${OPENVICA[@]}" bundle create --tokenizer "$TOK" --world-model "$OUT/wm/world_model" --video-decoder "$VDEC" \
    --action-conditioned --top-k 10 --temperature 0.5 --context-frames 8 --wavefront 2 --out "$OUT/bundle"

step "5. the harness on the held-out drives (command adherence with the new probe)"
OMP_NUM_THREADS=$JOBS "${OPENVICA[@]}" eval video --bundle "$OUT/bundle" --clips "$OUT/val.zarr" \
    --limit "$EVAL_CLIPS" --ego-probe "$OUT/ego_probe" --device "$DEVICE" --out "$OUT/eval" > "$OUT/eval.json"
step "done: $OUT/bundle, $OUT/ego_probe, $OUT/eval (step times: $TIMES)"
