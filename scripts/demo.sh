#!/usr/bin/env bash
# The main job on the CPU: a short attention benchmark against this machine's
# measured ceilings, then the real model answering a prompt on that attention.
set -euo pipefail
build=${1:-build}
model=models/SmolLM2-135M-Instruct.Q4_1.gguf
echo "== longattn bench attention --quick (ratios are to ceilings measured in this run)"
"$build/longattn" bench attention --quick
echo
echo "== longattn run: $model"
"$build/longattn" run -m "$model" -p "The capital of France is" -n 24 --temp 0
echo
"$build/longattn" run -m "$model" --chat -p "In two sentences, why does attention cost grow quadratically with sequence length?" -n 96 --temp 0
