/* Pieces the delta-rule kernels share (forward and backward): loading q and
 * k (L2-normalised by option), beta and the decay factor of a token, and
 * the recurrent step. Include from the per-ISA kernel files only.
 *
 * Rows are padded to multiples of LIN_PAD floats (linear_common.h) and the
 * padding is zero, so whole-vector loops over a row are exact. */
#ifndef LA_CPU_DELTA_COMMON_H
#define LA_CPU_DELTA_COMMON_H

#include "backend/delta_problem.h"
#include "cpu/linear/linear_common.h"

/* The decode step prefetches the next state of its thread's run of items
 * (delta_step's nS) on AVX2 only: on Zen 1 the step's column blocks read
 * S's rows 128 bytes at a time, 512 apart, a pattern the hardware
 * prefetchers do not run ahead of, and the step ran at 0.57-0.64 of the
 * read-modify-write bandwidth; with the next state requested during this
 * one's first pass, 0.77-0.82 (BENCHMARKS.md, s14-mixdec). Not measured on
 * the AVX-512 machines, where the earlier sessions' figures (0.62-0.91)
 * came without it, so those copies keep the dynamic schedule and no hints. */
#define DELTA_STEP_PF_NEXT (LA_VL == 8)

/* Tokens ahead of the one loaded whose rows are prefetched. */
#define DELTA_AHEAD 4

/* fla's l2norm: x / sqrt(sum x^2 + eps). */
#define DELTA_L2_EPS 1e-6f

typedef struct {
    int64_t C, Cp, Dk, Dkp, Dv, Dvp;
} delta_dims;

static inline delta_dims delta_dims_of(const la_delta_problem *p, int64_t C) {
    delta_dims d = {.C = C, .Cp = tg_round_up(C, LIN_PAD), .Dk = p->Dk, .Dkp = tg_round_up(p->Dk, LIN_PAD),
                    .Dv = p->Dv, .Dvp = tg_round_up(p->Dv, LIN_PAD)};
    return d;
}

/* dst[0..Dkp) = mul * x / sqrt(|x|^2 + eps) (or mul * x without l2norm),
 * zero padded; returns 1 / sqrt(|x|^2 + eps) (1 without l2norm). */
static inline float delta_load_qk(float *dst, const char *src, la_dtype t, int64_t Dk, int64_t Dkp, bool l2norm,
                                  float mul) {
    tg_load_row(dst, src, t, Dk, Dkp);
    float r = 1.0f;
    if (l2norm) r = 1.0f / sqrtf(lin_dot(dst, dst, Dkp) + DELTA_L2_EPS);
    if (r * mul != 1.0f) lin_scale(dst, Dkp, r * mul);
    return r;
}

static inline float delta_beta(const la_delta_problem *p, int64_t bt, int64_t t, int64_t h) {
    return la_load_f32(la_attn_at(&p->beta, bt, t, h), p->beta.dtype, 0);
}

/* The token's log decay (0 ungated). */
static inline float delta_log_decay(const la_delta_problem *p, int64_t bt, int64_t t, int64_t h) {
    return p->g.data ? *(const float *)la_attn_at(&p->g, bt, t, h) : 0.0f;
}

/* delta_step on columns [j0, j0 + nb LA_VL) of S (nb <= LA_STEP_NB, a
 * constant at each call, so the sums are registers). kq = k . q. nS (rows
 * nlds floats apart), or NULL: a state whose same lines are prefetched. */
