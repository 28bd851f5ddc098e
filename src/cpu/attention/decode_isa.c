/* Decode attention: a few query tokens against a long K/V cache, written once
 * and compiled per instruction set (see cpu/isa.h).
 *
 * Decoding is bound by reading the cache, so the kernel is shaped around
 * streaming it once:
 *  - Work item = one sequence and one chunk of its keys, for ALL K/V heads:
 *    the rows of token t for every head are adjacent in a [.., Hkv, D]
 *    cache, so an item reads contiguous memory (one head at a time would
 *    stride by Hkv * D and miss the TLB on every key of a long cache).
 *  - Each K/V row is loaded once and used for the G * Lq query rows that
 *    share its head (grouped-query attention).
 *  - Keys go in blocks of LA_VL, so the online softmax's exp is a vector op.
 * Chunks are spread over threads; each leaves (max, sum, accumulator) per
 * query row and the partials are merged by log-sum-exp with merge_row
 * (merge_rows.h), the routine la_attention_merge runs on every row. */
#include "cpu/isa.h"
#include "cpu/tile_gemm.h"
#include "cpu/attention/merge_rows.h"
#include "cpu/attention/score_simd.h"
#include "cpu/attention/decode_simd.h"
#include "cpu/attention/decode_block.h"

#include "backend/attention_problem.h"
#include "base/parallel.h"

/* Keys per work item, at fixed key positions: item c of a sequence holds
 * keys [c * DECODE_CHUNK, (c + 1) * DECODE_CHUNK). The split (and so the
 * summation order, and every bit of the result) depends only on the keys'
 * positions, never on the cache's capacity, the page size or the thread
 * count: the same tokens give the same output whatever --ctx or --threads
 * (issue 11 item 6). 256 keys keep a long sequence spread over threads
 * (32 items at 8K keys) while the per-item set-up and the merge stay a
 * small share of the item's work (one merged row per 256 keys read). */
#define DECODE_CHUNK 256

/* Blocks of LA_VL keys ahead of the one computed whose K and V rows the
 * in-place path prefetches (into L2, K rows spread over the block's q.k
 * and V rows over its P.V: db_prefetch, decode_block.h): a head's rows are one contiguous run
 * per page, but an item reads only two such streams (its head's K and V),
 * and the hardware prefetchers stop at every 4 KB page (16 keys of f16
 * rows at D 128). 2 blocks measured best of 0, 2 and 4 (BENCHMARKS.md,
 * "fifth session"); with K prefetched during q.k, 3 and 4 were within
 * noise of 2 (thirteenth session). Prefetches change no result. */
#define DECODE_PREFETCH_BLOCKS 2

/* Rows shorter than this (bytes) keep the old way: f16 at D 64 (SmolLM2,
 * 128-byte rows, 32 KB of K an item) measured 1.5-9% slower a token in
 * gen_step in 3 of 3 pairs (and 15% for one layer in L3), where f32 at
 * D 64 (256-byte rows) was 17-25% faster (s24-dec). */
#define DECODE_NEXT_MIN_ROW_BYTES 256

/* The next item of the thread's run (f32 and f16 pages): where its
 * blocks' K and V rows start (NULL for a copied block), for prefetching
 * during this item's P.V. Without it q.k streams the item's K from memory
 * (and prefetches its V) while P.V reads V from L2 and asks memory for
 * nothing: on the Zen 5 host a core read ~20 GB/s of f32 pages at 32K
 * where it streams ~43, P.V ~40% of the samples. With it, the next item's
 * rows come during P.V and are in L2 when its q.k starts, which then
 * prefetches no V: at 32K (D 128) 26-31% less time for f32 pages, 7-10%
 * for f16, and 17-25% less a token in the model's f32 decode (D 64)
 * (BENCHMARKS.md, s24-dec). bf16 pages keep the old way (not
 * measured). Prefetches change no result. */
typedef struct {
    const char *k[DECODE_CHUNK / LA_VL], *v[DECODE_CHUNK / LA_VL];
    int64_t nblk;
    size_t kstride, vstride; /* bytes between a block's rows */
} next_rows;

/* Bytes [o0, o1) of row e of the next item's block b, counted over its K
 * row (rowb bytes) then its V row. */
static inline __attribute__((always_inline)) void prefetch_next(const next_rows *nx, int64_t b, int e, size_t o0,
                                                                size_t o1, size_t rowb) {
    if (!nx || b >= nx->nblk || !nx->k[b] || !nx->v[b]) return;
    for (size_t o = o0; o < o1; o += 64)
        __builtin_prefetch(o < rowb ? nx->k[b] + (size_t)e * nx->kstride + o : nx->v[b] + (size_t)e * nx->vstride + o - rowb,
                           0, 2);
}

typedef struct {
    const la_attn_decode_problem *dp;
    const la_attn_problem *p;
    int64_t b, lk, R, Dp; /* R = H * Lq query rows of the sequence */
    const float *q;       /* [R][Dp] scaled queries, row r = h * Lq + i */
    const int64_t *lo, *hi; /* [R] visible key range per row */
    const next_rows *next;  /* the next item's rows to prefetch in P.V, or NULL */
    bool fetched;           /* this item's rows were prefetched by the item before */
} seq_state;

static const char *row_ptr(const la_kv_pages *kv, const la_attn_operand *o, int64_t b, int64_t t, int64_t hk) {
    if (kv->block_table) {
        int64_t blk = kv->block_table[b * kv->blocks_per_seq + t / kv->block_size];
        return la_attn_at(o, blk, t % kv->block_size, hk);
    }
    return la_attn_at(o, b, t, hk);
}

/* Clamp a key offset relative to a block start into [-1, LA_VL] so the
 * lane comparisons below run in 32 bits. */
