#!/usr/bin/env bash
# Smoke test of the whole pipeline on one thread: corpus + tokenizer (checked against the JS
# library the engine uses), 30 steps of the tiny preset with a stop/resume in the middle (the
# weights must equal an uninterrupted run's), export to a temp folder, and the engine's
# `webmoe inspect` on it. Run from anywhere; takes about a minute.
set -euo pipefail
cd "$(dirname "$0")/../.."  # repository root
PY=/usr/bin/python3  # Debian's interpreter, which has python3-torch and python3-numpy
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
DATA=tools/train/runs/data

if [ ! -f "$DATA/train.bin" ]; then
  $PY tools/train/prepare.py --out "$DATA"
fi
$PY tools/train/check_tokenizer.py "$DATA"

TRAIN="$PY tools/train/train.py --data $DATA --preset tiny --steps 30 --batch-size 8 --log-every 10 --eval-windows 8 --threads 1 --warmup 5"
$TRAIN --run "$TMP/straight"
$TRAIN --run "$TMP/resumed" --stop-after-minutes 0.0005 > /dev/null
$TRAIN --run "$TMP/resumed" --resume > /dev/null
$PY - "$TMP" <<'PYEOF'
import sys, torch
a = torch.load(f"{sys.argv[1]}/straight/state.pt")["model"]
b = torch.load(f"{sys.argv[1]}/resumed/state.pt")["model"]
diff = max((a[k] - b[k]).abs().max().item() for k in a)
assert diff == 0, f"resumed run differs from the straight one by {diff}"
print("smoke: resumed run is bit-identical to the uninterrupted one")
PYEOF

$PY tools/train/export.py --state "$TMP/straight/state.pt" --data $DATA --out "$TMP/export" --threads 1
$PY tools/train/test_fp8.py
npm run -s webmoe -- inspect "$TMP/export" | tee "$TMP/inspect.txt"
grep -q "tensors: all present, none unexpected" "$TMP/inspect.txt"
echo "smoke: OK"
