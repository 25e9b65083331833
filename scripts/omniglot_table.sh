#!/usr/bin/env bash
# One table of every learner on the same fixed Omniglot test episodes (bundled minimal split:
# train on the `minimal/train` alphabets, score on the unseen `minimal/test` alphabets).
#
#   bash scripts/omniglot_table.sh                 # STEPS=400 per set learner, 600 episodes
#   STEPS=2000 EPISODES=1000 bash scripts/omniglot_table.sh
#   EXTRA_metanet=episodes.batch_size=16 bash scripts/omniglot_table.sh   # per-learner overrides
#   MANN_RUN=runs/mann LSTM_RUN=runs/lstm bash scripts/omniglot_table.sh   # add trained MANN/LSTM runs
#
# Each set learner trains with its experiments/omniglot/<name>.yaml for $STEPS steps, then
# `metamem eval` scores all runs on the same protocol (same seed => same episodes, checked by
# the fingerprint in the results): 5-way 1-shot, 5-way 5-shot, and 20-way 1-shot. Learners
# built for a fixed number of ways (MAML, MetaNet, MANN, LSTM) join the 5-way rows only.
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=${STEPS:-400}
EPISODES=${EPISODES:-600}
OUT=${OUT:-runs/table}
THREADS=${THREADS:-1}
LEARNERS=${LEARNERS:-"protonet matching matching_fce memory_matching metanet maml linear_probe"}
# learners whose output does not fix the number of ways (MAML's head, MetaNet's softmax and
# MANN/LSTM's label units are built for the training n_way: a 20-way row needs a 20-way run)
ANY_WAY=${ANY_WAY:-"protonet matching matching_fce memory_matching linear_probe"}
mkdir -p "$OUT"
# per-learner overrides: the configs with 16 episodes of 5-way 1-shot 15-query per step cost
# about 3 s/step on one CPU thread, so the default table budget gives them 4 episodes per step
: "${EXTRA_matching=episodes.batch_size=4}"
: "${EXTRA_matching_fce=episodes.batch_size=4}"
: "${EXTRA_memory_matching=episodes.batch_size=4}"
: "${EXTRA_metanet=episodes.batch_size=4}"

for name in $LEARNERS; do
  if [ -f "$OUT/$name/checkpoints/last.pt" ]; then
    echo "== $name: already trained in $OUT/$name"
    continue
  fi
  echo "== training $name for $STEPS steps"
  start=$(date +%s)
  extra_var="EXTRA_$name"
  # shellcheck disable=SC2086  # the extra overrides are words
  metamem train "experiments/omniglot/$name.yaml" "train.steps=$STEPS" train.val_every=100000 ${!extra_var:-} \
    train.log_every=50 device=cpu --out "$OUT/$name" --overwrite --no-eval --no-progress \
    --threads "$THREADS"
  echo "   $name trained in $(( $(date +%s) - start )) s"
done

runs=""
for name in $LEARNERS; do runs="$runs $OUT/$name"; done
five_way_runs="$runs ${MANN_RUN:-} ${LSTM_RUN:-}"

# All learners, 5-way, 1 and 5 shots, 15 queries per class.
metamem eval $five_way_runs eval.split=test eval.n_way=5 "eval.k_shot=[1,5]" eval.n_query=15 \
  "eval.episodes=$EPISODES" eval.seed=2026 eval.protocol=set eval.batch_size=50 device=cpu \
  --out "$OUT/eval_5way" --no-progress
# Learners that take any number of ways, 20-way 1-shot, 5 queries per class.
any_runs=""
for name in $ANY_WAY; do any_runs="$any_runs $OUT/$name"; done
metamem eval $any_runs eval.split=test eval.n_way=20 eval.k_shot=1 eval.n_query=5 \
  "eval.episodes=$EPISODES" eval.seed=2026 eval.protocol=set eval.batch_size=50 device=cpu \
  --out "$OUT/eval_20way" --no-progress
echo "tables: $OUT/eval_5way/results.md $OUT/eval_20way/results.md"
