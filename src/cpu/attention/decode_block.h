/* One block of LA_VL keys of one K/V head against up to 4 query rows of
 * that head, for the decode kernels (attention/decode_isa.c over float
 * pages read in place, kvquant/kvq_decode_isa.c over widened codes).
 * Include after cpu/isa.h and decode_simd.h. db_block = db_scores +
 * db_softmax + db_pv; the quantised kernel composes the three with its
 * value scales folded into the weights (a weight per value group), and db_load reads
 * int8 / int4 codes (DB_U8, DB_U4) as well as float rows.
 *
 * The rows of a grouped-query head share every K and V load: a vector of a
 * key row (converted from f16 / bf16 in the register where the pages hold
 * those) feeds the FMAs of all the rows, where a loop per row loaded and
 * converted it once per row (4 times for 32 query heads over 8 K/V heads,
 * which made f16 decode issue-bound rather than bandwidth-bound).
 *  - q.k: the block's keys in 4 sub-blocks of KS = LA_VL / 4 keys; a
 *    sub-block holds 4 x KS accumulators (row, key), summed across lanes
 *    in one tree (vf_transpose_sum: lane rr * KS + e), and a 4 x 4
 *    transpose of KS-lane chunks turns the 4 sub-blocks into one vector of
 *    LA_VL scores per row.
 *  - softmax: the row's block max and sum as trees; the running
 *    accumulator's rescale is folded into its load in the P.V loop.
 *  - P.V (db_pv): NV output vectors of each row in registers (4 x NV
 *    chains), each value vector loaded once for the rows, weights
 *    broadcast from memory; the quantised kernel's codes go through the
 *    same loop with a weight per value group and the groups' zero terms.
 * Every row's arithmetic is the same whatever the other rows of the group,
 * the layout of the pages or the thread count: results depend only on the
 * keys' positions (the block starts at a multiple of LA_VL of the chunk). */
#ifndef LA_CPU_DECODE_BLOCK_H
#define LA_CPU_DECODE_BLOCK_H

#include "cpu/isa.h"
#include "cpu/attention/decode_simd.h"

#define DB_KS (LA_VL / 4) /* keys per q.k sub-block */
#if LA_VL == 16
#define DB_NV 4 /* P.V output vectors per row in registers: 16 accumulators of 32 */
#define DB_CH(c) 4 * (c), 4 * (c) + 1, 4 * (c) + 2, 4 * (c) + 3
#elif LA_VL == 8
#define DB_NV 2 /* 8 accumulators of 16 registers */
#define DB_CH(c) 2 * (c), 2 * (c) + 1
#else
#define DB_NV 2
#define DB_CH(c) (c)
#endif

/* LA_VL elements of a row of dtype DT (a constant in every caller) at element d. */
/* Pseudo dtypes of db_load: unsigned 8-bit codes, and 4-bit codes two to a
 * byte (channel 2i low nibble), widened to f32 without scale. */
#define DB_U8 ((la_dtype)(LA_DTYPE_COUNT + 1))
#define DB_U4 ((la_dtype)(LA_DTYPE_COUNT + 2))

static inline __attribute__((always_inline)) vf db_load(const char *row, int64_t d, const la_dtype DT) {
    if (DT == DB_U8) return vf_from_u8((const uint8_t *)row + d);
    if (DT == DB_U4) return vf_from_u4((const uint8_t *)row + d / 2);
    if (DT == LA_F16) return vf_load_f16((const uint16_t *)row + d);
    if (DT == LA_BF16) return vf_load_bf16((const uint16_t *)row + d);
    return vf_load((const float *)row + d);
}

/* Lane j * KS + e of row rr's result = lane rr * KS + e of x[j]: a 4 x 4
 * transpose of KS-lane chunks, two levels of two-vector shuffles. */
