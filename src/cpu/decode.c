/* Decode attention on the CPU: pick the instruction-set copy of the kernel
 * in decode_isa.c. */
#include "attention_problem.h"
#include "cpu/isa.h"

LA_ISA_DECLARE(la_status, la_cpu_attention_decode_kernel, (la_context *ctx, const la_attn_problem *p));

la_status la_cpu_attention_decode(la_context *ctx, const la_attn_problem *p) {
    switch (p->simd) {
    case LA_SIMD_SCALAR: return la_cpu_attention_decode_kernel_scalar(ctx, p);
    case LA_SIMD_AVX2: return la_cpu_attention_decode_kernel_avx2(ctx, p);
    default: return la_cpu_attention_decode_kernel_avx512(ctx, p);
    }
}
