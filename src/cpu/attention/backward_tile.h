/* The exact backward's machinery, shared by the dense kernel
 * (backward_isa.c) and the block-sparse one (cpu/sparse/): per (sequence,
 * K/V head) group and query chunk, the packed q / dout panels, key pieces
 * of at most BK keys with their K, K^T, V^T panels and dK, dV, the five
 * products of one (query tile, key piece) and the dQ reduction, and the
 * team's walk over groups. A driver says how many keys a work unit holds
 * and which query tiles meet a key piece. Include only from per-ISA kernel
 * files: everything here is static and follows the ISA being compiled.
 * How the work is split and why: backward_isa.c. */
#ifndef LA_CPU_BACKWARD_TILE_H
#define LA_CPU_BACKWARD_TILE_H

#include "cpu/isa.h"
#include "cpu/tile_gemm.h"
#include "cpu/attention/score_simd.h"
#include "cpu/attention/team_balance.h"

#include "backend/attention_problem.h"
#include "base/parallel.h"

#include <stddef.h>

/* Query and key block sizes. 96 is a multiple of every TG_MR (no row tails)
 * and of TG_NR vectors on every ISA (no column tails), and one thread's
 * working set at D = 128 (K^T, V^T, K, dK, dV panels and two 96 x 96 score
 * tiles, about 310 KB) fits a 512 KB L2. Measured on the 2-core AMD EPYC dev
 * machine (L = 4096, D = 128, 2 threads): 96 x 96 ran 125-137 GFLOP/s against
 * 115-126 for 64 x 64, 94-121 for 128 x 128 and 106-136 for 48 x 48 (noisy,
 * shared machine). */
#define BQ 96
#define BK 96

/* Query rows handled per pass over the key blocks. It bounds the scratch
 * that grows with L: each thread's dQ partial is at most G x QUERY_CHUNK x Dp
 * floats (1.5 MB per query head at D = 128) whatever the sequence length;
 * longer sequences carry dK, dV in f32 accumulators between chunks and pack
 * each key block once per chunk, which costs little next to the products. */
#define QUERY_CHUNK (32 * BQ)
/* Rows (all heads of a group) up to which a thread may take a whole group
 * in one chunk: its panels and dQ partial, 12 MB per thread at D = 128. */
#define BWD_WHOLE_MAX_ROWS 8192

/* Micro-kernel shapes (tile_gemm.h): S and dP (n = 96 keys) in 8 x 3 tiles
 * on AVX-512, dV and dK (A = P^T, dS^T with unit row stride, n = Dp) in
 * 12 x 2; dQ (A = dS rows BK apart) keeps 8 x 2, whose eight row strides
 * fit the index registers. */
#if defined(LA_ISA_AVX512)
#define SD_MR 8
#define SD_NR 3
#define KV_MR 12
#define KV_NR 2
#else
#define SD_MR TG_MR
#define SD_NR TG_NR
#define KV_MR TG_MR
#define KV_NR TG_NR
#endif

#define FLOATS_PER_LINE (64 / (int64_t)sizeof(float))

/* Floats of one [G*qc][Dp] panel and of one [G*qc] row vector, each rounded
 * to whole 64-byte lines. False on overflow. */
static bool panel_sizes(int64_t G, int64_t qc, int64_t Dp, size_t *panel, size_t *rows) {
    size_t n;
    if (!la_mul_size((size_t)G, (size_t)qc, &n) || !la_mul_size(n, (size_t)Dp, panel)) return false;
    *panel = (size_t)tg_round_up((int64_t)*panel, FLOATS_PER_LINE);
    *rows = (size_t)tg_round_up((int64_t)n, FLOATS_PER_LINE);
    return true;
}

/* Clamp a key offset relative to a block into int32 range for masks. */
static inline int32_t rel_key(int64_t j, int64_t j0) {
    int64_t r = j - j0;
    return r < -1 ? -1 : r > BK + 1 ? BK + 1 : (int32_t)r;
}

/* ---- per-group state ---- */

typedef struct group group;
typedef struct scratch scratch;

/* Runs every query tile of the chunk in hand that meets keys [j0, j0 + nk)
 * (at most BK): the dense kernel walks all of them, the sparse one those
 * whose query block lists the keys' block. */
typedef void (*bwd_tiles_fn)(const group *g, scratch *w, float *dk, float *dv, int64_t j0, int64_t nk);