static inline int32_t lane_bound(int64_t x) { return x < -1 ? -1 : x > LA_VL ? LA_VL : (int32_t)x; }

/* a[0..Dp) += sum_e p[e] * v[e * Dp .. e * Dp + Dp). Each output vector is a chain of
 * LA_VL dependent FMAs, so ACC_VECTORS of them advance side by side to
 * cover the FMA latency (one chain at a time ran at a quarter of the
 * FMA rate). */
#define ACC_VECTORS 8
static inline void accumulate_pv(float *a, const float *v, vf p, const int64_t Dp) {
    int64_t d = 0;
    for (; d + ACC_VECTORS * LA_VL <= Dp; d += ACC_VECTORS * LA_VL) {
        vf o[ACC_VECTORS];
        for (int k = 0; k < ACC_VECTORS; k++) o[k] = vf_load(a + d + k * LA_VL);
        for (int e = 0; e < LA_VL; e++) {
            const vf pe = vf_set1(p[e]);
            for (int k = 0; k < ACC_VECTORS; k++) o[k] = vf_fma(pe, vf_load(v + e * Dp + d + k * LA_VL), o[k]);
        }
        for (int k = 0; k < ACC_VECTORS; k++) vf_store(a + d + k * LA_VL, o[k]);
    }
    for (; d < Dp; d += LA_VL) {
        vf o = vf_load(a + d);
        for (int e = 0; e < LA_VL; e++) o = vf_fma(vf_set1(p[e]), vf_load(v + e * Dp + d), o);
        vf_store(a + d, o);
    }
}

/* Keys [c0, c1) of one sequence for every head: partial m, l, acc per row.
 * Inlined per row width (Dp a constant for head_dim 64 and 128) so a block's
 * key and value rows are offsets of one pointer: an array of LA_VL row
 * pointers was spilled to vector registers and reloaded on every FMA. */
static inline __attribute__((always_inline)) void chunk_dp(const seq_state *s, int64_t c0, int64_t c1, float *kbuf,
                                                            float *vbuf, float *m, float *l, float *acc,
                                                            const int64_t Dp) {
    const la_attn_problem *p = s->p;
    const la_kv_pages *kv = &s->dp->kv;
    const la_score_rule *rule = &p->rule;
    const int64_t Lq = p->Lq, G = p->H / p->Hkv, D = p->D;
    const bool softmax = rule->score == LA_SCORE_SOFTMAX;
    const vi lane = vi_iota();
    for (int64_t r = 0; r < s->R; r++) {
        m[r] = -INFINITY;
        l[r] = 0;
    }
    memset(acc, 0, sizeof(float) * (size_t)(s->R * Dp));
    for (int64_t j0 = c0; j0 < c1; j0 += LA_VL) {
        const int64_t nk = c1 - j0 < LA_VL ? c1 - j0 : LA_VL;
        /* Widen the block's rows into kbuf/vbuf, every head of a token at
         * once: a token's rows of all heads are adjacent, so this streams
         * in address order. Packed, the rows of a head are 4 * Dp bytes
         * apart; in a [.., Hkv, D] cache they are a whole token apart,
         * often 4 KB, and then all map to the same L1 sets. Rows past nk
         * are zeroed below (their scores are masked, their weights zero). */
        for (int64_t e = 0; e < nk; e++)
            for (int64_t hk = 0; hk < p->Hkv; hk++) {
                tg_load_row(kbuf + (hk * LA_VL + e) * Dp, row_ptr(kv, &p->k, s->b, j0 + e, hk), p->k.dtype, D, Dp);
                tg_load_row(vbuf + (hk * LA_VL + e) * Dp, row_ptr(kv, &p->v, s->b, j0 + e, hk), p->v.dtype, D, Dp);
            }
        if (nk < LA_VL) /* rows past the block's end: zero (finite; their lanes are masked, their weights 0) */
            for (int64_t hk = 0; hk < p->Hkv; hk++) {
                memset(kbuf + (hk * LA_VL + nk) * Dp, 0, sizeof(float) * (size_t)((LA_VL - nk) * Dp));
                memset(vbuf + (hk * LA_VL + nk) * Dp, 0, sizeof(float) * (size_t)((LA_VL - nk) * Dp));
            }
        for (int64_t hk = 0; hk < p->Hkv; hk++) {
            const float *kb = kbuf + hk * LA_VL * Dp, *vb = vbuf + hk * LA_VL * Dp;
            for (int64_t r = hk * G * Lq; r < (hk + 1) * G * Lq; r++) {
                const float *q = s->q + r * Dp;
                const int64_t i = r % Lq;
                /* lane e visible: e < nk, and the rule lets row r see key j0 + e */
                vi vis = (lane < lane_bound(nk)) &
                         rule_visible_vec(lane, (vi){0} + lane_bound(s->lo[r] - j0), (vi){0} + lane_bound(s->hi[r] - j0),
                                          (vi){0} + lane_bound(rule->sinks - j0));
                bool any = false;
                for (int e = 0; e < LA_VL; e++) any |= vis[e] != 0;
                if (!any) continue;
                /* the block's LA_VL scores of this row: one accumulator per
                 * key, summed across lanes together at the end */
                vf part[LA_VL];
                for (int e = 0; e < LA_VL; e++) part[e] = vf_set1(0);
                for (int64_t d = 0; d < Dp; d += LA_VL) {
                    const vf qv = vf_load(q + d);
                    for (int e = 0; e < LA_VL; e++) part[e] = vf_fma(vf_load(kb + e * Dp + d), qv, part[e]);
                }
                vf sv = vf_transpose_sum(part);
                const float slope = la_rule_slope(rule, r / Lq);
                if (rule_transforms(rule, slope))
                    sv = rule_score_vec(rule, sv, slope, (float)(i + s->lk - Lq - j0) - __builtin_convertvector(lane, vf),
                                        NULL);
                sv = vf_select(vis, sv, vf_set1(-INFINITY));
                float *a = acc + r * Dp;
                vf pv;
                if (softmax) {
                    float bm = tree_max(sv);
                    if (bm > m[r]) {
                        float alpha = m[r] == -INFINITY ? 0.0f : expf(m[r] - bm);
                        l[r] *= alpha;
                        vf av = vf_set1(alpha);
                        for (int64_t d = 0; d < Dp; d += LA_VL) vf_store(a + d, vf_load(a + d) * av);
                        m[r] = bm;
                    }
                    pv = vf_exp(sv - m[r]);
                    l[r] += tree_add(pv);
                } else {
                    pv = rule_sigmoid_vec(rule, sv, vis);
                }
                accumulate_pv(a, vb, pv, Dp);
            }
        }
    }
}

