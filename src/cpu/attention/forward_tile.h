/* The exact forward's machinery, shared by the dense kernel
 * (forward_isa.c) and the block-sparse one (cpu/sparse/): the item of up to
 * BQ query rows of one head with its online-softmax state, one key block
 * against it (S^T = K Q^T, the score rule, softmax or sigmoid, O += P V),
 * the scratch layout and the team's walk over (sequence, K/V head) groups
 * with their packed K and V panels. A driver says which query units exist
 * and which key blocks each one visits. Include only from per-ISA kernel
 * files: everything here is static and follows the ISA being compiled. */
#ifndef LA_CPU_FORWARD_TILE_H
#define LA_CPU_FORWARD_TILE_H

#include "cpu/isa.h"
#include "cpu/tile_gemm.h"
#include "cpu/attention/score_simd.h"
#include "cpu/attention/team_balance.h"

#include "backend/attention_problem.h"
#include "base/parallel.h"

#include <stddef.h>

/* Query rows per item and keys per block. BQ is the vector dimension of S^T
 * and must be a multiple of TG_NR * LA_VL on every ISA (32 on AVX-512); both
 * are multiples of every TG_MR (4, 6, 8) so neither product has row tails.
 * One thread's working set at D = 128 (Q^T 48 KB, S^T 36 KB, O 48 KB, and
 * the 48 KB K and V blocks it streams) stays well inside a 1 MB L2.
 * Measured on the 2-core AMD EPYC dev machine, 1 thread, L = 2048, D = 128,
 * f32: 96 x 96 gave ~10% more than 64 x 96 (fewer O += P V row tails and
 * per-block overheads spread over more rows). */
#define BQ 96
#define BK 96

/* Micro-kernel shape of both products (rows x vectors, tile_gemm.h): S^T =
 * K Q^T reads K packed in tiles of S_MR keys (kpack) and Q^T as BQ columns;
 * O^T += V^T P^T reads V^T packed in tiles of S_MR dimensions (vpack) and
 * P^T as BQ columns: the same product twice, A contiguous and B the rows
 * the softmax just wrote. On AVX-512, 8 x 3 covers the 96 columns in two
 * panels. Measured on a 2-core Xeon (AVX-512, 1 thread, L = 4096, D = 128,
 * CPU time against a 12-chain FMA loop), the forward went from 0.54-0.58 to
 * 0.60-0.62 of the peak with packing, 12 x 2 for O += P V and 8 x 3 for
 * S^T, then to about 0.65 with O kept transposed (O += P V read P^T with a
 * new cache line per key and ran 0.7 where S^T ran 0.8+). BQ = 192 or
 * BK = 192 were slower there (0.56-0.62). */
#if defined(LA_ISA_AVX512)
#define S_MR 8
#define S_NR 3
#else
#define S_MR TG_MR
#define S_NR TG_NR
#endif

typedef struct {
    float *qt;             /* [D][BQ]: scaled Q^T of the item */
    float *st;             /* [BK][BQ]: S^T, then P^T */
    float *ot;             /* [D][BQ]: accumulator O^T of the key blocks */
    float *o;              /* [BQ][Dp]: accumulator of a driver's own keys (sparse columns), if o_used */
    bool o_used;
    const float *kpanel;   /* [lk][Dp]: the group's K as f32, shared by the team */
    const float *vpanel;   /* [lk][Dp]: its V */
    const float *kpack;    /* K packed for S^T: tiles of S_MR keys (tg_pack_a_row, ldp Dp) */
    const float *vpack;    /* V^T packed for O^T: tiles of S_MR dimensions over keys (ldp vld) */
    int64_t vld;           /* keys per V^T tile row: the group's keys rounded up to S_MR */
    float *m, *l, *alpha;  /* [BQ] */
    int32_t *lo, *hi;      /* [BQ]: visible key range of each row, relative to the sequence */
} scratch;

typedef struct {
    const la_attn_forward_problem *fp;
    const la_attn_problem *p;
    int64_t bt, h, hk, q0, lq, k0, lk, i0, nq, nqp, D, Dp;
    int64_t all_lo, all_hi; /* keys [all_lo, all_hi) are visible to every row (empty when all_lo >= all_hi) */
    float slope;
} item;

