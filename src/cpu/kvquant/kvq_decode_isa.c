/* Decode attention straight over quantised KV pages (backend/kvq_problem.h),
 * written once and compiled per instruction set (cpu/isa.h).
 *
 * Work item = one (sequence, KV head, chunk of KVQ_CHUNK slots): a head's
 * pages are one contiguous region, so an item streams codes in address
 * order, and every item of a head may have its own length (ragged heads
 * after eviction need no view of their own). Each K/V code is widened
 * once and used by the G * Lq query rows of the head (grouped-query
 * attention): in the registers of the chunk passes where D, the value
 * group and the key group are whole vectors (the model's shapes; keys
 * channel-major, so q.k has the tokens in the lanes), else into per-thread
 * buffers a block of LA_VL tokens at a time (block).
 *
 * Keys, per-channel (scale s_d, zero z_d) per key group:
 *   q . k = sum_d (q_d s_d) code_d + sum_d q_d z_d,
 * so once per (row, group) the kernel folds the scales into the query
 * (qf = q * s) and takes the zero term as a constant bias; the per-token
 * work is a dot product with the widened codes. Values, per-token (scale,
 * zero) per channel group: the chunk passes fold the token's scale into
 * the softmax weight and add the zero term once per chunk; the
 * buffered path dequantises the rows as it widens them (one FMA per
 * element), then p . v accumulates as for float pages. The f32 window is
 * read as it is.
 *
 * Bytes read per token and head, int8 with D = 64, key group 32, value
 * group 32: 64 + 64 codes, 8 for the token's value scales, 256 / 32 = 8 for
 * its share of the key group's scales: 144 against f32's 512 (28%).
 *
 * The split is the float decode's (attention/decode_isa.c): chunk c holds
 * slots [c * 256, (c + 1) * 256), whatever the threads or page size, and
 * the chunks are merged by log-sum-exp in chunk order. */
#include "cpu/isa.h"
#include "cpu/tile_gemm.h"
#include "cpu/attention/merge_rows.h"
#include "cpu/attention/decode_simd.h"
#include "cpu/attention/decode_block.h"
#include "cpu/kvquant/kvq_kernels.h"

#include "base/parallel.h"

#define KVQ_CHUNK 256 /* = DECODE_CHUNK of the float decode: the same split points */
/* Blocks of LA_VL keys ahead whose code rows a block prefetches, K rows
 * during q.k and V rows during P.V (db_prefetch: spread over the arithmetic; as the float decode's
 * DECODE_PREFETCH_BLOCKS). Prefetches change no result. */
#ifndef KVQ_PREFETCH_BLOCKS /* -D at build time for A/B */
#define KVQ_PREFETCH_BLOCKS 2
#endif
/* q.k runs ahead whose K codes a run prefetches (scores_cm / scores_vq's
 * pfk; -D at build time for A/B). With int8 q.k and P.V a run of the
 * model's 32-token key groups is short: 1 run ahead left the codes' loads
 * waiting (s23-pv, 32K on Zen 5: best ms 1.69 at 1 and 2, 1.62 at 3) */
#ifndef KVQ_K_AHEAD
#define KVQ_K_AHEAD 3
#endif
/* Quantised blocks per q.k run of the chunk passes: NR x KVQ_TB score
 * vectors in registers (12 of AVX2's 16 for the model's 3 rows). */
#define KVQ_TB 4


typedef struct {
    const la_kvq_decode_problem *p;
    int64_t R, Dp, len, qlen;
    const char *kpages, *vpages; /* this (head, seq)'s regions */
    const float *wk, *wv;        /* its window */
    const float *qs;             /* [R][Dp] scaled queries */
    const int64_t *hi;           /* [R] visible slots [0, hi) */
    float *qf, *bias, *kbuf, *vbuf, *sc; /* per-thread scratch */
    float *vsc;                          /* a block's value (scale, zero) pairs as f32 */
    float *ctmp, *cvs;                   /* a chunk's value scales: as stored, and by group (chunk_value_scales) */
    /* the chunk-pass path: the K and V code rows of each block of the
     * chunk's quantised slots and of the KVQ_PREFETCH_BLOCKS blocks after
     * them (NULL past the chunk's quantised slots: nothing to prefetch), set
     * once per chunk (pass_chunk) so the passes divide by no page size:
     * P.V computed a page and offset with idiv per block and channel slice */
    const char *krow[KVQ_CHUNK / LA_VL + KVQ_K_AHEAD * KVQ_TB], *vrow[KVQ_CHUNK / LA_VL + KVQ_PREFETCH_BLOCKS];
    const uint16_t *kfold[KVQ_CHUNK / LA_VL]; /* a block's key group scales where it starts one (or the chunk), else NULL */
    int kleft[KVQ_CHUNK / LA_VL];             /* blocks from this one to its key group's end */
    /* the chunk passes' int8 q.k (scores_vq; AVX-512 with VNNI and VBMI,
     * unless the cache asks for exact queries): per row the folded query
     * rounded to int8 ([R][Dp]) and its scale */
    bool vq;
    int8_t *q8;
    float *qsc;
} item_state;

/* The chunk's running softmax per row. */
typedef struct {
    float *m, *l, *acc;
} partial;

#define ACC_VECTORS 8
static inline void accumulate_pv(float *a, const float *vbuf, vf p, int64_t Dp) {
    int64_t d = 0;
    for (; d + ACC_VECTORS * LA_VL <= Dp; d += ACC_VECTORS * LA_VL) {
        vf o[ACC_VECTORS];
        for (int k = 0; k < ACC_VECTORS; k++) o[k] = vf_load(a + d + k * LA_VL);
        for (int e = 0; e < LA_VL; e++) {
            const vf pe = vf_set1(p[e]);
            for (int k = 0; k < ACC_VECTORS; k++) o[k] = vf_fma(pe, vf_load(vbuf + e * Dp + d + k * LA_VL), o[k]);
        }
        for (int k = 0; k < ACC_VECTORS; k++) vf_store(a + d + k * LA_VL, o[k]);
    }
    for (; d < Dp; d += LA_VL) {
        vf o = vf_load(a + d);
        for (int e = 0; e < LA_VL; e++) o = vf_fma(vf_set1(p[e]), vf_load(vbuf + e * Dp + d), o);
        vf_store(a + d, o);
    }
}

static inline vf vf_from_codes(const uint8_t *row, int bits, int64_t d) {
    return bits == 8 ? vf_from_u8(row + d) : vf_from_u4(row + d / 2);
}

/* dst[0..D) = the codes of one row, as floats (no scale): a vector at a
 * time where D is a multiple of LA_VL (the model's shapes), else a lane at
 * a time. */
static inline void widen_codes(float *dst, const uint8_t *src, int bits, int64_t D) {
    if (D % LA_VL == 0) {
        for (int64_t d = 0; d < D; d += LA_VL) vf_store(dst + d, vf_from_codes(src, bits, d));
    } else if (bits == 8) {
        for (int64_t d = 0; d < D; d++) dst[d] = (float)src[d];
    } else {
        for (int64_t i = 0; i < D / 2; i++) {
            dst[2 * i] = (float)(src[i] & 15);
            dst[2 * i + 1] = (float)(src[i] >> 4);
        }
    }
}

/* dst[0..D) = the codes of token t of a key group (codes gc channel-major,
 * kg tokens: backend/kvq_problem.h) as floats, a lane at a time (the
 * formats that do not take the chunk passes). */
static inline void widen_key_codes(float *dst, const uint8_t *gc, int bits, int64_t kg, int64_t t, int64_t D) {
    for (int64_t d = 0; d < D; d++) dst[d] = (float)la_kvq_code(gc, bits, d * kg + t);
}

/* dst[0..D) = zero + scale * code per value group of one token; sz holds
 * the token's (scale, zero) pairs as f32. Where the groups are whole
 * vectors, each vector is widened and scaled in registers (one FMA). */
static inline void dequant_value_row(float *dst, const uint8_t *src, const float *sz, const la_kvq_format *f) {
    const int64_t vg = f->value_group;
    if (vg % LA_VL == 0) {
        for (int64_t g = 0; g < f->D / vg; g++) {
            const vf sc = vf_set1(sz[2 * g]), z = vf_set1(sz[2 * g + 1]);
            for (int64_t d = g * vg; d < (g + 1) * vg; d += LA_VL) vf_store(dst + d, vf_fma(sc, vf_from_codes(src, f->bits, d), z));
        }
        return;
    }
    widen_codes(dst, src, f->bits, f->D);
    for (int64_t g = 0; g < f->D / vg; g++) {
        const float sc = sz[2 * g], z = sz[2 * g + 1];
        for (int64_t d = g * vg; d < (g + 1) * vg; d++) dst[d] = z + sc * dst[d];
    }
}

/* dst[0..n) = the f16 values at src, a vector at a time (never reading
 * past src[n - 1]). */
static inline void widen_f16(float *dst, const uint16_t *src, int64_t n) {
    int64_t i = 0;
    for (; i + LA_VL <= n; i += LA_VL) vf_store(dst + i, vf_load_f16(src + i));
    for (; i < n; i++) dst[i] = la_f16_to_f32(src[i]);
}

/* Keys [j0, j0 + nk) (nk <= LA_VL) are in kbuf / vbuf, rows Dp apart (rows
 * past nk zero): score every row with qf and bias, update its running
 * softmax, 4 rows at a time sharing each K and V load (db_block,
 * attention/decode_block.h; Dp a constant for the model's 64 and 128). */
static inline __attribute__((always_inline)) void block_dp(const item_state *s, const float *qf, const float *bias,
                                                            int64_t j0, int64_t nk, partial *pt, const int64_t Dp) {
    const vi lane = vi_iota();
    const char *kb = (const char *)s->kbuf, *vb = (const char *)s->vbuf;
    const size_t rs = sizeof(float) * (size_t)Dp;
    for (int64_t r = 0; r < s->R; r += 4) {
        const int nr = s->R - r < 4 ? (int)(s->R - r) : 4;
        vi vis[4];
        bool any = false;
        for (int rr = 0; rr < nr; rr++) {
            const int64_t lim = s->hi[r + rr] - j0 < nk ? s->hi[r + rr] - j0 : nk;
            vis[rr] = lane < (vi){0} + (int32_t)(lim < 0 ? 0 : lim);
            any |= lim > 0;
        }
        if (!any) continue;
        const float *q = qf + r * Dp, *bs = bias ? bias + r : NULL;
        float *m = pt->m + r, *l = pt->l + r, *acc = pt->acc + r * Dp;
        switch (nr) {
        case 1: db_block(q, bs, vis, m, l, acc, kb, rs, vb, rs, 1, Dp, LA_F32, NULL); break;
        case 2: db_block(q, bs, vis, m, l, acc, kb, rs, vb, rs, 2, Dp, LA_F32, NULL); break;
        case 3: db_block(q, bs, vis, m, l, acc, kb, rs, vb, rs, 3, Dp, LA_F32, NULL); break;
        default: db_block(q, bs, vis, m, l, acc, kb, rs, vb, rs, 4, Dp, LA_F32, NULL); break;
        }
    }
}