static void chunk(const seq_state *s, int64_t c0, int64_t c1, float *kbuf, float *vbuf, float *m, float *l,
                  float *acc) {
    if (s->Dp == 128) chunk_dp(s, c0, c1, kbuf, vbuf, m, l, acc, 128);
    else if (s->Dp == 64) chunk_dp(s, c0, c1, kbuf, vbuf, m, l, acc, 64);
    else chunk_dp(s, c0, c1, kbuf, vbuf, m, l, acc, s->Dp);
}

/* The grouped path: work item = (sequence, K/V head, chunk), for softmax
 * scores that are only scaled (no softcap or ALiBi; masks, windows and
 * sinks are lane masks). A block of LA_VL keys is read in place when its
 * rows are whole vectors (D a multiple of LA_VL) of one page; otherwise (a
 * short block, a block across pages, a ragged head_dim) its rows are copied
 * as they are, zero-padded, into the thread's buffer, so the arithmetic is
 * the same bit for bit either way, on head-major pages or a token-major
 * [.., Hkv, D] tensor (rows a token apart): the split points and the order
 * stay the keys' positions only. A head's G * Lq query rows go through the
 * chunk 4 at a time.
 *
 * Two passes over the chunk rather than an online softmax per block: q.k
 * of every block first (scores kept, a running vector max per row), then
 * one exp pass against the chunk's max, then P.V with each row's output
 * vectors in registers across the whole chunk (the values' rows, read in
 * pass 1's wake, are in L2). The online form paid, per block and row, a
 * max tree, a scalar branch and exp for the rescale, the accumulator's
 * load, rescale and store, and a sum tree: at head_dim 64 and 3 query rows
 * per K/V head (SmolLM2) about a third of the kernel's instructions. */

/* Where each block of the chunk's keys is read in place: the address of
 * its first K or V row of head hk, or NULL where the block is copied (a
 * short block, a block across pages, a ragged head_dim). A page lookup
 * (a division by the page size) only where a block starts a new page; the
 * blocks after it within that page follow at LA_VL rows apart. */
static inline __attribute__((always_inline)) void block_table_of(const seq_state *s, const la_attn_operand *o,
                                                                  int64_t hk, int64_t c0, int64_t c1, int64_t nblk,
                                                                  const char **ptr, const int64_t Dp, const la_dtype DT) {
    const la_kv_pages *kv = &s->dp->kv;
    const size_t es = DT == LA_F32 ? 4 : 2, stride = (size_t)o->token_stride * es;
    for (int64_t b = 0; b < nblk; b++) {
        const int64_t j0 = c0 + b * LA_VL;
        const bool whole = s->p->D == Dp && c1 - j0 >= LA_VL &&
                           (!kv->block_table || j0 % kv->block_size + LA_VL <= kv->block_size);
        if (!whole) ptr[b] = NULL;
        else if (b > 0 && ptr[b - 1] && (!kv->block_table || (j0 - LA_VL) / kv->block_size == j0 / kv->block_size))
            ptr[b] = ptr[b - 1] + LA_VL * stride;
        else ptr[b] = row_ptr(kv, o, s->b, j0, hk);
    }
}

/* The rows of the chunk's block b for the block's arithmetic: in place
 * (ptr from block_table_of), or copied zero-padded into buf. */
static inline __attribute__((always_inline)) const char *block_rows(const seq_state *s, const la_attn_operand *o,
                                                                     int64_t hk, int64_t j0, int64_t nk,
                                                                     const char *ptr, char *buf, size_t *stride,
                                                                     const int64_t Dp, const la_dtype DT) {
    const size_t es = DT == LA_F32 ? 4 : 2, rowb = (size_t)Dp * es;
    if (ptr) {
        *stride = (size_t)o->token_stride * es;
        return ptr;
    }
    for (int64_t e = 0; e < LA_VL; e++) {
        char *d = buf + (size_t)e * rowb;
        const size_t n = e < nk ? (size_t)s->p->D * es : 0;
        if (n) memcpy(d, row_ptr(&s->dp->kv, o, s->b, j0 + e, hk), n);
        memset(d + n, 0, rowb - n);
    }
    *stride = rowb;
    return buf;
}

#if defined(LA_ISA_AVX2)
/* q.k of a block on AVX2 in 128-bit lanes. Zen 1 runs a 256-bit op as two
 * 128-bit ones, so the FMAs and conversions cost the same in either width,
 * but the lane-sum tree of a 256-bit accumulator (db_transpose_sum) adds a
 * level and moves halves: about 5 uops per score against 2.25 for a 4-lane
 * accumulator, and db_scores reduced 4 rows x 2 keys even for a group of 3
 * rows (a quarter of its tree summed zeros). At SmolLM2's shape (3 rows,
 * D 64) the tree was ~21 uops per key and head next to 48 of FMAs.
 * Each score's arithmetic is fixed whatever the row count: lane j of the
 * accumulator sums channels d = j mod 4 in order of d (explicit FMAs),
 * then (x0 + x1) + (x2 + x3); the grouping of accumulators into trees only
 * moves lanes. */
