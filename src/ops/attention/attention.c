/* Public attention entry points: validate every argument before touching
 * memory, normalise it into the call's problem (backend/attention_problem.h)
 * and run it on the backend of the tensors' device. */
#include "backend/attention_problem.h"
#include "ops/attention/validate.h"
#include "ops/backends.h"

#include <math.h>

la_attention_params la_attention_params_default(void) {
    la_attention_params p;
    memset(&p, 0, sizeof p);
    p.window_left = -1;
    p.window_right = -1;
    p.score = LA_SCORE_SOFTMAX;
    return p;
}

/* A window of 2^62 keys or more reaches past every sequence (whose element
 * counts fit in int64): it is unlimited, and the rule, which adds windows
 * to row indices, must not see it (INT64_MAX overflowed there). */
static int64_t window_of(int64_t w) { return w >= ((int64_t)1 << 62) ? -1 : w; }

la_score_rule la_attn_rule_of(const la_attention_params *p, int64_t D) {
    return (la_score_rule){.scale = p->scale > 0 ? p->scale : 1.0f / sqrtf((float)D),
                           .causal = p->causal,
                           .window_left = window_of(p->window_left),
                           .window_right = window_of(p->window_right),
                           .sinks = p->sinks,
                           .softcap = p->softcap,
                           .alibi_slopes = p->alibi_slopes,
                           .score = p->score,
                           .sigmoid_bias = p->sigmoid_bias};
}

la_status la_attn_check_params(const la_attention_params *p) {
    if (!p) return la_fail(LA_ERR_NULL, "params is NULL");
    if ((unsigned)p->score >= LA_SCORE_COUNT)
        return la_fail(LA_ERR_ARGUMENT, "params->score is %d; not a la_score_fn", (int)p->score);
    if (!isfinite(p->scale) || p->scale < 0)
        return la_fail(LA_ERR_ARGUMENT, "params->scale is %g; must be finite and >= 0", (double)p->scale);
    if (!isfinite(p->softcap) || p->softcap < 0)
        return la_fail(LA_ERR_ARGUMENT, "params->softcap is %g; must be finite and >= 0 (0 = off)",
                       (double)p->softcap);
    if (!isfinite(p->sigmoid_bias))
        return la_fail(LA_ERR_ARGUMENT, "params->sigmoid_bias is not finite");
    if (p->window_left < -1 || p->window_right < -1)
        return la_fail(LA_ERR_ARGUMENT, "window (%lld, %lld): each side must be >= 0 or -1 (unlimited)",
                       (long long)p->window_left, (long long)p->window_right);
    if (p->causal && p->window_right > 0)
        return la_fail(LA_ERR_ARGUMENT,
                       "window_right is %lld with causal; causal allows no key right of the diagonal "
                       "(use 0 or -1)", (long long)p->window_right);
    if (p->sinks < 0) return la_fail(LA_ERR_ARGUMENT, "params->sinks is %lld; must be >= 0", (long long)p->sinks);
    if (p->deterministic != 0 && p->deterministic != 1)
        return la_fail(LA_ERR_ARGUMENT, "params->deterministic is %d; must be 0 or 1", p->deterministic);
    return LA_OK;
}

static la_status check_cu_seqlens(const int32_t *cu, const char *name, int64_t n, int64_t total, int64_t *max_len) {
    if (!cu) return la_fail(LA_ERR_NULL, "%s is NULL", name);
    la_status s = la_check_aligned(cu, sizeof *cu, name);
    if (s) return s;
    if (cu[0] != 0) return la_fail(LA_ERR_SEQLENS, "%s[0] is %d; must be 0", name, cu[0]);
    *max_len = 0;
    for (int64_t i = 0; i < n; i++) {
        if (cu[i + 1] < cu[i])
            return la_fail(LA_ERR_SEQLENS, "%s is not monotone: [%lld]=%d > [%lld]=%d", name, (long long)i,
                           cu[i], (long long)(i + 1), cu[i + 1]);
        if (cu[i + 1] - cu[i] > *max_len) *max_len = cu[i + 1] - cu[i];
    }
    if (cu[n] > total)
        return la_fail(LA_ERR_SEQLENS, "%s[%lld] is %d, past the end of the %lld packed tokens", name,
                       (long long)n, cu[n], (long long)total);
    return LA_OK;
}