struct group {
    const la_attn_backward_problem *bp;
    const la_attn_problem *p;
    bwd_tiles_fn tiles;
    const void *arg;       /* the driver's: the sparse kernel's block list */
    int64_t kunit;         /* keys per work unit: BK dense, the index's block size sparse */
    int64_t b;             /* sequence */
    int64_t bt;            /* batch index into the tensors: b dense, 0 varlen */
    int64_t hk, G, lq, lk, q0, k0, D, Dp;
    int64_t c0, cn;        /* the query chunk in hand: rows [c0, c0 + cn) of the sequence */
    float *q, *dout;       /* packed [G * cn][Dp]; written while packing, then read-only */
    float *lse, *delta;    /* [G * cn] */
    float *dk_acc, *dv_acc; /* [lk][Dp] f32 dK, dV carried across chunks, or NULL for one chunk */
};

struct scratch {
    float *dq;      /* [G * qc][Dp]: this thread's dQ partial for the query chunk */
    float *kt, *vt; /* [D][BK]: K^T and V^T of the key block */
    float *kp;      /* [BK][Dp]: K of the key block */
    float *dk, *dv; /* [BK][Dp]: accumulators when the group is one chunk */
    float *s, *dp;  /* [BQ][BK]: S then P; dP then dS */
};

/* Row of the packed panels (and of a dQ partial) for query row i of head gi. */
static inline int64_t panel_row(const group *g, int64_t gi, int64_t i) { return gi * g->cn + i - g->c0; }

/* Turn the S and dP tiles of query rows [i0, i0+nq) (head gi of the group)
 * against keys [j0, j0+nk) into P (in s) and dS * d(score)/d(q.k) (in dp). */
static void scores_to_grads(const group *g, scratch *w, int64_t gi, int64_t i0, int64_t nq, int64_t j0, int64_t nkp,
                            bool masked) {
    const la_score_rule *rule = &g->p->rule;
    const bool softmax = rule->score == LA_SCORE_SOFTMAX;
    const float slope = la_rule_slope(rule, g->hk * g->G + gi);
    const bool transform = rule_transforms(rule, slope);
    const vi iota = vi_iota();
    for (int64_t r = 0; r < nq; r++) {
        int64_t i = i0 + r;
        float *srow = w->s + r * BK, *dprow = w->dp + r * BK;
        const vf lse = vf_set1(g->lse[panel_row(g, gi, i)]), delta = vf_set1(g->delta[panel_row(g, gi, i)]);
        int64_t lo = 0, hi = g->lk;
        if (masked) la_rule_key_range(rule, i, g->lq, g->lk, &lo, &hi);
        const vi lo_r = (vi){0} + rel_key(lo, j0), hi_r = (vi){0} + rel_key(hi, j0),
                 sink_r = (vi){0} + rel_key(la_rule_sinks(rule, g->lk), j0);
        /* distance to the diagonal as a float: exact below 2^24 keys */
        const float diag_minus_j0 = (float)(i + g->lk - g->lq - j0);
        for (int64_t c = 0; c < nkp; c += LA_VL) {
            vf s = vf_load(srow + c) * rule->scale, dsdx = vf_set1(rule->scale);
            if (transform) {
                vf dist = vf_set1(diag_minus_j0) - __builtin_convertvector(iota + (int32_t)c, vf), dcap;
                s = rule_score_vec(rule, s, slope, dist, &dcap);
                dsdx *= dcap;
            }
            vi vis = masked ? rule_visible_vec(iota + (int32_t)c, lo_r, hi_r, sink_r) : (vi){0} - 1;
            vf pv = softmax ? attn_exp(s - lse) : rule_sigmoid_vec(rule, s, vis);
            vf ds = rule_dscore_vec(rule, pv, vf_load(dprow + c), delta) * dsdx;
            if (masked) {
                pv = (vf)((vi)pv & vis);
                ds = (vf)((vi)ds & vis);
            }
            vf_store(srow + c, pv);
            vf_store(dprow + c, ds);
        }
    }
}