static inline __attribute__((always_inline)) __m128 qk_load4(const char *row, int64_t d, const la_dtype DT) {
    if (DT == LA_F16) return _mm_cvtph_ps(_mm_loadl_epi64((const __m128i *)((const uint16_t *)row + d)));
    if (DT == LA_BF16)
        return _mm_castsi128_ps(
            _mm_slli_epi32(_mm_cvtepu16_epi32(_mm_loadl_epi64((const __m128i *)((const uint16_t *)row + d))), 16));
    return _mm_loadu_ps((const float *)row + d);
}

/* Lane i = the sum of the lanes of (a, b, c, d)[i], as (x0 + x1) + (x2 + x3). */
static inline __attribute__((always_inline)) __m128 qk_sum4(__m128 a, __m128 b, __m128 c, __m128 d) {
    const __m128 ab = _mm_add_ps(_mm_shuffle_ps(a, b, 0x88), _mm_shuffle_ps(a, b, 0xDD)); /* a01 a23 b01 b23 */
    const __m128 cd = _mm_add_ps(_mm_shuffle_ps(c, d, 0x88), _mm_shuffle_ps(c, d, 0xDD));
    return _mm_add_ps(_mm_shuffle_ps(ab, cd, 0x88), _mm_shuffle_ps(ab, cd, 0xDD));
}

/* Scores s[rr] lane e = q_rr . k_e of the block's LA_VL keys at kb + e *
 * kstride, as db_scores (no bias). Sub-blocks of KS keys: 4 for up to 3
 * rows (12 accumulators, a tree per row), 2 for 4 rows (8 accumulators,
 * a tree per pair of rows). pf: K rows of a block ahead, prefetched
 * between the sub-blocks. */
static inline __attribute__((always_inline)) void qk_block(const float *q, const char *kb, size_t kstride,
                                                            const int NR, const int64_t Dp, const la_dtype DT,
                                                            const db_prefetch *pf, vf *s) {
    const db_prefetch ahead = db_prefetch_or(pf, kb, kb, kstride);
    enum { KSMAX = 4 };
    const int KS = NR <= 3 ? 4 : 2;
    __m128 r[4][4]; /* [row][sub-block]: the row's scores of the sub-block's keys (NR <= 3) */
    __m128 pr[2][4]; /* [row pair][sub-block]: r0 e0, r0 e1, r1 e0, r1 e1 (NR == 4) */
#pragma GCC unroll 1
    for (int j = 0; j < LA_VL / KS; j++) {
        __m128 a[4][KSMAX];
#pragma GCC unroll 4
        for (int rr = 0; rr < NR; rr++)
#pragma GCC unroll 4
            for (int e = 0; e < KS; e++) a[rr][e] = _mm_setzero_ps();
        const char *k0 = kb + (size_t)(j * KS) * kstride;
#pragma GCC unroll 4
        for (int e = 0; e < KS; e++) db_prefetch_span(ahead.k, ahead.stride, j * KS + e, 0, Dp, DT);
        for (int64_t d = 0; d < Dp; d += 4) {
            __m128 qv[4];
#pragma GCC unroll 4
            for (int rr = 0; rr < NR; rr++) qv[rr] = _mm_loadu_ps(q + rr * Dp + d);
#pragma GCC unroll 4
            for (int e = 0; e < KS; e++) {
                const __m128 kv = qk_load4(k0 + (size_t)e * kstride, d, DT);
#pragma GCC unroll 4
                for (int rr = 0; rr < NR; rr++) a[rr][e] = _mm_fmadd_ps(kv, qv[rr], a[rr][e]);
            }
        }
        if (NR <= 3) {
#pragma GCC unroll 4
            for (int rr = 0; rr < NR; rr++) r[rr][j] = qk_sum4(a[rr][0], a[rr][1], a[rr][2], a[rr][3]);
        } else {
            pr[0][j] = qk_sum4(a[0][0], a[0][1], a[1][0], a[1][1]);
            pr[1][j] = qk_sum4(a[2][0], a[2][1], a[3][0], a[3][1]);
        }
    }
    if (NR <= 3) {
#pragma GCC unroll 4
        for (int rr = 0; rr < NR; rr++) s[rr] = (vf)_mm256_set_m128(r[rr][1], r[rr][0]);
    } else {
#pragma GCC unroll 2
        for (int h = 0; h < 2; h++) {
            s[2 * h] = (vf)_mm256_set_m128(_mm_movelh_ps(pr[h][2], pr[h][3]), _mm_movelh_ps(pr[h][0], pr[h][1]));
            s[2 * h + 1] = (vf)_mm256_set_m128(_mm_movehl_ps(pr[h][3], pr[h][2]), _mm_movehl_ps(pr[h][1], pr[h][0]));
        }
    }
}
#endif

/* Pass 3 of group_chunk over output channels [d0, d0 + NV * LA_VL): the
 * NR rows' NV vectors each in registers over the chunk's keys, each value
 * vector loaded once into every row's chain, weights wp[rr][key] broadcast
 * from memory. */
