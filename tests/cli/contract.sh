#!/bin/sh
# The CLI as an outside tester meets it: every subcommand's --help, unknown
# options, missing and invalid values (non-numbers, negatives, huge numbers,
# empty strings), missing files, a non-GGUF file and truncated GGUF files
# given as a model, --json output being JSON lines, and the exit statuses
# (0 success, 1 a failure at run time, 2 a usage error).
# usage: contract.sh LONGATTN MODEL.gguf SCRATCH_DIR
# Prints each failed check and a tally; the exit status is the verdict.
BIN=$1
MODEL=$2
TMP=$3
mkdir -p "$TMP" || exit 1
checks=0
failed=0
# A hang is a failure too (exit 124), not ctest's timeout for the whole script.
LIMIT=""
command -v timeout >/dev/null 2>&1 && LIMIT="timeout 300"

fail() {
    failed=$((failed + 1))
    echo "FAIL: $*"
}

# expect STATUS REGEX ARGS...: longattn ARGS exits STATUS and prints (stdout
# or stderr) a line matching REGEX (grep -E); no sanitizer report.
expect() {
    want=$1 regex=$2
    shift 2
    checks=$((checks + 1))
    $LIMIT "$BIN" "$@" >"$TMP/out" 2>&1 </dev/null
    got=$?
    if [ "$got" != "$want" ]; then
        fail "longattn $*: exit $got, want $want"
        sed 's/^/    /' "$TMP/out" | head -5
    elif ! grep -Eq -- "$regex" "$TMP/out"; then
        fail "longattn $*: no line matches '$regex'"
        sed 's/^/    /' "$TMP/out" | head -5
    elif grep -q "Sanitizer" "$TMP/out"; then
        fail "longattn $*: sanitizer report"
        grep -m3 "Sanitizer" "$TMP/out"
    fi
}

# --json: every stdout line is one JSON object (python3 when present)
json_lines() { # NAME FILE MUST_MATCH: the file's lines parse, one holds MUST_MATCH
    checks=$((checks + 1))
    if command -v python3 >/dev/null 2>&1; then
        python3 - "$2" "$3" <<'EOF' || fail "$1 --json: a line is not a JSON object, or no row"
import json, sys
lines = open(sys.argv[1]).read().splitlines()
assert lines, "no rows"
rows = [json.loads(line) for line in lines]
assert all(isinstance(r, dict) for r in rows)
assert any(sys.argv[2] in line for line in lines), "no " + sys.argv[2]
EOF
    else
        echo "python3 not found: the JSON check of $1 is skipped"
    fi
}

# --help: usage on stdout, exit 0
checks=$((checks + 1))
"$BIN" --help >"$TMP/out" 2>/dev/null && grep -q "^usage: longattn COMMAND" "$TMP/out" || fail "longattn --help"
for cmd in bench run info ppl eval calibrate-duo; do
    checks=$((checks + 1))
    "$BIN" $cmd --help >"$TMP/out" 2>"$TMP/err"
    st=$?
    if [ $st != 0 ] || ! grep -q "^usage: longattn $cmd" "$TMP/out"; then
        fail "longattn $cmd --help: exit $st, stdout: $(head -c 120 "$TMP/out")"
    fi
done
expect 0 "usage: longattn bench" bench attention --help
expect 2 "usage: longattn COMMAND"
# --help says what a tester otherwise finds out: exit statuses, repeated options, the environment (every
# switch la_env_check warns of: LONGATTN_MODEL_MMAP was missing)
checks=$((checks + 1))
"$BIN" --help 2>/dev/null | tr '\n' ' ' | grep -q "Exit status: 0 success, 1 a failure.* 2 a usage error.*given *twice.*last one counts.*LONGATTN_SIMD=scalar|avx2|avx512|avx512_bf16.*LONGATTN_MODEL_MMAP=1" ||
    fail "longattn --help: no exit statuses, repeated options or environment"
# an option given twice: each value is checked, the last one counts
expect 0 "tokens/s" run -m /nonexistent.gguf -m "$MODEL" -p hi -n 1 --temp 0 --ctx 1 --ctx 64 --threads 2
expect 2 "--ctx expects an integer in \[4, " ppl -m "$MODEL" -f README.md --ctx 3 --ctx 64
expect 2 "unknown command 'frobnicate'" frobnicate

# unknown options, last or followed by a value; stray arguments
for cmd in run ppl eval calibrate-duo; do
    expect 2 "unknown option '--bogus'" $cmd -m "$MODEL" --bogus 3
done
for cmd in run ppl eval calibrate-duo; do
    expect 2 "unknown option '--bogus'" $cmd -m "$MODEL" --bogus
done
expect 2 "unknown option 'stray'" run -m "$MODEL" -p hi stray
expect 2 "unknown option '--bogus'" bench attention --bogus
expect 2 "unknown option '--bogus'" bench peak --json --bogus 1
expect 2 "usage: longattn info" info
expect 2 "usage: longattn info" info a.gguf b.gguf
expect 2 "unknown option '--bogus'" info --bogus
# --help wherever it stands, as in run and ppl: it said "unknown option '--help'"
expect 0 "^usage: longattn info MODEL.gguf" info --help x.gguf
expect 0 "^usage: longattn info MODEL.gguf" info x.gguf -h
expect 2 "unknown benchmark 'bogus'" bench bogus
expect 2 "unknown benchmark '--L'" bench --L 5

# missing values
expect 2 "-m needs a value" run -m
expect 2 "--ctx needs a value" ppl -m "$MODEL" -f README.md --ctx
expect 2 "--kv needs a value" eval -m "$MODEL" --kv
expect 2 "--threads needs a value" bench attention --threads
expect 2 "-o needs a value" calibrate-duo -m "$MODEL" -o

# invalid values: not numbers, negative, huge, empty
for v in abc -5 99999999999999999999 "" 1.5 0x10 " 7"; do
    expect 2 "-n expects an integer" run -m "$MODEL" -p hi -n "$v"
    expect 2 "--ctx expects an integer" ppl -m "$MODEL" -f README.md --ctx "$v"
    expect 2 "--threads expects an integer" run -m "$MODEL" -p hi --threads "$v"
    expect 2 "--threads expects an integer" bench attention --threads "$v"
    expect 2 "--samples expects an integer" eval -m "$MODEL" --samples "$v"
    expect 2 "--prompts expects an integer" calibrate-duo -m "$MODEL" --prompts "$v"
    expect 2 "bad value for --L" bench attention --L "$v"
