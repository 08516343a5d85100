#!/usr/bin/env bash
# The embedded default's recipe on a CPU (issues 7 and 19): the drivable synthetic world rendered straight at the
# model's view -> Zarr -> TOK+DEC, WM (action-conditioned), VDEC, the ego-motion probe -> the bundle shipped in
# openvica_sim/embedded/ and its pictures in docs/. Every step is this project's own command; rerunning resumes
# (stores add only missing drives, training runs continue from their last checkpoint). The GPU recipe, which trains
# on five times the drives, is training/embedded_gpu.sh; the BDD100K-layout round trip (`openvica synthetic
# bdd100k` -> `openvica data ingest`) is the ingest path's test, not needed here.
#
# Five stages, every one this project's own command: TOK+DEC from scratch (K = 1024), TOK+DEC moved to K = 256 and
# made local (experiment/embedded_tok_local.yaml: a token changes when its patch does, not when something moves
# elsewhere), the drives rendered and tokenised by it, the action-conditioned WM (the `embedded` preset), VDEC
# inflated from the new DEC, the ego-motion probe, then the bundle and its pictures.
#
#   make embedded                      # = bash training/embedded.sh, on a 2-core CPU about five hours
#   OUT=/tmp/emb bash training/embedded.sh
#   TOKENIZER_STAGE1=openvica_sim/embedded/bundle/tokenizer bash training/embedded.sh   # start from a K = 1024 TOK
#   TOKENIZER=... VIDEO_DECODER=... bash training/embedded.sh    # keep a finished TOK+DEC (and VDEC): WM only
set -euo pipefail
OUT=${OUT:-runs/embedded}
BIN=${BIN:-.venv/bin}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
TOP_K=${TOP_K:-10}              # the bundle's sampling defaults (docs/embedded-default.md: measured against
TEMPERATURE=${TEMPERATURE:-0.5}  # the real continuation on held-out drives)
TIMES="$OUT/times.txt"; mkdir -p "$OUT"
step() { echo "== $(date +%T) $*" >&2; echo "$(date +%s) $*" >> "$TIMES"; }

DRIVES=${DRIVES:-384}; VAL_DRIVES=${VAL_DRIVES:-12}
JOBS=${JOBS:-2}  # one `synthetic store` shard per core

if [ -z "${TOKENIZER:-}" ]; then
    step "1. frames of $((DRIVES / 2)) drives of the drivable world for TOK+DEC (the random tokenizer's tokens unused)"
    [ -d "$OUT/random-bundle" ] || "$BIN/openvica" bundle random --preset tiny --out "$OUT/random-bundle" --seed 0
    for ((i = 0; i < JOBS; i++)); do
        "$BIN/openvica" synthetic store --out "$OUT/frames.zarr" --drives $((DRIVES / 2)) --seconds 10 --seed 0 \
            --bundle "$OUT/random-bundle" --shard "$i/$JOBS" > "$OUT/frames-$i.log" 2>&1 &
    done
    wait
    "$BIN/python" -c "from openvica_sim.data.store import consolidate; consolidate('$OUT/frames.zarr')"

    if [ -z "${TOKENIZER_STAGE1:-}" ]; then
        step "2a. TOK+DEC from scratch (K = 1024)"
        "$BIN/python" training/tok.py +experiment=embedded_tok data.store="$OUT/frames.zarr" run.dir="$OUT/tok"
        TOKENIZER_STAGE1="$OUT/tok/tokenizer"
    fi
    step "2b. TOK+DEC moved to K = 256 and made local, from $TOKENIZER_STAGE1"
    "$BIN/python" training/tok.py +experiment=embedded_tok_local data.store="$OUT/frames.zarr" \
        model.tokenizer.init="$TOKENIZER_STAGE1" run.dir="$OUT/tok-local"
    TOKENIZER="$OUT/tok-local/tokenizer"
else
    step "1-2. TOK+DEC given: $TOKENIZER"
fi

step "3. $DRIVES training and $VAL_DRIVES held-out drives at the model's view, tokens of TOK ($JOBS shards at once)"
for ((i = 0; i < JOBS; i++)); do
    "$BIN/openvica" synthetic store --out "$OUT/train.zarr" --drives "$DRIVES" --seconds 10 --seed 0 \
        --tokenizer "$TOKENIZER" --shard "$i/$JOBS" > "$OUT/render-$i.log" 2>&1 &
done
wait
"$BIN/python" -c "from openvica_sim.data.store import consolidate; consolidate('$OUT/train.zarr')"
"$BIN/openvica" synthetic store --out "$OUT/val.zarr" --drives "$VAL_DRIVES" --seconds 10 --seed 1 --split val \
    --tokenizer "$TOKENIZER"

step "4. WM: action-conditioned, windows of 8 frames"
"$BIN/python" training/wm.py +experiment=embedded_wm data.store="$OUT/train.zarr" run.dir="$OUT/wm"

if [ -z "${VIDEO_DECODER:-}" ]; then
    step "5. VDEC"
    "$BIN/python" training/vdec.py +experiment=embedded_vdec data.store="$OUT/train.zarr" \
        model.tokenizer.init="$TOKENIZER" run.dir="$OUT/vdec"
    VIDEO_DECODER="$OUT/vdec/video_decoder"
else
    step "5. VDEC given: $VIDEO_DECODER"
fi

step "6. the ego-motion probe (openvica eval video --ego-probe) on the same drives"
"$BIN/python" training/probe.py data.store="$OUT/train.zarr" data.val_store="$OUT/val.zarr" run.dir="$OUT/probe" \
    trainer.max_steps="${PROBE_STEPS:-3000}" optim.decay_steps=$((${PROBE_STEPS:-3000} - 100))

step "7. the bundle (8-frame context, the WM's training window; wavefront 2), into the package with 8 held-out clips"
"$BIN/openvica" bundle create --tokenizer "$TOKENIZER" --world-model "$OUT/wm/world_model" \
    --video-decoder "$VIDEO_DECODER" --action-conditioned --top-k "$TOP_K" --temperature "$TEMPERATURE" \
    --context-frames 8 --wavefront 2 --out "$OUT/bundle"
"$BIN/python" -m openvica_sim.embedded --bundle "$OUT/bundle" --heldout "$OUT/val.zarr" --clips 8 \
    --probe "$OUT/probe/ego_probe" --pictures docs
step "done: $OUT/bundle and $OUT/probe, shipped in openvica_sim/embedded/, pictures in docs/ (step times: $TIMES)"