/* The item's rows against keys [j0, j1), from their cached key ranges. */
static la_block_vis classify(const item *it, const scratch *w, int64_t j0, int64_t j1) {
    /* inside every row's range: all visible (la_rule_row_block says ALL for
     * lo <= j0 < j1 <= hi), without asking each row */
    if (j0 >= it->all_lo && j1 <= it->all_hi && j0 < j1) return LA_BLOCK_ALL;
    bool any = false, all = true;
    for (int64_t r = 0; r < it->nq; r++) {
        la_block_vis v = la_rule_row_block(&it->p->rule, w->lo[r], w->hi[r], j0, j1);
        any |= v != LA_BLOCK_NONE;
        all &= v == LA_BLOCK_ALL;
    }
    return !any ? LA_BLOCK_NONE : all ? LA_BLOCK_ALL : LA_BLOCK_SOME;
}

/* S^T[0..nk) of keys [j0, j0+nk): scores with softcap and ALiBi applied and
 * invisible entries set to -inf (masked) in place. */
static void transform_scores(const item *it, scratch *w, int64_t j0, int64_t nk, bool masked) {
    const la_score_rule *rule = &it->p->rule;
    const bool transform = rule_transforms(rule, it->slope);
    const vf neg_inf = vf_set1(-INFINITY);
    const vi iota = vi_iota(), sinks = (vi){0} + (int32_t)la_rule_sinks(rule, it->lk);
    const int64_t diag0 = it->i0 + it->lk - it->lq; /* diagonal key of row 0 */
    for (int64_t c = 0; c < it->nqp; c += LA_VL) {
        vi lo = {0}, hi = {0};
        if (masked)
            for (int e = 0; e < LA_VL; e++) lo[e] = w->lo[c + e], hi[e] = w->hi[c + e];
        /* distance to the diagonal as a float: exact below 2^24 keys */
        vf dist0 = __builtin_convertvector(iota + (int32_t)c, vf) + (float)(diag0 - j0);
        for (int64_t j = 0; j < nk; j++) {
            float *row = w->st + j * BQ + c;
            vf s = vf_load(row);
            if (transform) s = rule_score_vec(rule, s, it->slope, dist0 - (float)j, NULL);
            if (masked) s = vf_select(rule_visible_vec((vi){0} + (int32_t)(j0 + j), lo, hi, sinks), s, neg_inf);
            vf_store(row, s);
        }
    }
}

/* max(a, b) as a > b ? a : b, in one instruction where the ISA has it
 * (vf_max's compare and select made the block max a chain of three
 * dependent operations per key). */
static inline vf fwd_max(vf a, vf b) {
#if defined(LA_ISA_AVX512)
    return (vf)_mm512_max_ps((__m512)a, (__m512)b);
#elif defined(LA_ISA_AVX2)
    return (vf)_mm256_max_ps((__m256)a, (__m256)b);
#else
    return vf_max(a, b);
#endif
}

/* Online softmax over one key block: P^T = exp(S^T - m_new) in place,
 * l = l * alpha + rowsum(P), alpha = exp(m_old - m_new) for rescaling O.
 * Four running maxima and two sums keep the loops off one dependency chain. */
