/* Pieces the linear-attention kernels share (forward and backward): padded
 * sizes, loading rows through the feature map, the per-token decay factors
 * and the state's rows. Include from the per-ISA kernel files only, after
 * tile_gemm.h.
 *
 * Decays are used as factors a = exp(g) in [0, 1], as products of factors
 * over short runs (inside a chunk's score block) and as exp of sums of log
 * decays over long ones (a chunk's prefix, suffix and whole decay), never
 * as exp of a difference of cumulative sums: factors in [0, 1] cannot
 * overflow and underflow to the 0 they should be, sums of terms <= 0
 * cannot cancel, and a saturated gate (g = -inf, a = 0) resets exactly,
 * where differences of cumulative log sums would give -inf - -inf = NaN or
 * lose the small decays after a large one to cancellation. The recurrent
 * form multiplies by one factor per token, so with decays near 1 its f32
 * rounding compounds over the tokens a decay remembers (relative ~3e-8
 * per token); the chunked form's compounds per chunk. */
#ifndef LA_CPU_LINEAR_COMMON_H
#define LA_CPU_LINEAR_COMMON_H

#include "backend/linear_problem.h"
#include "base/parallel.h"
#include "cpu/linear/state_rows.h"
#include "cpu/tile_gemm.h"

/* Every padded size is a multiple of 16 floats: the LA_VL of every ISA
 * divides it, so one layout serves all four copies. */
#define LIN_PAD 16

typedef struct {
    int64_t C, Cp, Dk, Dkp, Dv, Dvs, Dvp;
} lin_dims;

static inline lin_dims lin_dims_of(const la_linear_problem *p, int64_t C) {
    lin_dims d = {.C = C, .Cp = tg_round_up(C, LIN_PAD), .Dk = p->Dk, .Dkp = tg_round_up(p->Dk, LIN_PAD),
                  .Dv = p->Dv, .Dvs = p->Dvs, .Dvp = tg_round_up(p->Dvs, LIN_PAD)};
    return d;
}

static inline vf lin_phi_v(int f, vf x) {
    switch (f) {
    case LA_FEATURE_ELU1: return vf_select(x > 0, x + 1.0f, vf_exp(x));
    case LA_FEATURE_RELU: return vf_max(x, vf_set1(0));
    default: return x;
    }
}

/* d phi / dx at x. */
static inline float lin_dphi(int f, float x) {
    switch (f) {
    case LA_FEATURE_ELU1: return x > 0 ? 1.0f : expf(x);
    case LA_FEATURE_RELU: return x > 0 ? 1.0f : 0.0f;
    default: return 1.0f;
    }
}

/* Hedgehog: pr[0..2 Dm) = softmax([x W_h, -x W_h]) for the raw row x [Dx]
 * (W_h [Dx][Dm] row-major). The largest entry is max |u|, subtracted first. */
static inline void lin_hedgehog(float *pr, const float *x, const la_linear_problem *p, int64_t h) {
    const int64_t Dx = p->Dx, Dm = p->Dm;
    const float *W = p->proj + h * Dx * Dm;
    for (int64_t m = 0; m < Dm; m++) pr[m] = 0;
    for (int64_t d = 0; d < Dx; d++)
        for (int64_t m = 0; m < Dm; m++) pr[m] += x[d] * W[d * Dm + m];
    float mx = 0, sum = 0;
    for (int64_t m = 0; m < Dm; m++) mx = fmaxf(mx, fabsf(pr[m]));
    for (int64_t m = 0; m < Dm; m++) {
        const float u = pr[m];
        pr[m] = expf(u - mx), pr[Dm + m] = expf(-u - mx);
        sum += pr[m] + pr[Dm + m];
    }
    const float inv = 1.0f / sum;
    for (int64_t m = 0; m < 2 * Dm; m++) pr[m] *= inv;
}