#ifndef DECODE_PV_WIDE
#define DECODE_PV_WIDE 3
#endif
static inline __attribute__((always_inline)) void pv_pass(const seq_state *s, int64_t hk, int64_t c0, int64_t c1,
                                                           int64_t nblk, const bool *seen, const char *const *vp,
                                                           char *vbuf, const float (*wp)[DECODE_CHUNK], float *acc,
                                                           const int NR, int64_t d0, const int NV, const int64_t Dp,
                                                           const la_dtype DT) {
    const la_attn_problem *p = s->p;
    const size_t es = DT == LA_F32 ? 4 : 2;
    /* the next item's lines: this pass's share of its K and V rows taken
     * as one row of 2 Dp channels, so with two passes (D 128) the first
     * fetches whole K rows and the second whole V rows, each one
     * sequential stream (per-channel shares, the lines of both at a 512-
     * byte stride, were slower) */
    const next_rows *nx = DT != LA_BF16 ? s->next : NULL;
    const size_t rowb = (size_t)Dp * es, nb0 = 2 * (size_t)d0 * es, nb1 = 2 * (size_t)(d0 + NV * LA_VL) * es;
    vf o[4][4];
#pragma GCC unroll 4
    for (int rr = 0; rr < NR; rr++)
#pragma GCC unroll 4
        for (int k = 0; k < NV; k++) o[rr][k] = vf_set1(0);
    for (int64_t b = 0; b < nblk; b++) {
        if (!seen[b]) {
            for (int e = 0; e < LA_VL; e++) prefetch_next(nx, b, e, nb0, nb1, rowb);
            continue;
        }
        const int64_t j0 = c0 + b * LA_VL, nk = c1 - j0 < LA_VL ? c1 - j0 : LA_VL;
        size_t vs;
        const char *vb = vp[b] ? vp[b] : block_rows(s, &p->v, hk, j0, nk, NULL, vbuf, &vs, Dp, DT);
        if (vp[b]) vs = (size_t)p->v.token_stride * es;
#pragma GCC unroll 16
        for (int e = 0; e < LA_VL; e++) {
            prefetch_next(nx, b, e, nb0, nb1, rowb);
#pragma GCC unroll 4
            for (int k = 0; k < NV; k++) {
                const vf vv = db_load(vb + (size_t)e * vs, d0 + k * LA_VL, DT);
#pragma GCC unroll 4
                for (int rr = 0; rr < NR; rr++) o[rr][k] = vf_fma(vf_set1(wp[rr][b * LA_VL + e]), vv, o[rr][k]);
            }
        }
    }
#pragma GCC unroll 4
    for (int rr = 0; rr < NR; rr++)
#pragma GCC unroll 4
        for (int k = 0; k < NV; k++) vf_store(acc + rr * Dp + d0 + k * LA_VL, o[rr][k]);
}

static inline __attribute__((always_inline)) void group_chunk(const seq_state *s, int64_t hk, int64_t r, const int NR,
                                                               int64_t c0, int64_t c1, char *kbuf, char *vbuf,
                                                               float *m, float *l, float *acc, const int64_t Dp,
                                                               const la_dtype DT) {
    const int64_t pfb = DECODE_PREFETCH_BLOCKS;
    const la_attn_problem *p = s->p;
    const la_score_rule *rule = &p->rule;
    const vi lane = vi_iota();
    const int64_t nblk = (c1 - c0 + LA_VL - 1) / LA_VL;
    const size_t es = DT == LA_F32 ? 4 : 2;
    float w[4][DECODE_CHUNK] __attribute__((aligned(64))); /* scores, then weights */
    const char *kp[DECODE_CHUNK / LA_VL], *vp[DECODE_CHUNK / LA_VL];
    bool seen[DECODE_CHUNK / LA_VL];
    block_table_of(s, &p->k, hk, c0, c1, nblk, kp, Dp, DT);
    block_table_of(s, &p->v, hk, c0, c1, nblk, vp, Dp, DT);
    /* every row sees every key of the chunk (a decode step's rows, far from
     * a window's edge): no per-block masks but the chunk's end */
    bool all = true;
#pragma GCC unroll 4
    for (int rr = 0; rr < NR; rr++) all &= s->lo[r + rr] <= c0 && s->hi[r + rr] >= c1;
    vf mx[4];
#pragma GCC unroll 4
    for (int rr = 0; rr < NR; rr++) mx[rr] = vf_set1(-INFINITY);
    /* pass 1: scores; the K rows pfb blocks ahead prefetched in db_scores,
     * the V rows there after it (for pass 3) unless the item before
     * prefetched them */
    for (int64_t b = 0; b < nblk; b++) {
        const int64_t j0 = c0 + b * LA_VL, nk = c1 - j0 < LA_VL ? c1 - j0 : LA_VL;
        vi vis[4];
        bool any = all;
#pragma GCC unroll 4
        for (int rr = 0; rr < NR && all; rr++) vis[rr] = lane < lane_bound(nk);
#pragma GCC unroll 4
        for (int rr = 0; rr < NR && !all; rr++) {
            vis[rr] = (lane < lane_bound(nk)) &
                      rule_visible_vec(lane, (vi){0} + lane_bound(s->lo[r + rr] - j0),
                                       (vi){0} + lane_bound(s->hi[r + rr] - j0), (vi){0} + lane_bound(rule->sinks - j0));
            for (int e = 0; e < LA_VL; e++) any |= vis[rr][e] != 0;
        }
        seen[b] = any;
        if (!any) {
#pragma GCC unroll 4
            for (int rr = 0; rr < NR; rr++) vf_store(w[rr] + b * LA_VL, vf_set1(-INFINITY));
            continue;
        }
        const int64_t ba = b + pfb;
        const db_prefetch pf = {ba < nblk && kp[ba] && vp[ba] ? kp[ba] : NULL, ba < nblk && kp[ba] && vp[ba] ? vp[ba] : NULL,
                                (size_t)p->k.token_stride * es};
        size_t ks;
        const char *kb = block_rows(s, &p->k, hk, j0, nk, kp[b], kbuf, &ks, Dp, DT);
        vf sc[4];
#if defined(LA_ISA_AVX2)
        qk_block(s->q + r * Dp, kb, ks, NR, Dp, DT, &pf, sc);
#else
        db_scores(s->q + r * Dp, NULL, kb, ks, NR, Dp, DT, &pf, sc);
#endif
        if (pf.v && !(DT != LA_BF16 && s->fetched))
#pragma GCC unroll 16
            for (int e = 0; e < LA_VL; e++) db_prefetch_span(pf.v, (size_t)p->v.token_stride * es, e, 0, Dp, DT);
#pragma GCC unroll 4
        for (int rr = 0; rr < NR; rr++) {
            const vf sv = vf_select(vis[rr], sc[rr], vf_set1(-INFINITY));
            mx[rr] = vf_max(mx[rr], sv);
            vf_store(w[rr] + b * LA_VL, sv);
        }
    }
    /* pass 2: the chunk's max, weights and sum per row */
    db_chunk_weights(w[0], DECODE_CHUNK, mx, seen, nblk, NR, m, l);
    /* pass 3: P.V, NV output vectors of each row in registers over the
     * chunk's keys, weights broadcast from memory (see db_pv). On AVX2 for
     * up to 3 rows, passes of 3 vectors (9 accumulators, 3 weights, a value
     * vector) then of 2, where DB_NV = 2 broadcast every weight Dp / 16
     * times (12 broadcasts per key and head at D 64, 9 now); 4 vectors
     * would fill all 16 registers, and GCC spilled. Each output lane's sum
     * is the same chain over the keys whatever the pass widths. */
    const float(*wp)[DECODE_CHUNK] = (const float(*)[DECODE_CHUNK])w;
    __asm__("" : "+r"(wp) : : "memory");
    int64_t d0 = 0;
    if (LA_VL == 8 && NR <= 3)
        for (; d0 + DECODE_PV_WIDE * LA_VL <= Dp; d0 += DECODE_PV_WIDE * LA_VL)
            pv_pass(s, hk, c0, c1, nblk, seen, vp, vbuf, wp, acc, NR, d0, DECODE_PV_WIDE, Dp, DT);
    for (; d0 + DB_NV * LA_VL <= Dp; d0 += DB_NV * LA_VL)
        pv_pass(s, hk, c0, c1, nblk, seen, vp, vbuf, wp, acc, NR, d0, DB_NV, Dp, DT);
    for (; d0 < Dp; d0 += LA_VL) pv_pass(s, hk, c0, c1, nblk, seen, vp, vbuf, wp, acc, NR, d0, 1, Dp, DT);
}

