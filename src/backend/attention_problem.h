/* The validated, normalised form of an attention call, as every backend's
 * kernels receive it. The op layer (src/ops/attention/) builds it and is the
 * only place that checks arguments, so validation and dispatch cannot
 * disagree. Each call's problem embeds the shared part first, so a backend
 * function that takes `const la_attn_problem *` (supports, workspace) sees
 * any of them:
 *   la_attn_problem          sizes, q/k/v, the score rule, threads and SIMD level
 *   la_attn_forward_problem  + out, lse
 *   la_attn_backward_problem   the forward's problem + dout, dq, dk, dv
 *   la_attn_decode_problem     the forward's problem + the KV cache's pages
 *   la_attn_merge_problem    + the parts (no q/k/v; sizes only)
 *   la_attn_sparse_problem     the forward's problem + the block index (sparse_problem.h)
 *   la_attn_sparse_backward_problem  the backward's problem + the block index
 *   la_attn_kv_append_problem  + the cache and each new row's place in it */
#ifndef LA_ATTENTION_PROBLEM_H
#define LA_ATTENTION_PROBLEM_H

#include "backend/score_rule.h"

/* One tensor argument as strides over (sequence, token, head). Element
 * (b, t, h, d) lives at data + (b*batch_stride + t*token_stride +
 * h*head_stride + d) * elem_size. For varlen, b is 0 and t is the packed
 * token index. For lse (no head dim) d is always 0. */
typedef struct {
    char *data;            /* NULL when the optional argument is absent */
    la_dtype dtype;
    int64_t batch_stride;  /* elements */
    int64_t token_stride;
    int64_t head_stride;
} la_attn_operand;

typedef enum {
    LA_ATTN_FORWARD,
    LA_ATTN_BACKWARD,
    LA_ATTN_DECODE,
    LA_ATTN_MERGE,
    LA_ATTN_SPARSE_FORWARD,  /* la_attn_sparse_problem (backend/sparse_problem.h) */
    LA_ATTN_SPARSE_BACKWARD, /* la_attn_sparse_backward_problem */
    LA_ATTN_KV_APPEND,       /* la_attn_kv_append_problem */
} la_attn_op;

typedef struct {
    la_attn_op op;
    int64_t num_seqs;        /* B for dense and decode, num_seqs for varlen */
    int64_t H, Hkv, D;
    int64_t Lq, Lk;          /* dense: per-sequence lengths; varlen: the longest; decode: Lq and the cache capacity */
    const int32_t *cu_q;     /* varlen token offsets, or NULL */
    const int32_t *cu_k;
    la_attn_operand q, k, v;
    la_score_rule rule;
    la_simd simd;
    int threads;
    la_device device;        /* where every tensor of the call lives */
} la_attn_problem;

typedef struct {
    la_attn_problem a;
    la_attn_operand out, lse; /* lse.data NULL when not asked for */
} la_attn_forward_problem;

typedef struct {
    la_attn_forward_problem fwd; /* out and lse are the forward's results */
    la_attn_operand dout, dq, dk, dv;
    int deterministic;           /* la_attention_params.deterministic: 0 or 1 */
} la_attn_backward_problem;

/* Where a sequence's keys live in a decode cache. */
typedef struct {
    const int32_t *seqlens_k;   /* NULL: every sequence uses Lk keys */
    const int32_t *block_table; /* NULL: contiguous cache */
    int64_t blocks_per_seq, block_size;
} la_kv_pages;

typedef struct {
    la_attn_forward_problem fwd;
    la_kv_pages kv;
} la_attn_decode_problem;

/* Parts [n_parts] of outputs and log-sum-exps over the same rows, merged
 * into out and lse (lse.data NULL when not asked for). a.num_seqs, a.Lq
 * (tokens per sequence, or the packed tokens with num_seqs 1), a.H and a.D
 * give the rows; q/k/v, the rule and a.Lk are unset. The parts stay the
 * caller's validated tensors (an operand array would cost memory per call
 * for any number of parts); la_attn_merge_part gives their operands. */
typedef struct {
    la_attn_problem a;
    int n_parts;
    const la_tensor *out_parts, *lse_parts; /* [n_parts]: [B, L, H, D] / [B, L, H] or [T, H, D] / [T, H] */
    bool has_batch;                         /* the [B, L, H, D] form */
    la_attn_operand out, lse;
} la_attn_merge_problem;

/* New keys and values written into a decode cache: a.k and a.v are the new
 * rows [num_seqs, Lq, Hkv, D] (a.Lq new tokens per sequence); the caches
 * share shape and strides, so token (b, i)'s row starts at element
 * dst_rows[b * Lq + i] of both (its heads at head_stride apart). The op
 * layer computed dst_rows from the layout and checked that they are in
 * range and distinct; q, the rule and a.Lk are unset. */
typedef struct {
    la_attn_problem a;
    la_attn_operand k_cache, v_cache;
    const int64_t *dst_rows; /* host memory, [num_seqs * Lq] */
} la_attn_kv_append_problem;

/* Rows of sequence b: q rows [*q0, *q0 + *lq), key rows [*k0, *k0 + *lk).
 * For a dense batch q0 = k0 = 0 and the batch stride selects the sequence. */
static inline void la_attn_seq(const la_attn_problem *p, int64_t b, int64_t *q0, int64_t *lq, int64_t *k0,
                               int64_t *lk) {
    if (p->cu_q) {
        *q0 = p->cu_q[b];
        *lq = p->cu_q[b + 1] - p->cu_q[b];
        *k0 = p->cu_k[b];
        *lk = p->cu_k[b + 1] - p->cu_k[b];
    } else {
        *q0 = 0;
        *lq = p->Lq;
        *k0 = 0;
        *lk = p->Lk;
    }
}

/* Keys in use by sequence b of a decode cache. */
static inline int64_t la_kv_len(const la_attn_decode_problem *p, int64_t b) {
    return p->kv.seqlens_k ? p->kv.seqlens_k[b] : p->fwd.a.Lk;
}

/* An operand from a [B, L, H, D] (has_batch) or [T, H, D] tensor, or from a
 * [B, L, H] / [T, H] lse tensor (validated); all zero for t NULL. */
static inline la_attn_operand la_attn_operand_of(const la_tensor *t, bool has_batch) {
    la_attn_operand o = {0};
    if (!t) return o;
    const int off = has_batch ? 1 : 0;
    o.data = (char *)t->data;
    o.dtype = t->dtype;
    o.batch_stride = has_batch ? t->stride[0] : 0;
    o.token_stride = t->stride[off];
    o.head_stride = t->stride[off + 1];
    return o;
}

/* Part i of a merge as operands. */
static inline void la_attn_merge_part(const la_attn_merge_problem *p, int i, la_attn_operand *out,
                                      la_attn_operand *lse) {
    *out = la_attn_operand_of(&p->out_parts[i], p->has_batch);
    *lse = la_attn_operand_of(&p->lse_parts[i], p->has_batch);
}

/* Element pointer (bytes). */
static inline char *la_attn_at(const la_attn_operand *o, int64_t b, int64_t t, int64_t h) {
    return o->data + (b * o->batch_stride + t * o->token_stride + h * o->head_stride) *
                         (int64_t)la_dtype_size(o->dtype);
}

#endif
