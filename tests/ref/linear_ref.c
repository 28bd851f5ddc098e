/* Float64 linear attention with decay: the recurrence, token by token. */
#include "linear_ref.h"

#include "longattn.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

double linear_ref_phi(int feature, double x) {
    switch (feature) {
    case LA_FEATURE_ELU1: return x > 0 ? x + 1 : exp(x);
    case LA_FEATURE_RELU: return x > 0 ? x : 0;
    default: return x;
    }
}

double linear_ref_dphi(int feature, double x) {
    switch (feature) {
    case LA_FEATURE_ELU1: return x > 0 ? 1 : exp(x);
    case LA_FEATURE_RELU: return x > 0 ? 1 : 0;
    default: return 1;
    }
}

/* One step: S = diag(a) S + phi(k) [v, 1]^T; o = scale phi(q)^T S. */
static void step(const linear_ref_head *x, int64_t t, double *S, double *o) {
    const int64_t Dk = x->Dk, Dv = x->Dv, W = Dv + (x->normalize ? 1 : 0);
    for (int64_t e = 0; e < W; e++) o[e] = 0;
    for (int64_t d = 0; d < Dk; d++) {
        const double a = x->g ? exp(x->g[t * Dk + d]) : 1, kd = linear_ref_phi(x->feature, x->k[t * Dk + d]),
                     qd = x->scale * linear_ref_phi(x->feature, x->q[t * Dk + d]);
        for (int64_t e = 0; e < W; e++) {
            const double ve = e < Dv ? x->v[t * Dv + e] : 1;
            S[d * W + e] = a * S[d * W + e] + kd * ve;
            o[e] += qd * S[d * W + e];
        }
    }
}

void linear_ref_forward(const linear_ref_head *x, double *out, double *state) {
    const int64_t Dv = x->Dv;
    double *o = malloc(sizeof(double) * (size_t)(Dv + 1));
    for (int64_t t = 0; t < x->L; t++) {
        step(x, t, state, o);
        for (int64_t e = 0; e < Dv; e++) out[t * Dv + e] = x->normalize ? o[e] / (o[Dv] + x->eps) : o[e];
    }
    free(o);
}

void linear_ref_backward(const linear_ref_head *x, const double *state0, const double *dout, const double *dstate_T,
                         double *dq, double *dk, double *dv, double *dg, double *dstate0, double *dg_terms) {
    const int64_t L = x->L, Dk = x->Dk, Dv = x->Dv, n = Dk * Dv;
    /* states[t] is S after token t - 1 (states[0] the initial one) */
    double *states = malloc(sizeof(double) * (size_t)((L + 1) * n)), *o = malloc(sizeof(double) * (size_t)(Dv + 1));
    double *dS = malloc(sizeof(double) * (size_t)n);
    for (int64_t i = 0; i < n; i++) states[i] = state0 ? state0[i] : 0;
    for (int64_t t = 0; t < L; t++) {
        memcpy(states + (t + 1) * n, states + t * n, sizeof(double) * (size_t)n);
        step(x, t, states + (t + 1) * n, o);
    }
    for (int64_t i = 0; i < n; i++) dS[i] = dstate_T ? dstate_T[i] : 0;
    double terms = 0;
    for (int64_t t = L - 1; t >= 0; t--) {
        const double *S = states + (t + 1) * n, *Sp = states + t * n, *doo = dout + t * Dv;
        for (int64_t d = 0; d < Dk; d++) {
            const double qr = x->q[t * Dk + d], kr = x->k[t * Dk + d];
            const double qd = x->scale * linear_ref_phi(x->feature, qr);
            /* o_t = q~ S_t: S_t's gradient gains q~ do^T; q~'s is S_t do */
            double sq = 0;
            for (int64_t e = 0; e < Dv; e++) {
                dS[d * Dv + e] += qd * doo[e];
                sq += S[d * Dv + e] * doo[e];
            }
            dq[t * Dk + d] = x->scale * linear_ref_dphi(x->feature, qr) * sq;
            /* S_t = a S_{t-1} + k~ v^T */
            const double a = x->g ? exp(x->g[t * Dk + d]) : 1;
            double sk = 0, sa = 0;
            for (int64_t e = 0; e < Dv; e++) {
                sk += dS[d * Dv + e] * x->v[t * Dv + e];
                sa += dS[d * Dv + e] * Sp[d * Dv + e];
            }
            dk[t * Dk + d] = linear_ref_dphi(x->feature, kr) * sk;
            terms = fmax(terms, fmax(fabs(qd * sq), fabs(linear_ref_phi(x->feature, kr) * sk)));
            dg[t * Dk + d] = a * sa; /* d exp(g) / dg = exp(g) */
        }
        for (int64_t e = 0; e < Dv; e++) {
            double s = 0;
            for (int64_t d = 0; d < Dk; d++) s += dS[d * Dv + e] * linear_ref_phi(x->feature, x->k[t * Dk + d]);
            dv[t * Dv + e] = s;
        }
        for (int64_t d = 0; d < Dk; d++) {
            const double a = x->g ? exp(x->g[t * Dk + d]) : 1;
            for (int64_t e = 0; e < Dv; e++) dS[d * Dv + e] *= a;
        }
    }
    memcpy(dstate0, dS, sizeof(double) * (size_t)n);
    if (dg_terms) *dg_terms = terms;
    free(states), free(o), free(dS);
}