static inline __attribute__((always_inline)) void delta_step_cols(float *S, int64_t lds, int64_t Dk, const float *q,
                                                                  const float *k, const float *v, float beta, float a,
                                                                  float kq, float *u, float *o, int64_t j0,
                                                                  const int nb, const float *nS, int64_t nlds) {
    vf sk[LA_STEP_NB], sq[LA_STEP_NB];
    for (int b = 0; b < nb; b++) sk[b] = sq[b] = vf_set1(0);
    for (int64_t d = 0; d < Dk; d++) {
        const float *row = S + d * lds + j0;
        if (nS) /* the same lines of the next state: a whole state ahead, spread over this one's rows */
            for (int x = 0; x < nb * LA_VL * (int)sizeof(float); x += 64)
                la_prefetch_t0((const char *)(nS + d * nlds + j0) + x);
        const vf kd = vf_set1(k[d]), qd = vf_set1(o ? q[d] : 0.0f);
        for (int b = 0; b < nb; b++) {
            const vf s = vf_load(row + b * LA_VL);
            sk[b] = vf_fma(kd, s, sk[b]);
            if (o) sq[b] = vf_fma(qd, s, sq[b]);
        }
    }
    const vf av = vf_set1(a), bk = vf_set1(beta * kq);
    vf ub[LA_STEP_NB];
    for (int b = 0; b < nb; b++) {
        ub[b] = vf_load(v + j0 + b * LA_VL) - av * sk[b];
        vf_store(u + j0 + b * LA_VL, ub[b]);
        if (o) vf_store(o + j0 + b * LA_VL, vf_fma(bk, ub[b], av * sq[b]));
    }
    const vf bv = vf_set1(beta);
    for (int64_t d = 0; d < Dk; d++) {
        float *row = S + d * lds + j0;
        const vf kb = vf_set1(k[d]) * bv;
        for (int b = 0; b < nb; b++) vf_store(row + b * LA_VL, vf_fma(kb, ub[b], vf_load(row + b * LA_VL) * av));
    }
}

/* One token on S [Dk][Dvp] (rows lds floats apart) in place: u = v - a
 * S^T k; S = a S + beta k u^T; o = S^T q (o NULL: not wanted), taken as
 * a S^T q + beta (k . q) u from the state before the update, so the
 * update's pass only rewrites the rows. u [Dvp] is scratch and returns u;
 * q and k are zero padded to a multiple of LA_VL; q carries the scale.
 * Per block of LA_STEP_NB vectors of columns (a whole row of 128 on
 * AVX-512): one pass over the block's rows for S^T k and S^T q, sums in
 * registers, then the update's pass over the same rows (from cache). The
 * old step kept u and o in memory, loaded and stored with every row: 5
 * loads and 3 stores per vector of the state, now 2 loads and 1 store.
 * (Requesting the next state's rows during the update's pass, to keep the
 * memory busy through it, measured no better on Zen 4 under load; on Zen 1
 * requesting them during the first pass gains 25-30%: nS, the next state
 * or NULL, DELTA_STEP_PF_NEXT.) */
static inline void delta_step(float *S, int64_t lds, int64_t Dk, int64_t Dvp, const float *q, const float *k,
                              const float *v, float beta, float a, float *u, float *o, const float *nS, int64_t nlds) {
    const float kq = o ? lin_dot(k, q, tg_round_up(Dk, LA_VL)) : 0.0f;
    int64_t j0 = 0;
    for (; j0 + LA_STEP_NB * LA_VL <= Dvp; j0 += LA_STEP_NB * LA_VL)
        delta_step_cols(S, lds, Dk, q, k, v, beta, a, kq, u, o, j0, LA_STEP_NB, nS, nlds);
    for (; j0 < Dvp; j0 += LA_VL) delta_step_cols(S, lds, Dk, q, k, v, beta, a, kq, u, o, j0, 1, nS, nlds);
}

/* S [Dk][Dvp] = the state of (sequence n, head h), or 0. */
static inline void delta_load_state(float *S, const la_linear_state *st, const delta_dims *dm, int64_t n,
                                    int64_t h) {
    state_rows_load(S, dm->Dvp, st, n, h, dm->Dk, dm->Dv);
}

static inline void delta_store_state(const la_linear_state *st, const float *S, const delta_dims *dm, int64_t n,
                                     int64_t h) {
    state_rows_store(st, S, dm->Dvp, n, h, dm->Dk, dm->Dv);
}

/* ---- one chunk of the WY form, shared by the chunked forward and backward ----
 * For a chunk of n tokens from state S, with a_t = exp(g_t), pre[i] =
 * prod_{s<=i} a_s, suf[j] = prod_{j<s<n} a_s, E[i][j] = prod_{j<s<=i} a_s
 * (j <= i; 0 above the diagonal), Q and K the (normalised) rows, Q
 * carrying the scale:
 *   KE = (K K^T) . E, strictly below the diagonal;  A = diag(beta) KE
 *   T  = (I + A)^{-1}                               (unit lower triangular)
 *   B  = [beta V | -beta pre K]                     (the right-hand sides)
 *   R  = T B = [U | -W];  Vn = U - W S              (R's first Dvp columns)
 * pre, suf and the chunk's whole decay are exp of sums of log decays and E
 * a product of factors in [0, 1] (linear_common.h says why: saturated gates
 * give exact zeros, never -inf - -inf). */