#if defined(LA_ISA_AVX512)
/* The S, dP and dQ products' micro-kernel on AVX-512: tg_micro_tile's loop
 * with k unrolled by two, called with the strides fixed at BK as constants,
 * and one software prefetch per two steps (pf, then pf + pf_step, ...). A
 * thread walks the query tiles of the chunk in panel order, so the next
 * tile's q, dout and dQ rows are the rows after the current ones: S and dP
 * prefetch the next q and dout rows and dQ the next dQ rows, spread over
 * their tiles. Without it every tile fetched its rows from L3 (a chunk's q
 * and dout, 3 MB per head at D = 128, are read once per key block and do
 * not stay in the L2), in short strided runs the hardware prefetcher does
 * not follow. */
static inline __attribute__((always_inline)) void bt_tile(const int mr, const int nr, const bool add,
                                                         const bool prefetch, int64_t kc,
                                                         const float *a, const int64_t a_rs, const int64_t a_ks,
                                                         const float *b, const int64_t ldb, float *c,
                                                         const int64_t ldc, const float *pf, int64_t pf_step) {
    vf acc[TG_MR_MAX][TG_NR_MAX];
#pragma GCC unroll 12
    for (int i = 0; i < mr; i++)
#pragma GCC unroll 4
        for (int j = 0; j < nr; j++) acc[i][j] = add ? vf_load(c + i * ldc + j * LA_VL) : vf_set1(0);
#define BT_STEP(kk)                                                                                     \
    do {                                                                                                \
        vf bv[TG_NR_MAX];                                                                               \
        _Pragma("GCC unroll 4") for (int j = 0; j < nr; j++) bv[j] = vf_load(b + (kk) * ldb + j * LA_VL); \
        _Pragma("GCC unroll 12") for (int i = 0; i < mr; i++) {                                        \
            const vf av = vf_set1(a[(kk) * a_ks + i * a_rs]);                                           \
            _Pragma("GCC unroll 4") for (int j = 0; j < nr; j++) acc[i][j] = vf_fma(av, bv[j], acc[i][j]); \
        }                                                                                               \
    } while (0)
    int64_t k = 0;
    for (; k + 2 <= kc; k += 2, pf += pf_step) {
        if (prefetch) __builtin_prefetch(pf);
        BT_STEP(k);
        BT_STEP(k + 1);
    }
    if (k < kc) BT_STEP(k);
#undef BT_STEP
#pragma GCC unroll 12
    for (int i = 0; i < mr; i++)
#pragma GCC unroll 4
        for (int j = 0; j < nr; j++) vf_store(c + i * ldc + j * LA_VL, acc[i][j]);
}

typedef void (*bt_tile_fn)(int64_t kc, const float *a, int64_t a_rs, const float *b, int64_t ldb, float *c,
                           int64_t ldc, const float *pf, int64_t pf_step);
/* S, dP: A = q or dout rows a_rs apart (a constant for the common Dp of 64
 * and 128: a run-time row stride needs a pointer per row, and eight of them
 * were reloaded from the stack every step), B = K^T or V^T and C = S or dP
 * rows BK apart; dQ: A = dS rows BK apart, B = K and C = dQ rows ldb, ldc apart. */
#define BT_TILE_FNS(N)                                                                                    \
    static void bt_sd_##N(int64_t kc, const float *a, int64_t a_rs, const float *b, int64_t ldb, float *c,  \
                          int64_t ldc, const float *pf, int64_t pf_step) {                                  \
        (void)ldb, (void)ldc;                                                                             \
        bt_tile(SD_MR, N, false, true, kc, a, a_rs, 1, b, BK, c, BK, pf, pf_step);                        \
    }                                                                                                     \
    static void bt_sd64_##N(int64_t kc, const float *a, int64_t a_rs, const float *b, int64_t ldb, float *c, \
                            int64_t ldc, const float *pf, int64_t pf_step) {                                \
        (void)a_rs, (void)ldb, (void)ldc;                                                                 \
        bt_tile(SD_MR, N, false, true, kc, a, 64, 1, b, BK, c, BK, pf, pf_step);                          \
    }                                                                                                     \
    static void bt_sd128_##N(int64_t kc, const float *a, int64_t a_rs, const float *b, int64_t ldb, float *c, \
                             int64_t ldc, const float *pf, int64_t pf_step) {                               \
        (void)a_rs, (void)ldb, (void)ldc;                                                                 \
        bt_tile(SD_MR, N, false, true, kc, a, 128, 1, b, BK, c, BK, pf, pf_step);                         \
    }                                                                                                     \
    static void bt_dq_##N(int64_t kc, const float *a, int64_t a_rs, const float *b, int64_t ldb, float *c,  \
                          int64_t ldc, const float *pf, int64_t pf_step) {                                  \
        (void)a_rs;                                                                                       \
        bt_tile(SD_MR, N, true, true, kc, a, BK, 1, b, ldb, c, ldc, pf, pf_step);                               \
    }
