#!/usr/bin/env bash
# One pass over every CPU benchmark the open issues name, run alone on a
# quiet machine (nothing else running: a build beside it makes the figures
# wrong). JSON lines per part in $OUT (default bench-out/), a log on stdout.
#   bench/cpu-pass.sh            (after make build and scripts/get-model.sh)
# Environment: LONGATTN (build/longattn), MODEL, OUT, PARTS (space-separated
# subset of the part names below), LLAMA_PY (the venv Python with llama_cpp),
# PREFILL_SPARSE (the --sparse choices the prefill part times; CHOICE@FILE
# adds --sparse-heads FILE, a per-head coverage file).
set -u
cd "$(dirname "$0")/.."
B=${LONGATTN:-build/longattn}
M=${MODEL:-models/SmolLM2-135M-Instruct.Q4_1.gguf}
OUT=${OUT:-bench-out}
PY=${LLAMA_PY:-$HOME/.cache/longattn/venv-llama/bin/python}
mkdir -p "$OUT"
want() { [ -z "${PARTS:-}" ] || [[ " $PARTS " == *" $1 "* ]]; }
run() {
  local name=$1; shift
  want "$name" || return 0
  echo "== $name $(date +%T): $*"
  "$@" > "$OUT/$name.jsonl" 2> "$OUT/$name.err"
  echo "   rc=$? $(date +%T)"
}
run attention      "$B" bench attention --L 4096 --D 128 --causal 0,1 --dtype f32,bf16 --pass fwd,bwd --json
run attention_avx2 env LONGATTN_SIMD=avx2 "$B" bench attention --L 4096 --D 128 --causal 0 --dtype f32 --pass fwd,bwd --json
run decode         "$B" bench decode --dtype f32,f16,bf16 --L 8192,32768 --json
run kvquant        "$B" bench kvquant --L 8192,32768 --json
run kvquant_model  "$B" bench kvquant --L 8192 --H 9 --Hkv 3 --D 64 --json
run matmul         "$B" bench matmul --json
run sparse         "$B" bench sparse --L 32768 --json
run linear16k      "$B" bench linear --op all --L 4096,16384 --H 8 --D 128 --pass fwd,bwd --json --budget 60
run linear_gla     "$B" bench linear --decay channel --L 4096,16384 --H 8 --D 128 --pass fwd --json
run ggml_mixers    bench/ggml-mixers-peer.sh 2 4096,16384 gla,gated_delta,mamba
run linear_mamba   "$B" bench linear --op mamba --L 4096,16384 --pass fwd --json
run linear_gdelta  "$B" bench linear --op gated_delta --L 4096,16384 --H 8 --D 128 --pass fwd --json
run linear_decode  "$B" bench linear --op all --pass decode --H 8 --D 128 --json
run sweep          "$B" bench linear --op all --L 1024,4096,16384,65536,262144,1048576 --H 2 --D 128 --pass fwd --json --budget 60
# The same sweep with the caches evicted before every timed run: the short
# rows then read their inputs from memory as the 1M row must.
run sweep_cold     "$B" bench linear --op all --L 4096,65536,1048576 --H 2 --D 128 --pass fwd --json --budget 60 --cold
run ppl_dense      "$B" ppl -m "$M" -f bench/data/ppl-text.txt --ctx 8192 --threads 2
run ppl_topk8      "$B" ppl -m "$M" -f bench/data/ppl-text.txt --ctx 8192 --threads 2 --sparse topk:8
run ppl_topk32d6   "$B" ppl -m "$M" -f bench/data/ppl-text.txt --ctx 8192 --threads 2 --sparse topk:32,dense-layers=6
run ppl_probe      "$B" ppl -m "$M" -f bench/data/ppl-text.txt --ctx 8192 --threads 2 --sparse topk:0.995,probe=4,dense-layers=2
# Whole-model prefill of an 8K-token prompt as `run` does it (logits for the
# last token only), dense and sparse taking turns, twice each.
if want prefill; then
  head -c 34000 bench/data/ppl-text.txt > "$OUT/text8k.txt"
  for rep in 1 2; do
    for s in ${PREFILL_SPARSE:-none static:1 topk:8 topk:0.995,probe=4,dense-layers=2 topk:32,dense-layers=6}; do
      echo "== prefill $s #$rep $(date +%T)"
      heads=()
      [[ "$s" == *@* ]] && heads=(--sparse-heads "${s#*@}")
      "$B" run -m "$M" -f "$OUT/text8k.txt" -n 1 --temp 0 --threads 2 --ctx 9000 --sparse "${s%%@*}" "${heads[@]}" \
        2>&1 >/dev/null | grep -i "^prompt:" | sed "s|^|prefill $s: |" | tee -a "$OUT/prefill.txt"
    done
  done
fi
run longctx        "$PY" bench/llama_cpp_compare.py --threads 2 --repeat 2 --skip check,speed,ppl --longattn "$B"
echo "done: $OUT"
