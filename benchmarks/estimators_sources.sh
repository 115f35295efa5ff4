#!/usr/bin/env bash
# The two-source experiment of docs/estimators.md ("Ranking sources"), from nothing:
#   1. train the source network on the geometric classes twice (6 epochs: "good"; 1: "weak"),
#   2. export both as weights files (runs/estimators-sources-files/{good,weak}.safetensors + .json),
#   3. run configs/estimators-sources.yaml (the target's networks and the estimators), and
#   4. report it (the source ranking is in the report and in results_source_ranking.csv).
# Each step runs under /usr/bin/time -v (its output, and uptime before it, in
# runs/estimators-sources-files/*.time and *.load). A step already done is resumed: it trains nothing.
# Usage: benchmarks/estimators_sources.sh   (from the repository root; TB=path/to/transferbench)
set -euo pipefail
TB=${TB:-transferbench}
FILES=runs/estimators-sources-files
mkdir -p "$FILES"
timed() { local name=$1; shift; uptime > "$FILES/$name.load"; /usr/bin/time -v "$@" 2> "$FILES/$name.time"; }
timed pretrain-good "$TB" run configs/estimators-sources-pretrain.yaml --out runs/estimators-sources-good
timed pretrain-weak "$TB" run configs/estimators-sources-pretrain.yaml --set train.epochs=1 \
  --out runs/estimators-sources-weak
"$TB" export runs/estimators-sources-good --treatment baseA --out "$FILES/good.safetensors" --force
"$TB" export runs/estimators-sources-weak --treatment baseA --out "$FILES/weak.safetensors" --force
timed run "$TB" run configs/estimators-sources.yaml
timed report "$TB" report runs/estimators-sources