BT_TILE_FNS(1) BT_TILE_FNS(2) BT_TILE_FNS(3)
#undef BT_TILE_FNS
/* dV, dK: A = P^T or dS^T (rows adjacent, steps BK apart), B = dout or q
 * and C = dV or dK rows ldb, ldc apart; KV_MR rows. */
#define BT_KV_FN(N)                                                                                      \
    static void bt_kv_##N(int64_t kc, const float *a, int64_t a_rs, const float *b, int64_t ldb, float *c,  \
                          int64_t ldc, const float *pf, int64_t pf_step) {                                  \
        (void)a_rs;                                                                                       \
        bt_tile(KV_MR, N, true, false, kc, a, 1, BK, b, ldb, c, ldc, pf, pf_step);                               \
    }
BT_KV_FN(1) BT_KV_FN(2)
#undef BT_KV_FN

/* C[m x n] (+)= A B in tiles of SD_MR rows x up to SD_NR vectors, prefetching
 * pf[0, pf_n) spread over the tiles. Rows past the last whole tile go
 * through tg_gemm. */
static void bt_gemm(const bt_tile_fn *fns, int mr, int nrmax, bool add, int64_t m, int64_t n, int64_t kc,
                    const float *a, int64_t a_rs, int64_t a_ks, const float *b, int64_t ldb, float *c, int64_t ldc,
                    const float *pf, int64_t pf_n) {
    const int64_t m8 = m / mr * mr, panels = (n / LA_VL + nrmax - 1) / nrmax, steps = kc / 2;
    const int64_t calls = m8 / mr * panels;
    /* floats between prefetches: the region over every step of every tile */
    const int64_t pf_step = calls && steps ? (pf_n + calls * steps - 1) / (calls * steps) : 0;
    for (int64_t j0 = 0; j0 < n; j0 += nrmax * LA_VL) {
        const int64_t nr = (n - j0) / LA_VL < nrmax ? (n - j0) / LA_VL : nrmax;
        for (int64_t i0 = 0; i0 < m8; i0 += mr, pf += steps * pf_step)
            fns[nr - 1](kc, a + i0 * a_rs, a_rs, b + j0, ldb, c + i0 * ldc + j0, ldc, pf, pf_step);
    }
    if (m8 < m) tg_gemm(m - m8, n, kc, a + m8 * a_rs, a_rs, a_ks, b, ldb, c + m8 * ldc, ldc, add);
}
#endif