/* Keys [c0, c1) of one sequence and K/V head hk, its rows r0 .. r0 + Rh:
 * partial m, l, acc (the item's rows, from r0). */
static inline __attribute__((always_inline)) void head_chunk_dp(const seq_state *s, int64_t hk, int64_t c0, int64_t c1,
                                                                 char *kbuf, char *vbuf, float *m, float *l,
                                                                 float *acc, const int64_t Dp, const la_dtype DT) {
    const int64_t Rh = s->p->H / s->p->Hkv * s->p->Lq, r0 = hk * Rh;
    seq_state early = *s; /* groups before the last: the next item's rows are the last group's to prefetch */
    early.next = NULL;
    for (int64_t g = 0; g < Rh; g += 4) {
        float *mg = m + g, *lg = l + g, *ag = acc + g * Dp;
        const seq_state *sg = DT != LA_BF16 && g + 4 < Rh ? &early : s;
        switch (Rh - g < 4 ? Rh - g : 4) {
        case 1: group_chunk(sg, hk, r0 + g, 1, c0, c1, kbuf, vbuf, mg, lg, ag, Dp, DT); break;
        case 2: group_chunk(sg, hk, r0 + g, 2, c0, c1, kbuf, vbuf, mg, lg, ag, Dp, DT); break;
        case 3: group_chunk(sg, hk, r0 + g, 3, c0, c1, kbuf, vbuf, mg, lg, ag, Dp, DT); break;
        default: group_chunk(sg, hk, r0 + g, 4, c0, c1, kbuf, vbuf, mg, lg, ag, Dp, DT); break;
        }
    }
}

static void head_chunk(const seq_state *s, int64_t hk, int64_t c0, int64_t c1, char *kbuf, char *vbuf, float *m,
                       float *l, float *acc) {
    const la_dtype t = s->p->k.dtype;
#define LA_HEAD_CHUNK_DT(DPV)                                                                         \
    do {                                                                                              \
        if (t == LA_F16) head_chunk_dp(s, hk, c0, c1, kbuf, vbuf, m, l, acc, DPV, LA_F16);            \
        else if (t == LA_BF16) head_chunk_dp(s, hk, c0, c1, kbuf, vbuf, m, l, acc, DPV, LA_BF16);     \
        else head_chunk_dp(s, hk, c0, c1, kbuf, vbuf, m, l, acc, DPV, LA_F32);                        \
    } while (0)
    if (s->Dp == 128) LA_HEAD_CHUNK_DT(128);
    else if (s->Dp == 64) LA_HEAD_CHUNK_DT(64);
    else LA_HEAD_CHUNK_DT(s->Dp);
#undef LA_HEAD_CHUNK_DT
}

/* Whether the grouped path takes the problem: plain softmax, K and V of one
 * float dtype. Fixed by the problem's rule and dtypes only, never by the
 * layout, capacity or threads. */
static bool grouped(const la_attn_problem *p) {
    return p->rule.score == LA_SCORE_SOFTMAX && !(p->rule.softcap > 0) && !p->rule.alibi_slopes &&
           p->k.dtype == p->v.dtype && (p->k.dtype == LA_F32 || p->k.dtype == LA_F16 || p->k.dtype == LA_BF16);
}

/* Work split and workspace (floats): per item R partial rows (Dp + 2
 * each); per sequence its scaled queries [R][Dp] and key ranges; per thread
 * one block of K and V rows, then for the merge a row's chunk list and an
 * accumulator. */
typedef struct {
    int64_t nchunks, chunk_len, items;
    size_t part_rows, part, qsz, ranges, counts, kv_block, merge_parts, per_thread, bytes;
} layout;