/* Checks shared by forward, backward and decode: q, k, v and the shape
 * relations between them. Fills the problem's sizes and operands. k and v
 * may hold no key (dim 1 dense, dim 0 packed); q may be an empty packed
 * batch. kv_own_dtype: k/v may differ from q's dtype (decode's cache). */
static la_status check_qkv(const la_attention_params *p, const la_tensor *q, const la_tensor *k,
                           const la_tensor *v, bool varlen, bool paged, bool kv_own_dtype, la_attn_problem *P) {
    la_status s;
    int nd = varlen ? 3 : 4;
    unsigned zero_tokens = varlen ? 1u : 2u; /* an empty batch entry or an empty packed batch */
    if ((s = la_check_tensor(q, "q", nd, varlen ? 1u : 0u)) || (s = la_check_tensor(k, "k", nd, zero_tokens)) ||
        (s = la_check_tensor(v, "v", nd, zero_tokens)))
        return s;
    if (kv_own_dtype ? k->dtype != v->dtype : k->dtype != q->dtype || v->dtype != q->dtype)
        return la_fail(LA_ERR_DTYPE, "q, k, v dtypes are %s, %s, %s; %s", la_dtype_name(q->dtype),
                       la_dtype_name(k->dtype), la_dtype_name(v->dtype),
                       kv_own_dtype ? "k and v must match" : "they must match");
    if ((s = check_same_shape(k, "k", v, "v", nd))) return s;
    int hx = nd - 2; /* head axis */
    P->H = q->shape[hx];
    P->Hkv = k->shape[hx];
    P->D = q->shape[hx + 1];
    if (k->shape[hx + 1] != P->D)
        return la_fail(LA_ERR_SHAPE, "k head_dim is %lld but q head_dim is %lld", (long long)k->shape[hx + 1],
                       (long long)P->D);
    if (P->D % 8 != 0 || P->D > LA_MAX_HEAD_DIM)
        return la_fail(LA_ERR_UNSUPPORTED, "head_dim %lld is unsupported; must be a multiple of 8 up to %d",
                       (long long)P->D, LA_MAX_HEAD_DIM);
    if (P->H % P->Hkv != 0)
        return la_fail(LA_ERR_SHAPE, "k has %lld heads; q's %lld heads must be a multiple", (long long)P->Hkv,
                       (long long)P->H);
    if (!varlen && !paged && k->shape[0] != q->shape[0])
        return la_fail(LA_ERR_SHAPE, "k batch is %lld but q batch is %lld", (long long)k->shape[0],
                       (long long)q->shape[0]);
    /* Every tensor argument's elements lie in distinct memory: for an output
     * two threads would race on a shared element, and inputs follow the
     * same rule so one description fits every argument. */
    if ((s = la_check_no_self_overlap(q, "q")) || (s = la_check_no_self_overlap(k, "k")) ||
        (s = la_check_no_self_overlap(v, "v")))
        return s;
    if ((s = la_check_aligned(p->alibi_slopes, sizeof(float), "alibi_slopes"))) return s;
    if (p->alibi_slopes)
        for (int64_t h = 0; h < P->H; h++)
            if (!isfinite(p->alibi_slopes[h]))
                return la_fail(LA_ERR_ARGUMENT, "alibi_slopes[%lld] is not finite", (long long)h);
    P->q = operand_of(q, !varlen);
    P->k = operand_of(k, !varlen);
    P->v = operand_of(v, !varlen);
    P->rule = la_attn_rule_of(p, P->D);
    return LA_OK;
}

/* A tensor shaped like `like` (q or k) with dtype f32 or `like`'s: the
 * outputs, and the backward's out and dout. */
static la_status check_output_like(const la_tensor *t, const char *name, const la_tensor *like, int nd, unsigned zero,
                                   bool f32_only) {
    la_status s;
    if ((s = la_check_tensor(t, name, nd, zero))) return s;
    if ((s = check_same_shape(t, name, like, like == t ? name : "its input", nd))) return s;
    if ((s = check_dtype_is(t, name, LA_F32, f32_only ? LA_F32 : like->dtype))) return s;
    return la_check_no_self_overlap(t, name);
}

