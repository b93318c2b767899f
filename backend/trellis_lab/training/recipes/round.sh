#!/usr/bin/env bash
# One resumable training round of the embedded model on one GPU machine (< 10 min per call).
# Call it again on the same (warm) machine to continue: data, states and logs stay in $WORK.
#
#   data generation (first round only, DG_WORKERS processes, streamed to shards)
#   | ss_flow:   stage-1 flow (text + image; image encoder from job 1, frozen, tokens cached)
#   | slat_vae:  Gaussian / mesh (cropped boxes) / radiance-field decoders on the PCA encoder
#   | slat_flow: stage-2 flow (text + image) on the PCA encoder's latents
#   -> assemble both pipeline folders -> evaluation (held-out prompts + held-out images)
#
# Inputs carried in .cache/embedded_training: minilm/ (compact text encoder), call1/ (SS VAE,
# stage-1 flow start, image encoder: job 1 = call1.sh), pca_slat/ (`training pca-encoder`).
# Results in $OUT: {ss_flow,slat_flow,slat_vae}.tar (checkpoints + logs), eval.tar, logs.tar.
# Usage (repo root): OUT=/some/dir [TRAIN_S=420] bash backend/trellis_lab/training/recipes/round.sh
# Small settings for a CPU dry run: OBJECTS=64 LATTICE_OBJECTS=32 TRAIN_S=30 EVAL_N=2 DEVICE=cpu
# Continuing on a fresh machine from an earlier round's results (carried in .cache/embedded_training):
#   SS_FLOW_INIT / SLAT_FLOW_INIT: light states (`training light-state`, or built from the exported
#   checkpoints), SLAT_INIT: a slat_vae stage dir (ckpts/ + latent_stats.json) for the decoders.
# FROM_FOLDER=models/trellis-embedded: continue from an assembled folder (`training init-from-folder`:
#   SS VAE, image encoder, decoders and both flows' light states; only the MiniLM copy is carried).
# SLAT_FLOW_S=0 keeps the stage-2 flow of SLAT_FLOW_DIR (default: this round dir's, from an earlier call).
# SLAT_VAE_S=0 keeps the decoders of SLAT_INIT instead of training them.
# SS_FLOW_S=0 keeps the stage-1 flow of SS_FLOW_DIR (a stage dir with ckpts/) instead of training it:
# three trainers time-slice one GPU, and the launch-bound stage-2 ones lose most when they share it with
# the compute-bound stage-1 flow.
set -u
export PYTHONPATH=backend:kernels PYTHONUNBUFFERED=1 TRELLIS_CONV_BACKEND=torch  # the gather-GEMM conv, autograd + bf16
W=${WORK:-/tmp/trellis_train}
C=.cache/embedded_training
OBJECTS=${OBJECTS:-3200}
LATTICE_OBJECTS=${LATTICE_OBJECTS:-1600}
TRAIN_S=${TRAIN_S:-420}
SLAT_VAE_S=${SLAT_VAE_S:-$TRAIN_S}
EVAL_N=${EVAL_N:-60}
EVAL_S=${EVAL_S:-120}
EVAL_START=${EVAL_START:-0}  # 1000: validation records (choose rounds there; 0 = the reported held-out items)
EVAL_IMAGES=${EVAL_IMAGES:-1}  # 0: text prompts only (stage-2 rounds: images' category and IoU come from stage 1)
DG_WORKERS=${DG_WORKERS:-11}
SS_BATCH=${SS_BATCH:-128}
SLAT_BATCH=${SLAT_BATCH:-32}
DEVICE=${DEVICE:-cuda}
MIN_OBJ=$(( OBJECTS < 256 ? OBJECTS : 256 ))
T0=$(date +%s)
if [ -n "${FROM_FOLDER:-}" ]; then  # continue from an assembled pipeline folder (e.g. the shipped models/)
  [ -d "$W/init" ] || python3 -m trellis_lab.training init-from-folder --folder "$FROM_FOLDER" --out "$W/init" || exit 1
  SS_VAE_DIR=${SS_VAE_DIR:-$W/init/ss_vae}
  IMAGE_ENCODER=${IMAGE_ENCODER:-$W/init/image_encoder}
  SLAT_INIT=${SLAT_INIT:-$W/init/slat_vae}
  SS_FLOW_INIT=${SS_FLOW_INIT:-$W/init/ss_flow_light.pt}
  SLAT_FLOW_INIT=${SLAT_FLOW_INIT:-$W/init/slat_flow_light.pt}
fi
SS_VAE_DIR=${SS_VAE_DIR:-$C/call1/ss_vae}
IMAGE_ENCODER=${IMAGE_ENCODER:-$C/call1/ss_flow/ckpts/image_encoder}
SLAT_INIT=${SLAT_INIT:-$C/pca_slat}
SS_FLOW_S=${SS_FLOW_S:-$TRAIN_S}
SS_FLOW_DIR=${SS_FLOW_DIR:-$W/ss_flow}
SLAT_FLOW_S=${SLAT_FLOW_S:-$TRAIN_S}
SLAT_FLOW_DIR=${SLAT_FLOW_DIR:-$W/slat_flow}
SLAT_VAE_DIR=$W/slat_vae
[ "$SLAT_VAE_S" = 0 ] && SLAT_VAE_DIR=$SLAT_INIT  # decoders kept as they are
mkdir -p "$W/ss_flow" "$W/slat_flow" "$OUT"
[ "$SS_FLOW_S" = 0 ] || [ -f "$W/ss_flow/state.pt" ] || cp "${SS_FLOW_INIT:-$C/call1/ss_flow_light_state.pt}" "$W/ss_flow/state.pt"
[ -f "$W/slat_flow/state.pt" ] || [ -z "${SLAT_FLOW_INIT:-}" ] || cp "$SLAT_FLOW_INIT" "$W/slat_flow/state.pt"
if [ ! -f "$W/data_done" ]; then
  ( python3 -m trellis_lab.training datagen --out "$W/data" --objects "$OBJECTS" \
        --lattice-objects "$LATTICE_OBJECTS" --views 4 --workers "$DG_WORKERS" && touch "$W/data_done" ) \
      >> "$W/datagen.log" 2>&1 &
