/* Float64 linear attention with decay: the recurrence, token by token. */
#include "linear_ref.h"

#include "longattn.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

int64_t linear_ref_feature_dim(int feature, int64_t Dk, int64_t Dm) {
    return feature == LA_FEATURE_TAYLOR ? 1 + Dk + Dk * Dk : feature == LA_FEATURE_HEDGEHOG ? 2 * Dm : Dk;
}

static int64_t feat_dim(const linear_ref_head *x) { return linear_ref_feature_dim(x->feature, x->Dk, x->Dm); }

/* Hedgehog: p = softmax([u, -u]), u = x W. */
static void hedgehog(const linear_ref_head *h, const double *x, double *p) {
    const int64_t Dm = h->Dm;
    double sum = 0;
    for (int64_t m = 0; m < Dm; m++) {
        double u = 0;
        for (int64_t d = 0; d < h->Dk; d++) u += x[d] * h->proj[d * Dm + m];
        p[m] = exp(u), p[Dm + m] = exp(-u);
        sum += p[m] + p[Dm + m];
    }
    for (int64_t m = 0; m < 2 * Dm; m++) p[m] /= sum;
}

/* f [Df] = phi(x) for a raw row x [Dk]. */
static void features(const linear_ref_head *h, const double *x, double *f) {
    const int64_t D = h->Dk;
    switch (h->feature) {
    case LA_FEATURE_TAYLOR:
        f[0] = 1;
        for (int64_t d = 0; d < D; d++) f[1 + d] = x[d] / pow((double)D, 0.25);
        for (int64_t d = 0; d < D; d++)
            for (int64_t e = 0; e < D; e++) f[1 + D + d * D + e] = x[d] * x[e] / (sqrt(2.0) * sqrt((double)D));
        return;
    case LA_FEATURE_HEDGEHOG: hedgehog(h, x, f); return;
    case LA_FEATURE_ELU1:
        for (int64_t d = 0; d < D; d++) f[d] = x[d] > 0 ? x[d] + 1 : exp(x[d]);
        return;
    case LA_FEATURE_RELU:
        for (int64_t d = 0; d < D; d++) f[d] = x[d] > 0 ? x[d] : 0;
        return;
    default:
        for (int64_t d = 0; d < D; d++) f[d] = x[d];
    }
}

/* dx [Dk] from df [Df] (the gradient reaching phi(x)); dW += Hedgehog's. */
static void feature_grad(const linear_ref_head *h, const double *x, const double *df, double *dx, double *dW) {
    const int64_t D = h->Dk;
    switch (h->feature) {
    case LA_FEATURE_TAYLOR:
        for (int64_t d = 0; d < D; d++) {
            double s = df[1 + d] / pow((double)D, 0.25);
            /* f[1 + D + a D + b] = x_a x_b / c: d/dx_d gives x_b at a = d and x_a at b = d */
            for (int64_t e = 0; e < D; e++)
                s += (df[1 + D + d * D + e] + df[1 + D + e * D + d]) * x[e] / (sqrt(2.0) * sqrt((double)D));
            dx[d] = s;
        }
        return;
    case LA_FEATURE_HEDGEHOG: {
        const int64_t Dm = h->Dm;
        double *p = malloc(sizeof(double) * (size_t)(2 * Dm)), *du = malloc(sizeof(double) * (size_t)Dm), dot = 0;
        hedgehog(h, x, p);
        for (int64_t m = 0; m < 2 * Dm; m++) dot += p[m] * df[m];
        for (int64_t m = 0; m < Dm; m++) du[m] = p[m] * (df[m] - dot) - p[Dm + m] * (df[Dm + m] - dot);
        for (int64_t d = 0; d < D; d++) {
            double s = 0;
            for (int64_t m = 0; m < Dm; m++) s += h->proj[d * Dm + m] * du[m];
            dx[d] = s;
            if (dW)
                for (int64_t m = 0; m < Dm; m++) dW[d * Dm + m] += x[d] * du[m];
        }
        free(p), free(du);
        return;
    }
    case LA_FEATURE_ELU1:
        for (int64_t d = 0; d < D; d++) dx[d] = df[d] * (x[d] > 0 ? 1 : exp(x[d]));
        return;
    case LA_FEATURE_RELU:
        for (int64_t d = 0; d < D; d++) dx[d] = df[d] * (x[d] > 0 ? 1 : 0);
        return;
    default:
        for (int64_t d = 0; d < D; d++) dx[d] = df[d];
    }
}