static bool plan(const la_attn_problem *p, layout *L) {
    const int nthreads = p->threads > 0 ? p->threads : 1;
    const int64_t B = p->num_seqs, R = p->H * p->Lq, Dp = tg_round_up(p->D, LA_VL);
    /* sized for the capacity; the kernel runs only the chunks the longest
     * sequence in use reaches */
    const int64_t chunk_len = DECODE_CHUNK, nchunks = p->Lk > 0 ? (p->Lk + chunk_len - 1) / chunk_len : 1;
    L->nchunks = nchunks;
    L->chunk_len = chunk_len;
    L->items = B * nchunks;
    if (L->items > INT32_MAX / p->Hkv) return false; /* la_claim_next's item numbers (x Hkv on the grouped path) */
    size_t total;
    if (!la_mul_size((size_t)L->items, (size_t)R, &L->part_rows) ||
        !la_mul_size(L->part_rows, (size_t)(Dp + 2), &L->part) || !la_mul_size((size_t)(B * R), (size_t)Dp, &L->qsz))
        return false;
    L->ranges = (size_t)(B * R) * 2 * (sizeof(int64_t) / sizeof(float));
    /* an int32 count of finished chunks per (sequence, K/V head), in whole
     * 64-byte lines (the per-thread buffers after it keep their alignment) */
    L->counts = (size_t)tg_round_up(B * p->Hkv, 16);
    L->kv_block = (size_t)(2 * LA_VL * p->Hkv * Dp);
    /* in floats, a whole number of 64-byte lines so the accumulator after it stays aligned */
    L->merge_parts = (size_t)tg_round_up(nchunks * (int64_t)sizeof(merge_part), 64) / sizeof(float);
    /* then the grouped path's running max and sum of a head's rows (R bounds them) */
    L->per_thread = L->kv_block + L->merge_parts + (size_t)Dp + (size_t)tg_round_up(2 * R, 16);
    total = L->part + L->qsz + L->ranges + L->counts + L->per_thread * (size_t)nthreads;
    return total >= L->part && la_mul_size(total, sizeof(float), &L->bytes);
}

la_status LA_ISA_FN(la_cpu_attention_decode_workspace)(const la_attn_problem *p, size_t *bytes) {
    layout lay;
    if (!plan(p, &lay)) return la_fail(LA_ERR_OVERFLOW, "decode workspace size overflows");
    *bytes = lay.bytes;
    return LA_OK;
}

/* Merge the chunks of each of group bh's rows (sequence bh / hpi, rows
 * (bh % hpi) * Rh .. + Rh): chunk c's accumulator weighted by its max and
 * carrying its sum (softmax), or summed (sigmoid, which has no
 * normaliser); the output row and its lse stored. */
static void merge_group(const la_attn_decode_problem *dp, int64_t nchunks, int64_t bh, int64_t hpi, int64_t Rh,
                        const float *pm, const float *pl, const float *pacc, merge_part *parts, float *merged) {
    const la_attn_problem *p = &dp->fwd.a;
    const la_attn_forward_problem *fp = &dp->fwd;
    const int64_t Lq = p->Lq, D = p->D, Dp = tg_round_up(D, LA_VL), R = p->H * Lq, b = bh / hpi, hk = bh % hpi;
    const bool softmax = p->rule.score == LA_SCORE_SOFTMAX;
    for (int64_t r = hk * Rh; r < (hk + 1) * Rh; r++) {
        const int64_t h = r / Lq, i = r % Lq;
        for (int64_t cc = 0; cc < nchunks; cc++) {
            const int64_t prow = (b * nchunks + cc) * R + r;
            parts[cc] = (merge_part){.x = (const char *)(pacc + (size_t)prow * Dp),
                                     .dtype = LA_F32,
                                     .log_scale = pm[prow],
                                     .mass = pl[prow]};
        }
        const float lse = merge_row(parts, nchunks, D, !softmax, merged);
        tg_store_row(la_attn_at(&fp->out, b, i, h), fp->out.dtype, merged, D);
        if (fp->lse.data) *(float *)la_attn_at(&fp->lse, b, i, h) = lse;
    }
}