static void block(const item_state *s, const float *qf, const float *bias, int64_t j0, int64_t nk, partial *pt) {
    if (nk < LA_VL) { /* rows past the block's end: zero (finite; their lanes are masked, their weights 0) */
        memset(s->kbuf + nk * s->Dp, 0, sizeof(float) * (size_t)((LA_VL - nk) * s->Dp));
        memset(s->vbuf + nk * s->Dp, 0, sizeof(float) * (size_t)((LA_VL - nk) * s->Dp));
    }
    /* Dp at run time: the model's formats take the chunk passes (this is
     * the path of the formats that do not fit them) */
    block_dp(s, qf, bias, j0, nk, pt, s->Dp);
}

#define QB_MAXG 16 /* value groups per row on the chunk-pass path */

/* Whether this format's rows suit the chunk passes: rows of whole vectors
 * (no padding columns to read past a code row), value groups of whole
 * vectors, at most QB_MAXG of them. */
static bool rows_fit(const la_kvq_format *f) {
    return f->D % LA_VL == 0 && f->value_group % LA_VL == 0 && f->D / f->value_group <= QB_MAXG &&
           (f->bits == 8 || f->bits == 4);
}

/* Quantised slots [a, b) of one key group. */
static void quant_segment(const item_state *s, int64_t a, int64_t b, partial *pt) {
    const la_kvq_format *f = &s->p->kv.f;
    const int64_t D = f->D, Dp = s->Dp, ps = f->page_size;
    const int64_t page = a / ps, g = (a % ps) / f->key_group;
    const char *kp = s->kpages + (size_t)page * f->k_page, *vp = s->vpages + (size_t)page * f->v_page;
    const uint16_t *ks = la_kvq_key_scales(f, kp, g);
    /* fold the group's channel scales into the queries, once per group */
    float *sc = s->sc, *zc = s->sc + Dp;
    widen_f16(sc, ks, D);
    widen_f16(zc, ks + D, D);
    for (int64_t d = D; d < Dp; d++) sc[d] = zc[d] = 0.0f;
    for (int64_t r = 0; r < s->R; r++) {
        const float *q = s->qs + r * Dp;
        float *o = s->qf + r * Dp;
        vf bz = vf_set1(0);
        for (int64_t d = 0; d < Dp; d += LA_VL) {
            const vf qv = vf_load(q + d);
            vf_store(o + d, qv * vf_load(sc + d));
            bz = vf_fma(qv, vf_load(zc + d), bz);
        }
        s->bias[r] = vf_reduce_add(bz);
    }
    const int64_t pairs = 2 * (D / f->value_group), kg = f->key_group;
    const uint8_t *gc = la_kvq_key_codes(f, kp, g);
    for (int64_t j0 = a; j0 < b; j0 += LA_VL) {
        const int64_t nk = b - j0 < LA_VL ? b - j0 : LA_VL;
        /* the block's value scales are adjacent in the page (a block never leaves its group's page) */
        widen_f16(s->vsc, la_kvq_value_scales(f, vp, j0 % ps), nk * pairs);
        for (int64_t e = 0; e < nk; e++) {
            const int64_t t = (j0 + e) % ps;
            widen_key_codes(s->kbuf + e * Dp, gc, f->bits, kg, t % kg, D);
            dequant_value_row(s->vbuf + e * Dp, (const uint8_t *)vp + (size_t)t * f->code_row, s->vsc + e * pairs, f);
        }
        block(s, s->qf, s->bias, j0, nk, pt);
    }
}

/* The chunk-pass path: for formats whose rows fit (rows_fit) and
 * whose key groups are whole blocks (the model's shapes), an item's rows
 * go through the chunk in three passes, 4 rows at a time, as the float
 * decode's grouped path (attention/decode_isa.c): q.k of every block (the
 * query folded per key group as in quant_segment, then runs of blocks with
 * the tokens in the lanes over the channel-major codes, scores_cm; the
 * window's f32 rows with the plain scaled query), scores kept with a running vector max per row; one
 * exp pass against the chunk's max; then P.V per value group with each
 * row's output vectors in registers over the whole chunk, the group's
 * per-token scales folded into the weights (wq = p * s) and its zero term
 * sum_e p_e z_e added once per chunk. The online form (s15's qblock) paid per
 * 8-key block and row a max tree, a rescale, the accumulator's load and
 * store, a sum tree, the value scales gathered (vgatherdps, slow on Zen 1)
 * and a lane-sum tree for the zero terms. The order of every sum is fixed
 * by the slots' positions (qlen, a multiple of the key group, is one), so
 * results do not depend on threads or page size. */

/* Whether the chunk-pass path takes this format: rows that fit, and key
 * groups of whole blocks (a block then never crosses a key group, nor a
 * page, and the quantised slots of a chunk are whole blocks). */
static bool chunk_pass_fits(const la_kvq_format *f) { return rows_fit(f) && f->key_group % LA_VL == 0; }

/* The end of the chunk's quantised slots [c0, qe), the window's [qe, c1). */
static inline int64_t quant_end(const item_state *s, int64_t c0, int64_t c1) {
    return s->qlen < c0 ? c0 : s->qlen > c1 ? c1 : s->qlen;
}

/* The chunk's value scales, quantised slots [c0, qe): vs + g * 2 * KVQ_CHUNK
 * holds group g's scales by slot, KVQ_CHUNK later its zeros (tmp: the
 * pairs as stored, widened). */
static void chunk_value_scales(const item_state *s, int64_t c0, int64_t qe, float *tmp, float *vs) {
    const la_kvq_format *f = &s->p->kv.f;
    const int64_t ps = f->page_size, ng = f->D / f->value_group, pairs = 2 * ng;
    for (int64_t j = c0; j < qe;) {
        const int64_t page = j / ps, e = (page + 1) * ps < qe ? (page + 1) * ps : qe;
        widen_f16(tmp + (j - c0) * pairs, la_kvq_value_scales(f, s->vpages + (size_t)page * f->v_page, j % ps),
                  (e - j) * pairs);
        j = e;
    }
    int64_t j0 = 0;
#if defined(LA_ISA_AVX2)
    /* two value groups (the model's int8 values): 8 slots' 4 floats are a
     * 4 x 8 transpose, slots j and j + 4 in the halves of one vector, each
     * half transposed 4 x 4 (in-half unpacks; the scalar copies below took
     * 16 instructions per slot, a tenth of the kernel's) */
    if (pairs == 4)
        for (; j0 + 8 <= qe - c0; j0 += 8) {
            __m256 a[4], t[4];
            for (int i = 0; i < 4; i++)
                a[i] = _mm256_insertf128_ps(_mm256_castps128_ps256(_mm_loadu_ps(tmp + (j0 + i) * 4)),
                                            _mm_loadu_ps(tmp + (j0 + i + 4) * 4), 1);
            t[0] = _mm256_unpacklo_ps(a[0], a[1]), t[1] = _mm256_unpacklo_ps(a[2], a[3]);
            t[2] = _mm256_unpackhi_ps(a[0], a[1]), t[3] = _mm256_unpackhi_ps(a[2], a[3]);
            _mm256_storeu_ps(vs + j0, _mm256_castpd_ps(_mm256_unpacklo_pd(_mm256_castps_pd(t[0]), _mm256_castps_pd(t[1]))));
            _mm256_storeu_ps(vs + KVQ_CHUNK + j0,
                             _mm256_castpd_ps(_mm256_unpackhi_pd(_mm256_castps_pd(t[0]), _mm256_castps_pd(t[1]))));
            _mm256_storeu_ps(vs + 2 * KVQ_CHUNK + j0,
                             _mm256_castpd_ps(_mm256_unpacklo_pd(_mm256_castps_pd(t[2]), _mm256_castps_pd(t[3]))));
            _mm256_storeu_ps(vs + 3 * KVQ_CHUNK + j0,
                             _mm256_castpd_ps(_mm256_unpackhi_pd(_mm256_castps_pd(t[2]), _mm256_castps_pd(t[3]))));
        }
#elif defined(LA_ISA_AVX512)
    /* the same for 16 slots: 4 vectors of 4 slots' (s0, z0, s1, z1), two
     * levels of two-source permutes (the scalar copies were 2 x 4 loads and
     * stores per slot, more than a block's P.V of one row) */
    if (pairs == 4) {
        const __m512i i01 = _mm512_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28, 1, 5, 9, 13, 17, 21, 25, 29);
        const __m512i i23 = _mm512_add_epi32(i01, _mm512_set1_epi32(2));
        const __m512i lo = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23);
        const __m512i hi = _mm512_add_epi32(lo, _mm512_set1_epi32(8));
        for (; j0 + 16 <= qe - c0; j0 += 16) {
            const float *a = tmp + j0 * 4;
            const __m512 a0 = _mm512_loadu_ps(a), a1 = _mm512_loadu_ps(a + 16), a2 = _mm512_loadu_ps(a + 32),
                         a3 = _mm512_loadu_ps(a + 48);
            const __m512 x0 = _mm512_permutex2var_ps(a0, i01, a1), x1 = _mm512_permutex2var_ps(a2, i01, a3);
            const __m512 y0 = _mm512_permutex2var_ps(a0, i23, a1), y1 = _mm512_permutex2var_ps(a2, i23, a3);
            _mm512_storeu_ps(vs + j0, _mm512_permutex2var_ps(x0, lo, x1));
            _mm512_storeu_ps(vs + KVQ_CHUNK + j0, _mm512_permutex2var_ps(x0, hi, x1));
            _mm512_storeu_ps(vs + 2 * KVQ_CHUNK + j0, _mm512_permutex2var_ps(y0, lo, y1));
            _mm512_storeu_ps(vs + 3 * KVQ_CHUNK + j0, _mm512_permutex2var_ps(y0, hi, y1));
        }
    }
    /* four value groups (D 128 over groups of 32): 16 slots' 8 floats, an
     * 8 x 16 transpose in three levels of two-source permutes: 4 slots'
     * channels 0-3 and 4-7 (c * 4 + slot), then 8 slots' channel pairs, then
     * all 16 slots of one channel (the scalar copies were a tenth of the
     * kernel's samples at 32K) */
    if (pairs == 8) {
        const __m512i c4lo = _mm512_setr_epi32(0, 8, 16, 24, 1, 9, 17, 25, 2, 10, 18, 26, 3, 11, 19, 27);
        const __m512i c4hi = _mm512_add_epi32(c4lo, _mm512_set1_epi32(4));
        const __m512i c2lo = _mm512_setr_epi32(0, 1, 2, 3, 16, 17, 18, 19, 4, 5, 6, 7, 20, 21, 22, 23);
        const __m512i c2hi = _mm512_add_epi32(c2lo, _mm512_set1_epi32(8));
        const __m512i lo = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23);
        const __m512i hi = _mm512_add_epi32(lo, _mm512_set1_epi32(8));
        for (; j0 + 16 <= qe - c0; j0 += 16) {
            __m512 b[2][4], x[4][2]; /* b[channels 0-3 | 4-7][4 slots], x[channel pair][slots 0-7 | 8-15] */
            for (int k = 0; k < 4; k++) {
                const float *a = tmp + (j0 + 4 * k) * 8;
                const __m512 a0 = _mm512_loadu_ps(a), a1 = _mm512_loadu_ps(a + 16);
                b[0][k] = _mm512_permutex2var_ps(a0, c4lo, a1), b[1][k] = _mm512_permutex2var_ps(a0, c4hi, a1);
            }
            for (int h = 0; h < 2; h++)
                for (int half = 0; half < 2; half++) {
                    x[2 * half][h] = _mm512_permutex2var_ps(b[half][2 * h], c2lo, b[half][2 * h + 1]);
                    x[2 * half + 1][h] = _mm512_permutex2var_ps(b[half][2 * h], c2hi, b[half][2 * h + 1]);
                }
            for (int cp = 0; cp < 4; cp++) {
                _mm512_storeu_ps(vs + 2 * cp * KVQ_CHUNK + j0, _mm512_permutex2var_ps(x[cp][0], lo, x[cp][1]));
                _mm512_storeu_ps(vs + (2 * cp + 1) * KVQ_CHUNK + j0, _mm512_permutex2var_ps(x[cp][0], hi, x[cp][1]));
            }
        }
    }