/* All five products for one (query block, key block) tile. */
static void tile(const group *g, scratch *w, float *dk, float *dv, int64_t gi, int64_t i0, int64_t nq, int64_t j0,
                 int64_t nk, bool masked) {
    const int64_t D = g->D, Dp = g->Dp, nkp = tg_round_up(nk, LA_VL);
    const int64_t row = panel_row(g, gi, i0);
    const float *q = g->q + row * Dp, *dout = g->dout + row * Dp;
#if defined(LA_ISA_AVX512)
    static const bt_tile_fn sd_any[SD_NR] = {bt_sd_1, bt_sd_2, bt_sd_3}, sd64[SD_NR] = {bt_sd64_1, bt_sd64_2, bt_sd64_3},
                            sd128[SD_NR] = {bt_sd128_1, bt_sd128_2, bt_sd128_3},
                            dq[SD_NR] = {bt_dq_1, bt_dq_2, bt_dq_3};
    const bt_tile_fn *sd = Dp == 128 ? sd128 : Dp == 64 ? sd64 : sd_any;
    const int64_t next = nq * Dp, ahead = BQ * Dp; /* the next tile's rows */
    static const bt_tile_fn kv[KV_NR] = {bt_kv_1, bt_kv_2};
    bt_gemm(sd, SD_MR, SD_NR, false, nq, nkp, D, q, Dp, 1, w->kt, BK, w->s, BK, q + next, ahead);  /* S = Q K^T */
    bt_gemm(sd, SD_MR, SD_NR, false, nq, nkp, D, dout, Dp, 1, w->vt, BK, w->dp, BK, dout + next, ahead); /* dP */
#else
    tg_gemm_shape(SD_MR, SD_NR, nq, nkp, D, q, Dp, 1, w->kt, BK, w->s, BK, false);     /* S  = Q K^T  */
    tg_gemm_shape(SD_MR, SD_NR, nq, nkp, D, dout, Dp, 1, w->vt, BK, w->dp, BK, false); /* dP = dO V^T */
#endif
    scores_to_grads(g, w, gi, i0, nq, j0, nkp, masked);
#if defined(LA_ISA_AVX512)
    bt_gemm(kv, KV_MR, KV_NR, true, nk, Dp, nq, w->s, 1, BK, dout, Dp, dv, Dp, NULL, 0);  /* dV += P^T dO */
    bt_gemm(kv, KV_MR, KV_NR, true, nk, Dp, nq, w->dp, 1, BK, q, Dp, dk, Dp, NULL, 0);    /* dK += dS^T Q */
    bt_gemm(dq, SD_MR, SD_NR, true, nq, Dp, nk, w->dp, BK, 1, w->kp, Dp, w->dq + row * Dp, Dp,
            w->dq + row * Dp + next, ahead); /* dQ += dS K */
#else
    tg_gemm_shape(KV_MR, KV_NR, nk, Dp, nq, w->s, 1, BK, dout, Dp, dv, Dp, true);      /* dV += P^T dO */
    tg_gemm_shape(KV_MR, KV_NR, nk, Dp, nq, w->dp, 1, BK, q, Dp, dk, Dp, true);        /* dK += dS^T Q */
    tg_gemm(nq, Dp, nk, w->dp, BK, 1, w->kp, Dp, w->dq + row * Dp, Dp, true); /* dQ += dS K */
#endif
}

/* dK and dV of the group's keys [j0, j0 + nk) (nk <= BK) against the query
 * chunk: pack K, K^T and V^T (as f32, zero padded to a whole vector of
 * keys), run the driver's query tiles, and store dK, dV after the last
 * chunk. */
static void key_piece(const group *g, scratch *w, int64_t j0, int64_t nk) {
    const la_attn_backward_problem *bp = g->bp;
    const la_attn_problem *p = g->p;
    const int64_t D = g->D, Dp = g->Dp;
    const int64_t nkp = tg_round_up(nk, LA_VL);
    float row[LA_MAX_HEAD_DIM];
    for (int64_t r = 0; r < nkp; r++) {
        if (r < nk) {
            tg_load_row(w->kp + r * Dp, la_attn_at(&p->k, g->bt, g->k0 + j0 + r, g->hk), p->k.dtype, D, Dp);
            tg_load_row(row, la_attn_at(&p->v, g->bt, g->k0 + j0 + r, g->hk), p->v.dtype, D, D);
        } else {
            memset(w->kp + r * Dp, 0, (size_t)Dp * sizeof(float));
            memset(row, 0, (size_t)D * sizeof(float));
        }
        for (int64_t d = 0; d < D; d++) {
            w->kt[d * BK + r] = w->kp[r * Dp + d];
            w->vt[d * BK + r] = row[d];
        }
    }
    float *dk = g->dk_acc ? g->dk_acc + j0 * Dp : w->dk, *dv = g->dv_acc ? g->dv_acc + j0 * Dp : w->dv;
    if (g->c0 == 0) {
        memset(dk, 0, (size_t)(nk * Dp) * sizeof(float));
        memset(dv, 0, (size_t)(nk * Dp) * sizeof(float));
    }
    g->tiles(g, w, dk, dv, j0, nk);
    if (g->c0 + g->cn < g->lq) return;
    for (int64_t r = 0; r < nk; r++) {
        tg_store_row(la_attn_at(&bp->dk, g->bt, g->k0 + j0 + r, g->hk), bp->dk.dtype, dk + r * Dp, D);
        tg_store_row(la_attn_at(&bp->dv, g->bt, g->k0 + j0 + r, g->hk), bp->dv.dtype, dv + r * Dp, D);
    }
}

/* Work unit u: keys [u * kunit, (u + 1) * kunit), in pieces of at most BK. */
static void key_unit(const group *g, scratch *w, int64_t u) {
    const int64_t end = (u + 1) * g->kunit < g->lk ? (u + 1) * g->kunit : g->lk;
    for (int64_t j0 = u * g->kunit; j0 < end; j0 += BK) key_piece(g, w, j0, end - j0 < BK ? end - j0 : BK);
}

