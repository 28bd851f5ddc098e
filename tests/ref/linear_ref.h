/* Float64 reference for linear attention with decay (la_linear_attention_*):
 * the plain recurrence of the papers, one sequence and one head at a time,
 * token by token, slow and obviously right:
 *   S_t = diag(exp(g_t)) S_{t-1} + phi(k_t) v_t^T,  o_t = scale phi(q_t)^T S_t
 * (Katharopoulos et al. 2020; RetNet / Lightning Attention-2 with a fixed g;
 * GLA with g per key channel), normalised by z_t (the same recurrence with
 * v = 1) when asked; non-causal: o_t = scale phi(q_t)^T S_L. phi is
 * elementwise, Based's 2nd-order Taylor map or Hedgehog's softmax over
 * [x W, -x W]. Its backward is backpropagation through the stored states
 * and the feature maps, a derivation independent of the library's chunked
 * one. */
#ifndef LA_LINEAR_REF_H
#define LA_LINEAR_REF_H

#include <stdbool.h>
#include <stdint.h>

typedef struct {
    int64_t L, Dk, Dv;
    const double *q, *k; /* [L][Dk] raw (before the feature map) */
    const double *v;     /* [L][Dv] */
    const double *g;     /* [L][Df] log decays per feature (scalar decays repeated); NULL = none */
    int feature;         /* la_feature_map */
    const double *proj;  /* Hedgehog: W [Dk][Dm] of this head */
    int64_t Dm;
    bool normalize, non_causal;
    double eps, scale;
} linear_ref_head;

/* The feature dim Df of a map over Dk inputs (Dm: Hedgehog's). */
int64_t linear_ref_feature_dim(int feature, int64_t Dk, int64_t Dm);

/* out [L][Dv]; state [Df][Dv + normalize]: the initial state in (zeros for
 * none), the final state out. */
void linear_ref_forward(const linear_ref_head *x, double *out, double *state);

/* Gradients given dout [L][Dv] and dstate_T [Df][Dv + normalize] (NULL =
 * 0), from the initial state state0 (NULL = 0): dq, dk [L][Dk], dv [L][Dv],
 * dg [L][Df] (per feature; sum over Df for a per-token scalar), dstate0
 * [Df][Dv + normalize], dproj [Dk][Dm] (Hedgehog; added into, NULL: not
 * wanted). *dg_terms (NULL: not wanted) gets the largest |phi~(q) .
 * dphi~(q)| or |phi(k) . dphi(k)| of any element: the size of the terms
 * whose suffix sums make dg in the chunked form, so of the roundoff a float
 * dg carries when its terms cancel (decays near 0). */
void linear_ref_backward(const linear_ref_head *x, const double *state0, const double *dout, const double *dstate_T,
                         double *dq, double *dk, double *dv, double *dg, double *dstate0, double *dproj,
                         double *dg_terms);

#endif