#endif
    for (int64_t g = 0; g < ng; g++) {
        float *sg = vs + g * 2 * KVQ_CHUNK, *zg = sg + KVQ_CHUNK;
        for (int64_t j = j0; j < qe - c0; j++) sg[j] = tmp[j * pairs + 2 * g], zg[j] = tmp[j * pairs + 2 * g + 1];
    }
}

/* Rows [r, r + NR): qf = qs * the key group's channel scales, bias = qs .
 * its zeros (ks: the group's f16 scales then zeros, as quant_segment), for
 * the chunk passes, where D = Dp (rows_fit) and Dp is a constant for the
 * model's shapes: the scales and zeros widened in the
 * registers and each row's bias summed as a tree. The generic form's
 * run-time loops, its scale buffer and vf_reduce_add's serial chain of
 * 16 scalar adds per row were an eighth of the AVX-512 kernel's samples
 * (one fold per 32-token key group). */
#if LA_VL == 16
/* Rows [r, r + NR) of qf (just folded) rounded to int8 for scores_vq: per
 * row one scale sq = max_d |qf_d| / 127 and q8_d = round(qf_d / sq), so
 * |qf_d - sq q8_d| <= sq / 2. The rounding errors e_d = qf_d - sq q8_d
 * times a code's middle value `mid` (127.5 for int8, 7.5 for int4) go into
 * the bias: the score's error is then sum_d e_d (code_d - mid), at most
 * D mid sq / 2, where without it the codes' full size (code_d up to 2 mid)
 * multiplied the errors, about twice as much on random codes. */
static inline __attribute__((always_inline)) void fold_rows_q8(const item_state *s, int64_t r, const int NR,
                                                                const int64_t Dp, const float mid) {
#pragma GCC unroll 4
    for (int rr = 0; rr < NR; rr++) {
        const float *qf = s->qf + (r + rr) * Dp;
        __m512 mx = _mm512_setzero_ps();
        for (int64_t d = 0; d < Dp; d += LA_VL) mx = _mm512_max_ps(mx, _mm512_abs_ps(_mm512_loadu_ps(qf + d)));
        const float amax = _mm512_reduce_max_ps(mx), sq = amax / 127.0f;
        const __m512 inv = _mm512_set1_ps(amax > 0 ? 127.0f / amax : 0.0f), vsq = _mm512_set1_ps(sq);
        __m512 err = _mm512_setzero_ps();
        for (int64_t d = 0; d < Dp; d += LA_VL) {
            const __m512 x = _mm512_loadu_ps(qf + d);
            const __m512i qi = _mm512_cvtps_epi32(_mm512_mul_ps(x, inv)); /* nearest, |.| <= 127 */
            _mm_storeu_si128((__m128i *)(s->q8 + (r + rr) * Dp + d), _mm512_cvtepi32_epi8(qi));
            err = _mm512_add_ps(err, _mm512_fnmadd_ps(vsq, _mm512_cvtepi32_ps(qi), x));
        }
        s->qsc[r + rr] = sq;
        s->bias[r + rr] += mid * tree_add((vf)err);
    }
}
#endif

static inline __attribute__((always_inline)) void fold_rows_dp(const item_state *s, const uint16_t *ks, int64_t r,
                                                                const int NR, const int64_t Dp, const float mid) {
    vf bz[4];
#pragma GCC unroll 4
    for (int rr = 0; rr < NR; rr++) bz[rr] = vf_set1(0);
    for (int64_t d = 0; d < Dp; d += LA_VL) {
        const vf sc = vf_load_f16(ks + d), zc = vf_load_f16(ks + Dp + d);
#pragma GCC unroll 4
        for (int rr = 0; rr < NR; rr++) {
            const vf qv = vf_load(s->qs + (r + rr) * Dp + d);
            vf_store(s->qf + (r + rr) * Dp + d, qv * sc);
            bz[rr] = vf_fma(qv, zc, bz[rr]);
        }
    }
#pragma GCC unroll 4
    for (int rr = 0; rr < NR; rr++) s->bias[r + rr] = tree_add(bz[rr]);
#if LA_VL == 16
    if (s->vq) fold_rows_q8(s, r, NR, Dp, mid);
#endif
}

/* P.V output vectors per row in registers on the chunk-pass path: DB_NV,
 * or 4 where at most 3 rows share them (12 accumulators, a broadcast
 * weight per row and the widened code vector: 16 registers on AVX2): one
 * value group of 32 channels per slice for the model's int8 values, so
 * each key's weights are broadcast once per group rather than twice. */
#define KVQ_NV_MAX 4
/* Tokens of a block unrolled in the P.V loops over code rows: 16 (the
 * whole block) gave the same speed as 4 and four times the code, which with
 * every (Dp, code type, rows) specialisation made the ASan build's compile
 * of this file take minutes. -D at build time for A/B. */
#ifndef KVQ_PV_UNROLL
#define KVQ_PV_UNROLL 4
#endif
#define KVQ_PRAGMA(x) _Pragma(#x)
#define KVQ_UNROLL(n) KVQ_PRAGMA(GCC unroll n)
#ifndef KVQ_NV4 /* -DKVQ_NV4=0 at build time: DB_NV slices only, for same-run A/B */
#define KVQ_NV4 1
#endif

/* P.V of channels [d0, d0 + NV * LA_VL) over the chunk's blocks, NR rows:
 * quantised blocks (codes DT, rows at s->vrow) with weights wq, window
 * blocks (f32 rows) with weights w; acc + rr * Dp = the sum + Z[rr]. */
static inline __attribute__((always_inline)) void pv_slice(const item_state *s, int64_t c0, int64_t c1, int64_t qe,
                                                           const bool *seen, const float (*wq)[KVQ_CHUNK],
                                                           const float (*w)[KVQ_CHUNK], const float *Z, float *acc,
                                                           int64_t d0, const int NV, const int NR, const int64_t Dp,
                                                           const la_dtype DT) {
    const int64_t D = s->p->kv.f.D;
    const size_t rs = (size_t)(Dp * (DT == DB_U8 ? 8 : 4) / 8); /* code_row (D = Dp here) */
    vf o[4][KVQ_NV_MAX];
#pragma GCC unroll 4
    for (int rr = 0; rr < NR; rr++)
#pragma GCC unroll 4
        for (int k = 0; k < NV; k++) o[rr][k] = vf_set1(0);
    for (int64_t j0 = c0; j0 < qe; j0 += LA_VL) {
        const int64_t b = (j0 - c0) / LA_VL;
        if (!seen[b]) continue;
        const char *vb = s->vrow[b];
        KVQ_UNROLL(KVQ_PV_UNROLL)
        for (int e = 0; e < LA_VL; e++) {
            if (NV > DB_NV) { /* one code vector live at a time (the registers are the accumulators') */
                vf wv[4];
#pragma GCC unroll 4
                for (int rr = 0; rr < NR; rr++) wv[rr] = vf_set1(wq[rr][b * LA_VL + e]);
#pragma GCC unroll 4
                for (int k = 0; k < NV; k++) {
                    const vf vv = db_load(vb + (size_t)e * rs, d0 + k * LA_VL, DT);
#pragma GCC unroll 4
                    for (int rr = 0; rr < NR; rr++) o[rr][k] = vf_fma(wv[rr], vv, o[rr][k]);
                }
                continue;
            }
            vf vv[KVQ_NV_MAX];
#pragma GCC unroll 4
            for (int k = 0; k < NV; k++) vv[k] = db_load(vb + (size_t)e * rs, d0 + k * LA_VL, DT);
#pragma GCC unroll 4
            for (int rr = 0; rr < NR; rr++)
#pragma GCC unroll 4
                for (int k = 0; k < NV; k++) o[rr][k] = vf_fma(vf_set1(wq[rr][b * LA_VL + e]), vv[k], o[rr][k]);
        }
    }
    for (int64_t j0 = qe; j0 < c1; j0 += LA_VL) {
        const int64_t b = (j0 - c0) / LA_VL;
        if (!seen[b]) continue;
        /* a short last block was copied zero-padded into vbuf before the pass */
        const char *vb = c1 - j0 >= LA_VL ? (const char *)(s->wv + (j0 - s->qlen) * D) : (const char *)s->vbuf;
#pragma GCC unroll 4 /* the window: at most window_rows slots per head, in its last chunk */
        for (int e = 0; e < LA_VL; e++) {
#pragma GCC unroll 4
            for (int k = 0; k < NV; k++) {
                const vf vv = db_load(vb + (size_t)e * sizeof(float) * (size_t)Dp, d0 + k * LA_VL, LA_F32);
#pragma GCC unroll 4
                for (int rr = 0; rr < NR; rr++) o[rr][k] = vf_fma(vf_set1(w[rr][b * LA_VL + e]), vv, o[rr][k]);
            }
        }
    }
#pragma GCC unroll 4
    for (int rr = 0; rr < NR; rr++)
#pragma GCC unroll 4
        for (int k = 0; k < NV; k++) vf_store(acc + rr * Dp + d0 + k * LA_VL, o[rr][k] + vf_set1(Z[rr]));
}

#if LA_VL == 16
/* AVX-512: P.V over a slice of KVQ_SV vectors (64 channels) whatever its
 * value groups (VPV vectors per group: 1, 2, or 4 and more, one group per
 * slice), so the model's D = 64 with 32-channel groups is one pass over
 * the chunk's value rows with 3 x 4 accumulators, each widened code vector
 * feeding its rows' FMAs. pv_slice's slices of one group had a single
 * output vector per row there (DB_NV = 4 vectors do not fit a 2-vector
 * group): 3 dependent FMA chains over the whole chunk, latency-bound at an
 * FMA's 4 cycles per token and slice, and each code row read in 4 passes. */
#define KVQ_SV 4
/* The end of both AVX-512 P.V forms: the full-precision window's slots
 * (f32 values, in the item's last chunk) into the accumulators, then each
 * row's zero term added as they are stored. */