done
expect 2 "--temp expects a number" run -m "$MODEL" -p hi --temp x
expect 2 "--temp expects a number" run -m "$MODEL" -p hi --temp -1
expect 2 "--temp expects a number" run -m "$MODEL" -p hi --temp nan
expect 2 "--top-p expects a number" run -m "$MODEL" -p hi --top-p 0
expect 2 "--top-p expects a number" run -m "$MODEL" -p hi --top-p ""
expect 2 "--seed expects a non-negative integer" run -m "$MODEL" -p hi --seed -1
expect 2 "--seed expects a non-negative integer" run -m "$MODEL" -p hi --seed " -1"
expect 2 "--temp expects a number" run -m "$MODEL" -p hi --temp " 0.5"
expect 2 "--kv-type expects" run -m "$MODEL" -p hi --kv-type f8
expect 2 "--kv-type expects" ppl -m "$MODEL" -f README.md --ctx 64 --kv-type ""
expect 2 "--kv: KV policy 'bogus' is unknown" run -m "$MODEL" -p hi --kv bogus
expect 2 "--kv: " run -m "$MODEL" -p hi --kv streaming:0
expect 2 "--kv: " run -m "$MODEL" -p hi --kv ""
expect 2 "--sparse: " run -m "$MODEL" -p hi --sparse topk:0
expect 2 "--sparse: " ppl -m "$MODEL" -f README.md --ctx 64 --sparse ""
expect 2 "the prompt is empty" run -m "$MODEL" -p ""
# bytes SmolLM2's vocabulary has no token for (0xfe, 0xff) are dropped: the prompt was not "empty"
printf '\376\377' >"$TMP/ff.txt"
expect 2 "the prompt's 2 bytes give no token: the vocabulary has none for them" run -m "$MODEL" -f "$TMP/ff.txt" \
    --raw -n 1
expect 2 "--dump-layers: layer 99 is past the model's 30 layers" run -m "$MODEL" -p hi -n 1 --ctx 64 \
    --dump-qk "$TMP/qk" --dump-layers 99
expect 2 "--dump-layers names layer 1 twice" run -m "$MODEL" -p hi -n 1 --ctx 64 --dump-qk "$TMP/qk" --dump-layers 0,1,1
# more threads than CPUs online: a warning, not a refusal (the empty prompt then stops the run)
expect 2 "warning: --threads 4096 is more than the [0-9]+ CPUs online" run -m "$MODEL" -p "" --threads 4096
# the default thread count (OMP_NUM_THREADS) under --threads' rules: 99999 was taken as is, and the run
# made no progress in minutes on 2 cores; past the CPUs online a warning (the missing model then: exit 1)
for cmd in "run -m /nonexistent.gguf -p hi" "ppl -m /nonexistent.gguf -f README.md --ctx 64" \
    "eval -m /nonexistent.gguf" "calibrate-duo -m /nonexistent.gguf" "bench peak"; do
    checks=$((checks + 1))
    # shellcheck disable=SC2086 # cmd splits into the command's words
    OMP_NUM_THREADS=99999 $LIMIT "$BIN" $cmd >"$TMP/out" 2>&1
    st=$?
    [ $st = 2 ] && grep -q "the default thread count (OMP_NUM_THREADS='99999') is 99999, past the 4096" "$TMP/out" ||
        fail "OMP_NUM_THREADS=99999 longattn $cmd: exit $st, $(head -c 200 "$TMP/out")"
done
checks=$((checks + 1))
OMP_NUM_THREADS=4096 $LIMIT "$BIN" run -m /nonexistent.gguf -p hi >"$TMP/out" 2>&1
st=$?
[ $st = 1 ] && grep -q "warning: the default thread count (OMP_NUM_THREADS='4096') is 4096, more than the [0-9]* CPUs" \
    "$TMP/out" || fail "OMP_NUM_THREADS=4096 longattn run: exit $st, $(head -c 200 "$TMP/out")"
for v in "" "1," "1,,2" " 1" -1 abc; do
    expect 2 "--dump-layers" run -m "$MODEL" -p hi -n 1 --ctx 64 --dump-qk "$TMP/qk" --dump-layers "$v"
done
# eval's heatmaps: a directory that cannot take them is found before the
# run, and a CSV that cannot be written fails the run (it exited 0)
expect 2 "--heatmap expects a file prefix, got ''" eval -m /nonexistent.gguf --heatmap ""
# a prefix that ends in '/' named files "-needle-..." inside that directory, as "" did in the working one
expect 2 "--heatmap expects a file prefix, got '$TMP/' \(a directory" eval -m /nonexistent.gguf --heatmap "$TMP/"
expect 2 "--calibrate-sparse expects a file prefix with several targets, got '$TMP/'" ppl -m /nonexistent.gguf \
    -f README.md --ctx 64 --sparse topk:0.9 --calibrate-sparse "$TMP/" --calibrate-target 0.99,0.995
expect 1 "--heatmap /nonexistent/dir/p: cannot write into '/nonexistent/dir'" eval -m /nonexistent.gguf \
    --heatmap /nonexistent/dir/p
[ -d /proc ] && expect 1 "cannot write" eval -m "$MODEL" --task needle --lengths 160 --depths 50 --threads 2 \
    --heatmap /proc/longattn-contract
# files written after a long run: a path that cannot take them is found
# before it (calibrate-duo -o and ppl's were found after the whole run)
expect 1 "-o /nonexistent/duo.txt: cannot write into '/nonexistent'" calibrate-duo -m /nonexistent.gguf \
    -o /nonexistent/duo.txt
# a file where the directory should be: it said "Permission denied"
expect 1 "-o README.md/duo.txt: cannot write into 'README.md': Not a directory" calibrate-duo -m /nonexistent.gguf \
    -o README.md/duo.txt
