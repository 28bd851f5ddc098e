/* Float64 references of the selective scan, the causal convolution and
 * Aaren: plain loops, slow and obviously right. */
#include "ssm_ref.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static double softplus(double x) { return x > 30 ? x : log1p(exp(x)); }
static double sigmoid(double x) { return 1 / (1 + exp(-x)); }
static double silu(double x) { return x * sigmoid(x); }
static double dsilu(double x) {
    const double s = sigmoid(x);
    return s * (1 + x * (1 - s));
}

/* ---- selective scan ---- */

static double dt_of(const ssm_ref_seq *x, int64_t t, int64_t d) {
    const double v = x->delta[t * x->D + d] + (x->bias ? x->bias[d] : 0);
    return x->softplus ? softplus(v) : v;
}

static double *ssm_states(const ssm_ref_seq *x, const double *s0) {
    const int64_t DN = x->D * x->N;
    double *h = calloc((size_t)((x->L + 1) * DN), sizeof(double));
    if (s0) memcpy(h, s0, sizeof(double) * (size_t)DN);
    for (int64_t t = 0; t < x->L; t++)
        for (int64_t d = 0; d < x->D; d++) {
            const int64_t g = d / (x->D / x->G);
            const double dt = dt_of(x, t, d), u = x->u[t * x->D + d];
            for (int64_t n = 0; n < x->N; n++) {
                const double a = exp(dt * x->A[d * x->N + n]);
                h[(t + 1) * DN + d * x->N + n] =
                    a * h[t * DN + d * x->N + n] + dt * x->B[(t * x->G + g) * x->N + n] * u;
            }
        }
    return h;
}

static double ssm_y(const ssm_ref_seq *x, const double *h, int64_t t, int64_t d) {
    const int64_t g = d / (x->D / x->G);
    double y = (x->Dskip ? x->Dskip[d] : 0) * x->u[t * x->D + d];
    for (int64_t n = 0; n < x->N; n++) y += x->C[(t * x->G + g) * x->N + n] * h[d * x->N + n];
    return y;
}

void ssm_ref_forward(const ssm_ref_seq *x, double *out, double *state) {
    const int64_t DN = x->D * x->N;
    double *h = ssm_states(x, state);
    for (int64_t t = 0; t < x->L; t++)
        for (int64_t d = 0; d < x->D; d++) {
            const double y = ssm_y(x, h + (t + 1) * DN, t, d);
            out[t * x->D + d] = x->z ? y * silu(x->z[t * x->D + d]) : y;
        }
    memcpy(state, h + x->L * DN, sizeof(double) * (size_t)DN);
    free(h);
}

void ssm_ref_backward(const ssm_ref_seq *x, const double *s0, const double *dout, const double *dsT, double *du,
                      double *ddelta, double *dz, double *dA, double *dB, double *dC, double *dDskip, double *dbias,
                      double *ds0) {
    const int64_t D = x->D, N = x->N, G = x->G, DN = D * N;
    double *h = ssm_states(x, s0);
    double *dh = calloc((size_t)DN, sizeof(double));
    if (dsT) memcpy(dh, dsT, sizeof(double) * (size_t)DN);
    memset(dA, 0, sizeof(double) * (size_t)DN);
    memset(dB, 0, sizeof(double) * (size_t)(x->L * G * N));
    memset(dC, 0, sizeof(double) * (size_t)(x->L * G * N));
    memset(dDskip, 0, sizeof(double) * (size_t)D);
    memset(dbias, 0, sizeof(double) * (size_t)D);
    for (int64_t t = x->L - 1; t >= 0; t--)
        for (int64_t d = 0; d < D; d++) {
            const int64_t g = d / (D / G), i = t * D + d;
            const double u = x->u[i], pre = x->delta[i] + (x->bias ? x->bias[d] : 0);
            const double dt = x->softplus ? softplus(pre) : pre;
            double dy = dout[i];
            if (x->z) {
                const double y = ssm_y(x, h + (t + 1) * DN, t, d);
                dy = dout[i] * silu(x->z[i]);
                dz[i] = dout[i] * y * dsilu(x->z[i]);
            }
            double ddt = 0, dub = 0;
            for (int64_t n = 0; n < N; n++) {
                const int64_t j = d * N + n, bg = (t * G + g) * N + n;
                const double a = exp(dt * x->A[j]), hp = h[t * DN + j];
                dC[bg] += dy * h[(t + 1) * DN + j];
                dh[j] += dy * x->C[bg];
                dB[bg] += dh[j] * dt * u;
                ddt += dh[j] * (a * x->A[j] * hp + x->B[bg] * u);
                dub += dh[j] * x->B[bg];
                dA[j] += dh[j] * a * dt * hp;
                dh[j] *= a;
            }
            du[i] = dy * (x->Dskip ? x->Dskip[d] : 0) + dt * dub;
            ddelta[i] = x->softplus ? ddt * sigmoid(pre) : ddt;
            dDskip[d] += dy * u;
            dbias[d] += ddelta[i];
        }
    memcpy(ds0, dh, sizeof(double) * (size_t)DN);
    free(h), free(dh);
}

