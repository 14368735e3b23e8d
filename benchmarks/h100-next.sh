#!/usr/bin/env bash
# Issue 7: the GPU measurements still missing, as prepared device calls (about 9-10 minutes on one H100 in all).
#
# What it measures, side by side in each run (random weights at the paper's sizes, bf16):
#   1. generation, batch 32: stock pipeline (one image, then batch 32) vs diffcore's exact path, make_counterparts
#      itself (what `diffcore generate` runs: background PNG writing, sources decoded during generation), and the
#      opt-in step cache at interval 2 (DeepCache), with its image change vs the stock images;
#      and the regional compile (transformer blocks only) beside the full one, compile time included;
#   2. training, Eq. (9) overhead at batch 16/32/64 with loading, ResNet-50 224 px: pil vs device vs resident.
#
# On the device machine (from the repository root; .whl carried: diffusers, open_clip and their needs):
#   bash benchmarks/h100-next.sh            # both parts in one call (~9-10 min: too close to a call's 10-min cap)
#   PART=gen bash benchmarks/h100-next.sh   # generation alone (~7-8 min, timeout_s 560), then
#   PART=loader bash benchmarks/h100-next.sh  # training loaders alone (~2 min), on the same warm machine
# Each writes $OUT/h100-<date>-*.json and .log.
# Back here: copy them into benchmarks/, `python -m diffcore.bench --report benchmarks/h100-<date>-gen.json` for the
# tables, add the files and their sections to RENDERED in tests/test_benchmark_docs.py.
# Budget (estimates from the first session's compile and run times): SDXL build + FLOP count ~40 s, stock b1 + b32
# ~30 s, full compile ~150 s, timed + loop ~50 s, regional variant ~60 s, step-cache rebuild + compile of the full
# and shallow passes ~150 s, loader ~90 s. STEP_CACHE="" or REGIONAL="" drop a variant.
set -euo pipefail
PART=${PART-all}
STEP_CACHE=${STEP_CACHE-2}
REGIONAL=${REGIONAL---regional}
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
day=$(date +%F)
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/h100-$day-device.txt"
if [ "$PART" != loader ]; then
    python3 -m diffcore.bench generation --gen-batch 32 --one-at-a-time 1 --loop-batches 3 $REGIONAL \
        ${STEP_CACHE:+--step-cache $STEP_CACHE} --out "$OUT/h100-$day-gen.json" 2>&1 | tee "$OUT/h100-$day-gen.log"
    python3 -m diffcore.bench --report "$OUT/h100-$day-gen.json" | tee "$OUT/h100-$day-gen.md"
fi
if [ "$PART" != gen ]; then
    python3 -m diffcore.bench loader --amp --workers 12 --train-steps 20 \
        --out "$OUT/h100-$day-loader.json" 2>&1 | tee "$OUT/h100-$day-loader.log"
    python3 -m diffcore.bench --report "$OUT/h100-$day-loader.json" | tee "$OUT/h100-$day-loader.md"
fi
