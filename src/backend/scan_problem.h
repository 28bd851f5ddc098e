/* The validated, normalised form of the state-space and attention-as-RNN
 * calls (la_selective_scan_*, la_causal_conv1d_*, la_aaren_*), as a
 * backend's kernels receive them. src/ops/linear/ssm.c and aaren.c build
 * them and are the only places that check arguments. Every problem starts
 * with la_scan_head, so the backend table's two scan slots take any of
 * them (head.kind says which). Token-major operands reuse la_attn_operand:
 * (sequence, token, "head") where the head index is a channel (u, delta, z,
 * x: element (b, t, d) = la_attn_at(op, b, t, d)) or a group (B, C) or a
 * head (Aaren's k, v). */
#ifndef LA_SCAN_PROBLEM_H
#define LA_SCAN_PROBLEM_H

#include "backend/attention_problem.h"

typedef enum {
    LA_SCAN_SSM_FORWARD,   /* la_ssm_problem (forward and decode) */
    LA_SCAN_SSM_BACKWARD,  /* la_ssm_backward_problem */
    LA_SCAN_CONV_FORWARD,  /* la_conv1d_problem (forward and update) */
    LA_SCAN_CONV_BACKWARD, /* la_conv1d_backward_problem */
    LA_SCAN_AAREN_FORWARD, /* la_aaren_problem (forward and decode) */
    LA_SCAN_AAREN_BACKWARD /* la_aaren_backward_problem */
} la_scan_kind;

typedef struct {
    la_scan_kind kind;
    la_simd simd;
    int threads;
    la_device device;
    int64_t num_seqs; /* B for dense, num_seqs for varlen */
    int64_t L;        /* dense: tokens per sequence; varlen: the longest */
    const int32_t *cu; /* varlen token offsets, or NULL */
} la_scan_head;

/* An f32 [N, R, C] array (state, or a parameter with N = 1): element
 * (n, r, c) at data[n*seq_stride + r*row_stride + c]. */
typedef struct {
    float *data; /* NULL when absent */
    int64_t seq_stride, row_stride;
} la_scan_array;

static inline float *la_scan_row(const la_scan_array *a, int64_t n, int64_t r) {
    return a->data + n * a->seq_stride + r * a->row_stride;
}

/* ---- selective scan ---- */
typedef struct {
    la_scan_head head;
    int64_t D, N, G;
    la_attn_operand u, delta, z, B, C; /* z.data NULL without gating */
    la_attn_operand out;               /* forward only */
    la_scan_array A;                   /* [D, N] */
    la_scan_array Dskip, delta_bias;   /* [D] as one row; data NULL when absent */
    la_scan_array state_in, state_out; /* [N, D, N]; may be the same (decode) */
    bool softplus;
    int form; /* la_scan_form */
    int64_t chunk;
} la_ssm_problem;

typedef struct {
    la_ssm_problem fwd; /* out, state_out unset */
    la_attn_operand dout, du, ddelta, dz, dB, dC;
    la_scan_array dA, dDskip, ddelta_bias; /* data NULL: not wanted */
    la_scan_array dstate_out;              /* gradient reaching the final state; NULL = 0 */
    la_scan_array dstate_in;               /* NULL: not wanted */
} la_ssm_backward_problem;

/* ---- causal depthwise convolution ---- */
typedef struct {
    la_scan_head head;
    int64_t D, W;
    bool silu;
    la_attn_operand x, out;
    la_scan_array weight, bias;        /* [D, W], [D] (bias data NULL when absent) */
    la_scan_array state_in, state_out; /* [N, D, W - 1]; may be the same (update) */
} la_conv1d_problem;

typedef struct {
    la_conv1d_problem fwd; /* out, state_out unset */
    la_attn_operand dout, dx;
    la_scan_array dweight, dbias, dstate_out, dstate_in; /* dbias, dstate_*: NULL absent */
} la_conv1d_backward_problem;

/* ---- Aaren ---- */
typedef struct {
    la_scan_head head;
    int64_t H, Dk, Dv;
    float scale;
    la_scan_array q; /* [H, Dk] */
    la_attn_operand k, v, out;
    la_scan_array state_in, state_out; /* [N, H, Dv + 2]: u, w, m */
    int form;
    int64_t chunk;
} la_aaren_problem;

typedef struct {
    la_aaren_problem fwd; /* out, state_out unset */
    la_attn_operand dout, dk, dv;
    la_scan_array dq, dstate_in; /* dq [H, Dk]; dstate_in NULL: not wanted */
    la_scan_array dstate_out;    /* the gradient reaching the final state (u, w, m); NULL = 0 */
} la_aaren_backward_problem;

/* Tokens [*t0, *t0 + *len) of sequence b (t0 0 for a dense batch, whose
 * batch stride selects the sequence). */
static inline void la_scan_seq(const la_scan_head *h, int64_t b, int64_t *t0, int64_t *len) {
    if (h->cu) {
        *t0 = h->cu[b];
        *len = h->cu[b + 1] - h->cu[b];
    } else {
        *t0 = 0;
        *len = h->L;
    }
}

#endif
