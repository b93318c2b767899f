#!/usr/bin/env bash
# GPU job 3 of the embedded model (one H100, 16 cores, ~6 min). Inputs carried in
# .cache/embedded_training: minilm/ (compact text encoder), call1/ (SS VAE, SS flow, image
# encoder from job 1), pca_slat/ (the SLat encoder set to a PCA code + latent stats, built on
# CPU by `python -m trellis_backend.training pca-encoder`).
#   data generation (12 workers)
#   | slat_vae: Gaussian / mesh (cropped boxes) / radiance-field decoders on the fixed encoder
#   | slat_flow: text + image (frozen image encoder) on the fixed encoder's latents
#   | ss_flow: continues job 1's stage-1 flow (image encoder frozen)
#   -> assemble both pipeline folders -> evaluation (60 held-out prompts + 60 held-out images)
# Results: $OUT/{slat_vae,slat_flow,ss_flow,eval,logs}.tar
set -u
export PYTHONPATH=backend:kernels PYTHONUNBUFFERED=1
W=${WORK:-/tmp/trellis_train}
C=.cache/embedded_training
TRAIN_S=${TRAIN_S:-220}
T0=$(date +%s)
mkdir -p "$W/ss_flow" "$OUT"
cp "$C/call1/ss_flow_light_state.pt" "$W/ss_flow/state.pt"
python3 -m trellis_backend.training datagen --out "$W/data" --objects 1600 --lattice-objects 1000 --views 2 \
    --workers 12 > "$W/datagen.log" 2>&1 &
DG=$!
python3 -m trellis_backend.training slat_vae --out "$W/slat_vae" --data "$W/data" --wait-data --objects 1000 \
    --parts gs,rf,mesh --init-from "$C/pca_slat" --mesh-crop 8 --mesh-batch 6 --batch 12 --warmup 30 \
    --max-seconds "$TRAIN_S" --steps 1000000 --save-every 100000 > "$W/slat_vae.log" 2>&1 &
P1=$!
python3 -m trellis_backend.training slat_flow --out "$W/slat_flow" --data "$W/data" --wait-data --objects 1600 \
    --min-objects 256 --slat-vae "$C/pca_slat" --max-seconds "$TRAIN_S" --steps 1000000 --batch 24 --lr 4e-4 \
    --warmup 50 --save-every 100000 --image-encoder "$C/call1/ss_flow/ckpts/image_encoder" --freeze-image-encoder \
    --text-encoder "$C/minilm" > "$W/slat_flow.log" 2>&1 &
P2=$!
python3 -m trellis_backend.training ss_flow --out "$W/ss_flow" --data "$W/data" --wait-data --objects 1600 \
    --min-objects 256 --ss-vae "$C/call1/ss_vae" --resume --max-seconds $(( TRAIN_S - 20 )) --steps 1000000 \
    --batch 64 --lr 1.5e-4 --warmup 50 --save-every 100000 --image-encoder "$C/call1/ss_flow/ckpts/image_encoder" \
    --freeze-image-encoder --text-encoder "$C/minilm" > "$W/ss_flow.log" 2>&1 &
P3=$!
while kill -0 $P1 2>/dev/null || kill -0 $P2 2>/dev/null || kill -0 $P3 2>/dev/null; do
  sleep 15
  echo "[$(( $(date +%s) - T0 ))s] $(tail -n1 "$W/datagen.log" 2>/dev/null | cut -c1-50)"
  for f in slat_vae slat_flow ss_flow; do echo "   $f: $(tail -n1 "$W/$f.log" | cut -c1-330)"; done
done
kill $DG 2>/dev/null
echo "[$(( $(date +%s) - T0 ))s] training done"
python3 -m trellis_backend.training assemble --out "$W/pipe/trellis-embedded" --image-out "$W/pipe/trellis-embedded-image" \
    --ss-vae "$C/call1/ss_vae" --slat-vae "$W/slat_vae" --ss-flow "$W/ss_flow" --slat-flow "$W/slat_flow" \
    --image-encoder "$C/call1/ss_flow/ckpts/image_encoder" --shared-prefix embedded/trellis-embedded/
timeout "${EVAL_S:-110}" python3 -m trellis_backend.training.evaluate --model "$W/pipe/trellis-embedded" \
    --image-model "$W/pipe/trellis-embedded-image" --n 60 --batch 30 --device cuda --out "$W/eval" 2>&1 | tail -40
echo "[$(( $(date +%s) - T0 ))s] evaluated"
cd "$W"
tar cf "$OUT/slat_vae.tar" slat_vae/ckpts slat_vae/latent_stats.json slat_vae/log.jsonl
tar cf "$OUT/slat_flow.tar" slat_flow/ckpts slat_flow/log.jsonl
tar cf "$OUT/ss_flow.tar" ss_flow/ckpts/ss_flow_embedded_dit.json ss_flow/ckpts/ss_flow_embedded_dit.safetensors ss_flow/log.jsonl
tar cf "$OUT/eval.tar" eval
tar cf "$OUT/logs.tar" *.log
ls -la "$OUT"
echo "[$(( $(date +%s) - T0 ))s] packed"
