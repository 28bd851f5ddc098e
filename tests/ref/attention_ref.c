#include "attention_ref.h"

#include <math.h>
#include <stdlib.h>

static int visible(const ref_attn_opts *o, int64_t i, int64_t j, int64_t Lq, int64_t Lk) {
    int64_t diag = i + Lk - Lq;
    int64_t hi = o->causal ? diag + 1 : (o->window_right >= 0 ? diag + o->window_right + 1 : Lk);
    int64_t lo = o->window_left >= 0 ? diag - o->window_left : 0;
    return j < hi && j < Lk && (j >= lo || j < o->sinks) && (!o->keep || o->keep[i * Lk + j]);
}

/* Score before masking, and d(score)/d(q.k) for the backward. */
static double score(const ref_attn_opts *o, int64_t i, int64_t j, int64_t Lq, int64_t Lk, const double *qi,
                    const double *kj, int64_t D, double *dscore_dqk) {
    double dot = 0;
    for (int64_t d = 0; d < D; d++) dot += qi[d] * kj[d];
    double s = o->scale * dot, grad = o->scale;
    if (o->softcap > 0) {
        double t = tanh(s / o->softcap);
        s = o->softcap * t;
        grad *= 1 - t * t;
    }
    s -= o->alibi_slope * fabs((double)(i + Lk - Lq - j));
    if (dscore_dqk) *dscore_dqk = grad;
    return s;
}

static double sigmoid(double x) { return 1 / (1 + exp(-x)); }

/* Row i of the forward; s is scratch for Lk scores. */
static void forward_row(const ref_attn_opts *o, int64_t i, int64_t Lq, int64_t Lk, int64_t D, const double *qi,
                        const double *k, const double *v, double *oi, double *lse_i, double *s) {
    double m = -INFINITY;
    for (int64_t j = 0; j < Lk; j++) {
        s[j] = visible(o, i, j, Lq, Lk) ? score(o, i, j, Lq, Lk, qi, k + j * D, D, NULL) : -INFINITY;
        if (s[j] > m) m = s[j];
    }
    for (int64_t d = 0; d < D; d++) oi[d] = 0;
    if (o->sigmoid) {
        for (int64_t j = 0; j < Lk; j++) {
            if (s[j] == -INFINITY) continue;
            double p = sigmoid(s[j] + o->sigmoid_bias);
            for (int64_t d = 0; d < D; d++) oi[d] += p * v[j * D + d];
        }
        if (lse_i) *lse_i = NAN;
        return;
    }
    if (m == -INFINITY) {
        if (lse_i) *lse_i = -INFINITY;
        return;
    }
    double sum = 0;
    for (int64_t j = 0; j < Lk; j++) sum += s[j] == -INFINITY ? 0 : exp(s[j] - m);
    for (int64_t j = 0; j < Lk; j++) {
        if (s[j] == -INFINITY) continue;
        double p = exp(s[j] - m) / sum;
        for (int64_t d = 0; d < D; d++) oi[d] += p * v[j * D + d];
    }
    if (lse_i) *lse_i = m + log(sum);
}

void ref_attention_forward(const ref_attn_opts *o, int64_t Lq, int64_t Lk, int64_t D, const double *q,
                           const double *k, const double *v, double *out, double *lse) {
    double *s = malloc(sizeof(double) * (size_t)(Lk > 0 ? Lk : 1));
    for (int64_t i = 0; i < Lq; i++) forward_row(o, i, Lq, Lk, D, q + i * D, k, v, out + i * D, lse ? lse + i : NULL, s);
    free(s);
}

void ref_attention_forward_row(const ref_attn_opts *o, int64_t i, int64_t Lq, int64_t Lk, int64_t D, const double *qi,
                               const double *k, const double *v, double *out_i, double *lse_i) {
    double *s = malloc(sizeof(double) * (size_t)(Lk > 0 ? Lk : 1));
    forward_row(o, i, Lq, Lk, D, qi, k, v, out_i, lse_i, s);
    free(s);
}

void ref_attention_backward(const ref_attn_opts *o, int64_t Lq, int64_t Lk, int64_t D, const double *q,
                            const double *k, const double *v, const double *dout, double *dq, double *dk,
                            double *dv) {
    size_t n = (size_t)(Lk > 0 ? Lk : 1);
    double *s = malloc(sizeof(double) * n), *g = malloc(sizeof(double) * n);
    double *p = malloc(sizeof(double) * n), *dp = malloc(sizeof(double) * n);
    for (int64_t i = 0; i < Lq; i++) {
        const double *qi = q + i * D, *doi = dout + i * D;
        double m = -INFINITY;
        for (int64_t j = 0; j < Lk; j++) {
            s[j] = visible(o, i, j, Lq, Lk) ? score(o, i, j, Lq, Lk, qi, k + j * D, D, &g[j]) : -INFINITY;
            if (s[j] > m) m = s[j];
        }
        for (int64_t d = 0; d < D; d++) dq[i * D + d] = 0;
        if (m == -INFINITY) continue;
        double sum = 0;
        for (int64_t j = 0; j < Lk; j++) sum += s[j] == -INFINITY ? 0 : exp(s[j] - m);
        double delta = 0; /* sum_j p_ij dp_ij, softmax only */
        for (int64_t j = 0; j < Lk; j++) {
            if (s[j] == -INFINITY) { p[j] = dp[j] = 0; continue; }
            p[j] = o->sigmoid ? sigmoid(s[j] + o->sigmoid_bias) : exp(s[j] - m) / sum;
            dp[j] = 0;
            for (int64_t d = 0; d < D; d++) dp[j] += doi[d] * v[j * D + d];
            delta += p[j] * dp[j];
        }
        for (int64_t j = 0; j < Lk; j++) {
            if (s[j] == -INFINITY) continue;
            double ds = o->sigmoid ? dp[j] * p[j] * (1 - p[j]) : p[j] * (dp[j] - delta);
            double dqk = ds * g[j];
            for (int64_t d = 0; d < D; d++) {
                dv[j * D + d] += p[j] * doi[d];
                dq[i * D + d] += dqk * k[j * D + d];
                dk[j * D + d] += dqk * qi[d];
            }
        }
    }
    free(s);
    free(g);
    free(p);
    free(dp);
}

void ref_attention_merge(int n, int64_t rows, int64_t D, const double *outs, const double *lses, double *out,
                         double *lse) {
    for (int64_t r = 0; r < rows; r++) {
        double m = -INFINITY, z = 0;
        int undefined = 0;
        for (int i = 0; i < n; i++) {
            double l = lses[i * rows + r];
            undefined |= isnan(l) || l == INFINITY;
            if (l > m) m = l;
        }
        double *o = out + r * D, total;
        if (undefined) total = NAN;
        else if (m == -INFINITY) total = -INFINITY;
        else {
            for (int i = 0; i < n; i++) z += exp(lses[i * rows + r] - m);
            total = m + log(z);
        }
        for (int64_t d = 0; d < D; d++) {
            double acc = 0;
            if (isnan(total)) acc = NAN;
            else if (total != -INFINITY)
                for (int i = 0; i < n; i++)
                    if (lses[i * rows + r] != -INFINITY) acc += exp(lses[i * rows + r] - total) * outs[(i * rows + r) * D + d];
            o[d] = acc;
        }
        if (lse) lse[r] = total;
    }
}