/* Based's Taylor map's constants: x / Dx^(1/4) and x x^T / (sqrt(2) sqrt(Dx)). */
static inline void lin_taylor_consts(int64_t Dx, float *r1, float *r2) {
    *r1 = 1.0f / sqrtf(sqrtf((float)Dx));
    *r2 = 1.0f / (sqrtf(2.0f) * sqrtf((float)Dx));
}

/* dst[0..Dkp) = scale * phi(src), zero padded: src the raw row of Dx
 * elements, phi's Dk features; h the query head (Hedgehog's W). */
static inline void lin_load_feature(float *dst, const char *src, la_dtype t, const la_linear_problem *p, int64_t h,
                                    int64_t Dkp, float scale) {
    const int f = p->feature;
    if (f == LA_FEATURE_TAYLOR || f == LA_FEATURE_HEDGEHOG) {
        _Alignas(64) float x[LA_MAX_HEAD_DIM];
        const int64_t Dx = p->Dx;
        tg_load_row(x, src, t, Dx, Dx);
        if (f == LA_FEATURE_TAYLOR) {
            float r1, r2;
            lin_taylor_consts(Dx, &r1, &r2);
            dst[0] = scale;
            for (int64_t d = 0; d < Dx; d++) dst[1 + d] = scale * r1 * x[d];
            for (int64_t d = 0; d < Dx; d++)
                for (int64_t e = 0; e < Dx; e++) dst[1 + Dx + d * Dx + e] = scale * r2 * x[d] * x[e];
        } else {
            lin_hedgehog(dst, x, p, h);
            for (int64_t m = 0; m < p->Dk; m++) dst[m] *= scale;
        }
        for (int64_t d = p->Dk; d < Dkp; d++) dst[d] = 0;
        return;
    }
    const int64_t D = p->Dk;
    tg_load_row(dst, src, t, D, Dkp);
    if (f == LA_FEATURE_IDENTITY && scale == 1.0f) return;
    for (int64_t d = 0; d < Dkp; d += LA_VL) vf_store(dst + d, lin_phi_v(f, vf_load(dst + d)) * scale);
    for (int64_t d = D; d < Dkp; d++) dst[d] = 0;
}

/* The gradient of a feature-mapped row: dx[0..Dx) from dphi~ [0..Dk), the
 * gradient reaching scale * phi(x) (dphi~ is overwritten); x is the raw row
 * at src. Hedgehog adds x (x) du into dW [Dx][Dm] when dW is not NULL. */
static inline void lin_feature_grad(float *dx, float *dphi, const char *src, la_dtype t, const la_linear_problem *p,
                                    int64_t h, float scale, float *dW) {
    const int f = p->feature;
    const int64_t Dx = p->Dx;
    _Alignas(64) float x[LA_MAX_HEAD_DIM];
    if (f != LA_FEATURE_IDENTITY) tg_load_row(x, src, t, Dx, Dx);
    if (f == LA_FEATURE_TAYLOR) {
        float r1, r2;
        lin_taylor_consts(Dx, &r1, &r2);
        for (int64_t d = 0; d < Dx; d++) {
            const float *a = dphi + 1 + Dx + d * Dx;
            float s = 0;
            for (int64_t e = 0; e < Dx; e++) s += (a[e] + dphi[1 + Dx + e * Dx + d]) * x[e];
            dx[d] = scale * (r1 * dphi[1 + d] + r2 * s);
        }
    } else if (f == LA_FEATURE_HEDGEHOG) {
        _Alignas(64) float pr[LA_MAX_HEAD_DIM];
        const int64_t Dm = p->Dm;
        const float *W = p->proj + h * Dx * Dm;
        lin_hedgehog(pr, x, p, h);
        float dot = 0;
        for (int64_t m = 0; m < 2 * Dm; m++) dot += pr[m] * dphi[m];
        /* dz = p . (dphi - <p, dphi>) scaled; du = dz[:Dm] - dz[Dm:], kept in dphi[0..Dm) */
        for (int64_t m = 0; m < Dm; m++)
            dphi[m] = scale * (pr[m] * (dphi[m] - dot) - pr[Dm + m] * (dphi[Dm + m] - dot));
        for (int64_t d = 0; d < Dx; d++) {
            float s = 0;
            for (int64_t m = 0; m < Dm; m++) s += W[d * Dm + m] * dphi[m];
            dx[d] = s;
        }
        if (dW)
            for (int64_t d = 0; d < Dx; d++)
                for (int64_t m = 0; m < Dm; m++) dW[d * Dm + m] += x[d] * dphi[m];
    } else {
        for (int64_t d = 0; d < Dx; d++) dx[d] = dphi[d] * scale * (f != LA_FEATURE_IDENTITY ? lin_dphi(f, x[d]) : 1.0f);
    }
}

