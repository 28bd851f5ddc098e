#!/usr/bin/env bash
# One command on the GPU machine: configure with CUDA, build, run the `cuda`
# tests, run them once (short lengths) under compute-sanitizer memcheck and
# racecheck, check the SASS for tensor-core instructions, time the forward
# at the target shape (bf16, H=16, D=128, B x L = 16K tokens, causal and
# not; 64K at batch 1) beside PyTorch's SDPA, and print a short table last.
#
#   bash scripts/gpu-check.sh            (logs under $OUT when set, else build-gpu/logs)
#
# Environment: BUILD (build-gpu), LA_CUDA_ARCHS ("90a;80"), SKIP_PEERS=1 to
# time longattn alone, SKIP_SANITIZER=1, PREBUILT=DIR (a build folder with
# tests/test_cuda_attention, longattn_cuda_bench and forward.cu.o, used if
# the build fails). The lent H200's image has nvcc 13.0 but no libpcre2-dev,
# so configuring there fails (the model library needs PCRE2): build on a
# machine with the same nvcc, copy those three files into DIR and carry it;
# binaries built so ran there (2026-11, the CUDA runtime is linked statically).
set -u
cd "$(dirname "$0")/.."
build=${BUILD:-build-gpu}
logs=${OUT:-$build/logs}
mkdir -p "$logs"
summary=()
note() { summary+=("$1"); echo "== $1"; }

nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv,noheader 2>&1 | tee "$logs/gpu.txt"
nvcc --version | tail -2

gen=()
command -v ninja >/dev/null && gen=(-G Ninja)
t0=$(date +%s)
if cmake -S . -B "$build" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release -DLA_CUDA=ON -DLA_CUDA_ARCHS="${LA_CUDA_ARCHS:-90a;80}" \
        >"$logs/configure.log" 2>&1 &&
   cmake --build "$build" -j "$(nproc)" --target test_cuda_attention longattn_cuda_bench >"$logs/build.log" 2>&1; then
    note "build: ok ($(($(date +%s) - t0)) s)"
elif [ -n "${PREBUILT:-}" ] && [ -x "$PREBUILT/tests/test_cuda_attention" ]; then
    note "build: FAILED here; using the binaries in PREBUILT=$PREBUILT"
    tail -15 "$logs/configure.log" "$logs/build.log" 2>/dev/null
    build=$PREBUILT
else
    note "build: FAILED (see $logs/configure.log, build.log)"
    tail -30 "$logs/configure.log" "$logs/build.log" 2>/dev/null
    exit 1
fi

obj=$(find "$build" -name 'forward.cu.o' | head -n 1)
[ -n "$obj" ] || obj=$build/forward.cu.o
if command -v cuobjdump >/dev/null && [ -n "$obj" ]; then
    cuobjdump --dump-sass "$obj" >"$logs/forward.sass" 2>&1
    note "SASS forward.cu.o: $(grep -c HMMA "$logs/forward.sass") HMMA, $(grep -c HGMMA "$logs/forward.sass") HGMMA, $(grep -cE 'LDL|STL' "$logs/forward.sass") LDL/STL"
fi

t0=$(date +%s)
timeout "${TEST_TIMEOUT:-300}" "$build/tests/test_cuda_attention" >"$logs/test_cuda.log" 2>&1
rc=$?
tail -n 1 "$logs/test_cuda.log"
grep -E "FAIL" "$logs/test_cuda.log" | head -20
note "test_cuda_attention: exit $rc, $(tail -n 1 "$logs/test_cuda.log") ($(($(date +%s) - t0)) s)"

if [ "${SKIP_SANITIZER:-0}" != 1 ] && command -v compute-sanitizer >/dev/null; then
    for tool in memcheck racecheck; do
        t0=$(date +%s)
        LONGATTN_TEST_QUICK=1 timeout "${SANITIZER_TIMEOUT:-150}" compute-sanitizer --tool $tool --error-exitcode 3 "$build/tests/test_cuda_attention" \
            >"$logs/sanitizer_$tool.log" 2>&1
        rc=$?
        note "compute-sanitizer $tool (quick cases): exit $rc, $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$logs/sanitizer_$tool.log" | tail -n 1) ($(($(date +%s) - t0)) s)"
    done
fi

if [ "${SKIP_PEERS:-0}" != 1 ] && python3 -c 'import torch' 2>/dev/null; then
    PYTHONUNBUFFERED=1 python3 bench/peers_gpu.py --bench "$build/longattn_cuda_bench" 2>&1 | tee "$logs/bench.log"
else
    "$build/longattn_cuda_bench" 2>&1 | tee "$logs/bench.log"
fi

echo
echo "==== summary"
for s in "${summary[@]}"; do echo "$s"; done
sed -n '/^ceilings this run/,$p' "$logs/bench.log"