static la_status check_lse(const la_tensor *lse, const char *name, const la_tensor *q, int nd, unsigned zero) {
    la_status s;
    if ((s = la_check_tensor(lse, name, nd - 1, zero))) return s;
    if ((s = check_dtype_is(lse, name, LA_F32, LA_F32))) return s;
    for (int i = 0; i < nd - 1; i++)
        if (lse->shape[i] != q->shape[i])
            return la_fail(LA_ERR_SHAPE, "%s dim %d is %lld; must equal q dim %d (%lld)", name, i,
                           (long long)lse->shape[i], i, (long long)q->shape[i]);
    return la_check_no_self_overlap(lse, name);
}

static la_status check_layout_varlen(const la_attention_params *p, const la_tensor *q, const la_tensor *k,
                                     la_attn_problem *P) {
    if (!p->cu_seqlens_q) {
        if (p->cu_seqlens_k)
            return la_fail(LA_ERR_ARGUMENT, "cu_seqlens_k is set without cu_seqlens_q");
        P->num_seqs = q->shape[0];
        P->Lq = q->shape[1];
        P->Lk = k->shape[1];
        return LA_OK;
    }
    if (p->num_seqs <= 0)
        return la_fail(LA_ERR_ARGUMENT, "num_seqs is %lld with cu_seqlens; must be > 0", (long long)p->num_seqs);
    if (p->num_seqs >= INT32_MAX) return la_fail(LA_ERR_OVERFLOW, "num_seqs %lld is too large", (long long)p->num_seqs);
    la_status s;
    if ((s = check_cu_seqlens(p->cu_seqlens_q, "cu_seqlens_q", p->num_seqs, q->shape[0], &P->Lq)) ||
        (s = check_cu_seqlens(p->cu_seqlens_k, "cu_seqlens_k", p->num_seqs, k->shape[0], &P->Lk)))
        return s;
    P->num_seqs = p->num_seqs;
    P->cu_q = p->cu_seqlens_q;
    P->cu_k = p->cu_seqlens_k;
    return LA_OK;
}

/* The products the kernels form from the sizes (query rows num_seqs * H *
 * Lq, K/V groups num_seqs * Hkv, key rows, and each times D) fit in int64.
 * The views' own checks do not cover them: a varlen batch's sizes come
 * from cu_seqlens, an empty q or k bounds no head count, and a decode
 * cache's capacity is blocks_per_seq * block_size. A length of 0 counts as
 * 1, so an empty side still bounds the head count. */
static la_status check_problem_sizes(const la_attn_problem *P) {
    const struct { const char *what; int64_t heads, len; } sides[2] = {{"query", P->H, P->Lq}, {"key", P->Hkv, P->Lk}};
    for (int i = 0; i < 2; i++) {
        int64_t n;
        if (!la_mul_i64(P->num_seqs, sides[i].heads, &n) || !la_mul_i64(n, sides[i].len > 0 ? sides[i].len : 1, &n) ||
            !la_mul_i64(n, P->D, &n))
            return la_fail(LA_ERR_OVERFLOW,
                           "%lld sequences x %lld heads x %lld %s rows x head_dim %lld overflows 64 bits",
                           (long long)P->num_seqs, (long long)sides[i].heads, (long long)sides[i].len, sides[i].what,
                           (long long)P->D);
    }
    return LA_OK;
}



/* Bytes of an int32 / float array of n entries, saturated (n is bounded by
 * checked sizes; saturation only widens what counts as overlapping). */

static la_status begin(la_context *ctx, const la_attention_params *p, la_attn_problem *P, la_attn_op op) {
    P->op = op;
    if (!ctx) return la_fail(LA_ERR_NULL, "ctx is NULL");
    P->simd = ctx->simd;
    P->threads = ctx->threads;
    return la_attn_check_params(p);
}