static void softmax_block(const item *it, scratch *w, int64_t nk) {
    for (int64_t c = 0; c < it->nqp; c += LA_VL) {
        const float *col = w->st + c, *end = col + nk * BQ;
        vf b0 = vf_set1(-INFINITY), b1 = b0, b2 = b0, b3 = b0;
        for (; col + 4 * BQ <= end; col += 4 * BQ) {
            b0 = fwd_max(vf_load(col), b0);
            b1 = fwd_max(vf_load(col + BQ), b1);
            b2 = fwd_max(vf_load(col + 2 * BQ), b2);
            b3 = fwd_max(vf_load(col + 3 * BQ), b3);
        }
        for (; col < end; col += BQ) b0 = fwd_max(vf_load(col), b0);
        int64_t j;
        vf bm = fwd_max(fwd_max(b0, b1), fwd_max(b2, b3));
        vf m_old = vf_load(w->m + c), m_new = vf_max(m_old, bm);
        /* rows that have seen no key yet keep m = -inf; subtract 0 instead so
         * exp(-inf - -inf) never makes a NaN: their P and alpha are 0 */
        vf m_safe = vf_select(m_new == vf_set1(-INFINITY), vf_set1(0), m_new);
        vf alpha = vf_exp(m_old - m_safe), s0 = vf_set1(0), s1 = s0;
        for (j = 0; j + 2 <= nk; j += 2) {
            float *r0 = w->st + j * BQ + c, *r1 = r0 + BQ;
            vf p0 = attn_exp(vf_load(r0) - m_safe), p1 = attn_exp(vf_load(r1) - m_safe);
            s0 += p0;
            s1 += p1;
            vf_store(r0, p0);
            vf_store(r1, p1);
        }
        if (j < nk) {
            float *row = w->st + j * BQ + c;
            vf pv = attn_exp(vf_load(row) - m_safe);
            s0 += pv;
            vf_store(row, pv);
        }
        vf_store(w->l + c, vf_load(w->l + c) * alpha + (s0 + s1));
        vf_store(w->m + c, m_new);
        vf_store(w->alpha + c, alpha);
    }
}

/* Sigmoid scores: P^T = sigmoid(S^T + bias); masked entries (-inf) become
 * exactly 0. */
static void sigmoid_block(const item *it, scratch *w, int64_t nk) {
    const vf neg_inf = vf_set1(-INFINITY);
    for (int64_t j = 0; j < nk; j++)
        for (int64_t c = 0; c < it->nqp; c += LA_VL) {
            float *row = w->st + j * BQ + c;
            vf s = vf_load(row);
            vf_store(row, rule_sigmoid_vec(&it->p->rule, s, s != neg_inf));
        }
}

/* The driver's row-major O *= alpha per query row, when it holds anything. */
static void rescale_o(const item *it, scratch *w) {
    if (!w->o_used) return;
    for (int64_t r = 0; r < it->nq; r++) {
        float a = w->alpha[r];
        if (a == 1.0f) continue;
        vf av = vf_set1(a);
        float *o = w->o + r * it->Dp;
        for (int64_t d = 0; d < it->Dp; d += LA_VL) vf_store(o + d, vf_load(o + d) * av);
    }
}

/* O *= alpha per query row after a softmax step: O^T lane-wise, and the
 * driver's row-major O when it holds anything. */
static __attribute__((unused)) void rescale(const item *it, scratch *w) {
    vi any = (vi){0};
    for (int64_t c = 0; c < it->nqp; c += LA_VL) any |= vf_load(w->alpha + c) != vf_set1(1.0f);
    bool scale = false;
    for (int e = 0; e < LA_VL; e++) scale |= any[e] != 0;
    if (!scale) return;
    for (int64_t d = 0; d < it->D; d++) {
        float *row = w->ot + d * BQ;
        for (int64_t c = 0; c < it->nqp; c += LA_VL) vf_store(row + c, vf_load(row + c) * vf_load(w->alpha + c));
    }
    rescale_o(it, w);
}

#if defined(LA_ISA_AVX512)
/* The two products' own micro-kernel on AVX-512 (both are C[m x n] (+)= A B
 * with A packed in tiles of S_MR rows, [kc][S_MR] each, and B and C rows BQ
 * floats apart): tg_micro_tile's loop with the strides known at compile
 * time (no row-pointer setup per tile), k unrolled by two, and the next
 * tile's A prefetched while this one runs, one line per two steps. A and
 * the next tile's A come from the group's K and V^T panels, 4 MB at L =
 * 4096, D = 128 (the L2 holds 2): without the prefetch each new tile waited
 * on L3 (a page-sized tile defeats the hardware prefetcher), which cost
 * 15-20% of the product in isolation. O^T tiles (add) scale their old value
 * by the softmax step's alpha as they load it, which replaces a separate
 * pass over O^T per key block. */