/* Rows [i0, i1) of head gi against keys [j0, j0 + nk), in tiles of at most
 * BQ rows the score rule classifies: skipped when hidden, masked
 * element-wise when partly visible. */
static void query_rows(const group *g, scratch *w, float *dk, float *dv, int64_t gi, int64_t i0, int64_t i1,
                       int64_t j0, int64_t nk) {
    for (; i0 < i1; i0 += BQ) {
        int64_t nq = i1 - i0 < BQ ? i1 - i0 : BQ;
        la_block_vis vis = la_rule_block(&g->p->rule, i0, i0 + nq, j0, j0 + nk, g->lq, g->lk);
        if (vis != LA_BLOCK_NONE) tile(g, w, dk, dv, gi, i0, nq, j0, nk, vis == LA_BLOCK_SOME);
    }
}

/* Pack q and dout of query row i of head gi, its delta and lse. */
static void pack_query_row(const group *g, int64_t gi, int64_t i) {
    const la_attn_problem *p = g->p;
    const la_attn_backward_problem *bp = g->bp;
    const la_attn_forward_problem *fwd = &bp->fwd;
    const int64_t D = g->D, Dp = g->Dp, h = g->hk * g->G + gi, t = g->q0 + i, row = panel_row(g, gi, i);
    float *dout = g->dout + row * Dp, o[LA_MAX_HEAD_DIM];
    tg_load_row(g->q + row * Dp, la_attn_at(&p->q, g->bt, t, h), p->q.dtype, D, Dp);
    tg_load_row(dout, la_attn_at(&bp->dout, g->bt, t, h), bp->dout.dtype, D, Dp);
    if (p->rule.score == LA_SCORE_SOFTMAX) {
        tg_load_row(o, la_attn_at(&fwd->out, g->bt, t, h), fwd->out.dtype, D, D);
        vf acc = vf_set1(0);
        int64_t d = 0;
        for (; d + LA_VL <= D; d += LA_VL) acc = vf_fma(vf_load(o + d), vf_load(dout + d), acc);
        float sum = vf_reduce_add(acc);
        for (; d < D; d++) sum += o[d] * dout[d];
        g->delta[row] = sum;
        g->lse[row] = *(const float *)la_attn_at(&fwd->lse, g->bt, t, h);
    } else { /* sigmoid uses neither */
        g->delta[row] = 0;
        g->lse[row] = 0;
    }
}

/* Sum the threads' dQ partials of row (gi, i) and store it. */
static void reduce_dq_row(const group *g, float *const *partials, int nthreads, int64_t gi, int64_t i) {
    const la_attn_backward_problem *bp = g->bp;
    const int64_t D = g->D, Dp = g->Dp, row = panel_row(g, gi, i);
    float sum[LA_MAX_HEAD_DIM + LA_VL];
    for (int64_t d = 0; d < Dp; d += LA_VL) {
        vf acc = vf_load(partials[0] + row * Dp + d);
        for (int t = 1; t < nthreads; t++) acc += vf_load(partials[t] + row * Dp + d);
        vf_store(sum + d, acc);
    }
    tg_store_row(la_attn_at(&bp->dq, g->bt, g->q0 + i, g->hk * g->G + gi), bp->dq.dtype, sum, D);
}

/* The group (sequence b, K/V head hk) with its panels (of panel_sizes);
 * query chunk unset. */
static group group_of(const la_attn_backward_problem *bp, int64_t b, int64_t hk, float *panels, size_t panel,
                      size_t rows) {
    const la_attn_problem *p = &bp->fwd.a;
    group g = {.bp = bp, .p = p, .b = b, .bt = p->cu_q ? 0 : b, .hk = hk, .G = p->H / p->Hkv, .D = p->D,
               .Dp = tg_round_up(p->D, LA_VL)};
    la_attn_seq(p, b, &g.q0, &g.lq, &g.k0, &g.lk);
    g.q = panels;
    g.dout = g.q + panel;
    g.lse = g.dout + panel;
    g.delta = g.lse + rows;
    return g;
}

/* One group by one thread, in one chunk (whole groups are short): it owns
 * every output row of the group, so its dQ partial is the whole dQ. */
