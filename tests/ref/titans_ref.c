/* Float64 Titans neural memory: the recurrence, token by token. */
#include "titans_ref.h"

#include <stdlib.h>
#include <string.h>

void titans_ref_forward(const titans_ref_head *x, double *out, double *M, double *S) {
    const int64_t Dk = x->Dk, Dv = x->Dv;
    double *Mc = malloc(sizeof(double) * (size_t)(Dk * Dv)), *r = malloc(sizeof(double) * (size_t)Dv);
    for (int64_t t = 0; t < x->L; t++) {
        if (t % x->chunk == 0) memcpy(Mc, M, sizeof(double) * (size_t)(Dk * Dv));
        const double *k = x->k + t * Dk, *q = x->q + t * Dk, *v = x->v + t * Dv;
        for (int64_t e = 0; e < Dv; e++) {
            double s = 0;
            for (int64_t d = 0; d < Dk; d++) s += Mc[d * Dv + e] * k[d];
            r[e] = 2 * x->theta[t] * (s - v[e]); /* d/dM ||M^T k - v||^2 = 2 k (M^T k - v)^T, times theta */
        }
        for (int64_t d = 0; d < Dk; d++)
            for (int64_t e = 0; e < Dv; e++) {
                S[d * Dv + e] = x->eta[t] * S[d * Dv + e] - k[d] * r[e];
                M[d * Dv + e] = (1 - x->alpha[t]) * M[d * Dv + e] + S[d * Dv + e];
            }
        for (int64_t e = 0; e < Dv; e++) {
            double s = 0;
            for (int64_t d = 0; d < Dk; d++) s += M[d * Dv + e] * q[d];
            out[t * Dv + e] = s;
        }
    }
    free(Mc), free(r);
}

void titans_ref_backward(const titans_ref_head *x, const double *M0, const double *S0, const double *dout,
                         const double *dM_T, const double *dS_T, double *dq, double *dk, double *dv, double *deta,
                         double *dtheta, double *dalpha, double *dM0, double *dS0) {
    const int64_t L = x->L, Dk = x->Dk, Dv = x->Dv, n = Dk * Dv;
    /* Ms[t], Ss[t]: the states after token t - 1 (index 0: the initial ones) */
    double *Ms = malloc(sizeof(double) * (size_t)((L + 1) * n)), *Ss = malloc(sizeof(double) * (size_t)((L + 1) * n));
    memcpy(Ms, M0, sizeof(double) * (size_t)n);
    memcpy(Ss, S0, sizeof(double) * (size_t)n);
    for (int64_t t = 0; t < L; t++) { /* one token at a time from the stored states, Mc its chunk's start */
        memcpy(Ms + (t + 1) * n, Ms + t * n, sizeof(double) * (size_t)n);
        memcpy(Ss + (t + 1) * n, Ss + t * n, sizeof(double) * (size_t)n);
        titans_ref_head one = *x;
        one.L = 1, one.chunk = 1, one.q += t * Dk, one.k += t * Dk, one.v += t * Dv, one.eta += t, one.theta += t,
        one.alpha += t;
        /* the gradient is taken at the chunk's start memory: run the step with Mc through a copy */
        const double *Mc = Ms + (t - t % x->chunk) * n;
        double *r = malloc(sizeof(double) * (size_t)Dv);
        for (int64_t e = 0; e < Dv; e++) {
            double s = 0;
            for (int64_t d = 0; d < Dk; d++) s += Mc[d * Dv + e] * one.k[d];
            r[e] = 2 * one.theta[0] * (s - one.v[e]);
        }
        double *M = Ms + (t + 1) * n, *S = Ss + (t + 1) * n;
        for (int64_t d = 0; d < Dk; d++)
            for (int64_t e = 0; e < Dv; e++) {
                S[d * Dv + e] = one.eta[0] * S[d * Dv + e] - one.k[d] * r[e];
                M[d * Dv + e] = (1 - one.alpha[0]) * M[d * Dv + e] + S[d * Dv + e];
            }
        free(r);
    }
    double *dM = malloc(sizeof(double) * (size_t)n), *dS = malloc(sizeof(double) * (size_t)n);
    double *dMc = calloc((size_t)n, sizeof(double)), *dr = malloc(sizeof(double) * (size_t)Dv);
    for (int64_t i = 0; i < n; i++) dM[i] = dM_T ? dM_T[i] : 0, dS[i] = dS_T ? dS_T[i] : 0;
    for (int64_t t = L - 1; t >= 0; t--) {
        const double *q = x->q + t * Dk, *k = x->k + t * Dk, *v = x->v + t * Dv, *dy = dout + t * Dv;
        const double *M = Ms + (t + 1) * n, *Mp = Ms + t * n, *Sp = Ss + t * n, *Mc = Ms + (t - t % x->chunk) * n;
        const double eta = x->eta[t], theta = x->theta[t], a = 1 - x->alpha[t];
        /* y = M^T q */
        for (int64_t d = 0; d < Dk; d++) {
            double s = 0;
            for (int64_t e = 0; e < Dv; e++) dM[d * Dv + e] += q[d] * dy[e], s += M[d * Dv + e] * dy[e];
            dq[t * Dk + d] = s;
        }
        /* M = a M_p + S: S gains dM; alpha's gradient is -<dM, M_p> */
        double da = 0, de = 0;
        for (int64_t i = 0; i < n; i++) dS[i] += dM[i], da -= dM[i] * Mp[i], de += dS[i] * Sp[i];
        dalpha[t] = da;
        deta[t] = de;
        /* S = eta S_p - k r^T, r = 2 theta (Mc^T k - v) */
        double dth = 0;
        for (int64_t e = 0; e < Dv; e++) {
            double s = 0, res = 0;
            for (int64_t d = 0; d < Dk; d++) s -= k[d] * dS[d * Dv + e], res += Mc[d * Dv + e] * k[d];
            dr[e] = s;
            dth += 2 * s * (res - v[e]);
            dv[t * Dv + e] = -2 * theta * s;
        }
        dtheta[t] = dth;
        for (int64_t d = 0; d < Dk; d++) {
            double s = 0;
            for (int64_t e = 0; e < Dv; e++) {
                double res = 0;
                for (int64_t f = 0; f < Dk; f++) res += Mc[f * Dv + e] * k[f];
                const double r = 2 * theta * (res - v[e]);
                s += -dS[d * Dv + e] * r + 2 * theta * Mc[d * Dv + e] * dr[e];
                dMc[d * Dv + e] += 2 * theta * k[d] * dr[e];
            }
            dk[t * Dk + d] = s;
        }
        for (int64_t i = 0; i < n; i++) dS[i] *= eta, dM[i] *= a;
        if (t % x->chunk == 0) /* Mc is the memory entering this token: M_p */
            for (int64_t i = 0; i < n; i++) dM[i] += dMc[i], dMc[i] = 0;
    }
    memcpy(dM0, dM, sizeof(double) * (size_t)n);
    memcpy(dS0, dS, sizeof(double) * (size_t)n);
    free(Ms), free(Ss), free(dM), free(dS), free(dMc), free(dr);
}