expect 1 "-o $TMP: is a directory" calibrate-duo -m /nonexistent.gguf -o "$TMP"
# an empty input path names no file either: a usage error (it was "cannot open ''", exit 1, and for -m
# "longattn eval: : LA_ERR_IO")
expect 2 "run: -m expects a file path, got ''" run -m "" -p hi
expect 2 "run: -f expects a file path, got ''" run -m "$MODEL" -f ""
expect 2 "run: --dump-qk expects a file path, got ''" run -m "$MODEL" -p hi --dump-qk ""
expect 2 "run: --sparse-heads expects a file path, got ''" run -m "$MODEL" -p hi --sparse topk:0.9 --sparse-heads ""
expect 2 "ppl: -m expects a file path, got ''" ppl -m "" -f README.md --ctx 64
expect 2 "ppl: -f expects a file path, got ''" ppl -m "$MODEL" -f "" --ctx 64
expect 2 "ppl: --sparse-heads expects a file path, got ''" ppl -m "$MODEL" -f README.md --ctx 64 --sparse topk:0.9 \
    --sparse-heads ""
expect 2 "eval: -m expects a file path, got ''" eval -m ""
expect 2 "eval: -f expects a file path, got ''" eval -m "$MODEL" --task ppl -f ""
expect 2 "eval: --sparse-heads expects a file path, got ''" eval -m "$MODEL" --sparse topk:0.9 --sparse-heads ""
expect 2 "calibrate-duo: -m expects a file path, got ''" calibrate-duo -m ""
expect 2 "info: expects a file path, got ''" info ""
# an empty output path is a usage error before the run (it failed to create '' after the whole run)
expect 2 "-o expects a file path, got ''" calibrate-duo -m /nonexistent.gguf -o ""
expect 2 "--score-heads expects a file path, got ''" ppl -m /nonexistent.gguf -f README.md --ctx 64 \
    --sparse topk:0.9 --score-heads ""
expect 2 "--calibrate-sparse expects a file path, got ''" ppl -m /nonexistent.gguf -f README.md --ctx 64 \
    --sparse topk:0.9 --calibrate-sparse ""
expect 1 "--calibrate-sparse /nonexistent/c: cannot write into" ppl -m /nonexistent.gguf -f README.md --ctx 64 \
    --sparse topk:0.9 --calibrate-sparse /nonexistent/c
expect 1 "--score-heads $TMP: is a directory" ppl -m /nonexistent.gguf -f README.md --ctx 64 --sparse topk:0.9 \
    --score-heads "$TMP"
# a --dump-qk directory that cannot be made is a failure at run time (exit 1,
# was 2), and a file in its place is refused before the run (was taken for
# the directory: the run went through, then its files could not be written)
expect 1 "--dump-qk: cannot create '/nonexistent/qk'" run -m "$MODEL" -p "one two three" -n 1 --ctx 64 \
    --threads 2 --dump-qk /nonexistent/qk
expect 1 "--dump-qk: 'README.md' is not a directory" run -m "$MODEL" -p "one two three" -n 1 --ctx 64 \
    --threads 2 --dump-qk README.md
# --dump-qk where nothing reaches the dump (a stateful policy's prefill, a one-token prompt): DIR stayed
# empty and the exit was 0
expect 2 "--dump-qk needs --kv full or streaming" run -m /nonexistent.gguf -p hi --dump-qk "$TMP/qk" --kv h2o:8
expect 2 "--dump-qk needs a prompt of two or more tokens" run -m "$MODEL" -p hi -n 1 --ctx 64 --threads 2 \
    --raw --dump-qk "$TMP/qk"
# what --dump-qk writes, bench sparse --qk-file reads: under streaming a prompt of two prefill chunks (512
# tokens, then the rest) kept every chunk's queries but only the last chunk's keys (the earlier ones were
# evicted): "q 593 x 9 x 64, k 145 x 3 x 64", a file bench sparse refused as not a longattn-qk file
head -c 2600 bench/data/ppl-text.txt >"$TMP/p600.txt"
rm -rf "$TMP/qk-stream"
expect 0 "wrote $TMP/qk-stream/layer-00.qk \(q [0-9]+ x 9 x 64, k [0-9]+ x 3 x 64; the last prefill chunk's queries" \
    run -m "$MODEL" -f "$TMP/p600.txt" -n 1 --temp 0 --ctx 1024 --threads 2 --kv streaming:64 \
    --dump-qk "$TMP/qk-stream" --dump-layers 0
expect 0 "Lq [0-9]+ Lk [0-9]+ H 9 Hkv 3 D 64" bench sparse --quick --threads 2 --qk-file "$TMP/qk-stream/layer-00.qk"
# with nothing evicted, every query over every key (the full cache)
expect 0 "wrote $TMP/qk-full/layer-01.qk \(q 10 x 9 x 64, k 10 x 3 x 64\)$" run -m "$MODEL" \
    -p "one two three four five six seven eight nine ten" -n 1 --temp 0 --ctx 64 --threads 2 --raw \
    --dump-qk "$TMP/qk-full" --dump-layers 1
# nor do ppl's calibrations observe a stateful policy's prefill: their files held the target or zeros
expect 2 "--calibrate-sparse needs --kv full or streaming" ppl -m /nonexistent.gguf -f README.md --ctx 64 \
    --sparse topk:0.9 --calibrate-sparse "$TMP/cal" --kv snapkv:64
expect 2 "--score-heads needs --kv full or streaming" ppl -m /nonexistent.gguf -f README.md --ctx 64 \
    --sparse topk:0.9 --score-heads "$TMP/sh" --kv quest:32
# an option's option without the option: checked nowhere and ignored before (session 20 fuzzing)
expect 2 "--dump-layers needs --dump-qk" run -m "$MODEL" -p hi -n 1 --ctx 64 --dump-layers abc
expect 2 "--calibrate-target needs --calibrate-sparse" ppl -m "$MODEL" -f README.md --ctx 64 --calibrate-target abc
expect 2 "--stream-share needs --score-heads" ppl -m "$MODEL" -f README.md --ctx 64 --stream-share 7
expect 2 "--calibrate-target ''" ppl -m "$MODEL" -f README.md --ctx 64 --calibrate-sparse "$TMP/cal" --calibrate-target ""
# numbers start at their first character and lists end with an item, as everywhere else (" 0.9" and
# "0.9," were taken as 0.9)
expect 2 "--calibrate-target '0.9,'" ppl -m "$MODEL" -f README.md --ctx 64 --sparse topk:0.9 \
    --calibrate-sparse "$TMP/cal" --calibrate-target "0.9,"
