/* Float64 references of the state-space family, one sequence at a time,
 * written from the papers as plain loops: the selective scan (Mamba-1,
 * Gu & Dao 2023, Algorithm 2), the causal depthwise convolution of a Mamba
 * block, and Aaren (Feng et al. 2024: softmax attention of a learned query
 * over every prefix). Layouts are contiguous; every output is overwritten. */
#ifndef LA_SSM_REF_H
#define LA_SSM_REF_H

#include <stdint.h>

/* ---- selective scan ---- */
typedef struct {
    int64_t L, D, N, G;
    const double *u, *delta, *z;   /* [L][D]; z NULL without gating */
    const double *A;               /* [D][N] */
    const double *B, *C;           /* [L][G][N] */
    const double *Dskip, *bias;    /* [D] or NULL */
    int softplus;
} ssm_ref_seq;

/* out [L][D]; state [D][N]: the initial state in, the final one out. */
void ssm_ref_forward(const ssm_ref_seq *x, double *out, double *state);
/* Gradients of sum dout . out + sum dsT . h_L (dsT NULL = 0) from the
 * initial state s0 (NULL = 0): du, ddelta, dz [L][D] (dz only with z),
 * dA [D][N], dB, dC [L][G][N], dDskip, dbias [D], ds0 [D][N]. */
void ssm_ref_backward(const ssm_ref_seq *x, const double *s0, const double *dout, const double *dsT, double *du,
                      double *ddelta, double *dz, double *dA, double *dB, double *dC, double *dDskip, double *dbias,
                      double *ds0);

/* ---- causal depthwise convolution ---- */
typedef struct {
    int64_t L, D, W;
    const double *x;    /* [L][D] */
    const double *w;    /* [D][W] */
    const double *bias; /* [D] or NULL */
    int silu;
} conv_ref_seq;

/* out [L][D]; state [D][W-1]: in, then the last W-1 inputs out. */
void conv_ref_forward(const conv_ref_seq *x, double *out, double *state);
/* dx [L][D], dw [D][W], dbias [D], ds0 [D][W-1]; s0, dsT NULL = 0. */
void conv_ref_backward(const conv_ref_seq *x, const double *s0, const double *dout, const double *dsT, double *dx,
                       double *dw, double *dbias, double *ds0);

/* ---- Aaren ---- */
typedef struct {
    int64_t L, Dk, Dv;
    const double *q;    /* [Dk] */
    double scale;
    const double *k, *v; /* [L][Dk], [L][Dv] */
} aaren_ref_seq;

/* out [L][Dv]; state [Dv + 2] (u, w, m): in (NULL-equivalent: u 0, w 0,
 * m -inf), the final state out. */
void aaren_ref_forward(const aaren_ref_seq *x, double *out, double *state);
/* Gradients of sum dout . out, by the direct formula over every prefix
 * (O(L^2)): dq [Dk], dk [L][Dk], dv [L][Dv], ds0 [Dv + 2]; s0 NULL: empty. */
void aaren_ref_backward(const aaren_ref_seq *x, const double *s0, const double *dout, double *dq, double *dk,
                        double *dv, double *ds0);
/* Adds to dq, dk, dv and ds0 (NULL: not wanted) the gradients of dsT .
 * (u_L, w_L, m_L), the final state aaren_ref_forward returns, from its
 * closed form u_L = e^{m0 - m_L} u0 + sum_i e^{s_i - m_L} v_i (w_L
 * likewise), m_L = max(m0, s_i) (the max's gradient to the first score
 * reaching it, or to m0). s0 NULL: empty. */
void aaren_ref_backward_final(const aaren_ref_seq *x, const double *s0, const double *dsT, double *dq, double *dk,
                              double *dv, double *ds0);

#endif
