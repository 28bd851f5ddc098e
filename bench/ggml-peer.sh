#!/usr/bin/env bash
# ggml's CPU flash attention as a peer for `longattn bench attention`.
# Uses the libggml that llama-cpp-python (PyPI) builds from llama.cpp's source;
# creates the venv on first use (the build takes 10-20 minutes on 2 cores).
# usage: bench/ggml-peer.sh [THREADS] [D] [CAUSAL]
set -euo pipefail
venv=${LLAMA_VENV:-$HOME/.cache/longattn/venv-llama}
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import llama_cpp' 2>/dev/null; then
  python3 -m venv "$venv"
  CMAKE_ARGS="-DGGML_NATIVE=ON" "$venv/bin/pip" install -q llama-cpp-python
fi
site=$("$venv/bin/python" -c 'import llama_cpp, os; print(os.path.dirname(os.path.dirname(llama_cpp.__file__)))')
lib="$site/llama_cpp/lib"
out=$(mktemp -d)
cc -O2 "$(dirname "$0")/ggml_flash_attn.c" -I"$site/include" -L"$lib" -Wl,-rpath,"$lib" -lggml -lggml-base -lggml-cpu -lm \
  -o "$out/ggml_flash_attn"
"$out/ggml_flash_attn" "${1:-2}" "${2:-128}" "${3:-0}"