expect 2 "--calibrate-target ' 0.9'" ppl -m "$MODEL" -f README.md --ctx 64 --sparse topk:0.9 \
    --calibrate-sparse "$TMP/cal" --calibrate-target " 0.9"
expect 2 "--stream-share '0.5, 0.2'" ppl -m "$MODEL" -f README.md --ctx 64 --sparse topk:0.9 \
    --score-heads "$TMP/sh" --stream-share "0.5, 0.2"
expect 2 "give exactly one of -p TEXT and -f FILE" run -m "$MODEL" -p hi -f README.md
expect 2 "--lengths: empty item" eval -m "$MODEL" --lengths ""
expect 2 "bad value for --pass" bench attention --pass fwdx
expect 2 "bad value for --causal" bench attention --causal 2
expect 2 "bad value for --dtype" bench attention --dtype ""
expect 2 "--H expects an integer" bench attention --H 0
expect 2 "bad value for --type: ','" bench matmul --type ","
# 256-element block types cannot hold the sweep's 576-wide rows: every such row failed, exit 1
expect 2 "bad value for --type: 'q4_k' \(types f32, f16, bf16, q8_0, q4_0, q4_1" bench matmul --type q4_k
expect 2 "bad value for --type: 'f16,Q6_K'" bench matmul --type f16,Q6_K
# the last --op counts: "--op mamba --op delta" ran mamba (and "--op aaren --pass decode" ran no row, exit 0)
checks=$((checks + 1))
$LIMIT "$BIN" bench linear --quick --json --L 64 --H 1 --D 64 --pass fwd --threads 2 --op mamba --op delta \
    >"$TMP/out" 2>&1 && grep -q '"mixer":"delta"' "$TMP/out" && ! grep -q '"mixer":"mamba"' "$TMP/out" ||
    fail "bench linear --op mamba --op delta: not the delta rule's rows"
expect 2 "--pass decode: bench linear --op aaren has no decode-step rows" bench linear --quick --L 64 --op aaren \
    --pass fwd,decode
expect 2 "--cold is not for bench sparse --qk-file" bench sparse --qk-file x.qk --cold
expect 2 "--budget expects a number" bench linear --budget x
expect 2 "bad value for --op" bench linear --op bogus
expect 2 "--qk-file is only for bench sparse" bench attention --qk-file x.qk
# empty items of a list: strtok skipped them, so "" and "," as --qk-file ran
# no file and exited 0, and "q4_1," or ",f32" passed as "q4_1" and "f32"
for v in "" "," "a,,b" ",a"; do
    expect 2 "bad value for --qk-file: '$v'" bench sparse --quick --threads 2 --qk-file "$v"
done
QUICK_ATTN="--quick --L 64 --D 64 --H 1 --Hkv 1 --threads 2"
# one value where one is taken: "--D 64,128" ran 64 alone, with no word of the 128
expect 2 "bench decode takes one value for --D" bench decode --quick --L 64 --threads 2 --D 64,128
expect 2 "bench kvquant takes one value for --D" bench kvquant --quick --L 64 --threads 2 --D 64,128
expect 2 "bench linear takes one value for --D" bench linear --quick --L 64 --threads 2 --D 64,128
expect 2 "bench sparse takes one value for --causal" bench sparse --quick --L 256 --threads 2 --causal 0,1
expect 2 "bad value for --type: 'q4_1,'" bench matmul --quick --L 1 --threads 2 --type q4_1,
expect 2 "bad value for --dtype: ',f32'" bench attention $QUICK_ATTN --pass fwd --dtype ,f32
expect 2 "bad value for --dtype: 'f32,,bf16'" bench attention $QUICK_ATTN --pass fwd --dtype f32,,bf16
expect 2 "bad value for --pass: 'fwd,,bwd'" bench attention $QUICK_ATTN --pass fwd,,bwd
expect 2 "bad value for --pass: ',fwd'" bench attention $QUICK_ATTN --pass ,fwd
# each dtype once: the fourth item was dropped in silence (no bf16 row ran)
expect 2 "bad value for --dtype: 'f32,f32,f32,bf16'" bench attention $QUICK_ATTN --pass fwd --dtype f32,f32,f32,bf16
# every list names each item once (--help says so): a repeat ran or printed the row twice
expect 2 "bad value for --L: '1024,1024' lists '1024' twice" bench attention $QUICK_ATTN --L 1024,1024
expect 2 "bad value for --L: '64,064' lists '064' twice" bench decode --quick --threads 2 --L 64,064
expect 2 "bad value for --D: '64,64' lists '64' twice" bench attention $QUICK_ATTN --D 64,64
expect 2 "bad value for --causal: '1,1' lists '1' twice" bench attention $QUICK_ATTN --causal 1,1
expect 2 "bad value for --pass: 'fwd,fwd' lists 'fwd' twice" bench attention $QUICK_ATTN --pass fwd,fwd
expect 2 "bad value for --pass: 'fwd,decode,fwd' lists 'fwd' twice" bench linear --quick --L 64 --pass fwd,decode,fwd
expect 2 "bad value for --type: 'q8_0,Q8_0' lists 'Q8_0' twice" bench matmul --quick --L 1 --type q8_0,Q8_0
expect 2 "bad value for --qk-file: 'a.qk,a.qk' lists 'a.qk' twice" bench sparse --qk-file a.qk,a.qk
expect 2 "--L lists 64 twice" bench attention --backend cuda --L 64,64
expect 2 "--threads is an option of the CPU bench; not taken on the GPU" bench decode --backend cuda --threads 2
expect 2 "unknown option .--thread." bench decode --backend cuda --thread 2
# ... named even where the list is too long for its buffer, and a list past its most items says so
expect 2 "bad value for --dtype: '(f32,){16}f32' lists 'f32' twice" bench attention \
    --dtype f32,f32,f32,f32,f32,f32,f32,f32,f32,f32,f32,f32,f32,f32,f32,f32,f32
expect 2 "bad value for --L: '.*' \(17 items; at most 16\)" bench attention --L 1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17
expect 2 "--kv-type lists 'f16' twice" eval -m /nonexistent.gguf --kv-type f16,f16
expect 2 "--lengths lists '1024' twice" eval -m /nonexistent.gguf --lengths 1024,1024
# one policy spelled two ways ran its rows twice
expect 2 "--kv lists one policy twice \('streaming:16' and 'streaming:016'\)" eval -m /nonexistent.gguf \
    --kv streaming:16,streaming:016
