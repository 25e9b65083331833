#!/usr/bin/env bash
# One command for a GPU machine (about 5-8 minutes on one H200-class GPU, well under 10):
#   1. the `gpu` test marker (CUDA/AMP training, same episodes and augmentation on CPU and GPU);
#   2. the sampler benchmark at batch 1024 (episodes/s and % of the bound; aim >= 1,000,000/s),
#      default and fused=True (compiled gather and hash);
#   3. MANN training-step and evaluation benchmarks on the GPU;
#   4. a short ProtoNet Conv-4 mini-ImageNet training with AMP (bf16, channels-last) that
#      prints episodes/s and the 5-way 1-/5-shot accuracy on 1,000 fixed test episodes.
# Logs go to $OUT (default gpu_check_out/), the ProtoNet run directory to $RUNS (default $OUT).
# Run on one H200 on 2026-12-04 in 235 s; figures in docs/benchmarks.md ("GPU check"), logs in
# results/gpu_check/2026-12-04/. MINI_SPLITS names a folder of train.csv/test.csv for a subset of
# the images (scripts/mini_imagenet_subset.py builds one that fits a small upload). The
# mini-ImageNet table's rows themselves (full splits, every learner, runs brought back) are
# scripts/gpu_kit.py.
#
#   bash scripts/gpu_check.sh                       # from the repository root
#   MINI_IMAGENET=/data/mini_imagenet OUT=/tmp/gc bash scripts/gpu_check.sh
#   python scripts/mini_imagenet_subset.py --out .devdata/mini   # then, on the GPU machine:
#   MINI_IMAGENET=.devdata/mini MINI_SPLITS=.devdata/mini bash scripts/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
OUT=${OUT:-gpu_check_out}
MINI=${MINI_IMAGENET:-../shared/data/mini_imagenet}
SPLITS=${MINI_SPLITS:-}   # a folder of train.csv/test.csv for a subset of the images (default: Ravi's)
RUNS=${RUNS:-$OUT}        # where the ProtoNet run directory goes
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
mkdir -p "$OUT"
$PY -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 'gpu_check: no CUDA device (torch.cuda.is_available() is False); nothing to check')" || exit 2
$PY -c "import torch; p = torch.cuda.get_device_properties(0); print(f'torch {torch.__version__}, CUDA {torch.version.cuda}, {p.name}, {p.total_memory / 2**30:.0f} GiB')" | tee "$OUT/device.txt"

status=0
step() {  # step NAME SECONDS CMD...: run with a time limit, log to $OUT/NAME.log, remember failures
  local name=$1 limit=$2; shift 2
  echo "== $name (limit ${limit}s)"
  local t0=$SECONDS
  timeout "$limit" "$@" 2>&1 | tee "$OUT/$name.log"
  local rc=${PIPESTATUS[0]}
  echo "== $name: rc=$rc, $((SECONDS - t0)) s"
  [ "$rc" -eq 0 ] || status=1
}

step pytest-gpu 240 $PY -m pytest -q -m gpu -rs -p no:cacheprovider
step sampler-b1024 240 $PY scripts/bench_sampler.py --device cuda --batch-size 1024 --no-baseline --seconds 6 --fused
step sampler-profile 60 $PY scripts/profile_sampler.py --device cuda --batch-size 1024 --rows 12
step mann-train-step 120 $PY scripts/bench_train_step.py --device cuda --batch 16 128 1024 --steps 10 --no-reference
step mann-eval 120 $PY scripts/bench_eval.py --device cuda --episodes 10000 --batch-size 1000 --protocol sequence
if [ -f "$MINI/train.zip" ] || [ -f "$MINI/mini-imagenet-cache-train.pkl" ] || [ -d "$MINI/images" ]; then
  step protonet-mini-amp 300 $PY -m metamem train experiments/mini_imagenet/protonet.yaml device=cuda \
    "data.options.root=$MINI" ${SPLITS:+"data.options.split_dir=$SPLITS"} episodes.n_way=20 episodes.k_shot=1 episodes.n_query=15 episodes.batch_size=8 \
    train.steps=1500 train.amp=true train.amp_dtype=bfloat16 train.channels_last=true \
    train.val_every=0 train.log_every=100 train.checkpoint_every=0 \
    eval.episodes=1000 "eval.k_shot=[1,5]" eval.n_way=5 eval.n_query=15 eval.batch_size=250 \
    --out "$RUNS/protonet_mini_amp" --overwrite --no-progress
  $PY - "$RUNS/protonet_mini_amp" <<'PYEOF' | tee "$OUT/protonet-summary.txt"
import json, sys
from pathlib import Path
run = Path(sys.argv[1])
lines = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines() if l.strip()]
train = [r for r in lines if "episodes_per_s" in r]
if train:
    r = train[-1]
    print(f"ProtoNet mini-ImageNet AMP bf16: step {r['step']}, {r['episodes_per_s']:,.0f} training episodes/s, "
          f"train acc {r.get('acc', float('nan')):.3f}")
for res in json.loads((run / "eval.json").read_text()):
    p, s = res["protocol"], res["scores"]["set"]
    print(f"  test {p['n_way']}-way {p['k_shot']}-shot: {100 * s['mean']:.2f} +- {100 * s['ci95']:.2f}% "
          f"({p['episodes']} episodes, {res['seconds']:.1f} s)")
PYEOF
else
  echo "== protonet-mini-amp: skipped, no mini-ImageNet at $MINI (set MINI_IMAGENET)"; status=1
fi
echo "gpu_check: $([ $status -eq 0 ] && echo all steps passed || echo some steps FAILED); logs in $OUT/"
exit $status