/* Qf = scale phi(q), Kf = phi(k), [L][Df] each. */
static void feature_rows(const linear_ref_head *x, double *Qf, double *Kf) {
    const int64_t Df = feat_dim(x);
    for (int64_t t = 0; t < x->L; t++) {
        features(x, x->q + t * x->Dk, Qf + t * Df);
        features(x, x->k + t * x->Dk, Kf + t * Df);
        for (int64_t f = 0; f < Df; f++) Qf[t * Df + f] *= x->scale;
    }
}

static double value_at(const linear_ref_head *x, int64_t t, int64_t e) { return e < x->Dv ? x->v[t * x->Dv + e] : 1; }

/* S = diag(a) S + Kf_t [v_t, 1]^T (W columns). */
static void update(const linear_ref_head *x, const double *Kf, int64_t t, double *S, int64_t W) {
    const int64_t Df = feat_dim(x);
    for (int64_t f = 0; f < Df; f++) {
        const double a = x->g ? exp(x->g[t * Df + f]) : 1;
        for (int64_t e = 0; e < W; e++) S[f * W + e] = a * S[f * W + e] + Kf[t * Df + f] * value_at(x, t, e);
    }
}

/* o [W] = Qf_t S. */
static void read_out(const double *Qf, int64_t t, const double *S, int64_t Df, int64_t W, double *o) {
    for (int64_t e = 0; e < W; e++) {
        double s = 0;
        for (int64_t f = 0; f < Df; f++) s += Qf[t * Df + f] * S[f * W + e];
        o[e] = s;
    }
}

void linear_ref_forward(const linear_ref_head *x, double *out, double *state) {
    const int64_t Dv = x->Dv, Df = feat_dim(x), W = Dv + (x->normalize ? 1 : 0), L = x->L;
    double *o = malloc(sizeof(double) * (size_t)(W + 1));
    double *Qf = malloc(sizeof(double) * (size_t)(L * Df + 1)), *Kf = malloc(sizeof(double) * (size_t)(L * Df + 1));
    feature_rows(x, Qf, Kf);
    if (x->non_causal)
        for (int64_t t = 0; t < L; t++) update(x, Kf, t, state, W);
    for (int64_t t = 0; t < L; t++) {
        if (!x->non_causal) update(x, Kf, t, state, W);
        read_out(Qf, t, state, Df, W, o);
        for (int64_t e = 0; e < Dv; e++) out[t * Dv + e] = x->normalize ? o[e] / (o[Dv] + x->eps) : o[e];
    }
    free(o), free(Qf), free(Kf);
}

