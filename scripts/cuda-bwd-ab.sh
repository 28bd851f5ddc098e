#!/usr/bin/env bash
# A/B of the Hopper backward's variants on the GPU machine, in one call:
# build (Release, sm_90a), test_cuda_backward under each variant, then
# ROUNDS rounds that run longattn_cuda_bench --op fwdbwd once per variant
# in turn (alternated, so clock drift hits each alike), and a table of the
# per-variant medians last.
#
#   MODES="LA_CUDA_BACKWARD_DQ=earlydv LA_CUDA_BACKWARD_DQ=wg LA_CUDA_BACKWARD_DQ=wgdk" bash scripts/cuda-bwd-ab.sh
#
# A variant is one or more VAR=value joined by ','. Environment: BUILD
# (build-ab), ROUNDS (3), LENS ("16384 65536"), TEST_MODES (the variants
# tested, default MODES), QUICK (1: the tests' short lengths,
# LONGATTN_TEST_QUICK), SKIP_TESTS=1, TEST_TIMEOUT (300 s per test run),
# BENCH_TIMEOUT (120 s per benchmark run), FWD=1 (each round also times
# --op fwd per variant: a second table of the backward alone, fwd+bwd's
# time less the forward's of the same round), BENCH_ARGS (more options for
# each benchmark run, e.g. "--iters 10"). Logs under $BUILD/ab
# (and $OUT/ab.tgz with $OUT set).
set -u
cd "$(dirname "$0")/.."
build=${BUILD:-build-ab}
modes=${MODES:-LA_CUDA_BACKWARD_DQ=warp LA_CUDA_BACKWARD_DQ=early}
rounds=${ROUNDS:-3}
lens=()
for l in ${LENS:-16384 65536}; do lens+=(--len "$l"); done
logs=$build/ab
mkdir -p "$logs"
gen=()
command -v ninja >/dev/null && gen=(-G Ninja)
t0=$(date +%s)
if ! { cmake -S . -B "$build" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release -DLA_CUDA=ON -DLA_CUDA_ARCHS=90a >"$logs/configure.log" 2>&1 &&
       cmake --build "$build" -j "$(nproc)" --target longattn_cuda_bench test_cuda_backward >"$logs/build.log" 2>&1; }; then
    echo "build FAILED"; tail -30 "$logs/configure.log" "$logs/build.log"; exit 1
fi
echo "build: ok ($(($(date +%s) - t0)) s)"
if command -v cuobjdump >/dev/null; then
    obj=$(find "$build" -name backward_sm90_ws.cu.o | head -n 1)
    cuobjdump --dump-sass "$obj" >"$logs/backward_sm90_ws.sass" 2>&1
    # per kernel instance: HGMMA and local-memory lines
    awk '/Function : /{f=$3} /HGMMA/{h[f]++} /LDL|STL/{l[f]++} END{for (k in h) print "SASS", k, h[k], "HGMMA", l[k] + 0, "LDL/STL"}' \
        "$logs/backward_sm90_ws.sass" | sort
fi
envs() { tr ',' ' ' <<<"$1"; }
if [ "${SKIP_TESTS:-0}" != 1 ]; then
    for m in ${TEST_MODES:-$modes}; do
        t0=$(date +%s)
        env $(envs "$m") LONGATTN_TEST_QUICK="${QUICK:-1}" timeout "${TEST_TIMEOUT:-300}" "$build/tests/test_cuda_backward" >"$logs/test_$m.log" 2>&1
        rc=$?
        grep -m 5 FAIL "$logs/test_$m.log"
        echo "test_cuda_backward ($m, quick ${QUICK:-1}): exit $rc, $(tail -n 1 "$logs/test_$m.log") ($(($(date +%s) - t0)) s)"
    done
fi
for r in $(seq "$rounds"); do
    for m in $modes; do
        env $(envs "$m") timeout "${BENCH_TIMEOUT:-120}" "$build/longattn_cuda_bench" --op fwdbwd "${lens[@]}" ${BENCH_ARGS:-} 2>&1 | sed "s/^/$r $m /" >>"$logs/bench.log"
        [ "${FWD:-0}" = 1 ] &&
            env $(envs "$m") timeout "${BENCH_TIMEOUT:-120}" "$build/longattn_cuda_bench" --op fwd "${lens[@]}" ${BENCH_ARGS:-} 2>&1 | sed "s/^/$r $m /" >>"$logs/bench.log"
    done
done
python3 - "$logs/bench.log" <<'PY'
import json, sys, statistics
rows, fb, fw = {}, {}, {}
for line in open(sys.argv[1]):
    r, m, rest = line.split(" ", 2)
    if not rest.startswith("{"): continue
    j = json.loads(rest)
    if "B" not in j: continue
    k = (j["B"], j["L"], j["causal"])
    if j.get("op") == "attention_fwd": fw[(r, m) + k] = j
    if not j.get("op", "").endswith("fwdbwd"): continue
    fb[(r, m) + k] = j
    rows.setdefault(k, {}).setdefault(m, []).append(j["tflops"])
# the backward alone: fwd+bwd's time less the same round's forward (10 of the 14 flops)
bw = {}
for key, j in fb.items():
    f = fw.get(key)
    if f and j["ms"] > f["ms"]:
        bw.setdefault(key[2:], {}).setdefault(key[1], []).append(j["tflops"] * j["ms"] * 10 / 14 / (j["ms"] - f["ms"]))
modes = list(dict.fromkeys(m for v in rows.values() for m in v))
def table(title, rows):
    print(title)
    print("| B | L | causal | " + " | ".join(modes) + " |")
    for k in sorted(rows):
        cells = []
        for m in modes:
            v = rows[k].get(m, [])
            cells.append(f"{statistics.median(v):.1f} ({min(v):.1f}-{max(v):.1f})" if v else "-")
        print(f"| {k[0]} | {k[1]} | {k[2]} | " + " | ".join(cells) + " |")
table("fwd+bwd TFLOP/s, median of rounds (range)", rows)
if bw: table("backward alone TFLOP/s (fwd+bwd less the round's fwd), median (range)", bw)
PY
[ -n "${OUT:-}" ] && tar czf "$OUT/ab.tgz" -C "$build" ab
exit 0
