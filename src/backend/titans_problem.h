/* The validated, normalised form of a Titans neural-memory call
 * (la_titans_*), as a backend's kernels receive it. src/ops/linear/titans.c
 * builds it and is the only place that checks arguments. */
#ifndef LA_TITANS_PROBLEM_H
#define LA_TITANS_PROBLEM_H

#include "backend/linear_problem.h"

typedef struct {
    int64_t num_seqs;  /* B for dense, num_seqs for varlen */
    int64_t L;         /* dense: tokens per sequence; varlen: the longest */
    int64_t H, Hkv, Dk, Dv;
    const int32_t *cu; /* varlen token offsets, or NULL */
    la_attn_operand q, k, v, out;
    la_attn_operand eta, theta, alpha;   /* f32 [.., H] per token (head_stride 1) */
    la_linear_state mem_in, mom_in;      /* M and S at the start: either may be absent (0) */
    la_linear_state mem_out, mom_out;    /* at the end: either may be absent; may be the inputs (decode) */
    int form;          /* la_linear_form */
    int64_t chunk;     /* the gradient mini-batch (both forms) */
    la_simd simd;
    int threads;
    la_device device;
    bool backward;     /* la_titans_backward_problem with this first */
} la_titans_problem;

typedef struct {
    la_titans_problem fwd;                /* out unset */
    la_attn_operand dout, dq, dk, dv, deta, dtheta, dalpha;
    la_linear_state dmem_out, dmom_out;   /* gradients reaching the final states; data NULL = 0 */
    la_linear_state dmem_in, dmom_in;     /* data NULL: not wanted */
} la_titans_backward_problem;

/* Tokens [*t0, *t0 + *len) of sequence b (t0 0 for a dense batch). */
static inline void la_titans_seq(const la_titans_problem *p, int64_t b, int64_t *t0, int64_t *len) {
    if (p->cu) {
        *t0 = p->cu[b];
        *len = p->cu[b + 1] - p->cu[b];
    } else {
        *t0 = 0;
        *len = p->L;
    }
}

#endif
