#!/usr/bin/env bash
# The embedded default's recipe (issue 7): the synthetic world -> Zarr -> TOK+DEC, WM, VDEC -> the bundle shipped
# in openvica_sim/embedded/. Every step is this project's own command; rerunning resumes (finished steps are
# skipped, training runs continue from their last checkpoint).
#
#   make embedded                      # = bash training/embedded.sh, on a 2-core CPU about two hours
#   OUT=/tmp/emb bash training/embedded.sh
#   TOKENIZER=openvica_sim/embedded/bundle/tokenizer bash training/embedded.sh   # keep a trained TOK+DEC (skips 2-3)
set -euo pipefail
OUT=${OUT:-runs/embedded}
BIN=${BIN:-.venv/bin}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
TOP_K=${TOP_K:-100}    # the bundle's sampling default (see the README: measured against the continuation)
TIMES="$OUT/times.txt"; mkdir -p "$OUT"
step() { echo "== $(date +%T) $*" >&2; echo "$(date +%s) $*" >> "$TIMES"; }

step "1. the synthetic world in BDD100K's layout: 96 training and 12 held-out drives of 10 s"
[ -f "$OUT/bdd/.train-done" ] || { "$BIN/openvica" synthetic bdd100k --out "$OUT/bdd" --split train --videos 96 \
    --seconds 10 --seed 0 && touch "$OUT/bdd/.train-done"; }
[ -f "$OUT/bdd/.val-done" ] || { "$BIN/openvica" synthetic bdd100k --out "$OUT/bdd" --split val --videos 12 \
    --seconds 10 --seed 1 && touch "$OUT/bdd/.val-done"; }

if [ -z "${TOKENIZER:-}" ]; then
    step "2. frames for TOK+DEC training (the random tokenizer's tokens are not used)"
    [ -d "$OUT/random-bundle" ] || "$BIN/openvica" bundle random --preset tiny --out "$OUT/random-bundle" --seed 0
    "$BIN/openvica" data ingest --bdd-root "$OUT/bdd" --split train --out "$OUT/frames.zarr" \
        --bundle "$OUT/random-bundle" --store-frames

    step "3. TOK+DEC"
    "$BIN/python" training/tok.py +experiment=embedded_tok data.store="$OUT/frames.zarr" run.dir="$OUT/tok"
else
    step "2-3. TOK+DEC given: $TOKENIZER"
    [ -d "$OUT/tok/tokenizer" ] || { mkdir -p "$OUT/tok" && cp -r "$TOKENIZER" "$OUT/tok/tokenizer"; }
fi

step "4. tokens of the trained TOK, training and held-out drives (with frames, for VDEC and evaluation)"
for split in train val; do
    "$BIN/openvica" data ingest --bdd-root "$OUT/bdd" --split $split --out "$OUT/tokens-$split.zarr" \
        --tokenizer "$OUT/tok/tokenizer" --store-frames
done

step "5. WM"
"$BIN/python" training/wm.py +experiment=embedded_wm data.store="$OUT/tokens-train.zarr" run.dir="$OUT/wm"

step "6. VDEC"
"$BIN/python" training/vdec.py +experiment=embedded_vdec data.store="$OUT/tokens-train.zarr" \
    model.tokenizer.init="$OUT/tok/tokenizer" run.dir="$OUT/vdec"

step "7. the bundle, and into the package with 8 held-out seed clips"
"$BIN/openvica" bundle create --tokenizer "$OUT/tok/tokenizer" --world-model "$OUT/wm/world_model" \
    --video-decoder "$OUT/vdec/video_decoder" --top-k "$TOP_K" --out "$OUT/bundle"
"$BIN/python" -m openvica_sim.embedded --bundle "$OUT/bundle" --heldout "$OUT/tokens-val.zarr" --clips 8

step "8. the ego-motion probe (openvica eval video --ego-probe): the same drives rendered straight at the model's view"
for split in train val; do
    [ "$split" = train ] && args="--drives 96 --seed 0" || args="--drives 12 --seed 1"
    [ -f "$OUT/probe-$split.zarr/index.json" ] || "$BIN/openvica" synthetic store --out "$OUT/probe-$split.zarr" \
        --seconds 10 --split $split --bundle "$OUT/bundle" $args
done
"$BIN/python" training/probe.py data.store="$OUT/probe-train.zarr" data.val_store="$OUT/probe-val.zarr" \
    run.dir="$OUT/probe" trainer.max_steps=4000 optim.decay_steps=3900
mkdir -p openvica_sim/embedded/ego_probe && cp "$OUT/probe/ego_probe/"* openvica_sim/embedded/ego_probe/
step "done: $OUT/bundle and $OUT/probe, shipped in openvica_sim/embedded/ (step times: $TIMES)"
