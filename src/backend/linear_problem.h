/* The validated, normalised form of a linear-mixer call (la_linear_attention_*),
 * as a backend's kernels receive it. src/ops/linear/ builds it and is the
 * only place that checks arguments. The forward problem is embedded first
 * in the backward's, so a backend's workspace slot takes either. */
#ifndef LA_LINEAR_PROBLEM_H
#define LA_LINEAR_PROBLEM_H

#include "backend/attention_problem.h"

typedef enum { LA_LINEAR_OP_FORWARD, LA_LINEAR_OP_BACKWARD } la_linear_op;

/* A [N, H, Dk, Dv'] f32 state: element (n, h, i, j) at
 * data[n*seq_stride + h*head_stride + i*row_stride + j]. */
typedef struct {
    float *data; /* NULL when absent */
    int64_t seq_stride, head_stride, row_stride;
} la_linear_state;

typedef struct {
    la_linear_op op;
    int64_t num_seqs;     /* B for dense, num_seqs for varlen */
    int64_t L;            /* dense: tokens per sequence; varlen: the longest */
    int64_t H, Hkv, Dk, Dv;
    int64_t Dx;           /* q and k's head dim; Dk is the feature dim (Dx for the elementwise maps) */
    int64_t Dvs;          /* state columns: Dv, or Dv + 1 with normalisation (the last is z) */
    const int32_t *cu;    /* varlen token offsets, or NULL */
    la_attn_operand q, k, v;
    la_attn_operand g;    /* decay TOKEN / CHANNEL: f32 log decays; data NULL otherwise */
    la_attn_operand out;
    la_linear_state state_in, state_out; /* either may be absent; may be the same (decode) */
    int feature;          /* la_feature_map */
    const float *proj;    /* Hedgehog: W [H][Dx][Dm] */
    int64_t Dm;           /* Hedgehog: Dk = 2 Dm */
    bool non_causal;
    int decay;            /* la_decay_kind */
    const float *head_log_decay;
    bool normalize;
    float norm_eps, scale;
    int form;             /* la_linear_form */
    int64_t chunk;
    la_simd simd;
    int threads;
    la_device device;
} la_linear_problem;

typedef struct {
    la_linear_problem fwd; /* out unset */
    la_attn_operand dout, dq, dk, dv, dg;
    la_linear_state dstate_out; /* gradient reaching the final state; data NULL = 0 */
    la_linear_state dstate_in;  /* data NULL: not wanted */
    float *dproj;               /* Hedgehog: dL/dW [H][Dx][Dm], or NULL */
} la_linear_backward_problem;

/* Tokens [*t0, *t0 + *len) of sequence b (t0 0 for a dense batch, whose
 * batch stride selects the sequence). */
static inline void la_linear_seq(const la_linear_problem *p, int64_t b, int64_t *t0, int64_t *len) {
    if (p->cu) {
        *t0 = p->cu[b];
        *len = p->cu[b + 1] - p->cu[b];
    } else {
        *t0 = 0;
        *len = p->L;
    }
}

#endif
