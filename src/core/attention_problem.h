/* The validated, normalised form of an attention call that every backend
 * kernel receives. The API layer (attention_api.c) builds it and is the only
 * place that checks arguments, so validation and dispatch cannot disagree. */
#ifndef LA_ATTENTION_PROBLEM_H
#define LA_ATTENTION_PROBLEM_H

#include "internal.h"

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

typedef enum { LA_ATTN_FORWARD, LA_ATTN_BACKWARD, LA_ATTN_DECODE } la_attn_kind;

typedef struct {
    la_attn_kind kind;
    int64_t num_seqs;        /* B for dense and decode, num_seqs for varlen */
    int64_t H, Hkv, D;
    int64_t Lq, Lk;          /* dense: per-sequence lengths; varlen: max; decode: Lq and the cache capacity */
    const int32_t *cu_q;     /* varlen token offsets, or NULL */
    const int32_t *cu_k;
    la_attn_operand q, k, v, out, lse;
    la_attn_operand dout, dq, dk, dv;  /* backward only */

    float scale;             /* resolved: never 0 */
    int causal;
    int64_t window_left, window_right, sinks;
    float softcap;
    const float *alibi_slopes;
    la_score_fn score;
    float sigmoid_bias;

    /* decode only */
    const int32_t *seqlens_k;   /* NULL: every sequence uses Lk keys */
    const int32_t *block_table; /* NULL: contiguous cache */
    int64_t blocks_per_seq, block_size;

    la_simd simd;
    int threads;
} la_attn_problem;

/* Rows of sequence b: q rows [*q0, *q0 + *lq), key rows [*k0, *k0 + *lk).
 * For a dense batch q0 = k0 = 0 and the batch stride selects the sequence. */
static inline void la_attn_seq(const la_attn_problem *p, int64_t b, int64_t *q0, int64_t *lq,
                               int64_t *k0, int64_t *lk) {
    if (p->cu_q) {
        *q0 = p->cu_q[b];
        *lq = p->cu_q[b + 1] - p->cu_q[b];
        *k0 = p->cu_k[b];
        *lk = p->cu_k[b + 1] - p->cu_k[b];
    } else {
        *q0 = 0;
        *lq = p->Lq;
        *k0 = 0;
        *lk = p->seqlens_k ? p->seqlens_k[b] : p->Lk;
    }
}

/* Keys visible to query row i of a sequence with lq queries and lk keys:
 * j is visible iff j < *hi and (j >= *lo or j < sinks). The diagonal of
 * row i is key i + lk - lq (bottom-right alignment). */
static inline void la_attn_key_range(const la_attn_problem *p, int64_t i, int64_t lq, int64_t lk,
                                     int64_t *lo, int64_t *hi) {
    int64_t diag = i + lk - lq;
    int64_t h = lk;
    if (p->causal) h = diag + 1;
    else if (p->window_right >= 0) h = diag + p->window_right + 1;
    int64_t l = p->window_left >= 0 ? diag - p->window_left : 0;
    if (h > lk) h = lk;
    if (h < 0) h = 0;
    if (l < 0) l = 0;
    if (l > h) l = h;
    *lo = l;
    *hi = h;
}

static inline int la_attn_visible(const la_attn_problem *p, int64_t i, int64_t j, int64_t lq, int64_t lk) {
    int64_t lo, hi;
    la_attn_key_range(p, i, lq, lk, &lo, &hi);
    return j < hi && (j >= lo || j < p->sinks);
}

/* Element pointer helpers (bytes). */
static inline char *la_attn_at(const la_attn_operand *o, int64_t b, int64_t t, int64_t h) {
    return o->data + (b * o->batch_stride + t * o->token_stride + h * o->head_stride) *
                         (int64_t)la_dtype_size(o->dtype);
}

/* Backends. Each receives a validated problem and returns LA_OK or an error
 * it set with la_fail (allocation only). */
la_status la_cpu_attention_forward(la_context *ctx, const la_attn_problem *p);
la_status la_cpu_attention_backward(la_context *ctx, const la_attn_problem *p);
la_status la_cpu_attention_decode(la_context *ctx, const la_attn_problem *p);

#endif