/* A value row [0..Dvp): v, then 1 in column Dv with normalisation (the
 * denominator rides along as one more value column), zero padded. */
static inline void lin_load_value(float *dst, const la_linear_problem *p, const lin_dims *dm, int64_t bt, int64_t t,
                                  int64_t hk) {
    tg_load_row(dst, la_attn_at(&p->v, bt, t, hk), p->v.dtype, dm->Dv, dm->Dvp);
    if (p->normalize) dst[dm->Dv] = 1.0f;
}

static inline bool lin_channel(const la_linear_problem *p) { return p->decay == LA_DECAY_CHANNEL; }

/* The scalar log decay g of token t of head h (0 without decay). */
static inline float lin_log_decay_scalar(const la_linear_problem *p, int64_t bt, int64_t t, int64_t h) {
    switch (p->decay) {
    case LA_DECAY_HEAD: return p->head_log_decay[h];
    case LA_DECAY_TOKEN: return *(const float *)la_attn_at(&p->g, bt, t, h);
    default: return 0.0f;
    }
}

/* The per-channel log decays g[0..Dk) of token t (zero padded to Dkp) and
 * their factors exp(g) (zero padded). */
static inline void lin_decay_row(float *factor, float *lg, const la_linear_problem *p, const lin_dims *dm, int64_t bt,
                                 int64_t t, int64_t h) {
    tg_load_row(lg, la_attn_at(&p->g, bt, t, h), LA_F32, dm->Dk, dm->Dkp);
    for (int64_t d = 0; d < dm->Dkp; d += LA_VL) vf_store(factor + d, vf_exp(vf_load(lg + d)));
    for (int64_t d = dm->Dk; d < dm->Dkp; d++) factor[d] = 0;
}

/* expm1(x) for log decays x <= 0 (or -inf: -1). Near 0, exp(x) - 1 keeps
 * only what survives exp(x)'s rounding to a float near 1 (exp(-1e-6) in f32
 * carries a relative error of 1.3e-2 in its log): the token-by-token forms
 * apply a decay as S + expm1(g) S, whose rate keeps f32's precision. Taylor
 * to x^7 for |x| <= 1/8 (remainder below 2e-11 of |x|). */
static inline vf lin_expm1(vf x) {
    vf p = vf_set1(1.0f / 5040);
    p = vf_fma(p, x, vf_set1(1.0f / 720));
    p = vf_fma(p, x, vf_set1(1.0f / 120));
    p = vf_fma(p, x, vf_set1(1.0f / 24));
    p = vf_fma(p, x, vf_set1(1.0f / 6));
    p = vf_fma(p, x, vf_set1(0.5f));
    p = vf_fma(p, x, vf_set1(1.0f));
    return vf_select(vf_abs(x) <= vf_set1(0.125f), p * x, vf_exp(x) - 1.0f);
}

/* lin_decay_row's decays as expm1(g) (zero padded), for S + expm1(g) S. */
static inline void lin_decay_row_m1(float *factor_m1, float *lg, const la_linear_problem *p, const lin_dims *dm,
                                    int64_t bt, int64_t t, int64_t h) {
    tg_load_row(lg, la_attn_at(&p->g, bt, t, h), LA_F32, dm->Dk, dm->Dkp);
    for (int64_t d = 0; d < dm->Dkp; d += LA_VL) vf_store(factor_m1 + d, lin_expm1(vf_load(lg + d)));
    for (int64_t d = dm->Dk; d < dm->Dkp; d++) factor_m1[d] = 0;
}