static inline __attribute__((always_inline)) void ft_tile(const int nr, const bool add, int64_t kc, const float *a,
                                                         const float *b, float *c, const float *alpha,
                                                         const float *next_a) {
    vf acc[S_MR][S_NR];
#pragma GCC unroll 4
    for (int j = 0; j < nr; j++) {
        const vf sc = add ? vf_load(alpha + j * LA_VL) : vf_set1(0);
#pragma GCC unroll 8
        for (int i = 0; i < S_MR; i++) acc[i][j] = add ? vf_load(c + i * BQ + j * LA_VL) * sc : vf_set1(0);
    }
    int64_t k = 0;
#define FT_STEP(kk)                                                                                  \
    do {                                                                                             \
        vf bv[S_NR];                                                                                 \
        _Pragma("GCC unroll 4") for (int j = 0; j < nr; j++) bv[j] = vf_load(b + (kk) * BQ + j * LA_VL); \
        _Pragma("GCC unroll 8") for (int i = 0; i < S_MR; i++) {                                     \
            const vf av = vf_set1(a[(kk) * S_MR + i]);                                              \
            _Pragma("GCC unroll 4") for (int j = 0; j < nr; j++) acc[i][j] = vf_fma(av, bv[j], acc[i][j]); \
        }                                                                                            \
    } while (0)
    for (; k + 2 <= kc; k += 2) {
        __builtin_prefetch(next_a + k * S_MR);
        FT_STEP(k);
        FT_STEP(k + 1);
    }
    if (k < kc) FT_STEP(k);
#undef FT_STEP
#pragma GCC unroll 8
    for (int i = 0; i < S_MR; i++)
#pragma GCC unroll 4
        for (int j = 0; j < nr; j++) vf_store(c + i * BQ + j * LA_VL, acc[i][j]);
}

typedef void (*ft_tile_fn)(int64_t, const float *, const float *, float *, const float *, const float *);
#define FT_TILE_FN(N)                                                                                        \
    static void ft_tile_s##N(int64_t kc, const float *a, const float *b, float *c, const float *alpha,      \
                             const float *next_a) {                                                          \
        ft_tile(N, false, kc, a, b, c, alpha, next_a);                                                       \
    }                                                                                                        \
    static void ft_tile_o##N(int64_t kc, const float *a, const float *b, float *c, const float *alpha,      \
                             const float *next_a) {                                                          \
        ft_tile(N, true, kc, a, b, c, alpha, next_a);                                                        \
    }
FT_TILE_FN(1) FT_TILE_FN(2) FT_TILE_FN(3)
#undef FT_TILE_FN

/* C[m' x n] (+)= A B over whole tiles of S_MR rows (m' = m rounded up: the
 * packed panels are zero past their last row, and C has room), n a multiple
 * of LA_VL up to BQ; add: C = alpha * C + A B column-wise. */
static void ft_gemm(bool add, int64_t m, int64_t n, int64_t kc, const float *ap, int64_t ldp, const float *b,
                    float *c, const float *alpha) {
    static const ft_tile_fn fns[2][S_NR] = {{ft_tile_s1, ft_tile_s2, ft_tile_s3}, {ft_tile_o1, ft_tile_o2, ft_tile_o3}};
    for (int64_t j0 = 0; j0 < n; j0 += S_NR * LA_VL) {
        const int64_t nr = (n - j0) / LA_VL < S_NR ? (n - j0) / LA_VL : S_NR;
        const ft_tile_fn fn = fns[add][nr - 1];
        for (int64_t i0 = 0; i0 < m; i0 += S_MR)
            fn(kc, ap + i0 * ldp, b + j0, c + i0 * BQ + j0, alpha + j0, ap + (i0 + S_MR) * ldp);
    }
}
#endif

/* Keys [j0, j1) (at most BK) against the item's rows, from the group's
 * packed f32 K and V panels. */
