#include "delta_ref.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define DELTA_REF_EPS 1e-6

/* xh = x / sqrt(|x|^2 + eps) (or x); returns the factor. */
static double normalise(const double *x, double *xh, int64_t D, bool l2) {
    double s = 0;
    for (int64_t d = 0; d < D; d++) s += x[d] * x[d];
    const double r = l2 ? 1 / sqrt(s + DELTA_REF_EPS) : 1;
    for (int64_t d = 0; d < D; d++) xh[d] = x[d] * r;
    return r;
}

static double decay_of(const delta_ref_head *x, int64_t t) { return x->g ? exp(x->g[t]) : 1; }

/* next = a (I - beta k k^T) prev + beta k v^T, through M = I - beta k k^T. */
static void step(const delta_ref_head *x, int64_t t, const double *kh, const double *prev, double *next) {
    const int64_t Dk = x->Dk, Dv = x->Dv;
    const double a = decay_of(x, t), b = x->beta[t];
    for (int64_t i = 0; i < Dk; i++)
        for (int64_t e = 0; e < Dv; e++) {
            double s = 0;
            for (int64_t j = 0; j < Dk; j++) s += ((i == j ? 1 : 0) - b * kh[i] * kh[j]) * prev[j * Dv + e];
            next[i * Dv + e] = a * s + b * kh[i] * x->v[t * Dv + e];
        }
}

void delta_ref_forward(const delta_ref_head *x, double *out, double *state) {
    const int64_t Dk = x->Dk, Dv = x->Dv;
    double *qh = malloc(sizeof(double) * (size_t)Dk), *kh = malloc(sizeof(double) * (size_t)Dk);
    double *next = malloc(sizeof(double) * (size_t)(Dk * Dv));
    for (int64_t t = 0; t < x->L; t++) {
        normalise(x->q + t * Dk, qh, Dk, x->l2norm);
        normalise(x->k + t * Dk, kh, Dk, x->l2norm);
        step(x, t, kh, state, next);
        memcpy(state, next, sizeof(double) * (size_t)(Dk * Dv));
        for (int64_t e = 0; e < Dv; e++) {
            double o = 0;
            for (int64_t i = 0; i < Dk; i++) o += qh[i] * state[i * Dv + e];
            out[t * Dv + e] = x->scale * o;
        }
    }
    free(qh), free(kh), free(next);
}

/* dx = r (dxh - xh (xh . dxh)) through xh = x r, or dxh itself. */
static void normalise_backward(const double *xh, double r, const double *dxh, double *dx, int64_t D, bool l2) {
    double c = 0;
    for (int64_t d = 0; d < D; d++) c += xh[d] * dxh[d];
    for (int64_t d = 0; d < D; d++) dx[d] = l2 ? r * (dxh[d] - xh[d] * c) : dxh[d];
}

void delta_ref_backward(const delta_ref_head *x, const double *state0, const double *dout, const double *dstate_T,
                        double *dq, double *dk, double *dv, double *dbeta, double *dg, double *dstate0) {
    const int64_t L = x->L, Dk = x->Dk, Dv = x->Dv, NS = Dk * Dv;
    double *S = malloc(sizeof(double) * (size_t)((L + 1) * NS)), *dS = malloc(sizeof(double) * (size_t)NS);
    double *qh = malloc(sizeof(double) * (size_t)Dk), *kh = malloc(sizeof(double) * (size_t)Dk);
    double *dqh = malloc(sizeof(double) * (size_t)Dk), *dkh = malloc(sizeof(double) * (size_t)Dk);
    double *mS = malloc(sizeof(double) * (size_t)NS), *dprev = malloc(sizeof(double) * (size_t)NS);
    for (int64_t i = 0; i < NS; i++) S[i] = state0 ? state0[i] : 0, dS[i] = dstate_T ? dstate_T[i] : 0;
    for (int64_t t = 0; t < L; t++) {
        normalise(x->k + t * Dk, kh, Dk, x->l2norm);
        step(x, t, kh, S + t * NS, S + (t + 1) * NS);
    }
    for (int64_t t = L - 1; t >= 0; t--) {
        const double rq = normalise(x->q + t * Dk, qh, Dk, x->l2norm);
        const double rk = normalise(x->k + t * Dk, kh, Dk, x->l2norm);
        const double a = decay_of(x, t), b = x->beta[t];
        const double *prev = S + t * NS, *cur = S + (t + 1) * NS, *v = x->v + t * Dv, *go = dout + t * Dv;
        /* o = scale cur^T qh */
        for (int64_t i = 0; i < Dk; i++) {
            double s = 0;
            for (int64_t e = 0; e < Dv; e++) s += cur[i * Dv + e] * go[e], dS[i * Dv + e] += x->scale * qh[i] * go[e];
            dqh[i] = x->scale * s;
        }
        /* cur = a M prev + b k v^T, M = I - b k k^T (symmetric) */
        double *Mp = mS; /* M prev */
        for (int64_t i = 0; i < Dk; i++)
            for (int64_t e = 0; e < Dv; e++) {
                double s = 0;
                for (int64_t j = 0; j < Dk; j++) s += ((i == j ? 1 : 0) - b * kh[i] * kh[j]) * prev[j * Dv + e];
                Mp[i * Dv + e] = s;
            }
        double dgt = 0;
        for (int64_t i = 0; i < NS; i++) dgt += dS[i] * a * Mp[i];
        /* d prev = a M dS */
        for (int64_t i = 0; i < Dk; i++)
            for (int64_t e = 0; e < Dv; e++) {
                double s = 0;
                for (int64_t j = 0; j < Dk; j++) s += ((i == j ? 1 : 0) - b * kh[i] * kh[j]) * dS[j * Dv + e];
                dprev[i * Dv + e] = a * s;
            }
        /* dM = a dS prev^T; M = I - b k k^T: dk += -b (dM + dM^T) k, db = -k^T dM k;
           b k v^T: dk += b dS v, dv = b dS^T k, db += k^T dS v */
        double db = 0;
        for (int64_t i = 0; i < Dk; i++) dkh[i] = 0;
        for (int64_t e = 0; e < Dv; e++) dv[t * Dv + e] = 0;
        for (int64_t i = 0; i < Dk; i++)
            for (int64_t j = 0; j < Dk; j++) {
                double dMij = 0, dMji = 0;
                for (int64_t e = 0; e < Dv; e++) dMij += a * dS[i * Dv + e] * prev[j * Dv + e],
                                                 dMji += a * dS[j * Dv + e] * prev[i * Dv + e];
                dkh[i] += -b * (dMij + dMji) * kh[j];
                db += -kh[i] * dMij * kh[j];
            }
        for (int64_t i = 0; i < Dk; i++)
            for (int64_t e = 0; e < Dv; e++) {
                dkh[i] += b * dS[i * Dv + e] * v[e];
                dv[t * Dv + e] += b * dS[i * Dv + e] * kh[i];
                db += kh[i] * dS[i * Dv + e] * v[e];
            }
        dbeta[t] = db;
        if (dg) dg[t] = x->g ? dgt : 0;
        normalise_backward(qh, rq, dqh, dq + t * Dk, Dk, x->l2norm);
        normalise_backward(kh, rk, dkh, dk + t * Dk, Dk, x->l2norm);
        memcpy(dS, dprev, sizeof(double) * (size_t)NS);
    }
    memcpy(dstate0, dS, sizeof(double) * (size_t)NS);
    free(S), free(dS), free(qh), free(kh), free(dqh), free(dkh), free(mS), free(dprev);
}
