/* Exact attention forward on the CPU: pick the instruction-set copy of the
 * kernel in exact_forward_isa.c. */
#include "attention_problem.h"
#include "cpu/isa.h"

LA_ISA_DECLARE(la_status, la_cpu_attention_forward_kernel, (la_context *ctx, const la_attn_problem *p));

la_status la_cpu_attention_forward(la_context *ctx, const la_attn_problem *p) {
    /* key indices travel in int32 vector lanes inside the kernel */
    if (p->Lk > INT32_MAX / 2)
        return la_fail(LA_ERR_UNSUPPORTED, "%lld keys per sequence; the CPU forward supports up to %d",
                       (long long)p->Lk, INT32_MAX / 2);
    switch (p->simd) {
    case LA_SIMD_SCALAR: return la_cpu_attention_forward_kernel_scalar(ctx, p);
    case LA_SIMD_AVX2: return la_cpu_attention_forward_kernel_avx2(ctx, p);
    default: return la_cpu_attention_forward_kernel_avx512(ctx, p);
    }
}