/* Decays over long runs (a chunk's prefix and suffix, its total) are
 * exp(sum of the log decays): the sum of terms <= 0 cannot cancel, -inf
 * stays -inf and gives 0, and one rounding of exp replaces one per token,
 * which matters for decays near 1 (exp(-1e-4) in f32 carries a relative
 * error of 3e-4 in its log; compounded per token over the 1e4 tokens such
 * a decay remembers, the outputs drift by 3e-4). Products of the factors
 * remain only inside a chunk's score block (per run, at most chunk_size
 * factors).
 * Scalar: pre[i] = exp(sum_{s<=i} g_s), suf[j] = exp(sum_{j<s<n} g_s);
 * returns exp of the whole sum. */
static inline float lin_run_decays(const float *lg, int64_t n, float *pre, float *suf) {
    float sum = 0;
    for (int64_t i = 0; i < n; i++) pre[i] = expf(sum += lg[i]);
    sum = 0;
    for (int64_t j = n - 1; j >= 0; j--) {
        suf[j] = expf(sum);
        sum += lg[j];
    }
    return expf(sum);
}

/* The same per channel, rows of Dkp: pre [n][Dkp], suf [n][Dkp], total
 * [Dkp]; acc [Dkp] scratch. */
static inline void lin_run_decay_rows(const float *lg, int64_t n, int64_t Dkp, float *pre, float *suf, float *total,
                                      float *acc) {
    for (int64_t d = 0; d < Dkp; d++) acc[d] = 0;
    for (int64_t i = 0; i < n; i++)
        for (int64_t d = 0; d < Dkp; d += LA_VL) {
            vf x = vf_load(acc + d) + vf_load(lg + i * Dkp + d);
            vf_store(acc + d, x);
            vf_store(pre + i * Dkp + d, vf_exp(x));
        }
    for (int64_t d = 0; d < Dkp; d++) acc[d] = 0;
    for (int64_t j = n - 1; j >= 0; j--)
        for (int64_t d = 0; d < Dkp; d += LA_VL) {
            vf x = vf_load(acc + d);
            vf_store(suf + j * Dkp + d, vf_exp(x));
            vf_store(acc + d, x + vf_load(lg + j * Dkp + d));
        }
    for (int64_t d = 0; d < Dkp; d += LA_VL) vf_store(total + d, vf_exp(vf_load(acc + d)));
}

/* S [Dk][Dvp] = the state of (sequence n, head h), or 0. */
static inline void lin_load_state(float *S, const la_linear_state *st, const lin_dims *dm, int64_t n, int64_t h) {
    state_rows_load(S, dm->Dvp, st, n, h, dm->Dk, dm->Dvs);
}

static inline void lin_store_state(const la_linear_state *st, const float *S, const lin_dims *dm, int64_t n,
                                   int64_t h) {
    state_rows_store(st, S, dm->Dvp, n, h, dm->Dk, dm->Dvs);
}

/* row[0..n) *= s, n a multiple of LA_VL. */
static inline void lin_scale(float *row, int64_t n, float s) {
    const vf sv = vf_set1(s);
    for (int64_t d = 0; d < n; d += LA_VL) vf_store(row + d, vf_load(row + d) * sv);
}

/* row[0..n) *= f[0..n) lane-wise, n a multiple of LA_VL. */
static inline void lin_mul(float *row, const float *f, int64_t n) {
    for (int64_t d = 0; d < n; d += LA_VL) vf_store(row + d, vf_load(row + d) * vf_load(f + d));
}

static inline float lin_dot(const float *a, const float *b, int64_t n) {
    vf acc = vf_set1(0);
    for (int64_t d = 0; d < n; d += LA_VL) acc = vf_fma(vf_load(a + d), vf_load(b + d), acc);
    return vf_reduce_add(acc);
}

