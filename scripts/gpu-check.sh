#!/usr/bin/env bash
# One command on the GPU machine: configure with CUDA, build, run the `cuda`
# tests (forward, backward, decode), check the SASS for tensor-core
# instructions, time the forward, forward+backward and decode beside
# PyTorch's SDPA with the ceilings measured in the same run, run the tests
# once more (short lengths) under compute-sanitizer, and print a short table
# last.
#
#   bash scripts/gpu-check.sh   (logs in build-gpu/logs; with $OUT set, packed into $OUT/logs.tgz
#                                with the summary in $OUT/summary.txt: the device tool returns few files)
#
# Environment: BUILD (build-gpu), LA_CUDA_ARCHS ("90a;80"), TESTS (the test
# programs, "attention backward decode kv_append merge sparse"; TESTS="" runs
# none, and then no sanitizer either unless SANITIZER_TESTS names some), OPS (the benchmark's ops,
# "fwd,fwdbwd,decode"), SKIP_PEERS=1 to time longattn alone, SKIP_BENCH=1,
# COMPARE_MMA=1 to time the mma.sync forward (and forward+backward) as well, FLEX_MIN_LEN (16384: the
# shortest rows FlexAttention is timed on; each shape compiles), SANITIZER_TESTS
# (the tests run under compute-sanitizer, default TESTS),
# SANITIZER_TOOLS ("memcheck"; add racecheck), SKIP_SANITIZER=1.
# The machine's image has no libpcre2-dev: CMake then leaves out the model
# library and the CLI, which these steps do not need.
set -u
cd "$(dirname "$0")/.."
build=${BUILD:-build-gpu}
logs=$build/logs
tests=${TESTS-attention backward decode kv_append merge sparse}
ops=${OPS:-fwd,fwdbwd,decode}
mkdir -p "$logs"
summary=()
note() { summary+=("$1"); echo "== $1"; }

nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv,noheader 2>&1 | tee "$logs/gpu.txt"
nvcc --version | tail -2

gen=()
command -v ninja >/dev/null && gen=(-G Ninja)
targets=(longattn_cuda_bench)
for t in $tests; do targets+=("test_cuda_$t"); done
t0=$(date +%s)
if cmake -S . -B "$build" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release -DLA_CUDA=ON -DLA_CUDA_ARCHS="${LA_CUDA_ARCHS:-90a;80}" \
        >"$logs/configure.log" 2>&1 &&
   cmake --build "$build" -j "$(nproc)" --target "${targets[@]}" >"$logs/build.log" 2>&1; then
    note "build: ok ($(($(date +%s) - t0)) s)"
else
    note "build: FAILED (see $logs/configure.log, build.log)"
    tail -30 "$logs/configure.log" "$logs/build.log" 2>/dev/null
    exit 1
fi

if command -v cuobjdump >/dev/null; then
    for k in forward forward_sm90 forward_sm90_ws backward backward_sm90 backward_sm90_ws decode; do
        obj=$(find "$build" -name "$k.cu.o" | head -n 1)
        [ -n "$obj" ] || continue
        cuobjdump --dump-sass "$obj" >"$logs/$k.sass" 2>&1
        note "SASS $k.cu.o: $(grep -c HMMA "$logs/$k.sass") HMMA, $(grep -c HGMMA "$logs/$k.sass") HGMMA, $(grep -c UTMALDG "$logs/$k.sass") UTMALDG, $(grep -c UTMAREDG "$logs/$k.sass") UTMAREDG, $(grep -cE 'LDL|STL' "$logs/$k.sass") LDL/STL"
    done
fi

