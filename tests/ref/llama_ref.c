#include "llama_ref.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static double *zalloc(int64_t n) {
    double *p = calloc((size_t)n, sizeof *p);
    if (!p) abort(); /* tests only */
    return p;
}

static void rmsnorm(double *out, const double *x, const double *w, int64_t n, double eps) {
    double ss = 0;
    for (int64_t i = 0; i < n; i++) ss += x[i] * x[i];
    double r = 1.0 / sqrt(ss / (double)n + eps);
    for (int64_t i = 0; i < n; i++) out[i] = x[i] * r * w[i];
}

/* x rounded to int8 steps per 32-block, each step max|block| / 127; the
 * scale and the product x / step are rounded to f32 first, as the kernels
 * that this models compute them. */
static void round_int8(double *out, const double *x, int64_t n) {
    for (int64_t b = 0; b < n; b += 32) {
        float amax = 0;
        for (int64_t j = b; j < b + 32; j++) amax = fmaxf(amax, fabsf((float)x[j]));
        float step = amax / 127.0f, inv = amax > 0 ? 127.0f / amax : 0.0f;
        for (int64_t j = b; j < b + 32; j++) out[j] = (double)step * (double)nearbyintf((float)x[j] * inv);
    }
}

/* out[r] = W[r] . x (+ b[r]), with x rounded first when `rounded` */
static void linear(double *out, const double *W, const double *b, const double *x, int64_t rows, int64_t cols,
                   bool rounded) {
    double *xr = NULL;
    if (rounded) {
        xr = zalloc(cols);
        round_int8(xr, x, cols);
        x = xr;
    }
    for (int64_t r = 0; r < rows; r++) {
        double s = b ? b[r] : 0;
        for (int64_t c = 0; c < cols; c++) s += W[r * cols + c] * x[c];
        out[r] = s;
    }
    free(xr);
}

/* Rotary embedding of one head at position pos over its first `dims` dims. */
static void rope(double *h, int64_t dims, bool neox, double theta_base, double scale, int64_t pos) {
    for (int64_t i = 0; i < dims / 2; i++) {
        double angle = ((double)pos / scale) * pow(theta_base, -2.0 * (double)i / (double)dims);
        int64_t a = neox ? i : 2 * i, b = neox ? i + dims / 2 : 2 * i + 1;
        double x0 = h[a], x1 = h[b];
        h[a] = x0 * cos(angle) - x1 * sin(angle);
        h[b] = x0 * sin(angle) + x1 * cos(angle);
    }
}

void ref_llama_forward(const ref_llama *m, const int32_t *tokens, int64_t n, double *logits) {
    const int64_t E = m->n_embd, H = m->n_head, Hkv = m->n_head_kv, D = E / H, KV = Hkv * D, F = m->n_ff;
    double *x = zalloc(n * E), *xn = zalloc(E), *q = zalloc(n * E), *k = zalloc(n * KV), *v = zalloc(n * KV);
    double *att = zalloc(E), *tmp = zalloc(E > F ? E : F), *g = zalloc(F), *u = zalloc(F), *p = zalloc(n);
    for (int64_t i = 0; i < n; i++) memcpy(x + i * E, m->tok_embd + (int64_t)tokens[i] * E, sizeof(double) * (size_t)E);
    for (int64_t l = 0; l < m->n_layer; l++) {
        const ref_llama_layer *L = &m->layers[l];
        for (int64_t i = 0; i < n; i++) {
            const bool ra = m->round_attn && m->round_at && m->round_at[i];
            rmsnorm(xn, x + i * E, L->attn_norm, E, m->rms_eps);
            linear(q + i * E, L->wq, L->bq, xn, E, E, ra);
            linear(k + i * KV, L->wk, L->bk, xn, KV, E, ra);
            linear(v + i * KV, L->wv, L->bv, xn, KV, E, ra);
            for (int64_t h = 0; h < H; h++) rope(q + i * E + h * D, m->rope_dims, m->rope_neox, m->rope_theta, m->rope_scale, i);
            for (int64_t h = 0; h < Hkv; h++)
                rope(k + i * KV + h * D, m->rope_dims, m->rope_neox, m->rope_theta, m->rope_scale, i);
        }
        for (int64_t i = 0; i < n; i++) {
            const bool ra = m->round_attn && m->round_at && m->round_at[i];
            const bool rf = m->round_ffn && m->round_at && m->round_at[i];
            for (int64_t h = 0; h < H; h++) {
                const double *qh = q + i * E + h * D;
                const int64_t kh = h / (H / Hkv);
                double mx = -INFINITY, sum = 0;
                for (int64_t j = 0; j <= i; j++) {
                    double s = 0;
                    for (int64_t d = 0; d < D; d++) s += qh[d] * k[j * KV + kh * D + d];
                    p[j] = s / sqrt((double)D);
                    if (p[j] > mx) mx = p[j];
                }
                for (int64_t j = 0; j <= i; j++) sum += (p[j] = exp(p[j] - mx));
                for (int64_t d = 0; d < D; d++) {
                    double o = 0;
                    for (int64_t j = 0; j <= i; j++) o += p[j] * v[j * KV + kh * D + d];
                    att[h * D + d] = o / sum;
                }
            }
            linear(tmp, L->wo, NULL, att, E, E, ra);
            for (int64_t e = 0; e < E; e++) x[i * E + e] += tmp[e];
            rmsnorm(xn, x + i * E, L->ffn_norm, E, m->rms_eps);
            linear(g, L->gate, NULL, xn, F, E, rf);
            linear(u, L->up, NULL, xn, F, E, rf);
            for (int64_t f = 0; f < F; f++) g[f] = g[f] / (1.0 + exp(-g[f])) * u[f]; /* SiLU(gate) * up */
            linear(tmp, L->down, NULL, g, E, F, rf);
            for (int64_t e = 0; e < E; e++) x[i * E + e] += tmp[e];
        }
    }
    for (int64_t i = 0; i < n; i++) {
        rmsnorm(xn, x + i * E, m->out_norm, E, m->rms_eps);
        linear(logits + i * m->n_vocab, m->output, NULL, xn, m->n_vocab, E,
               m->round_output && m->round_logits_at && m->round_logits_at[i]);
    }
    free(x), free(xn), free(q), free(k), free(v), free(att), free(tmp), free(g), free(u), free(p);
}