la_status LA_ISA_FN(la_cpu_attention_decode_kernel)(const la_attn_decode_problem *dp, void *mem) {
    const la_attn_problem *p = &dp->fwd.a;
    const int nthreads = p->threads > 0 ? p->threads : 1;
    const int64_t B = p->num_seqs, Lq = p->Lq, H = p->H, D = p->D, Dp = tg_round_up(D, LA_VL), R = H * Lq;
    const bool fast = grouped(p);
    layout lay;
    if (!plan(p, &lay)) return la_fail(LA_ERR_OVERFLOW, "decode workspace size overflows");
    const int64_t chunk_len = lay.chunk_len;
    int64_t longest = 0;
    for (int64_t b = 0; b < B; b++) longest = la_kv_len(dp, b) > longest ? la_kv_len(dp, b) : longest;
    /* chunks past every sequence's end hold no key: the merge would skip them */
    const int64_t nchunks = longest > 0 ? (longest + chunk_len - 1) / chunk_len : 1, items = B * nchunks;
    float *pm = mem, *pl = pm + lay.part_rows, *pacc = pl + lay.part_rows, *qs = pacc + lay.part_rows * (size_t)Dp;
    int64_t *lo = (int64_t *)(qs + lay.qsz), *hi = lo + B * R;
    int32_t *done = (int32_t *)(hi + B * R);
    float *thread_bufs = (float *)done + lay.counts;
    /* the scaled queries and key ranges, before the threads start: a few
     * rows, not worth a barrier */
    for (int64_t br = 0; br < B * R; br++) {
        const int64_t b = br / R, r = br % R, h = r / Lq, i = r % Lq;
        tg_load_row(qs + br * Dp, la_attn_at(&p->q, b, i, h), p->q.dtype, D, Dp);
        for (int64_t d = 0; d < D; d++) qs[br * Dp + d] *= p->rule.scale;
        la_rule_key_range(&p->rule, i, Lq, la_kv_len(dp, b), &lo[br], &hi[br]);
    }
    memset(done, 0, sizeof(int32_t) * (size_t)(B * p->Hkv));
    /* one item loop for the two paths: an item is (sequence, chunk) of
     * every K/V head, or on the grouped path (sequence, K/V head, chunk)
     * (hpi = Hkv heads per sequence and chunk) */
    const int64_t hpi = fast ? p->Hkv : 1, Rh = R / hpi;
    const bool prefetch_items = fast && (p->k.dtype == LA_F32 || p->k.dtype == LA_F16) &&
                                Dp * (int64_t)la_dtype_size(p->k.dtype) >= DECODE_NEXT_MIN_ROW_BYTES;

    la_claim_slot slots[nthreads]; /* VLA: one cache line per thread */
    la_claim_init(slots, nthreads, items * hpi);
#pragma omp parallel num_threads(nthreads)
    {
        float *kbuf = thread_bufs + (size_t)la_thread_id() * lay.per_thread, *vbuf = kbuf + LA_VL * p->Hkv * Dp;
        merge_part *parts = (merge_part *)(kbuf + lay.kv_block);
        float *merged = (float *)parts + lay.merge_parts;
        float *run_m = merged + Dp, *run_l = run_m + R;
        /* no barrier after the items: the thread finishing a group's last
         * chunk merges the group's rows (merge_group_add). A thread counts
         * its finished chunks of a group in `pending` and adds them to the
         * group's counter when it leaves the group or its run of
         * consecutive items (and after its last item): one atomic per run,
         * not per item. With schedule(dynamic, 1) each item paid two
         * atomics on lines both threads write (the loop's next index and
         * the counter), the counter's lock add waiting for the item's
         * stores (as in the int8 kernel, BENCHMARKS s20-q8). Runs come
         * from la_claim_next, single items at the end (balance; guided's
         * first run of half the items left its thread last by 5-12 us a
         * step in the model, s23-imb). Which thread merges a group changes
         * no result (merge_row reads the chunks in their order). */
        int64_t pending = 0, pbh = -1, plast = -1, fetched = -1; /* the item whose rows the last one prefetched */
        next_rows next;
        /* it runs through the thread's claimed run [it, end), then claims the next */
        for (int64_t it = 0, end = 0; it < end || la_claim_next(slots, nthreads, la_thread_id(), &it, &end); it++) {
            const int64_t c = it % nchunks, bh = it / nchunks, b = bh / hpi, hk = bh % hpi;
            if (pending && (bh != pbh || it != plast + 1)) {
                if (merge_group_add(&done[pbh], (int32_t)pending, (int32_t)nchunks))
                    merge_group(dp, nchunks, pbh, hpi, Rh, pm, pl, pacc, parts, merged);
                pending = 0;
            }
            const int64_t lk = la_kv_len(dp, b), row = (b * nchunks + c) * R + hk * Rh;
            seq_state s = {.dp = dp, .p = p, .b = b, .lk = lk, .R = R, .Dp = Dp, .q = qs + b * R * Dp,
                           .lo = lo + b * R, .hi = hi + b * R, .fetched = fetched == it};
            const int64_t c0 = c * chunk_len, c1 = c0 + chunk_len < lk ? c0 + chunk_len : lk > c0 ? lk : c0;
            fetched = -1;
            if (prefetch_items && it + 1 < end) {
                /* the next item of this run: its rows prefetched during this one's P.V */
                const int64_t nc = (it + 1) % nchunks, nbh = (it + 1) / nchunks, nb = nbh / hpi, nlk = la_kv_len(dp, nb);
                const int64_t n0 = nc * chunk_len, n1 = n0 + chunk_len < nlk ? n0 + chunk_len : nlk > n0 ? nlk : n0;
                seq_state ns = s;
                ns.b = nb;
                next.nblk = (n1 - n0 + LA_VL - 1) / LA_VL;
                const la_dtype t = p->k.dtype;
                next.kstride = (size_t)p->k.token_stride * la_dtype_size(t);
                next.vstride = (size_t)p->v.token_stride * la_dtype_size(t);
                if (t == LA_F32) {
                    block_table_of(&ns, &p->k, nbh % hpi, n0, n1, next.nblk, next.k, Dp, LA_F32);
                    block_table_of(&ns, &p->v, nbh % hpi, n0, n1, next.nblk, next.v, Dp, LA_F32);
                } else {
                    block_table_of(&ns, &p->k, nbh % hpi, n0, n1, next.nblk, next.k, Dp, LA_F16);
                    block_table_of(&ns, &p->v, nbh % hpi, n0, n1, next.nblk, next.v, Dp, LA_F16);
                }
                s.next = &next;
                fetched = it + 1;
            }
            float *a = pacc + (size_t)row * Dp;
            if (!fast) {
                chunk(&s, c0, c1, kbuf, vbuf, pm + row, pl + row, a);
            } else {
                head_chunk(&s, hk, c0, c1, (char *)kbuf, (char *)vbuf, run_m, run_l, a);
                memcpy(pm + row, run_m, sizeof(float) * (size_t)Rh);
                memcpy(pl + row, run_l, sizeof(float) * (size_t)Rh);
            }
            pending++, pbh = bh, plast = it;
        }
        if (pending && merge_group_add(&done[pbh], (int32_t)pending, (int32_t)nchunks))
            merge_group(dp, nchunks, pbh, hpi, Rh, pm, pl, pacc, parts, merged);
    }
    return LA_OK;
}