static inline __attribute__((always_inline)) void pv_window_finish(const item_state *s, int64_t c0, int64_t c1,
                                                                   int64_t qe, const bool *seen,
                                                                   const float (*w)[KVQ_CHUNK],
                                                                   const float *const zk[KVQ_SV], vf o[4][KVQ_SV],
                                                                   float *acc, int64_t d0, const int NR,
                                                                   const int64_t Dp) {
    const int64_t D = s->p->kv.f.D;
    for (int64_t j0 = qe; j0 < c1; j0 += LA_VL) {
        const int64_t b = (j0 - c0) / LA_VL;
        if (!seen[b]) continue;
        /* a short last block was copied zero-padded into vbuf before the pass */
        const float *vb = (c1 - j0 >= LA_VL ? s->wv + (j0 - s->qlen) * D : s->vbuf) + d0;
#pragma GCC unroll 4 /* the window: at most window_rows slots per head, in its last chunk */
        for (int e = 0; e < LA_VL; e++) {
#pragma GCC unroll 4
            for (int k = 0; k < KVQ_SV; k++) {
                const vf vv = vf_load(vb + e * Dp + k * LA_VL);
#pragma GCC unroll 4
                for (int rr = 0; rr < NR; rr++) o[rr][k] = vf_fma(vf_set1(w[rr][b * LA_VL + e]), vv, o[rr][k]);
            }
        }
    }
#pragma GCC unroll 4
    for (int rr = 0; rr < NR; rr++)
#pragma GCC unroll 4
        for (int k = 0; k < KVQ_SV; k++)
            vf_store(acc + rr * Dp + d0 + k * LA_VL, o[rr][k] + vf_set1(zk[k][rr]));
}
static inline __attribute__((always_inline)) void pv_multi(const item_state *s, int64_t c0, int64_t c1, int64_t qe,
                                                           const bool *seen, const float (*wq)[4][KVQ_CHUNK],
                                                           const float (*w)[KVQ_CHUNK], const float (*Z)[4],
                                                           float *acc, int64_t d0, const int NR, const int64_t Dp,
                                                           const la_dtype DT, const int VPV, int64_t g1) {
    /* vector k's weights: group k (VPV 1), else group 0 for k < 2 and g1
     * for k >= 2 (1 for 2-vector groups, 0 where one group covers the
     * slice: its weights broadcast twice per row, as for 2-vector groups) */
    const float(*wk[KVQ_SV])[KVQ_CHUNK];
    const float *zk[KVQ_SV];
#pragma GCC unroll 4
    for (int k = 0; k < KVQ_SV; k++) {
        const int64_t gi = VPV == 1 ? k : k < 2 ? 0 : g1;
        wk[k] = wq[gi], zk[k] = Z[gi];
    }
    const size_t rs = (size_t)(Dp * (DT == DB_U8 ? 8 : 4) / 8); /* code_row (D = Dp here) */
    vf o[4][KVQ_SV];
#pragma GCC unroll 4
    for (int rr = 0; rr < NR; rr++)
#pragma GCC unroll 4
        for (int k = 0; k < KVQ_SV; k++) o[rr][k] = vf_set1(0);
    for (int64_t j0 = c0; j0 < qe; j0 += LA_VL) {
        const int64_t b = (j0 - c0) / LA_VL;
        if (!seen[b]) continue;
        /* the slice's first code of the block's first row: every load below
         * at a constant offset from it (with d0 in each offset GCC kept
         * the 64 offsets on the stack) */
        const char *vb = s->vrow[b] + (size_t)d0 * (DT == DB_U8 ? 8 : 4) / 8;
        KVQ_UNROLL(KVQ_PV_UNROLL)
        for (int e = 0; e < LA_VL; e++) {
            vf vv[KVQ_SV];
#pragma GCC unroll 4
            for (int k = 0; k < KVQ_SV; k++) vv[k] = db_load(vb + (size_t)e * rs, k * LA_VL, DT);
#pragma GCC unroll 4
            for (int rr = 0; rr < NR; rr++)
#pragma GCC unroll 4
                for (int k = 0; k < KVQ_SV; k++)
                    o[rr][k] = vf_fma(vf_set1(wk[k][rr][b * LA_VL + e]), vv[k], o[rr][k]);
        }
    }
    pv_window_finish(s, c0, c1, qe, seen, w, zk, o, acc, d0, NR, Dp);
}
#endif

/* Accumulator sets of a q.k run, even and odd channels apart on AVX-512
 * (32 registers): with the model's 32-token key groups a run is 2 blocks,
 * 2 x 3 chains over 64 channels, which one set left bound by the FMA's
 * latency (4 cycles a channel where the FMAs need 3). A constant per ISA,
 * so a block's scores do not depend on its run. */
#define KVQ_QKC (LA_VL == 16 ? 2 : 1)

/* q.k of NB consecutive blocks of one key group against NR rows, the
 * codes channel-major (backend/kvq_problem.h): channel d of block i at
 * kc + d * kcs, element i * LA_VL. The lanes are the tokens: per channel
 * one broadcast query element per row and NR * NB FMAs, no lane-sum tree;
 * every lane adds its channels in order d = 0, 1, ... (even and odd ones
 * apart where KVQ_QKC is 2, then the two sums) and then the bias,
 * so a block's scores do not depend on the run it is in (NB). s[i][rr] =
 * q_rr . k + bias[rr] for the tokens of block i. The codes of the run after
 * this one (pfk, its channels kcs bytes apart as here) are prefetched
 * while these are multiplied: a line per two channels where a group's
 * channel takes at most 32 bytes (the default 32-token groups), else a
 * line per channel. */
static inline __attribute__((always_inline)) void scores_cm(const float *qf, const float *bias, const char *kc,
                                                             size_t kcs, const char *pfk, const int NB, const int NR,
                                                             const int64_t Dp, const la_dtype DT, vf (*s)[4]) {
    vf a[KVQ_QKC][KVQ_TB][4];
#pragma GCC unroll 2
    for (int c = 0; c < KVQ_QKC; c++)
#pragma GCC unroll 4
        for (int i = 0; i < NB; i++)
#pragma GCC unroll 4
            for (int rr = 0; rr < NR; rr++) a[c][i][rr] = vf_set1(0);
    for (int64_t d = 0; d < Dp; d += 2) { /* Dp is even (whole vectors) */
        __builtin_prefetch(pfk + (size_t)d * kcs, 0, 2);
        if (kcs > 32) __builtin_prefetch(pfk + (size_t)(d + 1) * kcs, 0, 2);
#pragma GCC unroll 2
        for (int c = 0; c < 2; c++) {
            const char *row = kc + (size_t)(d + c) * kcs;
            vf q[4];
#pragma GCC unroll 4
            for (int rr = 0; rr < NR; rr++) q[rr] = vf_set1(qf[rr * Dp + d + c]);
#pragma GCC unroll 4
            for (int i = 0; i < NB; i++) {
                const vf k = db_load(row, i * LA_VL, DT);
#pragma GCC unroll 4
                for (int rr = 0; rr < NR; rr++) a[c % KVQ_QKC][i][rr] = vf_fma(q[rr], k, a[c % KVQ_QKC][i][rr]);
            }
        }
    }
#pragma GCC unroll 4
    for (int i = 0; i < NB; i++)
#pragma GCC unroll 4
        for (int rr = 0; rr < NR; rr++)
            s[i][rr] = (KVQ_QKC == 2 ? a[0][i][rr] + a[1][i][rr] : a[0][i][rr]) + vf_set1(bias[rr]);
}

#if LA_VL == 16
/* Integer q.k (AVX512-VNNI, AVX512-VBMI; inline assembly, as
 * cpu/quant/quant_dot_isa.c: the ISA copies are not compiled for them and
 * the kernel checks the CPU at run time). acc's 16 int32 lanes += the sums
 * of 4 products u8 x s8 (the u8 operand x, the s8 one the 4 bytes at q
 * broadcast): exact, no saturation (|sum| <= 255 * 127 * Dp < 2^31). */
static inline __attribute__((always_inline)) __m512i vq_dot(__m512i acc, __m512i x, const int8_t *q) {
    __asm__("vpdpbusd %2%{1to16%}, %1, %0" : "+v"(acc) : "v"(x), "m"(*(const int32_t *)q));
    return acc;
}
/* Bytes of t1 (index < 64) and t2 (64 and up) picked by idx (vpermt2b). */
static inline __attribute__((always_inline)) __m512i vq_perm2(__m512i t1, __m512i idx, __m512i t2) {
    __asm__("vpermt2b %2, %1, %0" : "+v"(t1) : "v"(idx), "v"(t2));
    return t1;
}

/* Byte tables of the gathers in scores_vq (vpermt2b: index < 64 from the
 * first table, 64 and up from the second): token t's 4 channel codes into
 * dword t. [0], [1]: blocks i and i + 1 of a pair, [2]: a block alone.
 * int8: a pair's first table holds channels 0, 1 (32 bytes each: both
 * blocks), the second 2, 3; alone, one table of 16 bytes a channel (both
 * operands the same). int4: the first table the low nibbles (even
 * tokens), the second the high ones (odd), 16 bytes a channel in a pair
 * (32 tokens), 8 alone. Written out by
 *   u8: pair[k][4t+c] = 64 (c / 2) + 32 (c % 2) + 16 k + t, one[4t+c] = 16 c + t
 *   u4: pair[k][4t+c] = 64 (t % 2) + 16 c + 8 k + t / 2, one[4t+c] = 64 (t % 2) + 8 c + t / 2 */
static const uint8_t vq_idx_u8[3][64] __attribute__((aligned(64))) = {
    {0, 32, 64, 96, 1, 33, 65, 97, 2, 34, 66, 98, 3, 35, 67, 99, 4, 36, 68, 100, 5, 37, 69, 101, 6, 38, 70, 102, 7, 39, 71, 103,
     8, 40, 72, 104, 9, 41, 73, 105, 10, 42, 74, 106, 11, 43, 75, 107, 12, 44, 76, 108, 13, 45, 77, 109, 14, 46, 78, 110, 15, 47, 79, 111},
    {16, 48, 80, 112, 17, 49, 81, 113, 18, 50, 82, 114, 19, 51, 83, 115, 20, 52, 84, 116, 21, 53, 85, 117, 22, 54, 86, 118, 23, 55, 87, 119,
     24, 56, 88, 120, 25, 57, 89, 121, 26, 58, 90, 122, 27, 59, 91, 123, 28, 60, 92, 124, 29, 61, 93, 125, 30, 62, 94, 126, 31, 63, 95, 127},
    {0, 16, 32, 48, 1, 17, 33, 49, 2, 18, 34, 50, 3, 19, 35, 51, 4, 20, 36, 52, 5, 21, 37, 53, 6, 22, 38, 54, 7, 23, 39, 55,
     8, 24, 40, 56, 9, 25, 41, 57, 10, 26, 42, 58, 11, 27, 43, 59, 12, 28, 44, 60, 13, 29, 45, 61, 14, 30, 46, 62, 15, 31, 47, 63},
};
static const uint8_t vq_idx_u4[3][64] __attribute__((aligned(64))) = {
    {0, 16, 32, 48, 64, 80, 96, 112, 1, 17, 33, 49, 65, 81, 97, 113, 2, 18, 34, 50, 66, 82, 98, 114, 3, 19, 35, 51, 67, 83, 99, 115,
     4, 20, 36, 52, 68, 84, 100, 116, 5, 21, 37, 53, 69, 85, 101, 117, 6, 22, 38, 54, 70, 86, 102, 118, 7, 23, 39, 55, 71, 87, 103, 119},
    {8, 24, 40, 56, 72, 88, 104, 120, 9, 25, 41, 57, 73, 89, 105, 121, 10, 26, 42, 58, 74, 90, 106, 122, 11, 27, 43, 59, 75, 91, 107, 123,
     12, 28, 44, 60, 76, 92, 108, 124, 13, 29, 45, 61, 77, 93, 109, 125, 14, 30, 46, 62, 78, 94, 110, 126, 15, 31, 47, 63, 79, 95, 111, 127},
    {0, 8, 16, 24, 64, 72, 80, 88, 1, 9, 17, 25, 65, 73, 81, 89, 2, 10, 18, 26, 66, 74, 82, 90, 3, 11, 19, 27, 67, 75, 83, 91,
     4, 12, 20, 28, 68, 76, 84, 92, 5, 13, 21, 29, 69, 77, 85, 93, 6, 14, 22, 30, 70, 78, 86, 94, 7, 15, 23, 31, 71, 79, 87, 95},
};