static void group_alone(group *g, scratch *w) {
    g->c0 = 0;
    g->cn = g->lq;
    const int64_t nrows = g->G * g->cn;
    for (int64_t r = 0; r < nrows; r++) pack_query_row(g, r / g->cn, r % g->cn);
    memset(w->dq, 0, (size_t)(nrows * g->Dp) * sizeof(float));
    for (int64_t u = 0; u * g->kunit < g->lk; u++) key_unit(g, w, u);
    for (int64_t r = 0; r < nrows; r++) reduce_dq_row(g, &w->dq, 1, r / g->cn, r % g->cn);
}

/* One group by the whole team (called by every thread of the region), one
 * query chunk of at most qc rows at a time: threads share the packed panels
 * and split the key blocks; dK, dV live in dk_acc, dv_acc between chunks.
 * Runs once even with no queries, so that dK and dV are written (as 0). */
static void group_shared(group *g, scratch *w, float *const *partials, int team, int64_t qc, float *dk_acc,
                         float *dv_acc) {
    const int64_t nkb = (g->lk + g->kunit - 1) / g->kunit;
    g->dk_acc = g->lq > qc ? dk_acc : NULL;
    g->dv_acc = g->lq > qc ? dv_acc : NULL;
    for (g->c0 = 0;; g->c0 += qc) {
        g->cn = g->lq - g->c0 < qc ? g->lq - g->c0 : qc;
        const int64_t nrows = g->G * g->cn;
#pragma omp for schedule(static)
        for (int64_t r = 0; r < nrows; r++) pack_query_row(g, r / g->cn, g->c0 + r % g->cn);
        memset(w->dq, 0, (size_t)(nrows * g->Dp) * sizeof(float));
        /* A thread's dQ partial sums the key units it took, so which thread
         * takes which unit decides dQ's rounding. deterministic asks for
         * bit-identical runs: a fixed round-robin (causal costs fall with
         * the unit, so it stays balanced); else whoever is free first. */
        if (g->bp->deterministic) {
#pragma omp for schedule(static, 1)
            for (int64_t u = 0; u < nkb; u++) key_unit(g, w, u);
        } else {
#pragma omp for schedule(dynamic, 1)
            for (int64_t u = 0; u < nkb; u++) key_unit(g, w, u);
        }
#pragma omp for schedule(static)
        for (int64_t r = 0; r < nrows; r++) reduce_dq_row(g, partials, team, r / g->cn, g->c0 + r % g->cn);
        if (g->c0 + g->cn >= g->lq) break;
    }
}

typedef struct {
    bool whole_groups, chunked;
    int64_t qc;
    size_t panel, rows, panels, acc, per_thread, shared, bytes; /* floats, bytes last */
} layout;