typedef struct {
    float *Q, *K, *KT, *V, *B, *R, *KE, *T, *E, *beta, *lg, *a, *pre, *suf, *rq, *rk;
} delta_chunk;

static inline int64_t delta_ldr(const delta_dims *d) { return d->Dvp + d->Dkp; }

/* Floats of a delta_chunk's buffers. */
static inline size_t delta_chunk_floats(const delta_dims *d) {
    return (size_t)(3 * d->C * d->Dkp + d->Dkp * d->Cp + d->C * d->Dvp + 2 * d->C * delta_ldr(d) +
                    3 * d->C * d->Cp + 9 * d->Cp);
}

static inline delta_chunk delta_chunk_at(float *base, const delta_dims *d) {
    delta_chunk c;
    const int64_t ldr = delta_ldr(d);
    c.Q = base;
    c.K = c.Q + d->C * d->Dkp;
    c.KT = c.K + d->C * d->Dkp;
    c.V = c.KT + d->Dkp * d->Cp;
    c.B = c.V + d->C * d->Dvp;
    c.R = c.B + d->C * ldr;
    c.KE = c.R + d->C * ldr;
    c.T = c.KE + d->C * d->Cp;
    c.E = c.T + d->C * d->Cp;
    c.beta = c.E + d->C * d->Cp;
    c.lg = c.beta + d->Cp;
    c.a = c.lg + d->Cp;
    c.pre = c.a + d->Cp;
    c.suf = c.pre + d->Cp;
    c.rq = c.suf + d->Cp;
    c.rk = c.rq + d->Cp;
    return c; /* 2 * Cp spare */
}

/* T [n][ld] = (I + diag(beta) KE)^{-1}, KE strictly lower triangular [n][ld]
 * (its diagonal and above are not read), by forward substitution on the
 * identity: T_i = e_i - beta_i sum_{j<i} KE_ij T_j (n^3 / 6 multiply-adds,
 * small beside the products with T that follow, which then run as one GEMM
 * instead of a row-by-row solve over the Dk + Dv columns). */
static inline void delta_unit_lower_inverse(float *T, const float *KE, const float *beta, int64_t ld, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        float *ti = T + i * ld;
        memset(ti, 0, (size_t)ld * sizeof(float));
        ti[i] = 1.0f;
        const int64_t w = tg_round_up(i, LA_VL); /* rows j < i are zero from column i on */
        for (int64_t j = 0; j < i; j++) {
            const float aij = beta[i] * KE[i * ld + j];
            if (aij == 0.0f) continue;
            const vf av = vf_set1(aij);
            const float *tj = T + j * ld;
            for (int64_t c = 0; c < w; c += LA_VL) vf_store(ti + c, vf_load(ti + c) - av * vf_load(tj + c));
        }
    }
}

/* Load tokens [t_first, t_first + n) (end: the sequence's end) of (sequence b's batch row bt, query
 * head h, k/v head hk) and build everything above from state S [Dk][Dvp];
 * returns the chunk's whole decay pre[n-1] (1 for n = 0). */
