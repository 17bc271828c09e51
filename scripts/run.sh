#!/usr/bin/env bash
# Set up (if needed), then train the default EBM on the built-in 8-gaussians data, sample it with
# parallel tempering (so the chains cross between the eight modes) and evaluate it -> runs/default/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
OUT=${1:-runs/default}
if [ -f "$OUT/checkpoint.pt" ]; then  # run again: the finished run is kept (or an interrupted one completed)
    .venv/bin/ebmlab train --resume "$OUT"
else
    .venv/bin/ebmlab train --out "$OUT"
fi
# the trainer drew samples.png (data beside model samples); the sampler's picture is sampled.png
.venv/bin/ebmlab sample --energy "$OUT" --sampler pt --base mala --temperatures 8 --chains 200 \
    --steps 2000 --burn-in 500 --out "$OUT/sampled.npz" --plot "$OUT/sampled.png"
.venv/bin/ebmlab evaluate --energy "$OUT" --data heldout --log-partition quadrature
echo "Pictures and files are in $OUT/"