la_status la_attn_forward_prepare(la_context *ctx, const la_attention_params *p, const la_tensor *q,
                                  const la_tensor *k, const la_tensor *v, la_tensor *out, la_tensor *lse,
                                  la_attn_forward_problem *Fp, const la_backend **be_out) {
    la_attn_forward_problem F = {0};
    la_status s = begin(ctx, p, &F.a, LA_ATTN_FORWARD);
    if (s) return s;
    bool varlen = p->cu_seqlens_q != NULL;
    int nd = varlen ? 3 : 4;
    if ((s = check_qkv(p, q, k, v, varlen, false, false, &F.a))) return s;
    if ((s = check_layout_varlen(p, q, k, &F.a))) return s;
    if ((s = check_problem_sizes(&F.a))) return s;
    if ((s = check_output_like(out, "out", q, nd, varlen ? 1u : 0u, false))) return s;
    if (lse) {
        if (p->score != LA_SCORE_SOFTMAX)
            return la_fail(LA_ERR_ARGUMENT, "lse is defined for softmax only; pass NULL with sigmoid");
        if ((s = check_lse(lse, "lse", q, nd, varlen ? 1u : 0u))) return s;
    }
    /* num_seqs is ignored (and unchecked: up to INT64_MAX) in a dense call */
    const size_t cu_bytes = la_array_bytes(varlen ? p->num_seqs + 1 : 0, sizeof(int32_t));
    const la_arg_memory mem[] = {{"out", out}, {"lse", lse}, {"q", q}, {"k", k}, {"v", v},
                              {"alibi_slopes", NULL, p->alibi_slopes, la_array_bytes(F.a.H, sizeof(float))},
                              {"cu_seqlens_q", NULL, p->cu_seqlens_q, cu_bytes},
                              {"cu_seqlens_k", NULL, p->cu_seqlens_k, cu_bytes}};
    if ((s = la_check_arg_memory(ctx, mem, 8, 2))) return s;
    const la_tensor *all[] = {q, k, v, out, lse};
    const la_backend *be = backend_of(all, 5);
    if (!be) return LA_ERR_DEVICE;
    F.a.device = q->device;
    F.out = operand_of(out, !varlen);
    F.lse = operand_of(lse, !varlen);
    *Fp = F;
    *be_out = be;
    return LA_OK;
}

la_status la_attention_forward(la_context *ctx, const la_attention_params *p, const la_tensor *q,
                               const la_tensor *k, const la_tensor *v, la_tensor *out, la_tensor *lse) {
    la_attn_forward_problem F;
    const la_backend *be;
    la_status s = la_attn_forward_prepare(ctx, p, q, k, v, out, lse, &F, &be);
    if (s || (s = la_backend_run(ctx, be, &F.a))) return s;
    return la_succeed();
}

