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

typedef struct {
    const la_attn_decode_problem *dp;
    const la_attn_problem *p;
    int64_t b, lk, R, Dp; /* R = H * Lq query rows of the sequence */
    const float *q;       /* [R][Dp] scaled queries, row r = h * Lq + i */
    const int64_t *lo, *hi; /* [R] visible key range per row */
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
 * rows are whole vectors (D a multiple of LA_VL) of one page and K and V
 * share a dtype; otherwise (a short block, a block across pages, a ragged
 * head_dim) its rows are copied as they are, zero-padded, into the thread's
 * buffer, so the arithmetic (db_block, decode_block.h) is the same bit for
 * bit either way: the split points and the order stay the keys' positions
 * only. A head's G * Lq query rows go through each block 4 at a time. */
static inline __attribute__((always_inline)) void group_block(const seq_state *s, int64_t r, int nr, int64_t j0,
                                                               int64_t nk, float *m, float *l, float *acc,
                                                               const char *kb, size_t ks, const char *vb, size_t vs,
                                                               const int64_t Dp, const la_dtype DT, const db_prefetch *pf) {
    const la_score_rule *rule = &s->p->rule;
    const vi lane = vi_iota();
    vi vis[4];
    for (int rr = 0; rr < nr; rr++)
        vis[rr] = (lane < lane_bound(nk)) &
                  rule_visible_vec(lane, (vi){0} + lane_bound(s->lo[r + rr] - j0), (vi){0} + lane_bound(s->hi[r + rr] - j0),
                                   (vi){0} + lane_bound(rule->sinks - j0));
    const float *q = s->q + r * Dp;
    switch (nr) {
    case 1: db_block(q, NULL, vis, m, l, acc, kb, ks, vb, vs, 1, Dp, DT, pf); break;
    case 2: db_block(q, NULL, vis, m, l, acc, kb, ks, vb, vs, 2, Dp, DT, pf); break;
    case 3: db_block(q, NULL, vis, m, l, acc, kb, ks, vb, vs, 3, Dp, DT, pf); break;
    default: db_block(q, NULL, vis, m, l, acc, kb, ks, vb, vs, 4, Dp, DT, pf); break;
    }
}

/* Keys [c0, c1) of one sequence and K/V head hk, its rows r0 .. r0 + Rh:
 * partial m, l, acc (the item's rows, from r0). */
static inline __attribute__((always_inline)) void head_chunk_dp(const seq_state *s, int64_t hk, int64_t c0, int64_t c1,
                                                                 char *kbuf, char *vbuf, float *m, float *l,
                                                                 float *acc, const int64_t Dp, const la_dtype DT) {
    const int64_t pf_keys = DECODE_PREFETCH_BLOCKS * LA_VL;
    const la_attn_problem *p = s->p;
    const la_kv_pages *kv = &s->dp->kv;
    const la_score_rule *rule = &p->rule;
    const int64_t Rh = p->H / p->Hkv * p->Lq, r0 = hk * Rh, D = p->D;
    const size_t es = sizeof(float) / (DT == LA_F32 ? 1 : 2), rowb = (size_t)Dp * es;
    const bool whole = D == Dp;
    const vi lane = vi_iota();
    for (int64_t r = 0; r < Rh; r++) m[r] = -INFINITY, l[r] = 0;
    memset(acc, 0, sizeof(float) * (size_t)(Rh * Dp));
    for (int64_t j0 = c0; j0 < c1; j0 += LA_VL) {
        const int64_t nk = c1 - j0 < LA_VL ? c1 - j0 : LA_VL;
        bool any = false;
        for (int64_t r = r0; r < r0 + Rh && !any; r++) {
            const vi vis = (lane < lane_bound(nk)) &
                           rule_visible_vec(lane, (vi){0} + lane_bound(s->lo[r] - j0), (vi){0} + lane_bound(s->hi[r] - j0),
                                            (vi){0} + lane_bound(rule->sinks - j0));
            for (int e = 0; e < LA_VL; e++) any |= vis[e] != 0;
        }
        if (!any) continue;
        const char *kb, *vb;
        size_t ks, vs;
        /* the block pf_keys ahead, where its LA_VL rows of K and of V are
         * adjacent (rows a token apart: p->k.token_stride == D here) */
        db_prefetch pf = {NULL, NULL, (size_t)p->k.token_stride * es};
        if (pf_keys > 0 && j0 + pf_keys + LA_VL <= c1 &&
            (!kv->block_table || (j0 + pf_keys) % kv->block_size + LA_VL <= kv->block_size))
            pf.k = row_ptr(kv, &p->k, s->b, j0 + pf_keys, hk), pf.v = row_ptr(kv, &p->v, s->b, j0 + pf_keys, hk);
        if (whole && nk == LA_VL && (!kv->block_table || j0 % kv->block_size + LA_VL <= kv->block_size)) {
            kb = row_ptr(kv, &p->k, s->b, j0, hk), ks = (size_t)p->k.token_stride * es;
            vb = row_ptr(kv, &p->v, s->b, j0, hk), vs = (size_t)p->v.token_stride * es;
        } else {
            for (int64_t e = 0; e < LA_VL; e++) {
                char *kd = kbuf + (size_t)e * rowb, *vd = vbuf + (size_t)e * rowb;
                const size_t n = e < nk ? (size_t)D * es : 0;
                if (n) {
                    memcpy(kd, row_ptr(kv, &p->k, s->b, j0 + e, hk), n);
                    memcpy(vd, row_ptr(kv, &p->v, s->b, j0 + e, hk), n);
                }
                memset(kd + n, 0, rowb - n);
                memset(vd + n, 0, rowb - n);
            }
            kb = kbuf, vb = vbuf, ks = vs = rowb;
        }
        for (int64_t g = 0; g < Rh; g += 4) {
            const int nr = Rh - g < 4 ? (int)(Rh - g) : 4;
            group_block(s, r0 + g, nr, j0, nk, m + g, l + g, acc + g * Dp, kb, ks, vb, vs, Dp, DT, g ? NULL : &pf);
        }
    }
}

/* The grouped path over a token-major cache ([.., Hkv, D] rows, a token's
 * heads adjacent, a head's rows a whole token apart): work item =
 * (sequence, chunk) for every head, as `chunk`, each block's rows of all
 * heads copied as they are in address order (a stream the prefetchers
 * follow; reading a head's rows in place strides by the token and each
 * lands in another 4 KB page), then db_block per head on the copy. The
 * arithmetic is head_chunk_dp's, bit for bit. */
static inline __attribute__((always_inline)) void chunk_all_dp(const seq_state *s, int64_t c0, int64_t c1,
                                                                char *kbuf, char *vbuf, float *m, float *l,
                                                                float *acc, const int64_t Dp, const la_dtype DT) {
    const la_attn_problem *p = s->p;
    const la_kv_pages *kv = &s->dp->kv;
    const la_score_rule *rule = &p->rule;
    const int64_t Hkv = p->Hkv, Rh = p->H / Hkv * p->Lq, D = p->D;
    const size_t es = sizeof(float) / (DT == LA_F32 ? 1 : 2), rowb = (size_t)Dp * es;
    const vi lane = vi_iota();
    for (int64_t r = 0; r < s->R; r++) m[r] = -INFINITY, l[r] = 0;
    memset(acc, 0, sizeof(float) * (size_t)(s->R * Dp));
    for (int64_t j0 = c0; j0 < c1; j0 += LA_VL) {
        const int64_t nk = c1 - j0 < LA_VL ? c1 - j0 : LA_VL;
        bool any = false;
        for (int64_t r = 0; r < s->R && !any; r++) {
            const vi vis = (lane < lane_bound(nk)) &
                           rule_visible_vec(lane, (vi){0} + lane_bound(s->lo[r] - j0), (vi){0} + lane_bound(s->hi[r] - j0),
                                            (vi){0} + lane_bound(rule->sinks - j0));
            for (int e = 0; e < LA_VL; e++) any |= vis[e] != 0;
        }
        if (!any) continue;
        for (int64_t e = 0; e < LA_VL; e++)
            for (int64_t hk = 0; hk < Hkv; hk++) {
                char *kd = kbuf + (size_t)(hk * LA_VL + e) * rowb, *vd = vbuf + (size_t)(hk * LA_VL + e) * rowb;
                const size_t n = e < nk ? (size_t)D * es : 0;
                if (n) {
                    memcpy(kd, row_ptr(kv, &p->k, s->b, j0 + e, hk), n);
                    memcpy(vd, row_ptr(kv, &p->v, s->b, j0 + e, hk), n);
                }
                if (n < rowb) {
                    memset(kd + n, 0, rowb - n);
                    memset(vd + n, 0, rowb - n);
                }
            }
        for (int64_t hk = 0; hk < Hkv; hk++)
            for (int64_t g = 0; g < Rh; g += 4) {
                const int nr = Rh - g < 4 ? (int)(Rh - g) : 4;
                const int64_t r = hk * Rh + g;
                group_block(s, r, nr, j0, nk, m + r, l + r, acc + r * Dp, kbuf + (size_t)(hk * LA_VL) * rowb, rowb,
                            vbuf + (size_t)(hk * LA_VL) * rowb, rowb, Dp, DT, NULL);
            }
    }
}

static void chunk_all(const seq_state *s, int64_t c0, int64_t c1, char *kbuf, char *vbuf, float *m, float *l,
                      float *acc) {
    const la_dtype t = s->p->k.dtype;
#define LA_CHUNK_ALL_DT(DPV)                                                                     \
    do {                                                                                         \
        if (t == LA_F16) chunk_all_dp(s, c0, c1, kbuf, vbuf, m, l, acc, DPV, LA_F16);            \
        else if (t == LA_BF16) chunk_all_dp(s, c0, c1, kbuf, vbuf, m, l, acc, DPV, LA_BF16);     \
        else chunk_all_dp(s, c0, c1, kbuf, vbuf, m, l, acc, DPV, LA_F32);                        \
    } while (0)
    if (s->Dp == 128) LA_CHUNK_ALL_DT(128);
    else if (s->Dp == 64) LA_CHUNK_ALL_DT(64);
    else LA_CHUNK_ALL_DT(s->Dp);
#undef LA_CHUNK_ALL_DT
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

la_status LA_ISA_FN(la_cpu_attention_decode_kernel)(const la_attn_decode_problem *dp, void *mem) {
    const la_attn_problem *p = &dp->fwd.a;
    const la_attn_forward_problem *fp = &dp->fwd;
    const int nthreads = p->threads > 0 ? p->threads : 1;
    const int64_t B = p->num_seqs, Lq = p->Lq, H = p->H, D = p->D, Dp = tg_round_up(D, LA_VL), R = H * Lq;
    const bool softmax = p->rule.score == LA_SCORE_SOFTMAX, fast = grouped(p);
    /* a head's rows adjacent (the KV cache's head-major pages, or one K/V
     * head): items per head, blocks read in place */
    const bool inplace = p->k.token_stride == D && p->v.token_stride == D;
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
    /* one item loop for the three paths: an item is (sequence, chunk) of
     * every K/V head, or (sequence, K/V head, chunk) where blocks are read
     * in place (hpi = Hkv heads per sequence and chunk) */
    const bool per_head = fast && inplace;
    const int64_t hpi = per_head ? p->Hkv : 1, Rh = R / hpi;

#pragma omp parallel num_threads(nthreads)
    {
        float *kbuf = thread_bufs + (size_t)la_thread_id() * lay.per_thread, *vbuf = kbuf + LA_VL * p->Hkv * Dp;
        merge_part *parts = (merge_part *)(kbuf + lay.kv_block);
        float *merged = (float *)parts + lay.merge_parts;
        float *run_m = merged + Dp, *run_l = run_m + R;
        /* no barrier after the items: the thread finishing a group's last
         * chunk merges the group's rows (merge_group_done) */
#pragma omp for schedule(dynamic, 1) nowait
        for (int64_t it = 0; it < items * hpi; it++) {
            const int64_t c = it % nchunks, bh = it / nchunks, b = bh / hpi, hk = bh % hpi;
            const int64_t lk = la_kv_len(dp, b), row = (b * nchunks + c) * R + hk * Rh;
            seq_state s = {.dp = dp, .p = p, .b = b, .lk = lk, .R = R, .Dp = Dp, .q = qs + b * R * Dp,
                           .lo = lo + b * R, .hi = hi + b * R};
            const int64_t c0 = c * chunk_len, c1 = c0 + chunk_len < lk ? c0 + chunk_len : lk > c0 ? lk : c0;
            float *a = pacc + (size_t)row * Dp;
            if (!fast) {
                chunk(&s, c0, c1, kbuf, vbuf, pm + row, pl + row, a);
            } else {
                if (per_head) head_chunk(&s, hk, c0, c1, (char *)kbuf, (char *)vbuf, run_m, run_l, a);
                else chunk_all(&s, c0, c1, (char *)kbuf, (char *)vbuf, run_m, run_l, a);
                memcpy(pm + row, run_m, sizeof(float) * (size_t)Rh);
                memcpy(pl + row, run_l, sizeof(float) * (size_t)Rh);
            }
            if (!merge_group_done(&done[bh], (int32_t)nchunks)) continue;
            /* merge the chunks of each of the group's rows: chunk c's
             * accumulator weighted by its max and carrying its sum
             * (softmax), or summed (sigmoid, which has no normaliser) */
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
    }
    return LA_OK;
}
