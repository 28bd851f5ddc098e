#!/usr/bin/env bash
# ggml's CPU ops for the linear mixers (GATED_LINEAR_ATTN, GATED_DELTA_NET,
# SSM_SCAN, RWKV_WKV7) as peers for `longattn bench linear`.
# Uses the libggml that llama-cpp-python (PyPI) builds from llama.cpp's source;
# creates the venv on first use (the build takes 10-20 minutes on 2 cores).
# usage: bench/ggml-mixers-peer.sh [THREADS] [L,L,...] [gla,gated_delta,gated_delta_op,mamba,mamba_op,rwkv7]
set -euo pipefail
venv=${LLAMA_VENV:-$HOME/.cache/longattn/venv-llama}
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import llama_cpp' 2>/dev/null; then
  python3 -m venv "$venv"
  CMAKE_ARGS="-DGGML_NATIVE=ON" "$venv/bin/pip" install -q llama-cpp-python
fi
site=$("$venv/bin/python" -c 'import llama_cpp, os; print(os.path.dirname(os.path.dirname(llama_cpp.__file__)))')
export LLAMA_CPP_PYTHON_VERSION=$("$venv/bin/python" -c 'import llama_cpp; print(llama_cpp.__version__)')
lib="$site/llama_cpp/lib"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
cc -O2 -std=c11 -D_POSIX_C_SOURCE=200809L "$(dirname "$0")/ggml_mixers.c" -I"$site/include" -L"$lib" -Wl,-rpath,"$lib" \
  -lggml -lggml-base -lggml-cpu -lm -o "$out/ggml_mixers"
"$out/ggml_mixers" "${1:-2}" "${2:-4096,16384}" "${3:-gla,gated_delta,gated_delta_op,mamba,mamba_op,rwkv7}"