static void key_block(const item *it, scratch *w, int64_t j0, int64_t j1, bool masked) {
    const la_attn_problem *p = it->p;
    const int64_t nk = j1 - j0, Dp = it->Dp;
#if defined(LA_ISA_AVX512)
    if (j0 % S_MR == 0) /* S^T = K Q^T */
        ft_gemm(false, nk, it->nqp, it->D, w->kpack + j0 * Dp, Dp, w->qt, w->st, NULL);
#else
    if (j0 % S_MR == 0) /* S^T = K Q^T */
        tg_gemm_pack_a(S_MR, S_NR, nk, it->nqp, it->D, w->kpack + j0 * Dp, Dp, w->qt, BQ, w->st, BQ, false);
#endif
    else /* a sparse block starting between tiles */
        tg_gemm(nk, it->nqp, it->D, w->kpanel + j0 * Dp, Dp, 1, w->qt, BQ, w->st, BQ, false);
    if (masked || rule_transforms(&p->rule, it->slope)) transform_scores(it, w, j0, nk, masked);
#if defined(LA_ISA_AVX512)
    /* O^T += V^T P^T, O^T first scaled by alpha inside the product */
    if (p->rule.score == LA_SCORE_SOFTMAX) {
        softmax_block(it, w, nk);
        rescale_o(it, w);
    } else {
        sigmoid_block(it, w, nk);
        for (int64_t c = 0; c < it->nqp; c += LA_VL) vf_store(w->alpha + c, vf_set1(1.0f));
    }
    ft_gemm(true, it->D, it->nqp, nk, w->vpack + j0 * S_MR, w->vld, w->st, w->ot, w->alpha);
#else
    if (p->rule.score == LA_SCORE_SOFTMAX) {
        softmax_block(it, w, nk);
        rescale(it, w);
    } else {
        sigmoid_block(it, w, nk);
    }
    /* O^T += V^T P^T */
    tg_gemm_pack_a(S_MR, S_NR, it->D, it->nqp, nk, w->vpack + j0 * S_MR, w->vld, w->st, BQ, w->ot, BQ, true);
#endif
}

/* Set up the item of query rows [i0, i0 + nq) (nq <= BQ) of head h of
 * sequence b: Q^T, the rows' key ranges and statistics. Returns false when
 * the rows lie past the sequence's end; *kend is the end of the keys any
 * row sees. */
static bool item_begin(const la_attn_forward_problem *fp, scratch *w, int64_t b, int64_t h, int64_t i0, int64_t nq,
                       item *itp, int64_t *kend_out) {
    const la_attn_problem *p = &fp->a;
    item it = {.fp = fp, .p = p, .bt = p->cu_q ? 0 : b, .h = h, .hk = h / (p->H / p->Hkv), .D = p->D,
               .Dp = tg_round_up(p->D, LA_VL)};
    la_attn_seq(p, b, &it.q0, &it.lq, &it.k0, &it.lk);
    it.i0 = i0;
    if (it.i0 >= it.lq) return false;
    it.nq = it.lq - it.i0 < nq ? it.lq - it.i0 : nq;
    it.nqp = tg_round_up(it.nq, LA_VL);
    it.slope = la_rule_slope(&p->rule, h);
    const int64_t D = it.D, Dp = it.Dp;

    /* Q^T, pre-scaled; padding rows are zero and see no key. */
    float row[LA_MAX_HEAD_DIM + 16];
    memset(w->qt, 0, sizeof(float) * (size_t)(D * BQ));
    int64_t kend = 0;
    it.all_lo = 0;
    it.all_hi = INT64_MAX;
    for (int64_t r = 0; r < BQ; r++) {
        int64_t lo = 0, hi = 0;
        if (r < it.nq) {
            tg_load_row(row, la_attn_at(&p->q, it.bt, it.q0 + it.i0 + r, h), p->q.dtype, D, D);
            for (int64_t d = 0; d < D; d++) w->qt[d * BQ + r] = row[d] * p->rule.scale;
            la_rule_key_range(&p->rule, it.i0 + r, it.lq, it.lk, &lo, &hi);
            if (lo > it.all_lo) it.all_lo = lo;
            if (hi < it.all_hi) it.all_hi = hi;
        }
        w->lo[r] = (int32_t)lo;
        w->hi[r] = (int32_t)hi;
        if (hi > kend) kend = hi;
        w->m[r] = -INFINITY;
        w->l[r] = 0;
    }
    memset(w->o, 0, sizeof(float) * (size_t)(BQ * Dp));
    memset(w->ot, 0, sizeof(float) * (size_t)(D * BQ));
    w->o_used = false;
    *itp = it;
    *kend_out = kend;
    return true;
}