/* ---- causal depthwise convolution ---- */

/* xx [W-1+L][D]: the state's columns, then x. */
static double *conv_inputs(const conv_ref_seq *x, const double *s0) {
    const int64_t P = x->W - 1 + x->L;
    double *xx = calloc((size_t)(P * x->D) + 1, sizeof(double));
    for (int64_t j = 0; j < x->W - 1; j++)
        for (int64_t d = 0; d < x->D; d++) xx[j * x->D + d] = s0 ? s0[d * (x->W - 1) + j] : 0;
    memcpy(xx + (x->W - 1) * x->D, x->x, sizeof(double) * (size_t)(x->L * x->D));
    return xx;
}

static double conv_pre(const conv_ref_seq *x, const double *xx, int64_t t, int64_t d) {
    double s = x->bias ? x->bias[d] : 0;
    for (int64_t j = 0; j < x->W; j++) s += x->w[d * x->W + j] * xx[(t + j) * x->D + d];
    return s;
}

void conv_ref_forward(const conv_ref_seq *x, double *out, double *state) {
    double *xx = conv_inputs(x, state);
    for (int64_t t = 0; t < x->L; t++)
        for (int64_t d = 0; d < x->D; d++) {
            const double p = conv_pre(x, xx, t, d);
            out[t * x->D + d] = x->silu ? silu(p) : p;
        }
    for (int64_t j = 0; j < x->W - 1; j++)
        for (int64_t d = 0; d < x->D; d++) state[d * (x->W - 1) + j] = xx[(x->L + j) * x->D + d];
    free(xx);
}

void conv_ref_backward(const conv_ref_seq *x, const double *s0, const double *dout, const double *dsT, double *dx,
                       double *dw, double *dbias, double *ds0) {
    const int64_t D = x->D, W = x->W, P = W - 1 + x->L;
    double *xx = conv_inputs(x, s0), *dxx = calloc((size_t)(P * D) + 1, sizeof(double));
    memset(dw, 0, sizeof(double) * (size_t)(D * W));
    memset(dbias, 0, sizeof(double) * (size_t)D);
    for (int64_t t = 0; t < x->L; t++)
        for (int64_t d = 0; d < D; d++) {
            const double p = conv_pre(x, xx, t, d), dp = dout[t * D + d] * (x->silu ? dsilu(p) : 1);
            dbias[d] += dp;
            for (int64_t j = 0; j < W; j++) {
                dw[d * W + j] += dp * xx[(t + j) * D + d];
                dxx[(t + j) * D + d] += dp * x->w[d * W + j];
            }
        }
    if (dsT)
        for (int64_t j = 0; j < W - 1; j++)
            for (int64_t d = 0; d < D; d++) dxx[(x->L + j) * D + d] += dsT[d * (W - 1) + j];
    memcpy(dx, dxx + (W - 1) * D, sizeof(double) * (size_t)(x->L * D));
    for (int64_t j = 0; j < W - 1; j++)
        for (int64_t d = 0; d < D; d++) ds0[d * (W - 1) + j] = dxx[j * D + d];
    free(xx), free(dxx);
}

/* ---- Aaren ---- */

static double score(const aaren_ref_seq *x, int64_t i) {
    double s = 0;
    for (int64_t e = 0; e < x->Dk; e++) s += x->q[e] * x->k[i * x->Dk + e];
    return x->scale * s;
}

/* The recurrence of the paper: m_t = max(m_{t-1}, s_t), u and w rescaled. */
void aaren_ref_forward(const aaren_ref_seq *x, double *out, double *state) {
    const int64_t Dv = x->Dv;
    double *u = state, *w = state + Dv, *m = state + Dv + 1;
    for (int64_t t = 0; t < x->L; t++) {
        const double s = score(x, t), mn = s > *m ? s : *m;
        const double a = isinf(*m) && *m < 0 ? 0 : exp(*m - mn), e = exp(s - mn);
        for (int64_t j = 0; j < Dv; j++) u[j] = a * u[j] + e * x->v[t * Dv + j];
        *w = a * *w + e;
        *m = mn;
        for (int64_t j = 0; j < Dv; j++) out[t * Dv + j] = u[j] / *w;
    }
}

/* Directly from o_t = (e^{m0} u0 + sum_{i<=t} e^{s_i} v_i) / Z_t,
 * Z_t = e^{m0} w0 + sum_{i<=t} e^{s_i}, every term scaled by e^{-lse_t}. */
