/* The score rule of exact attention, written once: which keys a query row
 * sees (causal bottom-right, sliding windows, sinks) at element and at block
 * granularity, and what a visible score becomes (scale, softcap, ALiBi,
 * softmax or sigmoid) with its derivative. The forward, backward and decode
 * kernels of every backend take their masks and score transforms from here
 * (the CPU kernels through their vector forms in cpu/attention/score_simd.h,
 * which implement these formulas lane-wise), and so do the block-sparse
 * kernels (cpu/sparse/), inside every block their index lists.
 *
 *   s_ij  = scale * q_i . k_j
 *   if softcap > 0:  s_ij = softcap * tanh(s_ij / softcap)
 *   s_ij -= alibi_slope[h] * |diag_i - j|          diag_i = i + Lk - Lq
 *   visible(i, j) = j < hi_i and (j >= lo_i or j < sinks), where
 *     hi_i = causal ? diag_i + 1 : (window_right >= 0 ? diag_i + window_right + 1 : Lk)
 *     lo_i = window_left >= 0 ? diag_i - window_left : 0      (both clamped to [0, Lk])
 *   softmax: p_ij = exp(s_ij - lse_i) over visible j
 *   sigmoid: p_ij = sigmoid(s_ij + sigmoid_bias) over visible j
 * A row that sees no key has out 0 and lse -inf. */
#ifndef LA_SCORE_RULE_H
#define LA_SCORE_RULE_H

#include "base/base.h"

#include <math.h>

#if defined(__CUDACC__)
#define LA_RULE_FN static inline __host__ __device__
#else
#define LA_RULE_FN static inline
#endif

typedef struct {
    float scale;               /* resolved: never 0 */
    int causal;
    int64_t window_left, window_right, sinks;
    float softcap;             /* 0 = off */
    const float *alibi_slopes; /* [H] or NULL */
    la_score_fn score;
    float sigmoid_bias;
} la_score_rule;

/* ---- which keys a row sees ---- */

/* Keys visible to row i of a sequence with lq queries and lk keys: j is
 * visible iff j < *hi and (j >= *lo or j < sinks). Both non-decreasing in i. */
LA_RULE_FN void la_rule_key_range(const la_score_rule *r, int64_t i, int64_t lq, int64_t lk, int64_t *lo,
                                  int64_t *hi) {
    int64_t diag = i + lk - lq;
    int64_t h = lk;
    if (r->causal) h = diag + 1;
    else if (r->window_right >= 0) h = diag + r->window_right + 1;
    int64_t l = r->window_left >= 0 ? diag - r->window_left : 0;
    if (h > lk) h = lk;
    if (h < 0) h = 0;
    if (l < 0) l = 0;
    if (l > h) l = h;
    *lo = l;
    *hi = h;
}

/* The sink keys of a sequence with lk keys: [0, la_rule_sinks). */
LA_RULE_FN int64_t la_rule_sinks(const la_score_rule *r, int64_t lk) { return r->sinks < lk ? r->sinks : lk; }

LA_RULE_FN bool la_rule_visible(const la_score_rule *r, int64_t i, int64_t j, int64_t lq, int64_t lk) {
    int64_t lo, hi;
    la_rule_key_range(r, i, lq, lk, &lo, &hi);
    return j < hi && (j >= lo || j < r->sinks);
}

/* How a block of rows sees a block of keys: a kernel skips NONE blocks,
 * masks element-wise in SOME blocks and runs ALL blocks unmasked. */
typedef enum { LA_BLOCK_NONE = 0, LA_BLOCK_SOME = 1, LA_BLOCK_ALL = 2 } la_block_vis;

/* Row i against keys [j0, j1), given the row's key range. */
LA_RULE_FN la_block_vis la_rule_row_block(const la_score_rule *r, int64_t lo, int64_t hi, int64_t j0, int64_t j1) {
    const int64_t sinks = r->sinks;
    bool all = j1 <= hi && (j0 >= lo || j1 <= sinks || sinks >= lo);
    bool none = j0 >= hi || (j0 >= sinks && (j1 < hi ? j1 : hi) <= lo);
    return none ? LA_BLOCK_NONE : all ? LA_BLOCK_ALL : LA_BLOCK_SOME;
}

/* Rows [i0, i1) against keys [j0, j1). */
LA_RULE_FN la_block_vis la_rule_block(const la_score_rule *r, int64_t i0, int64_t i1, int64_t j0, int64_t j1,
                                      int64_t lq, int64_t lk) {
    bool any = false, all = true;
    for (int64_t i = i0; i < i1; i++) {
        int64_t lo, hi;
        la_rule_key_range(r, i, lq, lk, &lo, &hi);
        la_block_vis v = la_rule_row_block(r, lo, hi, j0, j1);
        any |= v != LA_BLOCK_NONE;
        all &= v == LA_BLOCK_ALL;
    }
    return !any ? LA_BLOCK_NONE : all ? LA_BLOCK_ALL : LA_BLOCK_SOME;
}

/* ---- what a visible score becomes ---- */

/* ALiBi slope of query head h (0 = off). */
LA_RULE_FN float la_rule_slope(const la_score_rule *r, int64_t h) { return r->alibi_slopes ? r->alibi_slopes[h] : 0.0f; }

/* The score of q.k = dot for a key `dist` = diag_i - j from the diagonal,
 * and d(score)/d(dot) in *dscore (may be NULL). */
LA_RULE_FN float la_rule_score(const la_score_rule *r, float dot, float slope, float dist, float *dscore) {
    float s = r->scale * dot, ds = r->scale;
    if (r->softcap > 0) {
        float t = tanhf(s / r->softcap);
        s = r->softcap * t;
        ds *= 1.0f - t * t;
    }
    s -= slope * fabsf(dist);
    if (dscore) *dscore = ds;
    return s;
}

/* Weight of a visible score: exp(s - lse) for softmax, sigmoid(s + bias). */
LA_RULE_FN float la_rule_weight(const la_score_rule *r, float s, float lse) {
    return r->score == LA_SCORE_SOFTMAX ? expf(s - lse) : 1.0f / (1.0f + expf(-(s + r->sigmoid_bias)));
}

/* d(loss)/d(score) from the weight p and dp = d(loss)/dp (= dout . v_j):
 * softmax p (dp - delta) with delta = dout . out; sigmoid dp p (1 - p). */
LA_RULE_FN float la_rule_dscore(const la_score_rule *r, float p, float dp, float delta) {
    return r->score == LA_SCORE_SOFTMAX ? p * (dp - delta) : dp * p * (1.0f - p);
}

#endif