for t in $tests; do
    t0=$(date +%s)
    timeout "${TEST_TIMEOUT:-300}" "$build/tests/test_cuda_$t" >"$logs/test_cuda_$t.log" 2>&1
    rc=$?
    grep -E "FAIL" "$logs/test_cuda_$t.log" | head -20
    note "test_cuda_$t: exit $rc, $(tail -n 1 "$logs/test_cuda_$t.log") ($(($(date +%s) - t0)) s)"
    if [ "$t" = backward ]; then # the mma.sync and the earlier wgmma backwards too (the default on Hopper: wgmma-ws
        # in its wgdk schedule: dQ in a third warpgroup at D 128, earlydv elsewhere), and the ws backward with dQ by
        # atomics, by the writer warp, by each warp (warp), early, earlydv (the next item's S^T under the dQ add, dV
        # issued right after P), wg (wgdk waiting for dK in its item), wgdk with an f16 copy of P for dS, and wgdk
        # without the split of its last partial wave (LA_CUDA_BACKWARD_TAIL=0; the split is the default for even work)
        for k in LA_CUDA_BACKWARD_KERNEL=mma LA_CUDA_BACKWARD_KERNEL=wgmma LA_CUDA_BACKWARD_DQ=atomic LA_CUDA_BACKWARD_DQ=tma LA_CUDA_BACKWARD_DQ=warp LA_CUDA_BACKWARD_DQ=early LA_CUDA_BACKWARD_DQ=earlydv LA_CUDA_BACKWARD_DQ=wg LA_CUDA_BACKWARD_WG_P=f16 LA_CUDA_BACKWARD_TAIL=0 ${BWD_MODES_EXTRA:-}; do
            t0=$(date +%s)
            env "$k" timeout "${TEST_TIMEOUT:-300}" "$build/tests/test_cuda_$t" >"$logs/test_cuda_${t}_${k#*=}.log" 2>&1
            rc=$?
            grep -E "FAIL" "$logs/test_cuda_${t}_${k#*=}.log" | head -20
            note "test_cuda_$t ($k): exit $rc, $(tail -n 1 "$logs/test_cuda_${t}_${k#*=}.log") ($(($(date +%s) - t0)) s)"
        done
    fi
done

if [ "${SKIP_BENCH:-0}" != 1 ]; then
    if [ "${SKIP_PEERS:-0}" != 1 ] && python3 -c 'import torch' 2>/dev/null; then
        PYTHONUNBUFFERED=1 timeout "${BENCH_TIMEOUT:-400}" python3 bench/peers_gpu.py --bench "$build/longattn_cuda_bench" \
            --ops "$ops" --flex-min-len "${FLEX_MIN_LEN:-16384}" 2>&1 | tee "$logs/bench.log"
    else
        for op in ${ops//,/ }; do "$build/longattn_cuda_bench" --op "$op"; done 2>&1 | tee "$logs/bench.log"
    fi
    if [ "${COMPARE_MMA:-0}" = 1 ]; then # the mma.sync forward on the same shapes, for comparison
        LA_CUDA_FORWARD_KERNEL=mma "$build/longattn_cuda_bench" --op fwd 2>&1 | tee "$logs/bench_mma.log"
        LA_CUDA_BACKWARD_KERNEL=mma "$build/longattn_cuda_bench" --op fwdbwd 2>&1 | tee -a "$logs/bench_mma.log"
    fi
fi

if [ "${SKIP_SANITIZER:-0}" != 1 ] && command -v compute-sanitizer >/dev/null; then
    # racecheck's reading of mbarrier pipelines, shown on a pattern that is
    # correct by the PTX memory model: hazards it reports there are the tool's
    # (2026-12-04: all the backward's 84 and the sparse test's 24 sit in
    # attn_bwd_ws_kernel's lse2 / delta handoff; every other kernel reads 0)
    if [[ " ${SANITIZER_TOOLS:-memcheck} " == *" racecheck "* ]] &&
        nvcc -arch=sm_90a -o "$build/racecheck-probe" scripts/racecheck-probe.cu 2>"$logs/racecheck_probe.log"; then
        for m in "" --sync; do
            compute-sanitizer --tool racecheck "$build/racecheck-probe" $m >>"$logs/racecheck_probe.log" 2>&1
        done
        note "racecheck probe (correct mbarrier handoff, then __syncthreads control): $(grep -E 'RACECHECK SUMMARY' "$logs/racecheck_probe.log" | sed 's/.*SUMMARY: //' | paste -sd'|')"
    fi
    for tool in ${SANITIZER_TOOLS:-memcheck}; do
        for t in ${SANITIZER_TESTS-$tests}; do
            t0=$(date +%s)
            LONGATTN_TEST_QUICK=1 timeout "${SANITIZER_TIMEOUT:-150}" compute-sanitizer --tool $tool --error-exitcode 3 \
                "$build/tests/test_cuda_$t" >"$logs/sanitizer_${tool}_$t.log" 2>&1
            rc=$?
            note "compute-sanitizer $tool test_cuda_$t (quick cases): exit $rc, $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$logs/sanitizer_${tool}_$t.log" | tail -n 1) ($(($(date +%s) - t0)) s)"
        done
    done
fi

{
    echo
    echo "==== summary"
    for s in "${summary[@]}"; do echo "$s"; done
    [ -f "$logs/bench.log" ] && sed -n '/^ceilings this run/,$p' "$logs/bench.log"
} | tee "$logs/summary.txt"
if [ -n "${OUT:-}" ]; then
    cp "$logs/summary.txt" "$OUT/summary.txt"
    tar czf "$OUT/logs.tgz" -C "$build" logs
fi