/* The workspace layout for key units of kunit keys. */
static la_status plan(const la_attn_problem *p, int64_t kunit, layout *L) {
    const int nthreads = p->threads > 0 ? p->threads : 1;
    const int64_t G = p->H / p->Hkv, D = p->D, Dp = tg_round_up(D, LA_VL);
    const int64_t ngroups = p->num_seqs * p->Hkv, nkb = (p->Lk + kunit - 1) / kunit;
    /* Long sequences split each group's key blocks over the team; many short
     * groups (few key blocks each, e.g. L = 256 has 3) go whole to threads,
     * which also saves the three barriers per group and chunk. Whichever
     * keeps more threads busy, sharing on a tie because it needs less
     * scratch. A whole group is one query chunk of all its rows: up to
     * QUERY_CHUNK rows per head, or BWD_WHOLE_MAX_ROWS rows of all its heads
     * (L = 4096, H = Hkv = 8, 2 threads: four groups each, where sharing
     * waited at 6 barriers per group, two chunks of 3072 and 1024 rows). */
    const bool whole_groups = (p->Lq <= QUERY_CHUNK || G * p->Lq <= BWD_WHOLE_MAX_ROWS) &&
                              la_team_balance(ngroups, nthreads) > la_team_balance(nkb, nthreads);
    const int64_t qc = whole_groups || p->Lq < QUERY_CHUNK ? p->Lq : QUERY_CHUNK; /* rows of a chunk, at most */
    const bool chunked = p->Lq > qc;

    /* Workspace in floats, every piece rounded to 64 bytes. Panels: q, dout
     * [G*qc][Dp], lse and delta [G*qc]; shared by the team, or one set per
     * thread for whole groups. Shared when chunked: dK, dV accumulators
     * [Lk][Dp]. Per thread: dQ partial [G*qc][Dp], K^T, V^T [D][BK], K, dK,
     * dV [BK][Dp], S, dP [BQ][BK]. */
    size_t panel, rows, panels, acc = 0, per_thread, shared, total, bytes;
    const size_t limit = SIZE_MAX / 16; /* pieces below this add up without overflow */
    if (!panel_sizes(G, qc, Dp, &panel, &rows) || (chunked && !la_mul_size((size_t)p->Lk, (size_t)Dp, &acc)) ||
        panel > limit || acc > limit)
        return la_fail(LA_ERR_OVERFLOW, "backward workspace size overflows");
    acc = (size_t)tg_round_up((int64_t)acc, FLOATS_PER_LINE);
    panels = 2 * panel + 2 * rows;
    per_thread = panel + 2 * (size_t)(D * BK) + 3 * (size_t)(BK * Dp) + 2 * (size_t)(BQ * BK);
    shared = panels + 2 * acc;
    if (whole_groups) per_thread += panels, shared = 0;
    if (!la_mul_size(per_thread, (size_t)nthreads, &total) || (total += shared) < shared ||
        !la_mul_size(total, sizeof(float), &bytes))
        return la_fail(LA_ERR_OVERFLOW, "backward workspace size overflows");
    *L = (layout){.whole_groups = whole_groups, .chunked = chunked, .qc = qc, .panel = panel, .rows = rows,
                  .panels = panels, .acc = acc, .per_thread = per_thread, .shared = shared, .bytes = bytes};
    return LA_OK;
}

/* The whole backward with key units of kunit keys and the driver's query
 * tiles (arg is theirs). */
static la_status backward_run(const la_attn_backward_problem *bp, void *mem, int64_t kunit, bwd_tiles_fn tiles,
                              const void *arg) {
    const la_attn_problem *p = &bp->fwd.a;
    const int nthreads = p->threads > 0 ? p->threads : 1;
    const int64_t D = p->D, Dp = tg_round_up(D, LA_VL), ngroups = p->num_seqs * p->Hkv;
    layout L = {0};
    la_status st = plan(p, kunit, &L);
    if (st) return st;
    const bool whole_groups = L.whole_groups;
    const int64_t qc = L.qc;
    const size_t panel = L.panel, rows = L.rows, panels = L.panels, acc = L.acc, per_thread = L.per_thread,
                 shared = L.shared;
    float *const shared_panels = mem, *const dk_acc = shared_panels + panels, *const dv_acc = dk_acc + acc;
    float *partials[nthreads];
    for (int t = 0; t < nthreads; t++) partials[t] = (float *)mem + shared + (size_t)t * per_thread;

#pragma omp parallel num_threads(nthreads)
    {
        /* The team may be smaller than asked for (a call from inside the
         * caller's own parallel region gets one thread): reduce over the
         * partials of the threads that exist. */
        const int tid = la_thread_id(), team = la_team_size();
        scratch w;
        w.dq = partials[tid];
        w.kt = w.dq + panel;
        w.vt = w.kt + D * BK;
        w.kp = w.vt + D * BK;
        w.dk = w.kp + BK * Dp;
        w.dv = w.dk + BK * Dp;
        w.s = w.dv + BK * Dp;
        w.dp = w.s + BQ * BK;
        if (whole_groups) {
#pragma omp for schedule(dynamic, 1)
            for (int64_t gid = 0; gid < ngroups; gid++) {
                group g = group_of(bp, gid / p->Hkv, gid % p->Hkv, w.dp + BQ * BK, panel, rows);
                g.tiles = tiles, g.arg = arg, g.kunit = kunit;
                group_alone(&g, &w);
            }
        } else {
            for (int64_t gid = 0; gid < ngroups; gid++) {
                group g = group_of(bp, gid / p->Hkv, gid % p->Hkv, shared_panels, panel, rows);
                g.tiles = tiles, g.arg = arg, g.kunit = kunit;
                if (g.lq > 0 || g.lk > 0) group_shared(&g, &w, partials, team, qc, dk_acc, dv_acc);
            }
        }
    }
    return LA_OK;
}

#endif