expect 2 "--kv lists one policy twice \(.h2o:64. and .h2o:0064.\)" eval -m /nonexistent.gguf --kv full,h2o:64,h2o:0064
expect 1 "LA_ERR_IO" eval -m /nonexistent.gguf --kv streaming:16,streaming:32,h2o:16
expect 2 "--stream-share '0.5,0.50'" ppl -m /nonexistent.gguf -f README.md --ctx 64 --sparse topk:0.9 \
    --score-heads "$TMP/sh" --stream-share 0.5,0.50
expect 2 "--calibrate-target '0.99,0.99'" ppl -m /nonexistent.gguf -f README.md --ctx 64 --sparse topk:0.9 \
    --calibrate-sparse "$TMP/cal" --calibrate-target 0.99,0.99
# numbers are plain decimals: strtod took hex, and "inf" past a range's top was a range error only by chance
for v in 0x0.8 0x1p-1 1e999 infinity; do
    expect 2 "--temp expects a number in \[0, 1e\+06\], got '$v'" run -m /nonexistent.gguf -p hi --temp $v
    expect 2 "--top-p expects a number in \[1e-06, 1\], got '$v'" run -m /nonexistent.gguf -p hi --top-p $v
    expect 2 "--budget expects a number" bench attention --budget $v
    expect 2 "--stream-share '$v'" ppl -m /nonexistent.gguf -f README.md --ctx 64 --sparse topk:0.9 \
        --score-heads "$TMP/sh" --stream-share $v
done
expect 2 "--calibrate-target '0x0.fp0'" ppl -m /nonexistent.gguf -f README.md --ctx 64 --sparse topk:0.9 \
    --calibrate-sparse "$TMP/cal" --calibrate-target 0x0.fp0
# ... and the plain ones pass (a missing model after them: exit 1)
for v in 0.5 .5 5e-1 +0.5 1; do
    expect 1 "LA_ERR_IO" run -m /nonexistent.gguf -p hi --temp $v --top-p $v
done
expect 2 "--backend is cpu or cuda, got ''" bench attention --backend ""
# the CUDA rows' own options (tools/bench_gpu.c), checked before any device is sought
expect 0 "usage: longattn bench attention" bench attention --backend cuda --help
expect 2 "unknown option '--bogus'" bench attention --backend cuda --bogus
expect 2 "--L expects an integer" bench attention --backend cuda --L " 7"
expect 2 "--L expects an integer" bench attention --backend cuda --L 1,,2
expect 2 "--pass takes fwd or bwd, got 'xbwdx'" bench attention --backend cuda --pass xbwdx
expect 2 "--iters expects an integer" bench decode --backend cuda --iters 0
expect 2 "--H needs a value" bench attention --backend cuda --H
expect 2 "unknown benchmark .bogus." bench bogus --backend cuda
expect 2 "no CUDA rows" bench peak --backend cuda

# --seed is a decimal integer like every other number: it was read with
# base 0, so "08" and "09" were refused (octal) and "010" was 8. A missing
# model after it shows the value was accepted (exit 1, not 2).
for v in 08 09 010 18446744073709551615; do
    expect 1 "LA_ERR_IO" run -m /nonexistent.gguf -p hi --seed $v
    expect 1 "LA_ERR_IO" eval -m /nonexistent.gguf --seed $v
    expect 1 "LA_ERR_IO" calibrate-duo -m /nonexistent.gguf --seed $v
done
for v in 0x10 18446744073709551616 1e3; do
    expect 2 "--seed expects a non-negative integer, got '$v'" run -m /nonexistent.gguf -p hi --seed $v
    expect 2 "--seed expects a non-negative integer, got '$v'" eval -m /nonexistent.gguf --seed $v
    expect 2 "--seed expects a non-negative integer, got '$v'" calibrate-duo -m /nonexistent.gguf --seed $v
done
# an option that needs --sparse topk is a usage error without it, found
# before the model is read (it was a library error after loading, exit 1,
# "kind 0 given")
expect 2 "--sparse-heads needs --sparse topk:G" run -m /nonexistent.gguf -p hi --sparse-heads x
expect 2 "--sparse-heads needs --sparse topk:G" run -m /nonexistent.gguf -p hi --sparse-heads x --sparse topk:4
expect 1 "LA_ERR_IO" run -m /nonexistent.gguf -p hi --sparse-heads x --sparse topk:0.9
expect 2 "--sparse-heads needs --sparse topk:G" ppl -m /nonexistent.gguf -f README.md --ctx 64 --sparse-heads x \
    --sparse static:1
expect 2 "--sparse-heads needs --sparse topk:G" eval -m /nonexistent.gguf --sparse-heads x
expect 2 "--calibrate-sparse needs --sparse topk" ppl -m /nonexistent.gguf -f README.md --ctx 64 --calibrate-sparse x
expect 1 "LA_ERR_IO" ppl -m /nonexistent.gguf -f README.md --ctx 64 --calibrate-sparse x --sparse topk:4
# a task's own options without the task were ignored in silence (as -f and
# --ppl-offset already were not)
expect 2 "--ppl-ctx is only for --task ppl" eval -m /nonexistent.gguf --ppl-ctx 64
expect 2 "--ppl-chunks is only for --task ppl" eval -m /nonexistent.gguf --task needle --ppl-chunks 0
expect 2 "--keys is only for --task multikey" eval -m /nonexistent.gguf --keys 3
expect 2 "--hops is only for --task vartrack" eval -m /nonexistent.gguf --task needle,multikey --hops 3
expect 2 "--chains is only for --task vartrack" eval -m /nonexistent.gguf --chains 3 --task ppl -f README.md
expect 1 "LA_ERR_IO" eval -m /nonexistent.gguf --task multikey,vartrack,ppl -f README.md --keys 3 --chains 1 \
    --hops 2 --ppl-ctx 64 --ppl-chunks 1