fi
P1=0
if [ "$SLAT_VAE_S" != 0 ]; then
RESUME=()
[ -f "$W/slat_vae/state.pt" ] && RESUME=(--resume)
python3 -m trellis_lab.training slat_vae --out "$W/slat_vae" --data "$W/data" --wait-data --objects "$LATTICE_OBJECTS" \
    --min-objects "$MIN_OBJ" --parts gs,rf,mesh --init-from "$SLAT_INIT" --mesh-crop 8 --mesh-batch 6 --batch 12 \
    --warmup 30 --max-seconds "$SLAT_VAE_S" --steps 1000000 --save-every 100000 --device "$DEVICE" "${RESUME[@]}" \
    >> "$W/slat_vae.log" 2>&1 &
P1=$!
fi
P2=0
if [ "$SLAT_FLOW_S" != 0 ]; then
RESUME=()
[ -f "$W/slat_flow/state.pt" ] && RESUME=(--resume)
python3 -m trellis_lab.training slat_flow --out "$W/slat_flow" --data "$W/data" --wait-data --objects "$OBJECTS" \
    --min-objects "$MIN_OBJ" --slat-vae "$SLAT_INIT" --max-seconds "$SLAT_FLOW_S" --steps 1000000 --batch "$SLAT_BATCH" \
    --lr "${SLAT_LR:-4e-4}" --warmup 50 --ema "${SLAT_EMA:-0.999}" --t-mean "${SLAT_T_MEAN:-1.0}" --save-every 100000 --image-encoder "$IMAGE_ENCODER" \
    --freeze-image-encoder --text-encoder "$C/minilm" --device "$DEVICE" "${RESUME[@]}" >> "$W/slat_flow.log" 2>&1 &
P2=$!
fi
P3=0
if [ "$SS_FLOW_S" != 0 ]; then
python3 -m trellis_lab.training ss_flow --out "$W/ss_flow" --data "$W/data" --wait-data --objects "$OBJECTS" \
      --min-objects "$MIN_OBJ" --ss-vae "$SS_VAE_DIR" --resume --max-seconds "$SS_FLOW_S" --steps 1000000 \
      --batch "$SS_BATCH" --lr "${SS_LR:-3e-4}" --warmup 50 --ema 0.999 --save-every 100000 \
      --image-encoder "$IMAGE_ENCODER" --freeze-image-encoder --text-encoder "$C/minilm" \
      --device "$DEVICE" >> "$W/ss_flow.log" 2>&1 &
  P3=$!
fi
running() {  # any of these trainer pids (0 = not started) still alive
  for p in "$@"; do [ "$p" != 0 ] && kill -0 "$p" 2>/dev/null && return 0; done
  return 1
}
while running $P1 $P2 $P3; do
  sleep 20
  echo "[$(( $(date +%s) - T0 ))s] $(tail -n1 "$W/datagen.log" 2>/dev/null | cut -c1-50)"
  for f in ss_flow slat_flow slat_vae; do [ -f "$W/$f.log" ] && echo "   $f: $(tail -n1 "$W/$f.log" | cut -c1-300)"; done
done
echo "[$(( $(date +%s) - T0 ))s] training done"
python3 -m trellis_lab.training assemble --out "$W/pipe/trellis-embedded" --image-out "$W/pipe/trellis-embedded-image" \
    --ss-vae "$SS_VAE_DIR" --slat-vae "$SLAT_VAE_DIR" --ss-flow "$SS_FLOW_DIR" --slat-flow "$SLAT_FLOW_DIR" \
    --image-encoder "$IMAGE_ENCODER" --shared-prefix embedded/trellis-embedded/
rm -rf "$W/eval"
timeout "$EVAL_S" python3 -m trellis_lab.training.evaluate --model "$W/pipe/trellis-embedded" \
    --image-model "$([ "$EVAL_IMAGES" = 0 ] && echo none || echo "$W/pipe/trellis-embedded-image")" --n "$EVAL_N" --start "$EVAL_START" --batch 30 --device "$DEVICE" --out "$W/eval" 2>&1 \
    | grep -v Warning | tail -30
echo "[$(( $(date +%s) - T0 ))s] evaluated"
cd "$W"
[ "$SLAT_VAE_S" != 0 ] && tar cf "$OUT/slat_vae.tar" slat_vae/ckpts slat_vae/latent_stats.json slat_vae/log.jsonl
[ "$SLAT_FLOW_S" != 0 ] && tar cf "$OUT/slat_flow.tar" slat_flow/ckpts slat_flow/log.jsonl
[ "$SS_FLOW_S" != 0 ] && tar cf "$OUT/ss_flow.tar" ss_flow/ckpts/ss_flow_embedded_dit.json ss_flow/ckpts/ss_flow_embedded_dit.safetensors ss_flow/log.jsonl
[ -d eval ] && tar cf "$OUT/eval.tar" eval
tar cf "$OUT/logs.tar" *.log
ls -la "$OUT"
echo "[$(( $(date +%s) - T0 ))s] packed"
