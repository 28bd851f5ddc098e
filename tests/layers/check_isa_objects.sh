#!/usr/bin/env bash
# Each instruction-set copy of the kernels uses only its own level's
# instructions, so a CPU without the next level never meets an illegal one:
#   scalar  no ymm/zmm registers (no AVX at all)
#   avx2    no zmm registers (no AVX-512)
#   avx512  no AVX512_BF16 instruction (Skylake-X and Ice Lake lack it)
# and, so the check itself can fail, the avx512_bf16 copy does hold
# vdpbf16ps (the BF16 ceiling loop and la_matmul's dot_bf16 kernel,
# src/cpu/quant/matmul_bf16_isa.c, use it), and the plainly built objects
# hold none (they run on every CPU). AMX tile instructions appear
# in the AMX kernel's object alone (src/cpu/quant/matmul_amx.c: la_matmul's
# kernel and la_peak_amx_bf16_gflops' loop, called only
# where the CPU, the OS and the context allow them): not in any ISA copy nor
# in the plainly built objects; and the AMX object, when the compiler built
# one, does hold tdpbf16ps.
# Arguments: four ';'-separated object lists, scalar avx2 avx512 avx512_bf16,
# then the library's other objects and the AMX objects (empty when the
# compiler has no AMX).
set -u
command -v objdump >/dev/null || { echo "objdump not found (binutils)"; echo "0 passed, 1 failed"; exit 1; }
passed=0 failed=0
BF16='vdpbf16ps|vcvtne2ps2bf16|vcvtneps2bf16'

disasm() { # object list ';'-separated -> instructions on stdout
    local IFS=';'
    for o in $1; do objdump -d --no-show-raw-insn "$o" | awk -F'\t' 'NF >= 2 {print $2}'; done
}

expect_none() { # level objects regex what
    local hits
    hits=$(disasm "$2" | grep -E -c "$3")
    if [ "$hits" -eq 0 ]; then passed=$((passed + 1)); echo "ok: $1 objects have no $4"
    else failed=$((failed + 1)); echo "FAIL: $1 objects hold $hits instructions with $4:"
         disasm "$2" | grep -E "$3" | sort | uniq -c | sort -rn | head -5; fi
}

expect_some() {
    if disasm "$2" | grep -E -q "$3"; then passed=$((passed + 1)); echo "ok: $1 objects hold $4"
    else failed=$((failed + 1)); echo "FAIL: $1 objects hold no $4 (is the check looking at the right files?)"; fi
}

expect_none scalar "$1" '%[yz]mm' "ymm/zmm registers"
expect_none avx2 "$2" '%zmm|%k[0-7]' "AVX-512 registers"
expect_none avx512 "$3" "$BF16" "AVX512_BF16 instruction"
expect_some avx512 "$3" '%zmm' "AVX-512 code"
expect_some avx512_bf16 "$4" 'vdpbf16ps' "vdpbf16ps"
expect_none "plain (non-ISA)" "$5" "$BF16" "AVX512_BF16 instruction"
dot_obj=$(tr ';' '\n' <<<"$4" | grep 'matmul_bf16_isa' || true)
if [ -n "$dot_obj" ]; then expect_some "dot_bf16 kernel's" "$dot_obj" 'vdpbf16ps' "vdpbf16ps"
else failed=$((failed + 1)); echo "FAIL: no matmul_bf16_isa object in the avx512_bf16 copies"; fi
AMX='tdpbf16ps|tdpb[su][su]d|tileloadd|tilestored|ldtilecfg|sttilecfg|tilezero|tilerelease'
for level in scalar avx2 avx512 avx512_bf16; do
    case $level in scalar) objs=$1 ;; avx2) objs=$2 ;; avx512) objs=$3 ;; *) objs=$4 ;; esac
    expect_none "$level" "$objs" "$AMX" "AMX instruction"
done
expect_none "plain (non-ISA)" "$5" "$AMX" "AMX instruction"
if [ -n "${6:-}" ]; then expect_some amx "$6" 'tdpbf16ps' "tdpbf16ps"
else echo "ok: no AMX object in this build (the compiler has no AMX): nothing to check"; fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