static inline __attribute__((always_inline)) void db_transpose4(const vf *x, vf *s) {
#if defined(LA_ISA_AVX2)
    /* chunks of two lanes are doubles: a 4 x 4 transpose of doubles by
     * in-half unpacks and half exchanges (no cross-lane permutes, slow on Zen 1) */
    const __m256d t0 = _mm256_unpacklo_pd((__m256d)x[0], (__m256d)x[1]), t1 = _mm256_unpackhi_pd((__m256d)x[0], (__m256d)x[1]);
    const __m256d t2 = _mm256_unpacklo_pd((__m256d)x[2], (__m256d)x[3]), t3 = _mm256_unpackhi_pd((__m256d)x[2], (__m256d)x[3]);
    s[0] = (vf)_mm256_insertf128_pd(t0, _mm256_castpd256_pd128(t2), 1);
    s[1] = (vf)_mm256_insertf128_pd(t1, _mm256_castpd256_pd128(t3), 1);
    s[2] = (vf)_mm256_insertf128_pd(t2, _mm256_extractf128_pd(t0, 1), 0);
    s[3] = (vf)_mm256_insertf128_pd(t3, _mm256_extractf128_pd(t1, 1), 0);
#else
    const vf p01 = __builtin_shufflevector(x[0], x[1], DB_CH(0), DB_CH(4), DB_CH(1), DB_CH(5));
    const vf q01 = __builtin_shufflevector(x[0], x[1], DB_CH(2), DB_CH(6), DB_CH(3), DB_CH(7));
    const vf p23 = __builtin_shufflevector(x[2], x[3], DB_CH(0), DB_CH(4), DB_CH(1), DB_CH(5));
    const vf q23 = __builtin_shufflevector(x[2], x[3], DB_CH(2), DB_CH(6), DB_CH(3), DB_CH(7));
    s[0] = __builtin_shufflevector(p01, p23, DB_CH(0), DB_CH(1), DB_CH(4), DB_CH(5));
    s[1] = __builtin_shufflevector(p01, p23, DB_CH(2), DB_CH(3), DB_CH(6), DB_CH(7));
    s[2] = __builtin_shufflevector(q01, q23, DB_CH(0), DB_CH(1), DB_CH(4), DB_CH(5));
    s[3] = __builtin_shufflevector(q01, q23, DB_CH(2), DB_CH(3), DB_CH(6), DB_CH(7));
#endif
}

/* Lane i of the result = the sum of the lanes of v[i] (isa.h's
 * vf_transpose_sum). With 16 lanes the first two levels of the tree pair
 * lanes within each 128-bit chunk (vunpck / vshufps) and only the last two
 * move whole chunks (vshuff32x4), where the generic tree's two-source
 * lane permutes (vpermt2ps) cost more on every level; the lanes are added
 * in another fixed order. */
static inline __attribute__((always_inline)) vf db_transpose_sum(vf *v) {
#if defined(LA_ISA_AVX512)
    __m512 c[8], e[4], g[2];
#pragma GCC unroll 8
    for (int i = 0; i < 8; i++) /* chunk lanes [a0+a2, b0+b2, a1+a3, b1+b3] */
        c[i] = _mm512_add_ps(_mm512_unpacklo_ps((__m512)v[2 * i], (__m512)v[2 * i + 1]),
                             _mm512_unpackhi_ps((__m512)v[2 * i], (__m512)v[2 * i + 1]));
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++) /* chunk l lane k: chunk l's sum of v[4i + k] */
        e[i] = _mm512_add_ps(_mm512_shuffle_ps(c[2 * i], c[2 * i + 1], 0x44),
                             _mm512_shuffle_ps(c[2 * i], c[2 * i + 1], 0xEE));
#pragma GCC unroll 2
    for (int i = 0; i < 2; i++) /* chunks [e.0+e.2, e.1+e.3, f.0+f.2, f.1+f.3] */
        g[i] = _mm512_add_ps(_mm512_shuffle_f32x4(e[2 * i], e[2 * i + 1], 0x44),
                             _mm512_shuffle_f32x4(e[2 * i], e[2 * i + 1], 0xEE));
    return (vf)_mm512_add_ps(_mm512_shuffle_f32x4(g[0], g[1], 0x88), _mm512_shuffle_f32x4(g[0], g[1], 0xDD));
#elif defined(LA_ISA_AVX2)
    /* Two levels of pair sums within each 128-bit half (vshufps, which
     * issues beside the FMAs), then one exchange of halves (vinsertf128 /
     * vextractf128). The generic tree's two-source even / odd permutes
     * became vpermd + vblendps with their index vectors reloaded: on Zen 1
     * (a cross-lane vpermd is 3 uops there) the tree took as many samples
     * as the q.k FMAs it reduces. */
    __m256 h[4], g[2];
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++) /* half lanes [a0+a1, a2+a3, b0+b1, b2+b3] */
        h[i] = _mm256_add_ps(_mm256_shuffle_ps((__m256)v[2 * i], (__m256)v[2 * i + 1], 0x88),
                             _mm256_shuffle_ps((__m256)v[2 * i], (__m256)v[2 * i + 1], 0xDD));