/* Normalise the item's accumulator and store its out and lse rows. */
static void item_finish(const item *itp, scratch *w) {
    const item it = *itp;
    const la_attn_forward_problem *fp = it.fp;
    const la_attn_problem *p = it.p;
    const int64_t D = it.D, Dp = it.Dp;
    const bool softmax = p->rule.score == LA_SCORE_SOFTMAX;
    for (int64_t r = 0; r < it.nq; r++) {
        float *o = w->o + r * Dp;
        const float inv = !softmax ? 1.0f : w->l[r] > 0 ? 1.0f / w->l[r] : 0.0f;
        if (w->o_used)
            for (int64_t d = 0; d < D; d++) o[d] = (o[d] + w->ot[d * BQ + r]) * inv;
        else
            for (int64_t d = 0; d < D; d++) o[d] = w->ot[d * BQ + r] * inv;
        int64_t t = it.q0 + it.i0 + r;
        tg_store_row(la_attn_at(&fp->out, it.bt, t, it.h), fp->out.dtype, o, D);
        if (fp->lse.data)
            *(float *)la_attn_at(&fp->lse, it.bt, t, it.h) = w->l[r] > 0 ? w->m[r] + logf(w->l[r]) : -INFINITY;
    }
}

/* Shared: the group's K and V panels [Lk][Dp] (linear in L), and their
 * packed copies (keys rounded up to whole S_MR tiles, and D for V^T); one
 * set for the team, or one per thread when threads take whole groups.
 * Per thread: O^T,
 * Q^T, S^T, O and the row statistics; every piece a multiple of 16 floats
 * (64 bytes). Sizes in floats. */
static bool layout_sets(const la_attn_problem *p, bool whole, size_t *panel, size_t *per_thread, size_t *bytes) {
    const int nthreads = p->threads > 0 ? p->threads : 1;
    const int64_t D = p->D, Dp = tg_round_up(D, LA_VL);
    const size_t sets = whole ? (size_t)nthreads : 1;
    size_t total;
    *per_thread = (size_t)(2 * D * BQ + BK * BQ + BQ * Dp + 5 * BQ);
    const int64_t cols = Dp > tg_round_up(D, S_MR) ? Dp : tg_round_up(D, S_MR); /* V^T: whole tiles of D */
    return la_mul_size((size_t)tg_round_up(p->Lk, S_MR), (size_t)cols, panel) &&
           la_mul_size(*per_thread, (size_t)nthreads, &total) && *panel <= SIZE_MAX / 8 / sets &&
           (total += 4 * sets * *panel) >= 4 * sets * *panel && la_mul_size(total, sizeof(float), bytes);
}

static __attribute__((unused)) bool layout(const la_attn_problem *p, size_t *panel, size_t *per_thread,
                                           size_t *bytes) {
    return layout_sets(p, false, panel, per_thread, bytes);
}

/* Keys up to which a thread may take a whole group with its own packed
 * panels (2 x 4 MB per thread at D = 128). */
#define FWD_WHOLE_MAX_KEYS 8192

/* Whether the dense kernel's threads take whole (sequence, K/V head) groups,
 * each packing its group's K and V itself: no barrier per group, where the
 * team sharing a group waits at the end of each group for its last unit
 * (43 units of 96 rows per head at L = 4096: one thread idles about half a
 * unit of every 21, 2%). Only for equal groups (a dense batch) that split
 * evenly over the threads, more evenly than one group's units do, and
 * short enough for per-thread panels. */
static __attribute__((unused)) bool fwd_whole_groups(const la_attn_problem *p, int64_t units) {
    const int nthreads = p->threads > 0 ? p->threads : 1;
    const int64_t ngroups = p->num_seqs * p->Hkv, G = p->H / p->Hkv;
    return nthreads > 1 && !p->cu_q && p->Lk <= FWD_WHOLE_MAX_KEYS &&
           la_team_balance(ngroups, nthreads) > la_team_balance(G * units, nthreads);
}

