#!/usr/bin/env bash
# Reproduce the trained zoo checkpoints in edgekit/models/weights/ (CPU only, ~1-2 h on
# 2 cores). Each run is deterministic for a given seed and thread count; --stop-at is the
# step at which the shipped checkpoint was taken (the LR schedule spans --steps).
#   scripts/train_zoo.sh [WORKDIR]        (default /tmp/edgekit-zoo)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
WORK=${1:-/tmp/edgekit-zoo}
DATA=$WORK/synth2h
mkdir -p "$WORK"

# 2 hours of espeak-ng speech (4,800 utterances: train 3,719 / dev 584 / test 497)
$PY -m edgekit.cli.main data synth -o "$DATA" --hours 2 --seed 0

train() {  # name steps stop_at lr
  local cmd=(-m edgekit.cli.main train "$1" --data "$DATA" --size tiny --steps "$2"
             --stop-at "$3" --lr "$4" --warmup 300 --eval-every 500 --batch-size 16
             --threads 1 --seed 0 -o "$WORK/$1-tiny.pt")
  $PY "${cmd[@]}"
  $PY -m edgekit.train.ship "$WORK/$1-tiny.pt" --data "$DATA" --command "edgekit ${cmd[*]:2}"
}

train conformer 4000 "${CONFORMER_STOP:-4000}" 2e-3
train rnnt 4000 "${RNNT_STOP:-2500}" 1.5e-3
