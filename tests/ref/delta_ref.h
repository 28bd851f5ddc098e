/* Float64 reference for the delta rule and the gated delta rule
 * (la_delta_rule_*): the plain recurrence of the papers, one sequence and
 * one head at a time, token by token (Schlag et al. 2021 / Yang et al.
 * 2024, DeltaNet; Yang, Kautz, Hatamizadeh 2025, Gated DeltaNet):
 *   S_t = a_t (I - beta_t k_t k_t^T) S_{t-1} + beta_t k_t v_t^T,  a_t = exp(g_t)
 *   o_t = scale S_t^T q_t
 * with q, k optionally L2-normalised (x / sqrt(|x|^2 + 1e-6)). Written as
 * the product form above (not the library's u = v - a S^T k), slow and
 * obviously right. Its backward is backpropagation through the stored
 * states, checked against finite differences by the test. */
#ifndef LA_DELTA_REF_H
#define LA_DELTA_REF_H

#include <stdbool.h>
#include <stdint.h>

typedef struct {
    int64_t L, Dk, Dv;
    const double *q, *k;   /* [L][Dk] raw (before normalisation) */
    const double *v;       /* [L][Dv] */
    const double *beta;    /* [L] */
    const double *g;       /* [L] log decays; NULL = ungated */
    bool l2norm;
    double scale;
} delta_ref_head;

/* out [L][Dv]; state [Dk][Dv]: the initial state in, the final state out. */
void delta_ref_forward(const delta_ref_head *x, double *out, double *state);

/* Gradients given dout [L][Dv] and dstate_T [Dk][Dv] (NULL = 0), from the
 * initial state state0 [Dk][Dv] (NULL = 0): dq, dk [L][Dk], dv [L][Dv],
 * dbeta [L], dg [L] (NULL: not wanted), dstate0 [Dk][Dv]. */
void delta_ref_backward(const delta_ref_head *x, const double *state0, const double *dout, const double *dstate_T,
                        double *dq, double *dk, double *dv, double *dbeta, double *dg, double *dstate0);

#endif