#pragma GCC unroll 2
    for (int i = 0; i < 2; i++) /* half lane k: that half's sum of v[4i + k] */
        g[i] = _mm256_add_ps(_mm256_shuffle_ps(h[2 * i], h[2 * i + 1], 0x88),
                             _mm256_shuffle_ps(h[2 * i], h[2 * i + 1], 0xDD));
    const __m256 lo = _mm256_insertf128_ps(g[0], _mm256_castps256_ps128(g[1]), 1);
    const __m256 hi = _mm256_insertf128_ps(g[1], _mm256_extractf128_ps(g[0], 1), 0);
    return (vf)_mm256_add_ps(lo, hi);
#else
    return vf_transpose_sum(v);
#endif
}

/* Bits per element of dtype DT (float dtypes, DB_U8, DB_U4). */
static inline __attribute__((always_inline)) int db_bits(const la_dtype DT) {
    return DT == DB_U8 ? 8 : DT == DB_U4 ? 4 : DT == LA_F32 ? 32 : 16;
}

/* Software prefetch (into L2) of a block ahead's K and V rows (at k / v +
 * e * stride). The K rows are prefetched in db_scores between the q.k
 * FMAs of their sub-block, the V rows in db_pv between the FMAs of each
 * key, so the block's prefetches are spread over all its arithmetic: a
 * core keeps only about 16 lines in flight (its line fill buffers), and a
 * prefetch waits for a free one. Issued all in P.V (the earlier way), the
 * 2 x 64 lines of an f16 block at D 128 queued there and stalled P.V
 * while q.k and the softmax left the buffers idle; issued as one burst
 * before the block (the way before that), they stalled the core until
 * most had come back. Lines are counted from the row's start (a row not
 * 64-byte aligned still gets each line once). Prefetches change no result.
 * They are issued without a branch (db_prefetch_or: the block's own rows
 * where there is nothing ahead): a branch between the loads and the FMAs
 * splits the loop body, and GCC then contracts a * b + c (vf_fma) into
 * FMAs in another order than where the body is one block, so paths with
 * and without a block ahead gave results 1 ulp apart (test_decode's
 * layouts_agree). */
typedef struct {
    const char *k, *v; /* NULL: none */
    size_t stride;
} db_prefetch;

/* pf, or the block's own rows at kb / vb (stride apart) where pf has
 * nothing ahead. */
static inline __attribute__((always_inline)) db_prefetch db_prefetch_or(const db_prefetch *pf, const char *kb,
                                                                        const char *vb, size_t stride) {
    const bool ahead = pf && pf->k;
    return (db_prefetch){ahead ? pf->k : kb, ahead ? pf->v : vb, ahead ? pf->stride : stride};
}

/* The lines of channels [d0, d1) of row e at rows + e * stride. */
static inline __attribute__((always_inline)) void db_prefetch_span(const char *rows, size_t stride, int e, int64_t d0,
                                                                   int64_t d1, const la_dtype DT) {
    const size_t b0 = (size_t)(d0 * db_bits(DT)) / 8, b1 = (size_t)(d1 * db_bits(DT)) / 8;
    for (size_t o = (b0 + 63) / 64 * 64; o < b1; o += 64) __builtin_prefetch(rows + (size_t)e * stride + o, 0, 2);
}

/* Scores of keys e in [0, LA_VL) at kb + e * kstride (bytes), rows of Dp
 * elements of dtype DT (a float dtype, or DB_U8 / DB_U4 codes widened in
 * the registers), against NR query rows q + rr * Dp: s[rr] lane e =
 * q_rr . k_e (+ bias[rr] where bias is not NULL). pf (NULL: none): the K
 * rows of a block ahead, prefetched between the sub-blocks' FMAs. */
static inline __attribute__((always_inline)) void db_scores(const float *q, const float *bias, const char *kb,
                                                            size_t kstride, const int NR, const int64_t Dp,
                                                            const la_dtype DT, const db_prefetch *pf, vf *s) {
    const db_prefetch ahead = db_prefetch_or(pf, kb, kb, kstride);
    vf x[4];
    /* sub-blocks one after the other: unrolled, GCC kept every row's query
     * vectors of all four live at once and spilled them (and the key row
     * addresses) in the big quantised kernel */
#pragma GCC unroll 1
    for (int j = 0; j < 4; j++) {
        vf part[LA_VL];
#pragma GCC unroll 16
        for (int i = 0; i < LA_VL; i++) part[i] = vf_set1(0);
        const char *k0 = kb + (size_t)(j * DB_KS) * kstride;
        /* the whole K rows of the sub-block's keys in the block ahead: a
         * fixed count of lines (spread by channel inside the d loop below,
         * the bounds were computed at run time on every step) */
#pragma GCC unroll 4
        for (int e = 0; e < DB_KS; e++) db_prefetch_span(ahead.k, ahead.stride, j * DB_KS + e, 0, Dp, DT);
        for (int64_t d = 0; d < Dp; d += LA_VL) {
            vf kv[DB_KS];
#pragma GCC unroll 4
            for (int e = 0; e < DB_KS; e++) kv[e] = db_load(k0 + (size_t)e * kstride, d, DT);
#pragma GCC unroll 4
            for (int rr = 0; rr < NR; rr++) {
                const vf qv = vf_load(q + rr * Dp + d);
#pragma GCC unroll 4
                for (int e = 0; e < DB_KS; e++) part[rr * DB_KS + e] = vf_fma(kv[e], qv, part[rr * DB_KS + e]);
            }
        }
        x[j] = db_transpose_sum(part);
    }
    db_transpose4(x, s);
    if (bias)
#pragma GCC unroll 4
        for (int rr = 0; rr < NR; rr++) s[rr] += vf_set1(bias[rr]);
}