# missing files, a non-GGUF model, truncated GGUF models: exit 1 with the reason
expect 1 "cannot open '/nonexistent.gguf'" info /nonexistent.gguf
expect 1 "LA_ERR_IO: cannot open '/nonexistent.gguf'" run -m /nonexistent.gguf -p hi
expect 1 "cannot open '/nonexistent.txt'" run -m "$MODEL" -f /nonexistent.txt
expect 1 "cannot open '/nonexistent.txt'" ppl -m "$MODEL" -f /nonexistent.txt --ctx 64
# a directory opens but does not read: the system's reason, not a bare "read error"
expect 1 "cannot read '/': Is a directory" run -m "$MODEL" -f /
# ... and so do the library's own file readers (they said "no header" and "holds 0 scores")
expect 1 "--sparse-heads: LA_ERR_IO: cannot read '/': Is a directory" run -m "$MODEL" -p hi -n 1 --ctx 64 \
    --threads 2 --sparse topk:0.9 --sparse-heads /
expect 1 "cannot read the score file '/': Is a directory" run -m "$MODEL" -p hi -n 1 --ctx 64 --threads 2 --kv duo:16:/
expect 1 "LA_ERR_IO" eval -m /nonexistent.gguf
expect 1 "LA_ERR_IO" calibrate-duo -m /nonexistent.gguf
expect 1 "not a GGUF file" info README.md
# metadata as the file holds it: a u64 past 2^63 printed "(u64 out of range)", an f64 array element went
# through float (1e300: inf), and a key's newline split its line
printf 'GGUF\003\000\000\000\000\000\000\000\000\000\000\000\003\000\000\000\000\000\000\000' >"$TMP/meta.gguf"
printf '\001\000\000\000\000\000\000\000u\012\000\000\000\377\377\377\377\377\377\377\377' >>"$TMP/meta.gguf"
printf '\003\000\000\000\000\000\000\000a\nb\004\000\000\000\007\000\000\000' >>"$TMP/meta.gguf"
printf '\002\000\000\000\000\000\000\000fa\011\000\000\000\014\000\000\000\001\000\000\000\000\000\000\000' \
    >>"$TMP/meta.gguf"
printf '\234\165\000\210\074\344\067\176' >>"$TMP/meta.gguf"
expect 0 "^  u \[u64\] = 18446744073709551615$" info "$TMP/meta.gguf"
expect 0 "^  a.nb \[u32\] = 7$" info "$TMP/meta.gguf"
expect 0 "^  fa \[array of 1 f64\] = \[1e\+300\]$" info "$TMP/meta.gguf"
expect 1 "LA_ERR_FORMAT: not a GGUF file" run -m README.md -p hi
expect 1 "LA_ERR_FORMAT: not a GGUF file" ppl -m README.md -f README.md --ctx 64
expect 1 "LA_ERR_FORMAT: not a GGUF file" calibrate-duo -m README.md
expect 1 "is not a longattn-qk 1 file" bench sparse --qk-file README.md
printf 'longattn-qk 1 4 4 1099511627776 1 1099511627776\n' >"$TMP/huge.qk" # H x D overflowed to 0 and passed
expect 1 "is not a longattn-qk 1 file" bench sparse --qk-file "$TMP/huge.qk"
# a qk file of another size than its header promises: extra bytes were taken in silence (the shapes in
# the header are then not the data's), and a short file was refused only as "not a longattn-qk 1 file";
# a q or k that is not finite gave every selector a recall of nan, exit 0
{ printf 'longattn-qk 1 64 64 2 1 64\n'; head -c $((4 * (64 * 2 * 64 + 64 * 64))) /dev/zero; } >"$TMP/ok.qk"
expect 0 "Lq 64 Lk 64 H 2 Hkv 1 D 64" bench sparse --quick --threads 2 --qk-file "$TMP/ok.qk"
# --json names the file as a JSON string: a quote or backslash in the path made the row invalid JSON
cp "$TMP/ok.qk" "$TMP/q\"k\\.qk"
$LIMIT "$BIN" bench sparse --quick --json --threads 2 --qk-file "$TMP/q\"k\\.qk" >"$TMP/json" 2>"$TMP/err" ||
    fail "bench sparse --qk-file --json: exit $?"
json_lines "bench sparse --qk-file" "$TMP/json" '"op":"sparse_qk"'
{ cat "$TMP/ok.qk"; printf x; } >"$TMP/trailing.qk"
expect 1 "trailing.qk' has trailing bytes: its header \(q 64 x 2 x 64, k 64 x 1 x 64 f32\) promises 49152 bytes after it, the file holds 49153" \
    bench sparse --quick --threads 2 --qk-file "$TMP/trailing.qk"
# ... also from a pipe, whose size is known only at its end
checks=$((checks + 1))
cat "$TMP/trailing.qk" | "$BIN" bench sparse --quick --threads 2 --qk-file /dev/stdin 2>&1 >/dev/null |
    grep -q "'/dev/stdin' has trailing bytes after its q and k" || fail "bench sparse --qk-file from a pipe: trailing bytes taken"
head -c 1000 "$TMP/ok.qk" >"$TMP/cut.qk"
expect 1 "cut.qk' is truncated: .* promises 49152 bytes after it, the file holds 973" bench sparse --quick \
    --threads 2 --qk-file "$TMP/cut.qk"
{ printf 'longattn-qk 1 64 64 2 1 64\n'; head -c $((4 * (64 * 2 * 64 + 64 * 64))) /dev/zero | tr '\000' '\377'; } \
    >"$TMP/nan.qk"
expect 1 "nan.qk': q element 0 is -?nan; q and k must be finite" bench sparse --quick --threads 2 --qk-file "$TMP/nan.qk"
expect 1 "cannot read '/': Is a directory" bench sparse --quick --threads 2 --qk-file /
# a --qk-file that cannot be read is refused before the ceilings (about 2 s of measuring) are taken: each
# file is checked first, the last of a list too; a pipe, which reads once, still runs
for f in /nonexistent.qk "$TMP/ok.qk,/nonexistent.qk" "$TMP/ok.qk,$TMP/nan.qk" README.md; do
    checks=$((checks + 1))
    $LIMIT "$BIN" bench sparse --quick --threads 2 --qk-file "$f" >"$TMP/out" 2>&1
    st=$?
    if [ $st != 1 ] || grep -q "ceilings" "$TMP/out"; then
        fail "bench sparse --qk-file $f: exit $st (want 1), or the ceilings measured before the refusal"
        sed 's/^/    /' "$TMP/out" | head -3
    fi