static inline float delta_chunk_prepare(const la_delta_problem *p, const delta_dims *dm, delta_chunk *c, int64_t bt,
                                        int64_t h, int64_t hk, int64_t t_first, int64_t n, const float *S,
                                        int64_t end) {
    const int64_t Dk = dm->Dk, Dkp = dm->Dkp, Dvp = dm->Dvp, Cp = dm->Cp, ldr = delta_ldr(dm);
    for (int64_t i = 0; i < n; i++) {
        const int64_t t = t_first + i;
        /* the first two lines of the rows DELTA_AHEAD tokens on (a page or
         * more apart each, out of the streaming prefetchers' view): ~8% less
         * CPU time at H 8, 16K; the whole rows were slower */
        if (t + DELTA_AHEAD < end) {
            const char *r[3] = {la_attn_at(&p->q, bt, t + DELTA_AHEAD, h), la_attn_at(&p->k, bt, t + DELTA_AHEAD, hk),
                                la_attn_at(&p->v, bt, t + DELTA_AHEAD, hk)};
            for (int x = 0; x < 3; x++) {
                __builtin_prefetch(r[x], 0, 3);
                __builtin_prefetch(r[x] + 64, 0, 3);
            }
        }
        c->rq[i] = delta_load_qk(c->Q + i * Dkp, la_attn_at(&p->q, bt, t, h), p->q.dtype, Dk, Dkp, p->l2norm,
                                 p->scale);
        c->rk[i] = delta_load_qk(c->K + i * Dkp, la_attn_at(&p->k, bt, t, hk), p->k.dtype, Dk, Dkp, p->l2norm, 1.0f);
        tg_load_row(c->V + i * Dvp, la_attn_at(&p->v, bt, t, hk), p->v.dtype, dm->Dv, Dvp);
        c->beta[i] = delta_beta(p, bt, t, h);
        c->lg[i] = delta_log_decay(p, bt, t, h);
        c->a[i] = expf(c->lg[i]);
    }
    const float total = lin_run_decays(c->lg, n, c->pre, c->suf);
    for (int64_t i = 0; i < n; i++) {
        const vf b = vf_set1(c->beta[i]), m = vf_set1(-c->beta[i] * c->pre[i]);
        for (int64_t j = 0; j < Dvp; j += LA_VL) vf_store(c->B + i * ldr + j, b * vf_load(c->V + i * Dvp + j));
        for (int64_t d = 0; d < Dkp; d += LA_VL) vf_store(c->B + i * ldr + Dvp + d, m * vf_load(c->K + i * Dkp + d));
    }
    /* E, row by row from a running row of factors: after row i, run[j] =
     * prod_{j<s<=i} a_s for j <= i and 0 after i (as lin_mask_scalar) */
    {
        _Alignas(64) float run[1024 + LIN_PAD];
        for (int64_t j = 0; j < Cp; j += LA_VL) vf_store(run + j, vf_set1(0));
        for (int64_t i = 0; i < n; i++) {
            const vf ai = vf_set1(c->a[i]);
            const int64_t ib = i / LA_VL * LA_VL;
            for (int64_t j = 0; j <= ib; j += LA_VL) vf_store(run + j, vf_load(run + j) * ai);
            run[i] = 1.0f;
            memcpy(c->E + i * Cp, run, (size_t)Cp * sizeof(float));
        }
    }
    /* KE = (K K^T) . E strictly below the diagonal: each row tile's column
     * blocks up to its diagonal only, the rest 0 */
    lin_transpose(c->KT, Cp, c->K, Dkp, n, Dk);
    vi lane;
    for (int l = 0; l < LA_VL; l++) lane[l] = l;
    for (int64_t i0 = 0; i0 < n; i0 += TG_MR) {
        const int64_t m = n - i0 < TG_MR ? n - i0 : TG_MR, nc = tg_round_up(i0 + m, LA_VL);
        tg_gemm(m, nc, Dk, c->K + i0 * Dkp, Dkp, 1, c->KT, Cp, c->KE + i0 * Cp, Cp, false);
        for (int64_t i = i0; i < i0 + m; i++) {
            float *row = c->KE + i * Cp;
            const float *e = c->E + i * Cp;
            for (int64_t j = 0; j < nc; j += LA_VL)
                vf_store(row + j, vf_select(lane + (int32_t)j < (int32_t)i, vf_load(row + j) * vf_load(e + j),
                                            vf_set1(0)));
            for (int64_t j = nc; j < Cp; j += LA_VL) vf_store(row + j, vf_set1(0));
        }
    }
    delta_unit_lower_inverse(c->T, c->KE, c->beta, Cp, n);
    /* R = T B, T lower triangular: each row tile over the rows of B up to its diagonal */
    for (int64_t i0 = 0; i0 < n; i0 += TG_MR) {
        const int64_t m = n - i0 < TG_MR ? n - i0 : TG_MR;
        tg_gemm(m, ldr, i0 + m, c->T + i0 * Cp, Cp, 1, c->B, ldr, c->R + i0 * ldr, ldr, false);
    }
    /* Vn = U + (-W) S */
    tg_gemm(n, Dvp, Dk, c->R + Dvp, ldr, 1, S, Dvp, c->R, ldr, true);
    return n > 0 ? total : 1.0f;
}

#endif