la_status la_attn_backward_prepare(la_context *ctx, const la_attention_params *p, const la_tensor *q,
                                   const la_tensor *k, const la_tensor *v, const la_tensor *out,
                                   const la_tensor *dout, const la_tensor *lse, la_tensor *dq, la_tensor *dk,
                                   la_tensor *dv, la_attn_backward_problem *Bp_out, const la_backend **be_out) {
    la_attn_backward_problem Bp = {0};
    la_attn_problem *P = &Bp.fwd.a;
    la_status s = begin(ctx, p, P, LA_ATTN_BACKWARD);
    if (s) return s;
    bool varlen = p->cu_seqlens_q != NULL;
    int nd = varlen ? 3 : 4;
    unsigned zq = varlen ? 1u : 0u, zk = varlen ? 1u : 2u;
    if ((s = check_qkv(p, q, k, v, varlen, false, false, P))) return s;
    if ((s = check_layout_varlen(p, q, k, P))) return s;
    if ((s = check_problem_sizes(P))) return s;
    if ((s = la_check_tensor(out, "out", nd, zq)) || (s = check_same_shape(out, "out", q, "q", nd)) ||
        (s = la_check_tensor(dout, "dout", nd, zq)) || (s = check_same_shape(dout, "dout", q, "q", nd)))
        return s;
    if ((s = check_dtype_is(out, "out", LA_F32, q->dtype)) || (s = check_dtype_is(dout, "dout", LA_F32, q->dtype)))
        return s;
    if ((s = la_check_no_self_overlap(out, "out")) || (s = la_check_no_self_overlap(dout, "dout"))) return s;
    if (p->score == LA_SCORE_SOFTMAX) {
        if (!lse) return la_fail(LA_ERR_NULL, "lse is NULL; softmax backward needs the forward's lse");
        if ((s = check_lse(lse, "lse", q, nd, zq))) return s;
    } else if (lse) {
        return la_fail(LA_ERR_ARGUMENT, "lse is defined for softmax only; pass NULL with sigmoid");
    }
    if ((s = check_output_like(dq, "dq", q, nd, zq, false)) || (s = check_output_like(dk, "dk", k, nd, zk, false)) ||
        (s = check_output_like(dv, "dv", v, nd, zk, false)))
        return s;
    /* num_seqs is ignored (and unchecked: up to INT64_MAX) in a dense call */
    const size_t cu_bytes = la_array_bytes(varlen ? p->num_seqs + 1 : 0, sizeof(int32_t));
    const la_arg_memory mem[] = {{"dq", dq}, {"dk", dk}, {"dv", dv}, {"q", q}, {"k", k}, {"v", v},
                              {"out", out}, {"dout", dout}, {"lse", lse},
                              {"alibi_slopes", NULL, p->alibi_slopes, la_array_bytes(P->H, sizeof(float))},
                              {"cu_seqlens_q", NULL, p->cu_seqlens_q, cu_bytes},
                              {"cu_seqlens_k", NULL, p->cu_seqlens_k, cu_bytes}};
    if ((s = la_check_arg_memory(ctx, mem, 12, 3))) return s;
    const la_tensor *all[] = {q, k, v, out, dout, lse, dq, dk, dv};
    const la_backend *be = backend_of(all, 9);
    if (!be) return LA_ERR_DEVICE;
    P->device = q->device;
    Bp.fwd.out = operand_of(out, !varlen);
    Bp.fwd.lse = operand_of(lse, !varlen);
    Bp.dout = operand_of(dout, !varlen);
    Bp.dq = operand_of(dq, !varlen);
    Bp.dk = operand_of(dk, !varlen);
    Bp.dv = operand_of(dv, !varlen);
    Bp.deterministic = p->deterministic;
    *Bp_out = Bp;
    *be_out = be;
    return LA_OK;
}

la_status la_attention_backward(la_context *ctx, const la_attention_params *p, const la_tensor *q,
                                const la_tensor *k, const la_tensor *v, const la_tensor *out,
                                const la_tensor *dout, const la_tensor *lse, la_tensor *dq, la_tensor *dk,
                                la_tensor *dv) {
    la_attn_backward_problem Bp;
    const la_backend *be;
    la_status s = la_attn_backward_prepare(ctx, p, q, k, v, out, dout, lse, dq, dk, dv, &Bp, &be);
    if (s || (s = la_backend_run(ctx, be, &Bp.fwd.a))) return s;
    return la_succeed();
}

static la_status check_kv_layout(const la_kv_layout *L, const la_tensor *k, la_attn_decode_problem *Dp) {
    la_attn_problem *P = &Dp->fwd.a;
    la_kv_pages *kv = &Dp->kv;
    int64_t B = P->num_seqs;
    la_status s;
    if (L && ((s = la_check_aligned(L->seqlens_k, sizeof(int32_t), "seqlens_k")) ||
              (s = la_check_aligned(L->block_table, sizeof(int32_t), "block_table"))))
        return s;
    if (!L || !L->block_table) {
        P->Lk = k->shape[1];
        if (k->shape[0] != B)
            return la_fail(LA_ERR_SHAPE, "k batch is %lld but q batch is %lld (contiguous cache)",
                           (long long)k->shape[0], (long long)B);
        if (L && L->seqlens_k) {
            for (int64_t b = 0; b < B; b++)
                if (L->seqlens_k[b] < 0 || L->seqlens_k[b] > P->Lk)
                    return la_fail(LA_ERR_SEQLENS, "seqlens_k[%lld] is %d; must be in [0, %lld]", (long long)b,
                                   L->seqlens_k[b], (long long)P->Lk);
            kv->seqlens_k = L->seqlens_k;
        }
        return LA_OK;
    }
    if (!L->seqlens_k) return la_fail(LA_ERR_NULL, "seqlens_k is NULL; a paged cache needs it");
    if (L->blocks_per_seq <= 0)
        return la_fail(LA_ERR_ARGUMENT, "blocks_per_seq is %lld; must be > 0", (long long)L->blocks_per_seq);
    int64_t num_blocks = k->shape[0], block_size = k->shape[1], cap;
    if (!la_mul_i64(L->blocks_per_seq, block_size, &cap) || !la_mul_i64(L->blocks_per_seq, B, &(int64_t){0}))
        return la_fail(LA_ERR_OVERFLOW, "blocks_per_seq * block_size overflows");
    for (int64_t b = 0; b < B; b++) {
        int32_t n = L->seqlens_k[b];
        if (n < 0 || n > cap)
            return la_fail(LA_ERR_SEQLENS, "seqlens_k[%lld] is %d; must be in [0, %lld] (blocks_per_seq * block_size)",
                           (long long)b, n, (long long)cap);
        for (int64_t blk = 0; blk * block_size < n; blk++) {
            int32_t id = L->block_table[b * L->blocks_per_seq + blk];
            if (id < 0 || id >= num_blocks)
                return la_fail(LA_ERR_SEQLENS, "block_table[%lld][%lld] is %d; must be in [0, %lld)", (long long)b,
                               (long long)blk, id, (long long)num_blocks);
        }
    }
    P->Lk = cap;
    kv->seqlens_k = L->seqlens_k;
    kv->block_table = L->block_table;
    kv->blocks_per_seq = L->blocks_per_seq;
    kv->block_size = block_size;
    return LA_OK;
}