/* scores_cm with the query rounded to int8 (fold_rows_q8): per 4 channels
 * and block the 4 channel rows' codes gathered into per-token dwords (one
 * vpermt2b for a pair of blocks) and one vpdpbusd per row, where the f32
 * form widened, converted and multiplied each code (4 x (1 + 1 + NR)
 * instructions per 16 tokens and 4 channels against 1 + 1 + NR). Integer
 * sums: exact, so a block's scores do not depend on its run either.
 * s[i][rr] = sq[rr] * q8_rr . codes + bias[rr]. */
static inline __attribute__((always_inline)) void scores_vq(const int8_t *q8, const float *sq, const float *bias,
                                                             const char *kc, size_t kcs, const char *pfk,
                                                             const int NB, const int NR,
                                                             const int64_t Dp, const la_dtype DT, vf (*s)[4]) {
    const uint8_t(*T)[64] = DT == DB_U8 ? vq_idx_u8 : vq_idx_u4;
    const __m512i ip0 = _mm512_load_si512(T[0]), ip1 = _mm512_load_si512(T[1]), i1 = _mm512_load_si512(T[2]),
                  nib = _mm512_set1_epi8(15);
    __m512i a[KVQ_TB][4];
#pragma GCC unroll 4
    for (int i = 0; i < NB; i++)
#pragma GCC unroll 4
        for (int rr = 0; rr < NR; rr++) a[i][rr] = _mm512_setzero_si512();
    for (int64_t d = 0; d < Dp; d += 4) {
#pragma GCC unroll 4
        for (int c = 0; c < 4; c += 2) {
            __builtin_prefetch(pfk + (size_t)(d + c) * kcs, 0, 2);
            if (kcs > 32) __builtin_prefetch(pfk + (size_t)(d + c + 1) * kcs, 0, 2);
        }
        const char *r0 = kc + (size_t)d * kcs;
        __m512i x[KVQ_TB];
#pragma GCC unroll 4
        for (int i = 0; i + 1 < NB; i += 2) {
            if (DT == DB_U8) { /* 32 bytes (blocks i, i + 1) of each channel */
                const char *p = r0 + (size_t)i * 16;
                const __m512i t1 = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)p)),
                                                      _mm256_loadu_si256((const __m256i *)(p + kcs)), 1);
                const __m512i t2 = _mm512_inserti64x4(
                    _mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)(p + 2 * kcs))),
                    _mm256_loadu_si256((const __m256i *)(p + 3 * kcs)), 1);
                x[i] = vq_perm2(t1, ip0, t2), x[i + 1] = vq_perm2(t1, ip1, t2);
            } else { /* 16 bytes (32 tokens) of each channel, split into low and high nibbles */
                const char *p = r0 + (size_t)i * 8;
                __m512i raw = _mm512_castsi128_si512(_mm_loadu_si128((const __m128i *)p));
                raw = _mm512_inserti32x4(raw, _mm_loadu_si128((const __m128i *)(p + kcs)), 1);
                raw = _mm512_inserti32x4(raw, _mm_loadu_si128((const __m128i *)(p + 2 * kcs)), 2);
                raw = _mm512_inserti32x4(raw, _mm_loadu_si128((const __m128i *)(p + 3 * kcs)), 3);
                const __m512i lo = _mm512_and_si512(raw, nib), hi = _mm512_and_si512(_mm512_srli_epi16(raw, 4), nib);
                x[i] = vq_perm2(lo, ip0, hi), x[i + 1] = vq_perm2(lo, ip1, hi);
            }
        }
        if (NB % 2) { /* the odd last block: only its own bytes */
            const int i = NB - 1;
            if (DT == DB_U8) {
                const char *p = r0 + (size_t)i * 16;
                __m512i raw = _mm512_castsi128_si512(_mm_loadu_si128((const __m128i *)p));
                raw = _mm512_inserti32x4(raw, _mm_loadu_si128((const __m128i *)(p + kcs)), 1);
                raw = _mm512_inserti32x4(raw, _mm_loadu_si128((const __m128i *)(p + 2 * kcs)), 2);
                raw = _mm512_inserti32x4(raw, _mm_loadu_si128((const __m128i *)(p + 3 * kcs)), 3);
                x[i] = vq_perm2(raw, i1, raw);
            } else {
                const char *p = r0 + (size_t)i * 8;
                int64_t c8[4];
                for (int c = 0; c < 4; c++) memcpy(&c8[c], p + (size_t)c * kcs, 8);
                const __m512i w = _mm512_castsi256_si512(_mm256_set_epi64x(c8[3], c8[2], c8[1], c8[0]));
                x[i] = vq_perm2(_mm512_and_si512(w, nib), i1, _mm512_and_si512(_mm512_srli_epi16(w, 4), nib));
            }
        }
#pragma GCC unroll 4
        for (int i = 0; i < NB; i++)
#pragma GCC unroll 4
            for (int rr = 0; rr < NR; rr++) a[i][rr] = vq_dot(a[i][rr], x[i], q8 + rr * Dp + d);
    }
#pragma GCC unroll 4
    for (int i = 0; i < NB; i++)
#pragma GCC unroll 4
        for (int rr = 0; rr < NR; rr++)
            s[i][rr] = vf_fma((vf)_mm512_cvtepi32_ps(a[i][rr]), vf_set1(sq[rr]), vf_set1(bias[rr]));
}

/* A value group's weights wq (p * s >= 0: softmax weights and value scales,
 * quantise_run's (max - min) / levels, are not negative; slots [0, nq) of
 * the chunk) rounded to 8 bits for pv_vq, one scale per (row, group,
 * chunk): sig = max_j wq_j / 255, u_j = round(wq_j / sig) in [0, 255], so
 * |wq_j - sig u_j| <= sig / 2 (llama.cpp rounds the softmax weights to q8_0
 * for its quantised-V products, 127 levels per 32 tokens). vpdpbusd takes
 * its broadcast operand signed, so w8 holds u_j - 128 and pv_vq adds 128
 * times the codes' column sums back. Returns 127.5 times the rounding errors'
 * sum, for the group's zero term: the products' error is then sum_j e_j
 * (code_j - 127.5), at most n 127.5 sig / 2 with sig <= max_j s_j / 255
 * (the chunk's weights p <= 1). One scale per chunk, not per block: the
 * int32 sums then take one conversion per chunk (a block's would cost half
 * as much again as its products); signed weights of 127 levels per chunk
 * gave SmolLM2 +0.36% perplexity over f16 pages (bench/kvq_ppl_step.c). */
static inline __attribute__((always_inline)) float round_weights(const float *wq, int64_t nq, int8_t *w8,
                                                                  float *sig) {
    __m512 mx = _mm512_setzero_ps();
    for (int64_t j = 0; j < nq; j += LA_VL) mx = _mm512_max_ps(mx, _mm512_load_ps(wq + j));
    const float amax = _mm512_reduce_max_ps(mx);
    const __m512 inv = _mm512_set1_ps(amax > 0 ? 255.0f / amax : 0.0f), vs = _mm512_set1_ps(amax / 255.0f);
    const __m512i off = _mm512_set1_epi32(128);
    __m512 err = _mm512_setzero_ps();
    for (int64_t j = 0; j < nq; j += LA_VL) {
        const __m512 x = _mm512_load_ps(wq + j);
        const __m512i qi = _mm512_cvtps_epi32(_mm512_mul_ps(x, inv)); /* nearest, in [0, 255] */
        _mm_store_si128((__m128i *)(w8 + j), _mm512_cvtepi32_epi8(_mm512_sub_epi32(qi, off)));
        err = _mm512_add_ps(err, _mm512_fnmadd_ps(vs, _mm512_cvtepi32_ps(qi), x));
    }
    *sig = amax / 255.0f;
    return 127.5f * tree_add((vf)err);
}

/* pv_multi for int8 codes with the weights rounded to 8 bits (round_weights):
 * per 4 tokens and 32 channels the 4 code rows' bytes gathered into
 * per-channel dwords (two 256-bit halves per operand, one vpermt2b per 16
 * channels: vq_idx_u8's pair tables, tokens in the place of channels) and
 * one vpdpbusd per row and 16 channels, the row's 4 weight bytes (u - 128)
 * broadcast from memory, plus one with weights 1 for the codes' column sums
 * (times 128, the weights' offset); the int32 sums converted and scaled once
 * per chunk. The f32 form widened and converted each code and took an FMA
 * per code and row: 4 x (2 + NR) instructions per 4 tokens and 16 channels
 * against 1.5 + 1 + (NR + 1). Integer sums are exact, so a block's
 * contribution does not depend on the order (|sum| <= 256 * 255 * 128 * 2
 * < 2^31). The window's f32 rows as in pv_multi, into the converted sums. */
static inline __attribute__((always_inline)) void pv_vq(const item_state *s, int64_t c0, int64_t c1, int64_t qe,
                                                        const bool *seen, const int8_t (*w8)[4][KVQ_CHUNK],
                                                        const float (*sig)[4], const float (*w)[KVQ_CHUNK],
                                                        const float (*Z)[4], float *acc, int64_t d0, const int NR,
                                                        const int64_t Dp, const int VPV, const int g1) {
    int gk[KVQ_SV]; /* vector k's group in the slice, as pv_multi (g1 a constant here) */
    const float *sk[KVQ_SV], *zk[KVQ_SV];
#pragma GCC unroll 4
    for (int k = 0; k < KVQ_SV; k++) {
        gk[k] = VPV == 1 ? k : k < 2 ? 0 : g1;
        sk[k] = sig[gk[k]], zk[k] = Z[gk[k]];
    }
    const size_t rs = (size_t)Dp; /* code_row of int8 codes (D = Dp here) */
    const __m512i ip0 = _mm512_load_si512(vq_idx_u8[0]), ip1 = _mm512_load_si512(vq_idx_u8[1]);
    static const int8_t ones[4] = {1, 1, 1, 1};
    __m512i a[4][KVQ_SV], cs[KVQ_SV];
#pragma GCC unroll 4
    for (int k = 0; k < KVQ_SV; k++) {
        cs[k] = _mm512_setzero_si512();
#pragma GCC unroll 4
        for (int rr = 0; rr < NR; rr++) a[rr][k] = _mm512_setzero_si512();
    }
    for (int64_t j0 = c0; j0 < qe; j0 += LA_VL) {
        const int64_t b = (j0 - c0) / LA_VL;
        if (!seen[b]) continue;
        const char *vb = s->vrow[b] + d0;
        /* the block's weights: every one at a constant offset from wb */
        const int8_t *wb = w8[0][0] + b * LA_VL;
#pragma GCC unroll 4
        for (int e = 0; e < LA_VL; e += 4) {
            const char *p = vb + (size_t)e * rs;
#pragma GCC unroll 2
            for (int h = 0; h < 2; h++) { /* channels [32 h, 32 h + 32) of the slice: tokens e, e + 1 | e + 2, e + 3 */
                const __m512i t1 = _mm512_inserti64x4(
                    _mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)(p + 32 * h))),
                    _mm256_loadu_si256((const __m256i *)(p + rs + 32 * h)), 1);
                const __m512i t2 = _mm512_inserti64x4(
                    _mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)(p + 2 * rs + 32 * h))),
                    _mm256_loadu_si256((const __m256i *)(p + 3 * rs + 32 * h)), 1);