/* Runs one query unit (a driver's work item: a block of query rows of head
 * h of sequence b) with the thread's scratch. */
typedef void (*fwd_unit_fn)(const la_attn_forward_problem *fp, const void *arg, scratch *w, int64_t b, int64_t h,
                            int64_t unit);

/* The team's walk: groups (sequence, K/V head) one after another; the team
 * packs the group's K and V once, as f32 rows of Dp floats, then shares the
 * `units` query units of each of its G heads. Packing makes the key rows
 * contiguous (the caller's rows are often 4 KB apart, which thrashes L1
 * sets and the TLB) and converts bf16/f16 once per group rather than once
 * per query block. */
static void forward_run_rows(const la_attn_forward_problem *fp, void *mem, int64_t units, fwd_unit_fn run_unit,
                             const void *arg, bool rows, bool whole, const unsigned char *need);

static __attribute__((unused)) void forward_run(const la_attn_forward_problem *fp, void *mem, int64_t units,
                                                fwd_unit_fn run_unit, const void *arg) {
    forward_run_rows(fp, mem, units, run_unit, arg, true, false, NULL);
}

/* Key tiles of S_MR keys per group, the longest sequence's. */
static inline int64_t fwd_tiles(const la_attn_problem *p) {
    return (p->Lk + S_MR - 1) / S_MR;
}

/* Row k of V (D floats) into the V^T tiles: S_MR dimensions of a key are
 * adjacent there, so each tile takes one short contiguous copy. */
static inline void pack_vt_row(float *vpack, int64_t vld, int64_t k, const float *row, int64_t D) {
    for (int64_t d0 = 0; d0 < D; d0 += S_MR)
        memcpy(vpack + d0 * vld + k * S_MR, row + d0, sizeof(float) * (size_t)(D - d0 < S_MR ? D - d0 : S_MR));
}

/* Keys [t, t + S_MR) of the group (hk, keys [k0, k0 + lk) of batch row bt)
 * into the panels: the row-major K and V when rows, and the packed tiles. */
static void pack_key_tile(const la_attn_problem *p, int64_t bt, int64_t hk, int64_t k0, int64_t lk, int64_t t,
                          bool rows, float *kpanel, float *vpanel, float *kpack, float *vpack, int64_t vld) {
    const int64_t D = p->D, Dp = tg_round_up(D, LA_VL);
    for (int64_t r = t; r < t + S_MR; r++) {
        float kbuf[LA_MAX_HEAD_DIM + 16], vbuf[LA_MAX_HEAD_DIM + 16];
        float *kr = rows ? kpanel + r * Dp : kbuf, *vr = rows ? vpanel + r * Dp : vbuf;
        if (r < lk) {
            tg_load_row(kr, la_attn_at(&p->k, bt, k0 + r, hk), p->k.dtype, D, Dp);
            tg_load_row(vr, la_attn_at(&p->v, bt, k0 + r, hk), p->v.dtype, D, Dp);
            pack_vt_row(vpack, vld, r, vr, D);
        } else {
            memset(kr, 0, sizeof(float) * (size_t)Dp);
        }
        tg_pack_a_row(kpack, S_MR, Dp, r, kr, Dp);
    }
}

/* forward_run; rows: whether the drivers read the row-major K and V panels
 * (the sparse kernel's extra columns and blocks that start inside a tile do;
 * the dense kernel reads only the packed tiles, so its run writes half as
 * much per group); whole: threads take whole groups with their own panels
 * (fwd_whole_groups; the workspace of layout_sets(p, true)); need: NULL
 * packs every key tile, else only tiles t with need[g * fwd_tiles(p) + t /
 * S_MR] set for group g = b * Hkv + hk (the others are never read: a sparse
 * index that skips most key blocks skips most of the packing, which costs
 * the same per call whatever the density). */
