#!/usr/bin/env bash
# Issue 21: the full-size rehearsal on a GPU — every job of the chosen tables at the paper's networks, batch sizes
# and resolutions, on stand-ins (random weights at the real shapes, a few images per class at the datasets' real
# resolutions): seconds per generated image / edit / optimizer step and peak GPU memory per job, into costs.json,
# which `diffcore plan --profile paper --costs costs.json` reads in place of its estimates.
#
# On the device machine (from the repository root; .whl carried as for h100-next.sh: diffusers, open_clip and
# their needs):
#   TABLES="7" bash benchmarks/rehearse-gpu.sh        # Table 7: 1 generated set + 8 ResNet-50 runs (~6-8 min)
#   TABLES="5" bash benchmarks/rehearse-gpu.sh        # Table 5: WRN-101-2 fine-tuning, 2 sets, 2 edited sets
#   TABLES="2 3 4 5 7" bash benchmarks/rehearse-gpu.sh  # all of them: hours, not one device call (paper-book.yml)
# It writes $OUT/rehearsal-<device>-<date>-costs.json and .log. Back here: copy them into benchmarks/ and run
#   python -m diffcore plan --profile paper --costs benchmarks/rehearsal-<device>-<date>-costs.json
# Budget (estimates, nothing measured yet): full-size weights written on the GPU ~2-3 min (SDXL UNet 2.6 B, CLIP,
# WRN, InstructPix2Pix 0.86 B; ~11 GB of files), torch.compile of the UNet ~2.5 min per generation job (the kit's
# CUDA default), generation ~0.35 s per attempt, a ResNet-50 epoch of 128 images at batch 16 a few seconds.
set -euo pipefail
TABLES=${TABLES-7}
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
day=$(date +%F)
gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -n 1 | tr ' ' '-' | tr -cd 'A-Za-z0-9-')
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/rehearsal-$gpu-$day-device.txt"
tables=()
for t in $TABLES; do tables+=(--table "$t"); done
python3 -m diffcore rehearse --out /tmp/rehearsal --size full --device cuda --no-book --keep-going "${tables[@]}" \
    2>&1 | tee "$OUT/rehearsal-$gpu-$day.log"
cp /tmp/rehearsal/costs.json "$OUT/rehearsal-$gpu-$day-costs.json"
python3 -m diffcore plan --profile paper --costs /tmp/rehearsal/costs.json "${tables[@]}" | tee "$OUT/rehearsal-$gpu-$day-plan.md"