#pragma GCC unroll 2
                for (int k = 2 * h; k < 2 * h + 2; k++) {
                    const __m512i x = vq_perm2(t1, k % 2 ? ip1 : ip0, t2);
                    cs[k] = vq_dot(cs[k], x, ones);
#pragma GCC unroll 4
                    for (int rr = 0; rr < NR; rr++) a[rr][k] = vq_dot(a[rr][k], x, wb + (gk[k] * 4 + rr) * KVQ_CHUNK + e);
                }
            }
        }
    }
    vf o[4][KVQ_SV];
#pragma GCC unroll 4
    for (int k = 0; k < KVQ_SV; k++) {
        const __m512i c128 = _mm512_slli_epi32(cs[k], 7);
#pragma GCC unroll 4
        for (int rr = 0; rr < NR; rr++)
            o[rr][k] = (vf)_mm512_cvtepi32_ps(_mm512_add_epi32(a[rr][k], c128)) * vf_set1(sk[k][rr]);
    }
    pv_window_finish(s, c0, c1, qe, seen, w, zk, o, acc, d0, NR, Dp);
}
#endif

/* Rows [r, r + NR) of the item over slots [c0, c1): m, l, acc from row r. */
static inline __attribute__((always_inline)) void pass_rows(const item_state *s, int64_t r, const int NR, int64_t c0,
                                                            int64_t c1, float *m, float *l, float *acc,
                                                            const float *vs, const int64_t Dp, const la_dtype DT) {
    const la_kvq_format *f = &s->p->kv.f;
    const int64_t D = f->D, VG = f->value_group, ng = D / VG;
    const int64_t qe = quant_end(s, c0, c1), nblk = (c1 - c0 + LA_VL - 1) / LA_VL;
    /* f->code_row, a constant where Dp is (D = Dp on this path) */
    const size_t rs = (size_t)(Dp * (DT == DB_U8 ? 8 : 4) / 8), ws = sizeof(float) * (size_t)Dp;
    const vi lane = vi_iota();
    float w[4][KVQ_CHUNK] __attribute__((aligned(64)));  /* scores, then weights */
    /* a value group's weights p * s (the AVX-512 slices: up to KVQ_SV groups' at once) */
    float wq[LA_VL == 16 ? 4 : 1][4][KVQ_CHUNK] __attribute__((aligned(64)));
    bool seen[KVQ_CHUNK / LA_VL];
    vf mx[4];
#pragma GCC unroll 4
    for (int rr = 0; rr < NR; rr++) mx[rr] = vf_set1(-INFINITY);
    /* pass 1: scores. Quantised blocks in runs of up to TB blocks of one
     * key group (scores_cm: the K codes of the run after it prefetched
     * there), the V rows KVQ_PREFETCH_BLOCKS blocks ahead after each
     * block's scores (for pass 3); the window's f32 rows a block at a time */
    const int TB = NR <= 3 ? KVQ_TB : 2;
    int64_t hmin = s->hi[r]; /* the rows' smallest visible end */
    for (int rr = 1; rr < NR; rr++) hmin = s->hi[r + rr] < hmin ? s->hi[r + rr] : hmin;
    const int64_t kg = f->key_group;
    const size_t kcs = (size_t)kg * (size_t)(DT == DB_U8 ? 8 : 4) / 8; /* bytes from one channel of a group to the next */
    for (int64_t b = 0; b < nblk;) {
        const int64_t j0 = c0 + b * LA_VL;
        if (j0 < qe) {
            const int64_t left = s->kleft[b] < (qe - j0) / LA_VL ? s->kleft[b] : (qe - j0) / LA_VL;
            const int nb = TB >= 4 && left >= 4 ? 4 : left >= 2 ? 2 : 1; /* runs of 3: 2 then 1 */
            /* a key group's folded queries, where the group starts (or the chunk does): a run's first block */
            if (s->kfold[b]) fold_rows_dp(s, s->kfold[b], r, NR, Dp, DT == DB_U8 ? 127.5f : 7.5f);
            vf sc[KVQ_TB][4];
            const char *kc = s->krow[b], *pfk = s->krow[b + KVQ_K_AHEAD * nb] ? s->krow[b + KVQ_K_AHEAD * nb] : kc;
            const float *q = s->qf + r * Dp, *bs = s->bias + r;
#if LA_VL == 16
            if (s->vq) {
                const int8_t *q8 = s->q8 + r * Dp;
                const float *sq = s->qsc + r;
                if (nb == 1) scores_vq(q8, sq, bs, kc, kcs, pfk, 1, NR, Dp, DT, sc);
                else if (nb == 2 || TB < 4) scores_vq(q8, sq, bs, kc, kcs, pfk, 2, NR, Dp, DT, sc);
                else scores_vq(q8, sq, bs, kc, kcs, pfk, KVQ_TB, NR, Dp, DT, sc);
            } else
#endif
            if (nb == 1) scores_cm(q, bs, kc, kcs, pfk, 1, NR, Dp, DT, sc);
            else if (nb == 2 || TB < 4) scores_cm(q, bs, kc, kcs, pfk, 2, NR, Dp, DT, sc);
            else scores_cm(q, bs, kc, kcs, pfk, KVQ_TB, NR, Dp, DT, sc);
            for (int i = 0; i < nb; i++, b++) {
                const int64_t jb = c0 + b * LA_VL;
                if (jb + LA_VL <= hmin) { /* every row sees the whole block (all but a causal Lq > 1's last) */
#pragma GCC unroll 4
                    for (int rr = 0; rr < NR; rr++) {
                        mx[rr] = vf_max(mx[rr], sc[i][rr]);
                        vf_store(w[rr] + b * LA_VL, sc[i][rr]);
                    }
                    seen[b] = true;
                } else {
                    bool any = false;
#pragma GCC unroll 4
                    for (int rr = 0; rr < NR; rr++) {
                        const int64_t lim = s->hi[r + rr] - jb < LA_VL ? s->hi[r + rr] - jb : LA_VL;
                        const vi vis = lane < (vi){0} + (int32_t)(lim < 0 ? 0 : lim);
                        any |= lim > 0;
                        const vf sv = vf_select(vis, sc[i][rr], vf_set1(-INFINITY));
                        mx[rr] = vf_max(mx[rr], sv);
                        vf_store(w[rr] + b * LA_VL, sv);
                    }
                    seen[b] = any;
                }
                const char *pv = s->vrow[b + KVQ_PREFETCH_BLOCKS];
                if (pv)
#pragma GCC unroll 16
                    for (int e = 0; e < LA_VL; e++) db_prefetch_span(pv, rs, e, 0, Dp, DT);
            }
            continue;
        }
        const int64_t nk = c1 - j0 < LA_VL ? c1 - j0 : LA_VL;
        vi vis[4];
        bool any = false;
#pragma GCC unroll 4
        for (int rr = 0; rr < NR; rr++) {
            const int64_t lim = s->hi[r + rr] - j0 < nk ? s->hi[r + rr] - j0 : nk;
            vis[rr] = lane < (vi){0} + (int32_t)(lim < 0 ? 0 : lim);
            any |= lim > 0;
        }
        seen[b] = any;
        if (!any) {
#pragma GCC unroll 4
            for (int rr = 0; rr < NR; rr++) vf_store(w[rr] + b * LA_VL, vf_set1(-INFINITY));
            b++;
            continue;
        }
        vf sc[4];
        {
            const char *kb = (const char *)(s->wk + (j0 - s->qlen) * D);
            if (nk < LA_VL) { /* the window's short last block, zero-padded (D = Dp here) */
                memcpy(s->kbuf, kb, ws * (size_t)nk);
                memset(s->kbuf + nk * Dp, 0, ws * (size_t)(LA_VL - nk));
                kb = (const char *)s->kbuf;
            }
            db_scores(s->qs + r * Dp, NULL, kb, ws, NR, Dp, LA_F32, NULL, sc);
        }
#pragma GCC unroll 4
        for (int rr = 0; rr < NR; rr++) {
            const vf sv = vf_select(vis[rr], sc[rr], vf_set1(-INFINITY));
            mx[rr] = vf_max(mx[rr], sv);
            vf_store(w[rr] + b * LA_VL, sv);
        }
        b++;
    }
    /* pass 2: the chunk's max, weights and sum per row */
    db_chunk_weights(w[0], KVQ_CHUNK, mx, seen, nblk, NR, m, l);
    /* the chunk's value scales by group (once per item, for every row
     * group): here rather than before pass 1, so that their lines, asked
     * for at the item's start (prefetch_scales), have come */
    if (r == 0) chunk_value_scales(s, c0, qe, s->ctmp, s->cvs);
    if (c1 % LA_VL && c1 - c1 % LA_VL >= qe) { /* the window's short last block for pass 3, zero-padded */
        const int64_t j0 = c1 - c1 % LA_VL, nk = c1 - j0;
        memcpy(s->vbuf, s->wv + (j0 - s->qlen) * D, ws * (size_t)nk);
        memset(s->vbuf + nk * Dp, 0, ws * (size_t)(LA_VL - nk));
    }
    /* pass 3, per value group: weights p * s over the quantised slots and
     * the zero term sum p z, then P.V over the group's channels */
    const int64_t nq = qe - c0;
#if LA_VL == 16
    const int64_t VPV = VG / LA_VL;
    /* always where Dp is 64 or 128 (the value group, a multiple of LA_VL
     * dividing D, is then 1, 2, 4 or 8 vectors): those specialisations
     * carry no pv_slice path */
    if (Dp == 64 || Dp == 128 || (Dp % (KVQ_SV * LA_VL) == 0 && (VPV == 1 || VPV == 2 || VPV % KVQ_SV == 0))) {
        float Z[4][4], sig[4][4];
        /* int8 weights for int8 codes (pv_vq) where the queries are int8 too */
        const bool vw = DT == DB_U8 && s->vq;
        int8_t w8[4][4][KVQ_CHUNK] __attribute__((aligned(64)));
        for (int64_t d0 = 0; d0 < D; d0 += KVQ_SV * LA_VL) {
            if (d0 % VG == 0) /* the slice starts its value group(s): their weights and zero terms */
                for (int64_t gi = 0; gi < (VPV >= KVQ_SV ? 1 : KVQ_SV / VPV); gi++) {
                    const float *sg = vs + (d0 / VG + gi) * 2 * KVQ_CHUNK, *zg = sg + KVQ_CHUNK;
#pragma GCC unroll 4
                    for (int rr = 0; rr < NR; rr++) {
                        vf z = vf_set1(0);
                        for (int64_t j = 0; j < nq; j += LA_VL) {
                            const vf p = vf_load(w[rr] + j);
                            vf_store(wq[gi][rr] + j, p * vf_load(sg + j));
                            z = vf_fma(p, vf_load(zg + j), z);
                        }
                        Z[gi][rr] = tree_add(z);
                        if (vw) Z[gi][rr] += round_weights(wq[gi][rr], nq, w8[gi][rr], &sig[gi][rr]);
                    }
                }
            const float(*wqp)[4][KVQ_CHUNK] = (const float(*)[4][KVQ_CHUNK])wq, (*wp)[KVQ_CHUNK] = (const float(*)[KVQ_CHUNK])w;
            __asm__("" : "+r"(wqp), "+r"(wp) : : "memory");
            if (vw) {
                const int8_t(*w8p)[4][KVQ_CHUNK] = (const int8_t(*)[4][KVQ_CHUNK])w8;
                __asm__("" : "+r"(w8p) : : "memory");
                const float(*sp)[4] = (const float(*)[4])sig, (*zp)[4] = (const float(*)[4])Z;
                if (VPV == 1) pv_vq(s, c0, c1, qe, seen, w8p, sp, wp, zp, acc, d0, NR, Dp, 1, 0);
                else if (VPV == 2) pv_vq(s, c0, c1, qe, seen, w8p, sp, wp, zp, acc, d0, NR, Dp, 2, 1);
                else pv_vq(s, c0, c1, qe, seen, w8p, sp, wp, zp, acc, d0, NR, Dp, 2, 0);
            } else if (VPV == 1) pv_multi(s, c0, c1, qe, seen, wqp, wp, (const float(*)[4])Z, acc, d0, NR, Dp, DT, 1, 0);
            else pv_multi(s, c0, c1, qe, seen, wqp, wp, (const float(*)[4])Z, acc, d0, NR, Dp, DT, 2, VPV == 2);
        }
        return;
    }
#endif
    for (int64_t g = 0; g < ng; g++) {
        const float *sg = vs + g * 2 * KVQ_CHUNK, *zg = sg + KVQ_CHUNK;
        float Z[4];
#pragma GCC unroll 4
        for (int rr = 0; rr < NR; rr++) {
            vf z = vf_set1(0);
            for (int64_t j = 0; j < nq; j += LA_VL) {
                const vf p = vf_load(w[rr] + j);
                vf_store(wq[0][rr] + j, p * vf_load(sg + j));
                z = vf_fma(p, vf_load(zg + j), z);
            }
            Z[rr] = tree_add(z);
        }
        /* weights broadcast from memory (see db_pv: the asm hides the arrays' contents) */
        const float(*wqp)[KVQ_CHUNK] = (const float(*)[KVQ_CHUNK])wq[0], (*wp)[KVQ_CHUNK] = (const float(*)[KVQ_CHUNK])w;
        __asm__("" : "+r"(wqp), "+r"(wp) : : "memory");
        int64_t d0 = g * VG;
        if (KVQ_NV_MAX > DB_NV && NR <= 3 && KVQ_NV4 && VG % (KVQ_NV_MAX * LA_VL) == 0)
            for (; d0 < (g + 1) * VG; d0 += KVQ_NV_MAX * LA_VL)
                pv_slice(s, c0, c1, qe, seen, wqp, wp, Z, acc, d0, KVQ_NV_MAX, NR, Dp, DT);
        else if (VG % (DB_NV * LA_VL) == 0)
            for (; d0 < (g + 1) * VG; d0 += DB_NV * LA_VL)
                pv_slice(s, c0, c1, qe, seen, wqp, wp, Z, acc, d0, DB_NV, NR, Dp, DT);
        else
            for (; d0 < (g + 1) * VG; d0 += LA_VL) pv_slice(s, c0, c1, qe, seen, wqp, wp, Z, acc, d0, 1, NR, Dp, DT);
    }
}