/* Pass 2 of a chunk in the three-pass decode (float and quantised pages):
 * rows rr < NR hold the chunk's scores at w + rr * stride and their running
 * max in mx[rr]; per row, sets the chunk max m[rr], the weights exp(s - max)
 * in place (0 in blocks no row sees, and for a row that sees none of the
 * chunk's keys: its max stays -inf, its sum 0) and their sum l[rr]. */
static inline __attribute__((always_inline)) void db_chunk_weights(float *w, int64_t stride, const vf *mx,
                                                                   const bool *seen, int64_t nblk, const int NR,
                                                                   float *m, float *l) {
#pragma GCC unroll 4
    for (int rr = 0; rr < NR; rr++) {
        float *wr = w + rr * stride;
        const float bm = tree_max(mx[rr]);
        vf sum = vf_set1(0);
        m[rr] = bm;
        for (int64_t b = 0; b < nblk; b++) {
            vf pv = vf_set1(0);
            if (seen[b] && bm != -INFINITY) pv = decode_exp(vf_load(wr + b * LA_VL) - bm);
            sum += pv;
            vf_store(wr + b * LA_VL, pv);
        }
        l[rr] = tree_add(sum);
    }
}

/* The block's softmax step for NR rows: visible lanes vis[rr] of scores
 * s[rr]; updates the running max m[rr] and sum l[rr], sets the weights
 * pw[rr] (0 for a row that sees no lane) and the accumulator's rescale
 * alpha[rr]. Returns whether any row sees a lane. */
static inline __attribute__((always_inline)) bool db_softmax(const vf *s, const vi *vis, float *m, float *l,
                                                             const int NR, float (*pw)[LA_VL], vf *alpha) {
    bool any = false;
#pragma GCC unroll 4
    for (int rr = 0; rr < NR; rr++) {
        const vf sv = vf_select(vis[rr], s[rr], vf_set1(-INFINITY));
        const float bm = tree_max(sv);
        alpha[rr] = vf_set1(1.0f);
        if (bm == -INFINITY) { /* the row sees none of the block's keys */
            vf_store(pw[rr], vf_set1(0));
            continue;
        }
        any = true;
        if (bm > m[rr]) {
            const float a = m[rr] == -INFINITY ? 0.0f : expf(m[rr] - bm);
            l[rr] *= a;
            alpha[rr] = vf_set1(a);
            m[rr] = bm;
        }
        const vf pv = vf_exp(sv - m[rr]);
        l[rr] += tree_add(pv);
        vf_store(pw[rr], pv);
    }
    return any;
}

/* P.V of one block for NR rows: acc + rr * Dp = alpha[rr] * acc + sum_e
 * w_e v_e (+ Z) over the LA_VL value rows at vb + e * vstride (bytes, dtype
 * DT: a float dtype, or DB_U8 / DB_U4 codes widened in the registers).
 * Channel d of row rr takes the weights pw[rr * NG + d / VG] (NG = Dp / VG
 * groups of VG channels; one group, VG = Dp, for float pages) and adds
 * Z[rr * NG + d / VG] where Z is not NULL (the quantised values' zero
 * term). NV output vectors of each row in registers (4 x NV chains), each
 * value vector loaded once for the rows, weights broadcast from memory. */