static void forward_run_rows(const la_attn_forward_problem *fp, void *mem, int64_t units, fwd_unit_fn run_unit,
                             const void *arg, bool rows, bool whole, const unsigned char *need) {
    const la_attn_problem *p = &fp->a;
    const int nthreads = p->threads > 0 ? p->threads : 1;
    const int64_t D = p->D, Dp = tg_round_up(D, LA_VL), G = p->H / p->Hkv;
    const int64_t ngroups = p->num_seqs * p->Hkv;
    const size_t sets = whole ? (size_t)nthreads : 1;
    size_t panel, per_thread, bytes;
    layout_sets(p, whole, &panel, &per_thread, &bytes);
    float *const panels = mem, *const thread_mem = panels + 4 * sets * panel;

#pragma omp parallel num_threads(nthreads)
    {
        const int tid = la_thread_id();
        float *base = thread_mem + (size_t)tid * per_thread;
        float *kpanel = panels + (whole ? (size_t)tid * 4 * panel : 0), *vpanel = kpanel + panel,
              *kpack = vpanel + panel, *vpack = kpack + panel;
        scratch w;
        w.qt = base;
        w.st = w.qt + D * BQ;
        w.o = w.st + BK * BQ;
        w.ot = w.o + BQ * Dp;
        w.m = w.ot + D * BQ;
        w.l = w.m + BQ;
        w.alpha = w.l + BQ;
        w.lo = (int32_t *)(w.alpha + BQ);
        w.hi = w.lo + BQ;
        w.kpanel = kpanel;
        w.vpanel = vpanel;
        w.kpack = kpack;
        w.vpack = vpack;
        if (whole) {
#pragma omp for schedule(dynamic, 1)
            for (int64_t g = 0; g < ngroups; g++) {
                const int64_t b = g / p->Hkv, hk = g % p->Hkv, bt = p->cu_q ? 0 : b;
                int64_t q0, lq, k0, lk;
                la_attn_seq(p, b, &q0, &lq, &k0, &lk);
                if (lq == 0) continue;
                w.vld = tg_round_up(lk, S_MR);
                const unsigned char *gneed = need ? need + g * fwd_tiles(p) : NULL;
                for (int64_t t = 0; t < lk; t += S_MR)
                    if (!gneed || gneed[t / S_MR])
                        pack_key_tile(p, bt, hk, k0, lk, t, rows, kpanel, vpanel, kpack, vpack, w.vld);
                for (int64_t id = 0; id < G * units; id++) run_unit(fp, arg, &w, b, hk * G + id % G, id / G);
            }
        } else {
            for (int64_t g = 0; g < ngroups; g++) {
                const int64_t b = g / p->Hkv, hk = g % p->Hkv, bt = p->cu_q ? 0 : b;
                int64_t q0, lq, k0, lk;
                la_attn_seq(p, b, &q0, &lq, &k0, &lk);
                if (lq == 0) continue;
                w.vld = tg_round_up(lk, S_MR);
                const unsigned char *gneed = need ? need + g * fwd_tiles(p) : NULL;
                /* whole S_MR tiles per thread: packing writes a tile's rows interleaved */
                if (!gneed) {
#pragma omp for schedule(static)
                    for (int64_t t = 0; t < lk; t += S_MR)
                        pack_key_tile(p, bt, hk, k0, lk, t, rows, kpanel, vpanel, kpack, vpack, w.vld);
                } else {
                    /* the listed tiles bunch (sinks, the recent keys): static
                     * halves of the range gave one thread ~65% of them at 8K;
                     * runs of 8 tiles dealt in turn (the threads share V^T
                     * cache lines only at a run's edges) */
#pragma omp for schedule(static, 8)
                    for (int64_t t = 0; t < lk; t += S_MR)
                        if (gneed[t / S_MR])
                            pack_key_tile(p, bt, hk, k0, lk, t, rows, kpanel, vpanel, kpack, vpack, w.vld);
                }
#pragma omp for schedule(dynamic, 1)
                for (int64_t id = 0; id < G * units; id++) run_unit(fp, arg, &w, b, hk * G + id % G, id / G);
            }
        }
    }
}

#endif