/* pass_rows specialised per (Dp, code type, NR), each its own function:
 * inlined into one pass_chunk the 24 specialisations (with their q.k runs
 * and P.V slices) made a single function whose compile under ASan took 13
 * minutes and 5.6 GB per ISA copy (s20-q8). One call per 4 rows and chunk. */
typedef void pass_rows_fn(const item_state *s, int64_t r, int64_t c0, int64_t c1, float *m, float *l, float *acc,
                          const float *vs);
#define KVQ_ROWS_FN(NAME, DPV, DTV, NRV)                                                                        \
    static __attribute__((noinline)) void NAME(const item_state *s, int64_t r, int64_t c0, int64_t c1, float *m, \
                                               float *l, float *acc, const float *vs) {                        \
        pass_rows(s, r, NRV, c0, c1, m, l, acc, vs, DPV, DTV);                                                  \
    }
#define KVQ_ROWS_NR(NAME, DPV, DTV)             \
    KVQ_ROWS_FN(NAME##_1, DPV, DTV, 1)          \
    KVQ_ROWS_FN(NAME##_2, DPV, DTV, 2)          \
    KVQ_ROWS_FN(NAME##_3, DPV, DTV, 3)          \
    KVQ_ROWS_FN(NAME##_4, DPV, DTV, 4)
KVQ_ROWS_NR(rows_64_u8, 64, DB_U8)
KVQ_ROWS_NR(rows_64_u4, 64, DB_U4)
KVQ_ROWS_NR(rows_128_u8, 128, DB_U8)
KVQ_ROWS_NR(rows_128_u4, 128, DB_U4)
/* other Dp (no model's): rows 4 at a time, the rest one at a time */
KVQ_ROWS_FN(rows_any_u8_1, s->Dp, DB_U8, 1)
KVQ_ROWS_FN(rows_any_u8_4, s->Dp, DB_U8, 4)
KVQ_ROWS_FN(rows_any_u4_1, s->Dp, DB_U4, 1)
KVQ_ROWS_FN(rows_any_u4_4, s->Dp, DB_U4, 4)
#undef KVQ_ROWS_NR
#undef KVQ_ROWS_FN
/* [Dp 64, 128, other][int8, int4][NR - 1] */
static pass_rows_fn *const rows_fns[3][2][4] = {
    {{rows_64_u8_1, rows_64_u8_2, rows_64_u8_3, rows_64_u8_4}, {rows_64_u4_1, rows_64_u4_2, rows_64_u4_3, rows_64_u4_4}},
    {{rows_128_u8_1, rows_128_u8_2, rows_128_u8_3, rows_128_u8_4},
     {rows_128_u4_1, rows_128_u4_2, rows_128_u4_3, rows_128_u4_4}},
    {{rows_any_u8_1, NULL, NULL, rows_any_u8_4}, {rows_any_u4_1, NULL, NULL, rows_any_u4_4}},
};

/* Prefetch (into L2) the key group scales and the tokens' value scales of
 * the chunk's quantised slots [c0, qe): small regions at each page's end,
 * each read at once where it is used (fold_rows at a group's first run,
 * chunk_value_scales after pass 2), where the hardware prefetcher has no
 * stream to follow. */
static void prefetch_scales(const item_state *s, int64_t c0, int64_t qe) {
    const la_kvq_format *f = &s->p->kv.f;
    const int64_t ps = f->page_size, kg = f->key_group, pairs = 2 * (f->D / f->value_group);
    for (int64_t j = c0; j < qe;) {
        const int64_t page = j / ps, e = (page + 1) * ps < qe ? (page + 1) * ps : qe;
        const char *k0 = (const char *)la_kvq_key_scales(f, s->kpages + (size_t)page * f->k_page, (j % ps) / kg);
        const char *k1 = (const char *)la_kvq_key_scales(f, s->kpages + (size_t)page * f->k_page, ((e - 1) % ps) / kg + 1);
        const char *v0 = (const char *)la_kvq_value_scales(f, s->vpages + (size_t)page * f->v_page, j % ps);
        const char *v1 = v0 + (size_t)((e - j) * pairs) * sizeof(uint16_t);
        for (const char *a = k0; a < k1; a += 64) __builtin_prefetch(a, 0, 2);
        for (const char *a = v0; a < v1; a += 64) __builtin_prefetch(a, 0, 2);
        j = e;
    }
}

static void pass_chunk(item_state *s, int64_t c0, int64_t c1, partial *pt) {
    const int64_t qe = quant_end(s, c0, c1);
    const la_kvq_format *f = &s->p->kv.f;
    const int64_t ps = f->page_size, kg = f->key_group, nb = (c1 - c0 + LA_VL - 1) / LA_VL;
    prefetch_scales(s, c0, qe);
    /* and the next chunk's of the head (usually this thread's next item):
     * those of this chunk, asked for just now, come late for its first key
     * group (the fold's f16 loads were a tenth of the int8 kernel's samples
     * at 32K, s23-pv) */
    prefetch_scales(s, c1, quant_end(s, c1, c1 + KVQ_CHUNK));
    /* blocks never cross a page (key groups are whole blocks and divide the
     * page); V rows past the chunk are not prefetched. The block's page, slot
     * in the page, key group in the page and slot in the group are stepped
     * along (two divisions per chunk: 64-bit idiv is ~40 cycles on Zen 1,
     * and three per block were ~10% of the kernel's time) */
    int64_t page = c0 / ps, t = c0 % ps, g = t / kg, tg = t % kg;
    for (int64_t b = 0; b < nb + KVQ_K_AHEAD * KVQ_TB; b++) {
        const int64_t j0 = c0 + b * LA_VL;
        const bool quant = j0 + LA_VL <= qe;
        const char *kp = s->kpages + (size_t)page * f->k_page;
        /* a K block: its group's channel-major codes from the block's first
         * token on; past the chunk, the next chunk's (the head's quantised
         * slots), so that its first run's codes are asked for during this
         * chunk's last run (cold, they were ~8% of the int8 kernel's
         * samples at 32K once P.V took int8 weights, s23-pv) */
        const bool kq = b < nb ? quant : j0 + LA_VL <= s->qlen;
        s->krow[b] = kq ? (const char *)la_kvq_key_codes(f, kp, g) + (size_t)tg * (size_t)f->bits / 8 : NULL;
        if (b < nb + KVQ_PREFETCH_BLOCKS) s->vrow[b] = quant ? s->vpages + (size_t)page * f->v_page + (size_t)t * f->code_row : NULL;
        if (b < nb) {
            s->kfold[b] = j0 < qe && (tg == 0 || b == 0) ? la_kvq_key_scales(f, kp, g) : NULL;
            s->kleft[b] = (int)((kg - tg) / LA_VL);
        }
        if ((tg += LA_VL) == kg) tg = 0, g++;
        if ((t += LA_VL) == ps) t = 0, g = 0, page++;
    }
    pass_rows_fn *const *fns = rows_fns[s->Dp == 64 ? 0 : s->Dp == 128 ? 1 : 2][s->p->kv.f.bits == 8 ? 0 : 1];
    for (int64_t r = 0; r < s->R;) {
        int64_t n = s->R - r < 4 ? s->R - r : 4;
        if (!fns[n - 1]) n = 1; /* (a NULL entry's rows one at a time) */
        fns[n - 1](s, r, c0, c1, pt->m + r, pt->l + r, pt->acc + r * s->Dp, s->cvs);
        r += n;
    }
}

/* Window slots [a, b) (f32 rows). */
static void window_segment(const item_state *s, int64_t a, int64_t b, partial *pt) {
    const int64_t D = s->p->kv.f.D, Dp = s->Dp;
    for (int64_t j0 = a; j0 < b; j0 += LA_VL) {
        const int64_t nk = b - j0 < LA_VL ? b - j0 : LA_VL;
        for (int64_t e = 0; e < nk; e++) {
            memcpy(s->kbuf + e * Dp, s->wk + (j0 + e - s->qlen) * D, sizeof(float) * (size_t)D);
            memcpy(s->vbuf + e * Dp, s->wv + (j0 + e - s->qlen) * D, sizeof(float) * (size_t)D);
        }
        block(s, s->qs, NULL, j0, nk, pt);
    }
}

static void chunk(item_state *s, int64_t c0, int64_t c1, partial *pt) {
    const int64_t kg = s->p->kv.f.key_group;
    if (chunk_pass_fits(&s->p->kv.f) && c1 > c0) {
        pass_chunk(s, c0, c1, pt);
        return;
    }
    for (int64_t r = 0; r < s->R; r++) pt->m[r] = -INFINITY, pt->l[r] = 0;
    memset(pt->acc, 0, sizeof(float) * (size_t)(s->R * s->Dp));
    for (int64_t a = c0; a < c1 && a < s->qlen;) {
        int64_t b = (a / kg + 1) * kg;
        b = b < c1 ? b : c1;
        quant_segment(s, a, b, pt);
        a = b;
    }
    if (c1 > s->qlen) window_segment(s, c0 > s->qlen ? c0 : s->qlen, c1, pt);
}

/* Workspace (floats): per item R partial rows (Dp + 2); per thread the
 * scaled and folded queries, biases, ranges, one block of K and V rows, a
 * group's scales and zeros, a merge list, a merged row, and the item's running max and sum. */
typedef struct {
    int64_t nchunks, items, R, Dp;
    size_t part_rows, counts, merge, per_thread, bytes;
} layout;

static int64_t longest(const la_kvq_decode_problem *p) {
    int64_t n = 0;
    for (int64_t hk = 0; hk < p->Hkv; hk++)
        for (int64_t b = 0; b < p->num_seqs; b++) {
            const int64_t l = p->kv.len[hk * p->kv.region_seqs + p->seq0 + b];
            n = l > n ? l : n;
        }
    return n;
}

static bool plan(const la_kvq_decode_problem *p, layout *L) {
    const int nthreads = p->threads > 0 ? p->threads : 1;
    L->Dp = tg_round_up(p->kv.f.D, LA_VL);
    L->R = p->H / p->Hkv * p->Lq;
    const int64_t n = longest(p);
    L->nchunks = n > 0 ? (n + KVQ_CHUNK - 1) / KVQ_CHUNK : 1;
    L->items = p->num_seqs * p->Hkv * L->nchunks;
    if (L->items > INT32_MAX) return false; /* la_claim_next's item numbers */
    size_t part, total;
    L->merge = (size_t)tg_round_up(L->nchunks * (int64_t)sizeof(merge_part), 64) / sizeof(float);
    /* and the chunk-pass path's value scales of a chunk, twice (chunk_value_scales) */
    const int64_t pairs = p->kv.f.value_group > 0 ? 2 * (p->kv.f.D / p->kv.f.value_group) : 0;
    /* and the int8 queries' scales [R] and codes [R][Dp] (scores_vq) */
    L->per_thread = (size_t)(2 * L->R * L->Dp + 5 * L->R + 2 * LA_VL * L->Dp + 3 * L->Dp + 2 * LA_VL * p->kv.f.D +
                             2 * KVQ_CHUNK * pairs + L->R + (L->R * L->Dp + 3) / 4) +
                    L->merge;
    L->per_thread = (size_t)tg_round_up((int64_t)L->per_thread, 16);
    /* an int32 count of finished chunks per (sequence, K/V head), whole 64-byte lines */
    L->counts = (size_t)tg_round_up(p->num_seqs * p->Hkv, 16);
    if (!la_mul_size((size_t)L->items, (size_t)L->R, &L->part_rows) ||
        !la_mul_size(L->part_rows, (size_t)(L->Dp + 2), &part) ||
        !la_mul_size(L->per_thread, (size_t)nthreads, &total) || (total += part) < part ||
        (total += L->counts) < L->counts ||
        !la_mul_size(total, sizeof(float), &L->bytes))
        return false;
    return true;
}

la_status LA_ISA_FN(la_cpu_kvq_decode_workspace)(const la_kvq_decode_problem *p, size_t *bytes) {
    layout L;
    if (!plan(p, &L)) return la_fail(LA_ERR_OVERFLOW, "quantised decode workspace size overflows");
    *bytes = L.bytes;
    return LA_OK;
}

/* The output rows of (sequence, K/V head) bh: its chunks' partials merged
 * in chunk order (pm, pl, pacc: the items' max, sum and accumulator rows). */
static void merge_head(const la_kvq_decode_problem *p, const layout *L, int64_t bh, const float *pm, const float *pl,
                       const float *pacc, merge_part *parts, float *merged) {
    const int64_t R = L->R, Dp = L->Dp, D = p->kv.f.D, G = p->H / p->Hkv, Lq = p->Lq, nchunks = L->nchunks;
    const int64_t b = bh / p->Hkv, hk = bh % p->Hkv;
    for (int64_t r = 0; r < R; r++) {
        const int64_t h = hk * G + r / Lq, i = r % Lq;
        for (int64_t cc = 0; cc < nchunks; cc++) {
            const int64_t row = (bh * nchunks + cc) * R + r;
            parts[cc] = (merge_part){.x = (const char *)(pacc + (size_t)row * Dp), .dtype = LA_F32,
                                     .log_scale = pm[row], .mass = pl[row]};
        }
        const float lse = merge_row(parts, nchunks, D, false, merged);
        tg_store_row(la_attn_at(&p->out, b, i, h), p->out.dtype, merged, D);
        if (p->lse.data) *(float *)la_attn_at(&p->lse, b, i, h) = lse;
    }
}

la_status LA_ISA_FN(la_cpu_kvq_decode_kernel)(const la_kvq_decode_problem *p, void *mem) {
    layout L;
    if (!plan(p, &L)) return la_fail(LA_ERR_OVERFLOW, "quantised decode workspace size overflows");
    const int nthreads = p->threads > 0 ? p->threads : 1;
    const int64_t R = L.R, Dp = L.Dp, D = p->kv.f.D, G = p->H / p->Hkv, Lq = p->Lq, nchunks = L.nchunks;
    const la_kvq_layer *kv = &p->kv;
    float *pm = mem, *pl = pm + L.part_rows, *pacc = pl + L.part_rows;
    int32_t *done = (int32_t *)(pacc + L.part_rows * (size_t)Dp);
    float *threads_mem = (float *)done + L.counts;
    memset(done, 0, sizeof(int32_t) * (size_t)(p->num_seqs * p->Hkv));
    /* int8 q.k where the cache allows it and the CPU has the instructions */
#if LA_VL == 16
    const bool vq = !kv->exact_queries && la_cpu_avx512_vnni_vbmi();
#else
    const bool vq = false;
#endif
    la_claim_slot slots[nthreads]; /* VLA: one cache line per thread */
    la_claim_init(slots, nthreads, L.items);
#pragma omp parallel num_threads(nthreads)
    {
        /* 8-byte members first: hi (2 R floats), then the merge list */
        int64_t *hi = (int64_t *)(threads_mem + (size_t)la_thread_id() * L.per_thread);
        merge_part *parts = (merge_part *)(hi + R);
        float *qs = (float *)(hi + R) + L.merge, *qf = qs + R * Dp, *kbuf = qf + R * Dp, *vbuf = kbuf + LA_VL * Dp;
        float *sc = vbuf + LA_VL * Dp, *merged = sc + 2 * Dp, *bias = merged + Dp, *vsc = bias + R;
        float *run_m = vsc + 2 * LA_VL * D, *run_l = run_m + R, *ctmp = run_l + R;
        float *cvs = ctmp + KVQ_CHUNK * 2 * (D / p->kv.f.value_group);
        float *qsc = cvs + KVQ_CHUNK * 2 * (D / p->kv.f.value_group);
        int8_t *q8 = (int8_t *)(qsc + R);
        /* once per thread: the rows' padding columns [D, Dp) stay zero
         * (nothing writes them) */
        memset(kbuf, 0, sizeof(float) * (size_t)(2 * LA_VL * Dp));
        /* no barrier after the items: the thread finishing a (sequence,
         * K/V head)'s last chunk merges its rows (merge_group_add). A
         * thread counts its finished chunks of a head in `pending` and adds
         * them to the head's counter when it leaves the head or its run
         * of consecutive items (and after its last item): one atomic per
         * run, not per item. With schedule(dynamic, 1) each item paid two
         * atomics on lines both threads write (the loop's next index and
         * the counter), and the counter's lock add waited for the item's
         * stores to drain: ~7% of the model-shape kernel on Zen 5. Runs
         * come from la_claim_next (each thread's share in address order,
         * the rest taken from the others' backs): static (one run per
         * thread) was 15% slower per token in the model (s21-q8), where a
         * thread cannot hand its items to the other, and guided's first
         * run of half the items left the thread holding it 5-13 us last
         * (s23-imb). */
        int64_t pending = 0, pbh = -1, plast = -1, qbh = -1;
        /* it runs through the thread's claimed run [it, end), then claims the next */
        for (int64_t it = 0, end = 0; it < end || la_claim_next(slots, nthreads, la_thread_id(), &it, &end); it++) {
            const int64_t bh = it / nchunks, c = it % nchunks;
            if (pending && (bh != pbh || it != plast + 1)) {
                if (merge_group_add(&done[pbh], (int32_t)pending, (int32_t)nchunks))
                    merge_head(p, &L, pbh, pm, pl, pacc, parts, merged);
                pending = 0;
            }
            const int64_t b = bh / p->Hkv, hk = bh % p->Hkv;
            const int64_t reg = hk * kv->region_seqs + p->seq0 + b, len = kv->len[reg];
            if (bh != qbh) /* the head's scaled queries and ranges, once per run of its items */
                for (int64_t r = 0; r < R; r++) {
                    const int64_t h = hk * G + r / Lq, i = r % Lq;
                    tg_load_row(qs + r * Dp, la_attn_at(&p->q, b, i, h), p->q.dtype, D, Dp);
                    for (int64_t d = 0; d < D; d++) qs[r * Dp + d] *= p->scale;
                    int64_t lim = p->causal ? len - Lq + i + 1 : len;
                    hi[r] = lim < 0 ? 0 : lim > len ? len : lim;
                }
            qbh = bh;
            item_state s = {.p = p, .R = R, .Dp = Dp, .len = len, .qlen = kv->qlen[reg],
                            .kpages = kv->k + (size_t)reg * kv->k_region, .vpages = kv->v + (size_t)reg * kv->v_region,
                            .wk = kv->wk + (size_t)reg * (size_t)(kv->f.window_rows * D),
                            .wv = kv->wv + (size_t)reg * (size_t)(kv->f.window_rows * D),
                            .qs = qs, .hi = hi, .qf = qf, .bias = bias, .kbuf = kbuf, .vbuf = vbuf, .sc = sc,
                            .vsc = vsc, .ctmp = ctmp, .cvs = cvs, .vq = vq, .q8 = q8, .qsc = qsc};
            const int64_t c0 = c * KVQ_CHUNK, c1 = c0 + KVQ_CHUNK < len ? c0 + KVQ_CHUNK : len;
            /* the running max and sum in the thread's own scratch, stored
             * once: items of R = 4 rows share cache lines of pm / pl, and
             * neighbouring items run at the same time on other threads
             * (false sharing on every block's update) */
            partial pt = {run_m, run_l, pacc + (size_t)(it * R) * Dp};
            chunk(&s, c0, c0 < c1 ? c1 : c0, &pt);
            memcpy(pm + it * R, run_m, sizeof(float) * (size_t)R);
            memcpy(pl + it * R, run_l, sizeof(float) * (size_t)R);
            pending++, pbh = bh, plast = it;
        }
        if (pending && merge_group_add(&done[pbh], (int32_t)pending, (int32_t)nchunks))
            merge_head(p, &L, pbh, pm, pl, pacc, parts, merged);
    }
    return LA_OK;
}
