/* Float64 reference of exact attention: the dense formula, one (sequence,
 * head) at a time, slow and obviously right. Every fast kernel is tested
 * against it.
 *
 * Semantics (what the library promises):
 *   s_ij = scale * q_i . k_j
 *   if softcap > 0:  s_ij = softcap * tanh(s_ij / softcap)
 *   s_ij -= alibi_slope * |diag_i - j|        diag_i = i + Lk - Lq
 *   visible(i, j) = j < hi_i and (j >= lo_i or j < sinks), where
 *     hi_i = causal ? diag_i + 1 : (window_right >= 0 ? diag_i + window_right + 1 : Lk)
 *     lo_i = window_left >= 0 ? diag_i - window_left : 0      (both clamped to [0, Lk])
 *   softmax: p_ij = exp(s_ij - lse_i) over visible j, lse_i = log sum exp s_ij
 *   sigmoid: p_ij = sigmoid(s_ij + sigmoid_bias) over visible j
 *   out_i = sum_j p_ij v_j; a row with no visible key has out 0, lse -inf.
 * Restricted (block-sparse attention): with keep set, a key j is visible to
 * row i only where keep[i * Lk + j] is also non-zero; the formula is the
 * same over what remains. */
#ifndef LA_ATTENTION_REF_H
#define LA_ATTENTION_REF_H

#include <stdint.h>

typedef struct {
    double scale;
    int causal;
    int64_t window_left, window_right, sinks;
    double softcap;
    double alibi_slope;  /* this head's slope; 0 = off */
    int sigmoid;         /* 0 softmax, 1 sigmoid */
    double sigmoid_bias;
    const unsigned char *keep; /* [Lq][Lk] or NULL: keys each row may use besides the rule */
} ref_attn_opts;

/* q [Lq][D], k, v [Lk][D], out [Lq][D], lse [Lq] (may be NULL), row-major. */
void ref_attention_forward(const ref_attn_opts *o, int64_t Lq, int64_t Lk, int64_t D, const double *q,
                           const double *k, const double *v, double *out, double *lse);

/* Query row i of the same problem alone: qi [D], out_i [D], lse_i may be
 * NULL. O(Lk D), so a benchmark can check a few rows of a long problem. */
void ref_attention_forward_row(const ref_attn_opts *o, int64_t i, int64_t Lq, int64_t Lk, int64_t D, const double *qi,
                               const double *k, const double *v, double *out_i, double *lse_i);

/* Gradients of the same head. dq is overwritten; dk and dv are ADDED to, so
 * query heads sharing one K/V head (GQA) accumulate into it. */
void ref_attention_backward(const ref_attn_opts *o, int64_t Lq, int64_t Lk, int64_t D, const double *q,
                            const double *k, const double *v, const double *dout, double *dq, double *dk,
                            double *dv);

/* Merge of n partial results over disjoint key sets, row by row:
 * outs [n][rows][D], lses [n][rows] -> out [rows][D], lse [rows] (may be NULL).
 *   out = sum_i exp(lse_i - lse) out_i,   lse = log sum_i exp(lse_i)
 * A part with lse -inf is skipped; a row where all are -inf has out 0 and
 * lse -inf; a row with a NaN or +inf lse_i has out and lse NaN. */
void ref_attention_merge(int n, int64_t rows, int64_t D, const double *outs, const double *lses, double *out,
                         double *lse);

#endif