/* sum_d a[d] e[d] b[d], n a multiple of LA_VL. */
static inline float lin_dot3(const float *a, const float *e, const float *b, int64_t n) {
    vf acc = vf_set1(0);
    for (int64_t d = 0; d < n; d += LA_VL) acc = vf_fma(vf_load(a + d) * vf_load(e + d), vf_load(b + d), acc);
    return vf_reduce_add(acc);
}

/* dst [cols][ld_dst] = the transpose of src [rows][ld_src] (cols x rows
 * of it); dst's columns rows..ld_dst are 0. Whole LA_VL x LA_VL blocks go
 * through registers: log2(LA_VL) rounds of even/odd lane shuffles, each
 * moving one bit of the column index into the row index; the edges are
 * copied one element at a time. */
static inline void lin_transpose(float *dst, int64_t ld_dst, const float *src, int64_t ld_src, int64_t rows,
                                 int64_t cols) {
    const int64_t rb = rows / LA_VL * LA_VL, cb = cols / LA_VL * LA_VL;
    for (int64_t i = 0; i < rb; i += LA_VL)
        for (int64_t d = 0; d < cb; d += LA_VL) {
            vf r[LA_VL], t[LA_VL];
#pragma GCC unroll 16
            for (int l = 0; l < LA_VL; l++) r[l] = vf_load(src + (i + l) * ld_src + d);
#pragma GCC unroll 4
            for (int round = 1; round < LA_VL; round *= 2) {
#pragma GCC unroll 8
                for (int l = 0; l < LA_VL / 2; l++) {
                    t[l] = __builtin_shufflevector(r[2 * l], r[2 * l + 1], LA_EVEN_LANES);
                    t[LA_VL / 2 + l] = __builtin_shufflevector(r[2 * l], r[2 * l + 1], LA_ODD_LANES);
                }
#pragma GCC unroll 16
                for (int l = 0; l < LA_VL; l++) r[l] = t[l];
            }
#pragma GCC unroll 16
            for (int l = 0; l < LA_VL; l++) vf_store(dst + (d + l) * ld_dst + i, r[l]);
        }
    for (int64_t d = 0; d < cols; d++) {
        float *row = dst + d * ld_dst;
        for (int64_t i = d < cb ? rb : 0; i < rows; i++) row[i] = src[i * ld_src + d];
        for (int64_t i = rows; i < ld_dst; i++) row[i] = 0;
    }
}

/* Causal mask and scalar decay on a chunk's n x n score block (row stride
 * ld, n <= 1024, columns up to n rounded up to LA_VL written): M[i][j] *=
 * prod_{j<s<=i} a_s for j <= i, 0 for j > i. The factors run as a row:
 * after row i, run[j] = prod_{j<s<=i} a_s (j <= i) and 0 after i, one
 * vector product per LA_VL columns and row. */
static inline void lin_mask_scalar(float *M, int64_t ld, const float *a, int64_t n) {
    _Alignas(64) float run[1024 + LIN_PAD];
    const int64_t np = tg_round_up(n, LA_VL);
    vi lane;
    for (int l = 0; l < LA_VL; l++) lane[l] = l;
    for (int64_t j = 0; j < np; j += LA_VL) vf_store(run + j, vf_set1(0));
    for (int64_t i = 0; i < n; i++) {
        const vf ai = vf_set1(a[i]);
        const int64_t ib = i / LA_VL * LA_VL;
        float *row = M + i * ld;
        for (int64_t j = 0; j <= ib; j += LA_VL) vf_store(run + j, vf_load(run + j) * ai);
        run[i] = 1.0f;
        for (int64_t j = 0; j < ib; j += LA_VL) vf_store(row + j, vf_load(row + j) * vf_load(run + j));
        vf_store(row + ib, vf_select(lane + (int32_t)ib <= (int32_t)i, vf_load(row + ib) * vf_load(run + ib), vf_set1(0)));
        for (int64_t j = ib + LA_VL; j < np; j += LA_VL) vf_store(row + j, vf_set1(0));
    }
}

#endif
