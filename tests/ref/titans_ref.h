/* Float64 reference for the Titans neural memory (la_titans_*), linear
 * memory, written from the paper (Behrouz et al. 2024, eqs. 13-14 and
 * section 3.2's mini-batch gradients), one sequence and head at a time,
 * token by token:
 *   at each chunk's first token Mc = M
 *   r = 2 theta_t (Mc^T k_t - v_t);  S = eta_t S - k_t r^T
 *   M = (1 - alpha_t) M + S;         y_t = M^T q_t */
#ifndef LA_TITANS_REF_H
#define LA_TITANS_REF_H

#include <stdint.h>

typedef struct {
    int64_t L, Dk, Dv, chunk;         /* chunk: the gradient mini-batch (1: per token) */
    const double *q, *k;              /* [L][Dk] */
    const double *v;                  /* [L][Dv] */
    const double *eta, *theta, *alpha; /* [L] */
} titans_ref_head;

/* out [L][Dv]; M and S [Dk][Dv]: the states in, the final ones out. */
void titans_ref_forward(const titans_ref_head *x, double *out, double *M, double *S);

/* Gradients by backpropagation through the stored per-token states, given
 * dout [L][Dv] and the gradients reaching the final states dM_T, dS_T
 * [Dk][Dv] (NULL = 0), from the initial states M0, S0: dq, dk [L][Dk], dv
 * [L][Dv], deta, dtheta, dalpha [L], dM0, dS0 [Dk][Dv]. */
void titans_ref_backward(const titans_ref_head *x, const double *M0, const double *S0, const double *dout,
                         const double *dM_T, const double *dS_T, double *dq, double *dk, double *dv, double *deta,
                         double *dtheta, double *dalpha, double *dM0, double *dS0);

#endif