void aaren_ref_backward(const aaren_ref_seq *x, const double *s0, const double *dout, double *dq, double *dk,
                        double *dv, double *ds0) {
    const int64_t L = x->L, Dk = x->Dk, Dv = x->Dv;
    const double m0 = s0 ? s0[Dv + 1] : -INFINITY, w0 = s0 ? s0[Dv] : 0;
    double *s = malloc(sizeof(double) * (size_t)(L + 1)), *lse = malloc(sizeof(double) * (size_t)(L + 1));
    double *o = calloc((size_t)(L * Dv) + 1, sizeof(double)), *ds = calloc((size_t)L + 1, sizeof(double));
    for (int64_t i = 0; i < L; i++) s[i] = score(x, i);
    for (int64_t t = 0; t < L; t++) {
        double mx = m0;
        for (int64_t i = 0; i <= t; i++) mx = s[i] > mx ? s[i] : mx;
        double Z = w0 > 0 && !isinf(m0) ? w0 * exp(m0 - mx) : 0;
        for (int64_t i = 0; i <= t; i++) Z += exp(s[i] - mx);
        lse[t] = mx + log(Z);
        for (int64_t j = 0; j < Dv; j++) {
            double n = !isinf(m0) ? s0[j] * exp(m0 - lse[t]) : 0;
            for (int64_t i = 0; i <= t; i++) n += exp(s[i] - lse[t]) * x->v[i * Dv + j];
            o[t * Dv + j] = n;
        }
    }
    memset(dv, 0, sizeof(double) * (size_t)(L * Dv));
    memset(dq, 0, sizeof(double) * (size_t)Dk);
    if (ds0) memset(ds0, 0, sizeof(double) * (size_t)(Dv + 2));
    for (int64_t t = 0; t < L; t++) {
        double doo = 0;
        for (int64_t j = 0; j < Dv; j++) doo += dout[t * Dv + j] * o[t * Dv + j];
        for (int64_t i = 0; i <= t; i++) {
            const double p = exp(s[i] - lse[t]);
            double dov = 0;
            for (int64_t j = 0; j < Dv; j++) {
                dv[i * Dv + j] += p * dout[t * Dv + j];
                dov += dout[t * Dv + j] * x->v[i * Dv + j];
            }
            ds[i] += p * (dov - doo);
        }
        if (ds0 && !isinf(m0)) {
            const double e = exp(m0 - lse[t]);
            double dou = 0;
            for (int64_t j = 0; j < Dv; j++) {
                ds0[j] += e * dout[t * Dv + j];
                dou += dout[t * Dv + j] * s0[j];
            }
            ds0[Dv] -= e * doo;
            ds0[Dv + 1] += e * (dou - w0 * doo);
        }
    }
    for (int64_t i = 0; i < L; i++)
        for (int64_t e = 0; e < Dk; e++) {
            dk[i * Dk + e] = x->scale * ds[i] * x->q[e];
            dq[e] += x->scale * ds[i] * x->k[i * Dk + e];
        }
    free(s), free(lse), free(o), free(ds);
}

void aaren_ref_backward_final(const aaren_ref_seq *x, const double *s0, const double *dsT, double *dq, double *dk,
                              double *dv, double *ds0) {
    const int64_t L = x->L, Dk = x->Dk, Dv = x->Dv;
    if (L == 0) { /* the final state is the initial one */
        if (ds0)
            for (int64_t j = 0; j < Dv + 2; j++) ds0[j] += dsT[j];
        return;
    }
    const double m0 = s0 ? s0[Dv + 1] : -INFINITY, w0 = s0 ? s0[Dv] : 0;
    double *s = malloc(sizeof(double) * (size_t)L), *u = calloc((size_t)Dv + 1, sizeof(double));
    double mL = m0, wL = 0;
    int64_t amax = -1;
    for (int64_t i = 0; i < L; i++) {
        s[i] = score(x, i);
        if (s[i] > mL) mL = s[i], amax = i;
    }
    const double e0 = isinf(m0) ? 0 : exp(m0 - mL);
    for (int64_t j = 0; j < Dv; j++) u[j] = s0 ? e0 * s0[j] : 0;
    wL = e0 * w0;
    for (int64_t i = 0; i < L; i++) {
        const double e = exp(s[i] - mL);
        for (int64_t j = 0; j < Dv; j++) u[j] += e * x->v[i * Dv + j];
        wL += e;
    }
    double dm = dsT[Dv + 1] - wL * dsT[Dv];
    for (int64_t j = 0; j < Dv; j++) dm -= u[j] * dsT[j];
    for (int64_t i = 0; i < L; i++) {
        const double e = exp(s[i] - mL);
        double ds = e * dsT[Dv] + (i == amax ? dm : 0);
        for (int64_t j = 0; j < Dv; j++) {
            dv[i * Dv + j] += e * dsT[j];
            ds += e * x->v[i * Dv + j] * dsT[j];
        }
        for (int64_t c = 0; c < Dk; c++) {
            dk[i * Dk + c] += x->scale * ds * x->q[c];
            dq[c] += x->scale * ds * x->k[i * Dk + c];
        }
    }
    if (ds0 && s0 && !isinf(m0)) {
        double dot = w0 * dsT[Dv];
        for (int64_t j = 0; j < Dv; j++) ds0[j] += e0 * dsT[j], dot += s0[j] * dsT[j];
        ds0[Dv] += e0 * dsT[Dv];
        ds0[Dv + 1] += e0 * dot + (amax < 0 ? dm : 0);
    }
    free(s), free(u);
}