void linear_ref_backward(const linear_ref_head *x, const double *state0, const double *dout, const double *dstate_T,
                         double *dq, double *dk, double *dv, double *dg, double *dstate0, double *dproj,
                         double *dg_terms) {
    const int64_t L = x->L, Dk = x->Dk, Dv = x->Dv, Df = feat_dim(x), W = Dv + (x->normalize ? 1 : 0), n = Df * W;
    /* states[t] is S after token t - 1 (states[0] the initial one); non-causal reads states[L] everywhere */
    double *states = malloc(sizeof(double) * (size_t)((L + 1) * n)), *o = malloc(sizeof(double) * (size_t)W);
    double *dS = malloc(sizeof(double) * (size_t)n), *dO = malloc(sizeof(double) * (size_t)(L * W + 1));
    double *Qf = malloc(sizeof(double) * (size_t)(L * Df + 1)), *Kf = malloc(sizeof(double) * (size_t)(L * Df + 1));
    double *dQf = malloc(sizeof(double) * (size_t)(L * Df + 1)), *dKf = malloc(sizeof(double) * (size_t)(L * Df + 1));
    feature_rows(x, Qf, Kf);
    for (int64_t i = 0; i < n; i++) states[i] = state0 ? state0[i] : 0;
    for (int64_t t = 0; t < L; t++) {
        memcpy(states + (t + 1) * n, states + t * n, sizeof(double) * (size_t)n);
        update(x, Kf, t, states + (t + 1) * n, W);
    }
    /* the gradient reaching the unnormalised outputs [n_t, d_t]: out = n / (d + eps) */
    for (int64_t t = 0; t < L; t++) {
        read_out(Qf, t, states + (x->non_causal ? L : t + 1) * n, Df, W, o);
        double c = 0;
        const double den = x->normalize ? o[Dv] + x->eps : 1;
        for (int64_t e = 0; e < Dv; e++) dO[t * W + e] = dout[t * Dv + e] / den, c += dout[t * Dv + e] * o[e] / den;
        if (x->normalize) dO[t * W + Dv] = -c / den;
    }
    for (int64_t i = 0; i < n; i++) dS[i] = dstate_T ? dstate_T[i] : 0;
    if (x->non_causal) /* every output reads S_L */
        for (int64_t t = 0; t < L; t++)
            for (int64_t f = 0; f < Df; f++)
                for (int64_t e = 0; e < W; e++) dS[f * W + e] += Qf[t * Df + f] * dO[t * W + e];
    double terms = 0;
    for (int64_t t = L - 1; t >= 0; t--) {
        const double *S = states + (x->non_causal ? L : t + 1) * n, *Sp = states + t * n, *doo = dO + t * W;
        for (int64_t f = 0; f < Df; f++) {
            /* o_t = Qf_t S_t: S_t's gradient gains Qf_t dO_t^T; Qf_t's is S_t dO_t */
            double sq = 0;
            for (int64_t e = 0; e < W; e++) {
                if (!x->non_causal) dS[f * W + e] += Qf[t * Df + f] * doo[e];
                sq += S[f * W + e] * doo[e];
            }
            dQf[t * Df + f] = sq;
            /* S_t = a S_{t-1} + Kf_t v^T */
            const double a = x->g ? exp(x->g[t * Df + f]) : 1;
            double sk = 0, sa = 0;
            for (int64_t e = 0; e < W; e++) {
                sk += dS[f * W + e] * value_at(x, t, e);
                sa += dS[f * W + e] * Sp[f * W + e];
            }
            dKf[t * Df + f] = sk;
            terms = fmax(terms, fmax(fabs(Qf[t * Df + f] * sq), fabs(Kf[t * Df + f] * sk)));
            dg[t * Df + f] = a * sa; /* d exp(g) / dg = exp(g) */
        }
        for (int64_t e = 0; e < Dv; e++) {
            double s = 0;
            for (int64_t f = 0; f < Df; f++) s += dS[f * W + e] * Kf[t * Df + f];
            dv[t * Dv + e] = s;
        }
        for (int64_t f = 0; f < Df; f++) {
            const double a = x->g ? exp(x->g[t * Df + f]) : 1;
            for (int64_t e = 0; e < W; e++) dS[f * W + e] *= a;
        }
    }
    for (int64_t t = 0; t < L; t++) {
        for (int64_t f = 0; f < Df; f++) dQf[t * Df + f] *= x->scale;
        feature_grad(x, x->q + t * Dk, dQf + t * Df, dq + t * Dk, dproj);
        feature_grad(x, x->k + t * Dk, dKf + t * Df, dk + t * Dk, dproj);
    }
    memcpy(dstate0, dS, sizeof(double) * (size_t)n);
    if (dg_terms) *dg_terms = terms;
    free(states), free(o), free(dS), free(dO), free(Qf), free(Kf), free(dQf), free(dKf);
}