done
checks=$((checks + 1))
cat "$TMP/ok.qk" | $LIMIT "$BIN" bench sparse --quick --threads 2 --qk-file "$TMP/ok.qk,/dev/stdin" >"$TMP/out" 2>&1 &&
    [ "$(grep -c "Lq 64 Lk 64 H 2 Hkv 1 D 64" "$TMP/out")" = 2 ] && grep -q "^ceilings" "$TMP/out" ||
    fail "bench sparse --qk-file FILE,/dev/stdin: $(head -c 200 "$TMP/out")"
expect 1 "--sparse-heads: LA_ERR_IO" run -m "$MODEL" -p hi --sparse topk:0.9 --sparse-heads /nonexistent.txt
: >"$TMP/empty.gguf"
expect 1 "empty" info "$TMP/empty.gguf"
for n in 4 16 1000 100000 20000000; do
    head -c $n "$MODEL" >"$TMP/cut.gguf"
    expect 1 "." info "$TMP/cut.gguf"
    expect 1 "LA_ERR_FORMAT" run -m "$TMP/cut.gguf" -p hi -n 1
done
expect 1 "cannot memory-map|LA_ERR_IO" run -m "$TMP" -p hi
# the system's reason for a model that cannot be opened (it said "cannot open" and "cannot memory-map")
expect 1 "LA_ERR_IO: '$TMP' is a directory, not a GGUF file" run -m "$TMP" -p hi
expect 1 "cannot open '/nonexistent.gguf': No such file or directory" info /nonexistent.gguf
# a prompt file with a NUL byte under --chat: the template took the text up to it, in silence
printf 'one two\000three' >"$TMP/nul.txt"
expect 2 "--chat: the prompt holds a NUL byte at offset 7" run -m "$MODEL" -f "$TMP/nul.txt" --chat -n 1 --ctx 64 \
    --threads 2
# an endless prompt file was read until memory ran out
[ -r /dev/zero ] && expect 1 "holds more than 1 GiB" run -m "$MODEL" -f /dev/zero -n 1

# eval --lengths near 2^30 was taken with a warning, then ran for hours:
# a length whose cache and prompt cannot fit in memory is a usage error
# before any prompt is built (the limit 300 catches a hang)
expect 2 "--lengths 1073741760 needs about [0-9.]+ GB .*more than this machine's" eval -m "$MODEL" \
    --lengths 1073741760 --depths 50 --no-heatmap --threads 2
expect 2 "--lengths 1073741760 needs about .*the f32 KV cache and the prompt" eval -m "$MODEL" --task vartrack \
    --lengths 1024,1073741760 --kv-type f16,f32 --threads 2
expect 2 "--lengths 1073741760 needs about" eval -m "$MODEL" --lengths 1073741760 --kv streaming:1024 --threads 2
expect 2 "--ppl-ctx 1073741824 needs about" eval -m "$MODEL" --task ppl -f README.md --ppl-ctx 1073741824
expect 2 "--ctx 16777216 needs about [0-9.]+ GB" calibrate-duo -m "$MODEL" --ctx 16777216 -o "$TMP/duo.txt"
# streaming holds its budget (and a prefill chunk), not the length: that much is allowed (a text too
# short for it is the next complaint)
expect 2 "has [0-9]+ tokens; --ppl-offset 0 plus --ppl-ctx 1073741824" eval -m "$MODEL" --task ppl -f README.md \
    --ppl-ctx 1073741824 --kv streaming:1024
# a length past the model's trained context (8192) is run, with the warning run --ctx gives, before the
# prompts are built (here the ppl task's offset then stops the run: exit 2)
expect 2 "longattn eval: warning: --lengths 9000 is beyond the model's trained context of 8192 tokens" eval \
    -m "$MODEL" --task needle,ppl --lengths 1024,9000 --depths 50 --no-heatmap -f README.md --ppl-ctx 64 \
    --ppl-offset 1000000000 --threads 2
# a length far past it is run too (as run --ctx and ppl --ctx are), with its cost said: the prompt's
# attention work grows with its square ("--lengths 1000000" gave the same bare warning as 9000, then days)
expect 2 "warning: a --lengths 1000000 prompt takes about 14901x the attention work of one at 8192 tokens" eval \
    -m "$MODEL" --task needle,ppl --lengths 1000000 --kv full -f README.md --ppl-offset 1000000000 --threads 2
expect 2 "longattn eval: warning: --ppl-ctx 9000 is beyond the model's trained context of 8192 tokens" eval \
    -m "$MODEL" --task ppl -f README.md --ppl-ctx 9000 --ppl-offset 1000000000 --threads 2
# dense-layers past the model's layers ran every layer dense in silence (and
# ppl --score-heads failed only after the whole run)
expect 2 "--sparse: dense-layers=1000 is more than the model's [0-9]+ layers" run -m "$MODEL" -p hi -n 1 \
    --ctx 64 --threads 2 --sparse topk:0.9,dense-layers=1000
expect 2 "--sparse: dense-layers=31 is more than the model's 30 layers" ppl -m "$MODEL" -f README.md --ctx 64 \
    --threads 2 --sparse topk:0.9,dense-layers=31 --score-heads "$TMP/sh"
expect 2 "--sparse: dense-layers=99 is more than" eval -m "$MODEL" --lengths 160 --depths 50 --no-heatmap \
    --threads 2 --sparse static:1,dense-layers=99
expect 0 "tokens/s" run -m "$MODEL" -p "one two three four" -n 1 --temp 0 --ctx 64 --threads 2 \
    --sparse static:1,dense-layers=30

# documented successes
expect 0 "GGUF v3, [0-9]+ metadata keys, [0-9]+ tensors" info "$MODEL"
expect 0 "tokens/s" run -m "$MODEL" -p "The capital of France is" -n 2 --temp 0 --ctx 64 --threads 2
expect 0 "tokens/s" run -m "$MODEL" -p hi -n 0 --temp 0 --ctx 64 --threads 2

