/* Validation and dispatch of decode over quantised KV pages. The pages are
 * the cache's own host memory (never the caller's), so only q, out and lse
 * are checked here; the cache checked its indices before building kv. */
#include "ops/kvquant/kvq_decode.h"

#include "cpu/kvquant/kvq_kernels.h"
#include "ops/validate.h"

#include <math.h>

static la_status check_rule(const char *fn, const la_attention_params *p) {
    if (p->window_left != -1 || p->window_right != -1 || p->sinks || p->softcap != 0 || p->alibi_slopes ||
        p->score != LA_SCORE_SOFTMAX || p->cu_seqlens_q || p->cu_seqlens_k || p->num_seqs)
        return la_fail(LA_ERR_UNSUPPORTED,
                       "%s: a quantised cache's decode takes scale and causal only (no windows, sinks, softcap, "
                       "ALiBi, sigmoid or cu_seqlens)",
                       fn);
    if (!isfinite(p->scale) || p->scale < 0)
        return la_fail(LA_ERR_ARGUMENT, "%s: scale %g must be finite and >= 0 (0: 1/sqrt(head_dim))", fn, (double)p->scale);
    return LA_OK;
}

la_status la_kvq_decode(la_context *ctx, const char *fn, const la_attention_params *p, const la_tensor *q,
                        const la_kvq_layer *kv, int64_t seq0, int64_t Hkv, la_tensor *out, la_tensor *lse) {
    if (!ctx || !p || !q || !out)
        return la_fail(LA_ERR_NULL, "%s: %s is NULL", fn, !ctx ? "ctx" : !p ? "params" : !q ? "q" : "out");
    la_status s;
    if ((s = check_rule(fn, p)) || (s = la_check_tensor(q, "q", 4, 0)) || (s = la_check_tensor(out, "out", 4, 0)) ||
        (lse && (s = la_check_tensor(lse, "lse", 3, 0))))
        return s;
    const int64_t B = q->shape[0], Lq = q->shape[1], H = q->shape[2], D = q->shape[3];
    if (q->dtype != LA_F32) return la_fail(LA_ERR_DTYPE, "%s: q is %s; must be f32", fn, la_dtype_name(q->dtype));
    if (out->dtype != LA_F32 && out->dtype != LA_BF16 && out->dtype != LA_F16)
        return la_fail(LA_ERR_DTYPE, "%s: out is %s; must be f32, bf16 or f16", fn, la_dtype_name(out->dtype));
    if (lse && lse->dtype != LA_F32) return la_fail(LA_ERR_DTYPE, "%s: lse must be f32", fn);
    if (D != kv->f.D)
        return la_fail(LA_ERR_SHAPE, "%s: q head_dim is %lld; the cache's is %lld", fn, (long long)D, (long long)kv->f.D);
    if (H % Hkv)
        return la_fail(LA_ERR_SHAPE, "%s: q has %lld heads, not a multiple of the cache's %lld KV heads", fn,
                       (long long)H, (long long)Hkv);
    if (B > kv->region_seqs - seq0)
        return la_fail(LA_ERR_ARGUMENT, "%s: sequences [%lld, %lld) are outside the cache's [0, %lld)", fn,
                       (long long)seq0, (long long)(seq0 + B), (long long)kv->region_seqs);
    for (int i = 0; i < 4; i++)
        if (out->shape[i] != q->shape[i])
            return la_fail(LA_ERR_SHAPE, "%s: out dim %d is %lld; q's is %lld", fn, i, (long long)out->shape[i],
                           (long long)q->shape[i]);
    if (lse)
        for (int i = 0; i < 3; i++)
            if (lse->shape[i] != q->shape[i])
                return la_fail(LA_ERR_SHAPE, "%s: lse dim %d is %lld; q's is %lld", fn, i, (long long)lse->shape[i],
                               (long long)q->shape[i]);
    const la_tensor *all[] = {q, out, lse};
    for (int i = 0; i < 3; i++)
        if (all[i] && all[i]->device.kind != LA_DEVICE_CPU)
            return la_fail(LA_ERR_DEVICE, "%s: %s must be host memory (the cache lives on the host)", fn,
                           i == 0 ? "q" : i == 1 ? "out" : "lse");
    if ((s = la_check_no_self_overlap(out, "out")) || (lse && (s = la_check_no_self_overlap(lse, "lse"))))
        return s;
    const la_arg_memory mem[] = {{"out", out}, {"lse", lse}, {"q", q}};
    if ((s = la_check_arg_memory(ctx, mem, 3, 2))) return s;
    la_kvq_decode_problem P = {.kv = *kv, .seq0 = seq0, .num_seqs = B, .Lq = Lq, .H = H, .Hkv = Hkv,
                               .scale = p->scale > 0 ? p->scale : 1.0f / sqrtf((float)D), .causal = p->causal != 0,
                               .q = la_attn_operand_of(q, true), .out = la_attn_operand_of(out, true),
                               .lse = la_attn_operand_of(lse, true), .simd = ctx->simd, .threads = ctx->threads};
    size_t bytes;
    void *ws;
    if ((s = LA_ISA_PICK(la_cpu_kvq_decode_workspace, P.simd)(&P, &bytes)) || (s = la_workspace(ctx, bytes, &ws)) ||
        (s = LA_ISA_PICK(la_cpu_kvq_decode_kernel, P.simd)(&P, ws)))
        return s;
    return la_succeed();
}