static inline __attribute__((always_inline)) void db_pv(float *acc, const vf *alpha, const float (*pw)[LA_VL],
                                                        const float *Z, const char *vb, size_t vstride, const int NR,
                                                        const int64_t Dp, const int64_t VG, const la_dtype DT,
                                                        const db_prefetch *pf) {
    const int64_t ng = Dp / VG;
    const db_prefetch ahead = db_prefetch_or(pf, vb, vb, vstride);
    /* The weights are read back from memory, a broadcast operand of each
     * FMA: GCC otherwise kept the caller's small pw array in registers
     * (scalar replacement), moved every weight through a general register
     * (64-bit load, shift, vmovd, vbroadcastss) and spilled the 4 x LA_VL
     * broadcast vectors to the stack, about 5 uops a weight where the
     * broadcast operand costs none. An empty asm taking the pointer (with
     * the stores before it flushed) hides the array's contents. */
    __asm__("" : "+r"(pw) : : "memory");
    int64_t d0 = 0;
    for (; d0 + DB_NV * LA_VL <= Dp; d0 += DB_NV * LA_VL) {
        vf o[4][DB_NV];
#pragma GCC unroll 4
        for (int rr = 0; rr < NR; rr++)
#pragma GCC unroll 4
            for (int k = 0; k < DB_NV; k++) o[rr][k] = vf_load(acc + rr * Dp + d0 + k * LA_VL) * alpha[rr];
#pragma GCC unroll 16
        for (int e = 0; e < LA_VL; e++) {
            vf vv[DB_NV];
            const char *vr = vb + (size_t)e * vstride;
#pragma GCC unroll 4
            for (int k = 0; k < DB_NV; k++) vv[k] = db_load(vr, d0 + k * LA_VL, DT);
            db_prefetch_span(ahead.v, ahead.stride, e, d0, d0 + DB_NV * LA_VL, DT);
#pragma GCC unroll 4
            for (int rr = 0; rr < NR; rr++)
#pragma GCC unroll 4
                for (int k = 0; k < DB_NV; k++)
                    o[rr][k] = vf_fma(vf_set1(pw[rr * ng + (d0 + k * LA_VL) / VG][e]), vv[k], o[rr][k]);
        }
#pragma GCC unroll 4
        for (int rr = 0; rr < NR; rr++)
#pragma GCC unroll 4
            for (int k = 0; k < DB_NV; k++)
                vf_store(acc + rr * Dp + d0 + k * LA_VL,
                         Z ? o[rr][k] + vf_set1(Z[rr * ng + (d0 + k * LA_VL) / VG]) : o[rr][k]);
    }
    for (; d0 < Dp; d0 += LA_VL) {
        const int64_t g = d0 / VG;
        vf o[4];
#pragma GCC unroll 4
        for (int rr = 0; rr < NR; rr++) o[rr] = vf_load(acc + rr * Dp + d0) * alpha[rr];
        for (int e = 0; e < LA_VL; e++) {
            const vf vv = db_load(vb + (size_t)e * vstride, d0, DT);
            db_prefetch_span(ahead.v, ahead.stride, e, d0, d0 + LA_VL, DT);
#pragma GCC unroll 4
            for (int rr = 0; rr < NR; rr++) o[rr] = vf_fma(vf_set1(pw[rr * ng + g][e]), vv, o[rr]);
        }
#pragma GCC unroll 4
        for (int rr = 0; rr < NR; rr++) vf_store(acc + rr * Dp + d0, Z ? o[rr] + vf_set1(Z[rr * ng + g]) : o[rr]);
    }
}

/* Keys e in [0, LA_VL) at kb + e * kstride and vb + e * vstride (bytes),
 * rows of Dp elements of dtype DT, all finite (rows past a short block's
 * end are zero rows of the caller's buffer); NR query rows (1..4) with
 * scaled queries q + rr * Dp (scores q.k + bias[rr] where bias is not NULL), visible lanes vis[rr], running max m[rr],
 * sum l[rr] and accumulator acc + rr * Dp. Rows that see no lane of the
 * block are left as they are. pf (NULL: none): rows of a block ahead to
 * prefetch, K during q.k and V during P.V (db_prefetch). */
static inline __attribute__((always_inline)) void db_block(const float *q, const float *bias, const vi *vis, float *m, float *l,
                                                           float *acc, const char *kb, size_t kstride,
                                                           const char *vb, size_t vstride, const int NR,
                                                           const int64_t Dp, const la_dtype DT, const db_prefetch *pf) {
    vf s[4];
    db_scores(q, bias, kb, kstride, NR, Dp, DT, pf, s);
    float pw[4][LA_VL] __attribute__((aligned(64)));
    vf alpha[4];
    if (!db_softmax(s, vis, m, l, NR, pw, alpha)) return;
    db_pv(acc, alpha, (const float (*)[LA_VL])pw, NULL, vb, vstride, NR, Dp, Dp, DT, pf);
}

#endif
