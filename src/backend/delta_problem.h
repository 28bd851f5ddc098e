/* The validated, normalised form of a delta-rule call (la_delta_rule_*), as
 * the CPU kernels (src/cpu/linear/delta_isa.c, delta_backward_isa.c)
 * receive it. src/ops/linear/delta.c builds it and is the only place that
 * checks arguments. States reuse the linear mixers' la_linear_state. */
#ifndef LA_DELTA_PROBLEM_H
#define LA_DELTA_PROBLEM_H

#include "backend/linear_problem.h"

typedef struct {
    int64_t num_seqs;  /* B for dense, num_seqs for varlen */
    int64_t L;         /* dense: tokens per sequence; varlen: the longest */
    int64_t H, Hkv, Dk, Dv;
    const int32_t *cu; /* varlen token offsets, or NULL */
    la_attn_operand q, k, v;
    la_attn_operand beta; /* [.., H]: d is always 0 */
    la_attn_operand g;    /* gated: f32 log decays [.., H]; data NULL otherwise */
    la_attn_operand out;
    la_linear_state state_in, state_out; /* either may be absent; the same for decode (in place) */
    bool l2norm;
    bool dkv_accumulate; /* backward: grouped heads sum dk, dv in f32 scratch as long as the sequence
                          * (H > Hkv and dk or dv not f32); otherwise rows go out chunk by chunk */
    float scale;
    int form;          /* la_linear_form */
    int64_t chunk;
    la_simd simd;
    int threads;
} la_delta_problem;

typedef struct {
    la_delta_problem fwd; /* out unset */
    la_attn_operand dout, dq, dk, dv, dbeta, dg;
    la_linear_state dstate_out; /* gradient reaching the final state; data NULL = 0 */
    la_linear_state dstate_in;  /* data NULL: not wanted */
} la_delta_backward_problem;

/* Tokens [*t0, *t0 + *len) of sequence b (t0 0 for a dense batch, whose
 * batch stride selects the sequence). */
static inline void la_delta_seq(const la_delta_problem *p, int64_t b, int64_t *t0, int64_t *len) {
    if (p->cu) {
        *t0 = p->cu[b];
        *len = p->cu[b + 1] - p->cu[b];
    } else {
        *t0 = 0;
        *len = p->L;
    }
}

#endif
