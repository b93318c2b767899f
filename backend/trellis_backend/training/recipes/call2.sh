#!/usr/bin/env bash
# GPU job 2 of the embedded model (one H100, 16 cores): uses job 1's SS VAE, SS flow and image
# encoder (carried in .cache/embedded_training/call1), then
#   data generation (14 workers) | slat_vae (encoder exported + frozen after FREEZE_S, decoders go on)
#   | slat_flow (starts when the encoder is ready; text + image with the frozen image encoder)
#   -> assemble both pipeline folders -> evaluation (60 held-out prompts + 60 held-out images)
# Results: $OUT/{slat_vae,slat_flow,eval,logs}.tar
set -u
export PYTHONPATH=backend:kernels PYTHONUNBUFFERED=1
W=${WORK:-/tmp/trellis_train}
C1=.cache/embedded_training/call1
OBJECTS=${OBJECTS:-1600}
LATTICE_OBJECTS=${LATTICE_OBJECTS:-1000}
SLAT_VAE_S=${SLAT_VAE_S:-220}
FREEZE_S=${FREEZE_S:-95}
SLAT_FLOW_S=${SLAT_FLOW_S:-150}
T0=$(date +%s)
mkdir -p "$W" "$OUT"
python3 -m trellis_backend.training datagen --out "$W/data" --objects "$OBJECTS" --lattice-objects "$LATTICE_OBJECTS" \
    --views 2 --workers 14 > "$W/datagen.log" 2>&1 &
DG=$!
python3 -m trellis_backend.training slat_vae --out "$W/slat_vae" --data "$W/data" --wait-data \
    --objects "$LATTICE_OBJECTS" --max-seconds "$SLAT_VAE_S" --freeze-encoder-after "$FREEZE_S" --steps 1000000 \
    --batch 8 --mesh-batch 4 --save-every 100000 > "$W/slat_vae.log" 2>&1 &
PB=$!
python3 -m trellis_backend.training slat_flow --out "$W/slat_flow" --data "$W/data" --wait-data --objects "$OBJECTS" \
    --slat-vae "$W/slat_vae" --wait-for "$W/slat_vae/encoder_ready" --max-seconds "$SLAT_FLOW_S" --steps 1000000 \
    --batch 24 --lr 4e-4 --save-every 100000 --image-encoder "$C1/ss_flow/ckpts/image_encoder" --freeze-image-encoder \
    --text-encoder .cache/embedded_training/minilm > "$W/slat_flow.log" 2>&1 &
PA=$!
while kill -0 $PA 2>/dev/null || kill -0 $PB 2>/dev/null; do
  sleep 15
  echo "[$(( $(date +%s) - T0 ))s] $(tail -n1 "$W/datagen.log" 2>/dev/null | cut -c1-60) | A: $(tail -n1 "$W/slat_flow.log" | cut -c1-200) | B: $(tail -n1 "$W/slat_vae.log" | cut -c1-260)"
done
kill $DG 2>/dev/null
echo "[$(( $(date +%s) - T0 ))s] training done"
python3 -m trellis_backend.training assemble --out "$W/pipe/trellis-embedded" --image-out "$W/pipe/trellis-embedded-image" \
    --ss-vae "$C1/ss_vae" --slat-vae "$W/slat_vae" --ss-flow "$C1/ss_flow" --slat-flow "$W/slat_flow" \
    --image-encoder "$C1/ss_flow/ckpts/image_encoder" --shared-prefix embedded/trellis-embedded/
timeout "${EVAL_S:-150}" python3 -m trellis_backend.training.evaluate --model "$W/pipe/trellis-embedded" \
    --image-model "$W/pipe/trellis-embedded-image" --n 60 --batch 30 --device cuda --out "$W/eval" 2>&1 | tail -40
echo "[$(( $(date +%s) - T0 ))s] evaluated"
cd "$W"
tar cf "$OUT/slat_vae.tar" slat_vae/ckpts slat_vae/latent_stats.json slat_vae/log.jsonl
tar cf "$OUT/slat_flow.tar" slat_flow/ckpts slat_flow/log.jsonl
tar cf "$OUT/eval.tar" eval
tar cf "$OUT/logs.tar" *.log
ls -la "$OUT"
echo "[$(( $(date +%s) - T0 ))s] packed"
