#!/usr/bin/env bash
# Set up (if needed), then train the default EBM on the built-in 8-gaussians data and
# write its pictures, samples and evaluation to runs/default/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
OUT=${1:-runs/default}
.venv/bin/ebmlab train --out "$OUT"
.venv/bin/ebmlab sample --energy "$OUT" --sampler mala --chains 2000 --steps 200 --burn-in 200 \
    --out "$OUT/samples.npz" --plot "$OUT/samples.png"
.venv/bin/ebmlab evaluate --energy "$OUT" --data 8gaussians --log-partition quadrature
echo "Pictures and files are in $OUT/"