# output that cannot be written is a failure: the results were lost with exit 0
if [ -w /dev/full ]; then
    for args in "info $MODEL" "--help" "run -m $MODEL -p hi -n 1 --temp 0 --ctx 64 --threads 2"; do
        checks=$((checks + 1))
        # shellcheck disable=SC2086 # each args splits into the command's words
        $LIMIT "$BIN" $args >/dev/full 2>"$TMP/err"
        st=$?
        [ $st = 1 ] && grep -q "longattn: cannot write the output" "$TMP/err" ||
            fail "longattn $args >/dev/full: exit $st, $(head -c 200 "$TMP/err")"
    done
    # run stops at the first token it cannot write (it generated all -n before)
    checks=$((checks + 1))
    $LIMIT "$BIN" run -m "$MODEL" -p "The capital of France is" -n 40 --temp 0 --ctx 64 --threads 2 >/dev/full 2>"$TMP/err"
    st=$?
    [ $st = 1 ] && grep -q "generation: *1 tokens.*stop: the output could not be written" "$TMP/err" ||
        fail "run -n 40 >/dev/full: exit $st, $(grep generation "$TMP/err")"
    # ... and so do ppl and eval, at the first result they cannot write (they ran to the end, results lost)
    head -c 1200 bench/data/ppl-text.txt >"$TMP/p272.txt" # 272 tokens: two chunks of 128
    checks=$((checks + 1))
    $LIMIT "$BIN" ppl -m "$MODEL" -f "$TMP/p272.txt" --ctx 128 --threads 2 >/dev/full 2>"$TMP/err"
    st=$?
    [ $st = 1 ] && grep -q "longattn: cannot write the output" "$TMP/err" && ! grep -q "tokens evaluated" "$TMP/err" ||
        fail "ppl >/dev/full: exit $st (want 1), or it went on past the first chunk: $(tail -c 300 "$TMP/err")"
    for json in "" --json; do
        checks=$((checks + 1))
        $LIMIT "$BIN" eval -m "$MODEL" --task needle --lengths 160 --depths 50 --kv full,streaming:64 \
            --heatmap "$TMP/hm" --threads 2 $json >/dev/full 2>"$TMP/err"
        st=$?
        [ $st = 1 ] && grep -q "longattn: cannot write the output" "$TMP/err" && ! grep -q "streaming" "$TMP/err" ||
            fail "eval $json >/dev/full: exit $st (want 1), or it ran the next policy: $(tail -c 300 "$TMP/err")"
    done
fi

# --json output
$LIMIT "$BIN" bench attention --quick --json --L 256 --D 64 --H 2 --Hkv 1 --pass fwd --causal 1 --threads 2 \
    >"$TMP/json" 2>"$TMP/err" || fail "bench attention --json: exit $?"
json_lines "bench attention" "$TMP/json" '"op":"attention"'
$LIMIT "$BIN" bench linear --quick --json --L 512 --H 1 --D 64 --pass fwd,decode --threads 2 \
    >"$TMP/json" 2>"$TMP/err" || fail "bench linear --json: exit $?"
json_lines "bench linear" "$TMP/json" '"mixer":'
$LIMIT "$BIN" bench decode --quick --json --L 1024 --threads 2 >"$TMP/json" 2>"$TMP/err" ||
    fail "bench decode --json: exit $?"
json_lines "bench decode" "$TMP/json" '"op":"decode"'
$LIMIT "$BIN" eval -m "$MODEL" --task needle --lengths 160 --depths 50 --kv full --json --no-heatmap --threads 2 \
    >"$TMP/json" 2>"$TMP/err" || fail "eval --json: exit $?"
json_lines "eval" "$TMP/json" '"summary":true'
# JSON text is UTF-8: bytes that are not (here a --kv score file's name; a reply cut inside a character)
# were printed as they were, and a JSON reader failed on the line; valid characters pass as they are
U8NAME=$(printf 'x\303\251\342\202\254\355\240\200\300\377y')
cp bench/data/duo-scores-SmolLM2-135M-Instruct.txt "$TMP/$U8NAME.txt"
$LIMIT "$BIN" eval -m "$MODEL" --task needle --lengths 160 --depths 50 --kv "duo:16:$TMP/$U8NAME.txt" --json \
    --no-heatmap --threads 2 >"$TMP/json" 2>"$TMP/err" || fail "eval --json --kv duo:16:FILE: exit $?"
checks=$((checks + 1))
if command -v python3 >/dev/null 2>&1; then
    python3 - "$TMP/json" <<'EOF' || fail "eval --json: a line is not UTF-8 JSON, or the policy's bytes not as expected"
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1], encoding="utf-8").read().splitlines()]
assert rows and all(r["policy"].endswith("x\u00e9\u20ac" + "\ufffd" * 5 + "y.txt") for r in rows), rows
EOF
fi
# --sparse reaches eval's sessions and is carried on every row
$LIMIT "$BIN" eval -m "$MODEL" --task needle --lengths 200 --depths 50 --kv full --json --no-heatmap --threads 2 \
    --sparse static:1 >"$TMP/json" 2>"$TMP/err" || fail "eval --sparse --json: exit $?"
json_lines "eval --sparse" "$TMP/json" '"sparse":"static:1"'
grep -q "block-sparse prefill: static:1" "$TMP/err" || fail "eval --sparse: no line names the sparse prefill"
expect 2 "--sparse: 'bogus'" eval -m "$MODEL" --sparse bogus
# under a stateful KV policy the prefill attends through the policy, densely: the report says no
# block-sparse prefill ran (it printed a density of 0.000 per layer, as if nothing was computed)
expect 0 "no block-sparse prefill ran" run -m "$MODEL" -p "one two three four five" -n 1 --ctx 64 --threads 2 \
    --kv h2o:8 --sparse topk:0.9
# a row that fails: a JSON row with "error", exit 1
expect 1 '"error":"head_dim 7 is unsupported' bench attention --quick --json --L 256 --D 7 --H 1 --Hkv 1 --pass fwd \
    --threads 2
# one failed row among rows that ran still fails the sweep (it exited 0 when any row ran)
expect 1 '"error":"head_dim 7 is unsupported' bench attention --quick --json --L 256 --D 64,7 --H 1 --Hkv 1 \
    --pass fwd --threads 2
# a row whose setup the library refuses says why (it said "out of memory")
expect 1 '"error":"la_kv_cache_create: head_dim is 12; must be a multiple of 8' bench kvquant --quick --json --L 64 \
    --D 12 --threads 2

echo "cli contract: $checks checks, $failed failed"
[ $failed = 0 ]