la_status la_attention_decode(la_context *ctx, const la_attention_params *p, const la_tensor *q,
                              const la_tensor *k, const la_tensor *v, const la_kv_layout *layout, la_tensor *out,
                              la_tensor *lse) {
    la_attn_decode_problem Dp = {0};
    la_attn_problem *P = &Dp.fwd.a;
    la_status s = begin(ctx, p, P, LA_ATTN_DECODE);
    if (s) return s;
    if (p->cu_seqlens_q || p->cu_seqlens_k)
        return la_fail(LA_ERR_ARGUMENT, "decode takes seqlens through la_kv_layout; cu_seqlens must be NULL");
    if (layout && layout->block_table == NULL && layout->blocks_per_seq != 0)
        return la_fail(LA_ERR_ARGUMENT, "blocks_per_seq is %lld but block_table is NULL",
                       (long long)layout->blocks_per_seq);
    /* q is f32; the cache may be narrower (k and v of one dtype). */
    if ((s = check_qkv(p, q, k, v, false, layout && layout->block_table, true, P))) return s;
    if ((s = check_dtype_is(q, "q", LA_F32, LA_F32))) return s;
    P->num_seqs = q->shape[0];
    P->Lq = q->shape[1];
    /* out and lse before the layout: its arrays are read for q's batch, which
     * a paged cache does not bound, so every tensor must agree on it first */
    if ((s = check_output_like(out, "out", q, 4, 0, false))) return s;
    if (lse) {
        if (p->score != LA_SCORE_SOFTMAX)
            return la_fail(LA_ERR_ARGUMENT, "lse is defined for softmax only; pass NULL with sigmoid");
        if ((s = check_lse(lse, "lse", q, 4, 0))) return s;
    }
    if ((s = check_kv_layout(layout, k, &Dp))) return s;
    if ((s = check_problem_sizes(P))) return s;
    const int64_t B = P->num_seqs;
    const bool paged = layout && layout->block_table;
    const la_arg_memory mem[] = {
        {"out", out}, {"lse", lse}, {"q", q}, {"k", k}, {"v", v},
        {"alibi_slopes", NULL, p->alibi_slopes, la_array_bytes(P->H, sizeof(float))},
        {"seqlens_k", NULL, layout ? layout->seqlens_k : NULL, la_array_bytes(B, sizeof(int32_t))},
        {"block_table", NULL, paged ? layout->block_table : NULL,
         la_array_bytes(paged ? B * layout->blocks_per_seq : 0, sizeof(int32_t))}};
    if ((s = la_check_arg_memory(ctx, mem, 8, 2))) return s;
    const la_tensor *all[] = {q, k, v, out, lse};
    const la_backend *be = backend_of(all, 5);
    if (!be) return LA_ERR_DEVICE;
    P->device = q->device;
    Dp.fwd.out = operand_of(out, true);
    Dp.fwd.lse = operand_of(lse, true);
    if ((s = la_backend_run(ctx, be, P))) return s;
    return la_succeed();
}
