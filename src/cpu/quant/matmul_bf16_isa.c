/* Prefill's weight products with AVX512_BF16 dot products (VDPBF16PS), for
 * CPUs that have them but no usable AMX (AMD Zen 4, Cooper Lake, Sapphire
 * Rapids without the tile permission): Y = X W^T, X n > 1 tokens x cols
 * f32, W rows x cols of a quantised type or BF16, Y n x rows. The same
 * numerics as the AMX path (matmul_amx.c): weights and activations rounded
 * to bf16 (nearest even), the products exact in f32, each output one f32
 * sum over the whole of k in k order.
 *
 * Only the avx512_bf16 copy of this file has a body (the others compile to
 * nothing; tests/layers/check_isa_objects.sh checks that no other copy holds
 * a BF16 instruction). la_cpu_matmul calls it where la_cpu_matmul_path says
 * "dot_bf16".
 *
 * - One VDPBF16PS multiplies 16 pairs of bf16 by 16 pairs and adds each
 *   pair's two products into an f32 lane: twice the multiply-adds of an
 *   f32 FMA of the same width.
 * - Weights: a panel of DB_RB = 48 rows is dequantised (la_quant_expand_row),
 *   rounded to bf16 and stored pair-major: wp[kp][r] is the 32-bit pair
 *   (k = 2 kp, 2 kp + 1) of row r, so the micro-kernel loads DB_NR whole
 *   vectors of 16 rows per pair index. Each thread packs its own panels.
 * - Activations: rounded to bf16 once for all threads, in tiles of DB_MR
 *   tokens, pair-major: xp[tile][kp][i], so the micro-kernel broadcasts a
 *   token's pair straight from memory (the {1to16} operand); the last
 *   tile's missing tokens are zero and their outputs never stored.
 * - Micro-kernel: DB_MR x DB_NR = 8 x 3 = 24 accumulators of the 32 zmm
 *   registers, beside 3 weight vectors; it runs over the whole of k (a
 *   48-row panel at 1536 columns is 147 KB, read from L2 at 8 bytes a
 *   cycle) and stores straight into Y's rows, masked at a short panel.
 * A row's result depends on its own activations only: every token of every
 * tile goes through the same instruction sequence, whatever n, its
 * position or the thread count. */
#include "cpu/isa.h"
#include "base/parallel.h"
#include "cpu/quant/quant_kernels.h"

#if defined(LA_ISA_AVX512_BF16)

#define DB_MR 8              /* tokens per micro-tile */
#define DB_NR 3              /* vectors of 16 weight rows per micro-tile */
#define DB_RB (DB_NR * 16)   /* weight rows per panel */

/* v[r] lane k becomes v[k] lane r (16 x 16 32-bit elements): 32-bit, then
 * 64-bit interleaves within 128-bit lanes, then 128-bit lane shuffles. */
static inline void transpose16(__m512i *v) {
    __m512i t[16];
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_epi32(v[i], v[i + 1]);
        t[i + 1] = _mm512_unpackhi_epi32(v[i], v[i + 1]);
    }
    for (int i = 0; i < 16; i += 4) {
        v[i] = _mm512_unpacklo_epi64(t[i], t[i + 2]);
        v[i + 1] = _mm512_unpackhi_epi64(t[i], t[i + 2]);
        v[i + 2] = _mm512_unpacklo_epi64(t[i + 1], t[i + 3]);
        v[i + 3] = _mm512_unpackhi_epi64(t[i + 1], t[i + 3]);
    }
    /* v[4 j + c] now holds, in 128-bit lane l, rows 4 j .. 4 j + 3 of
     * column 4 l + c; gather lane l of v[c], v[4 + c], v[8 + c], v[12 + c] */
    for (int c = 0; c < 4; c++) {
        const __m512i a = _mm512_shuffle_i32x4(v[c], v[4 + c], 0x44), b = _mm512_shuffle_i32x4(v[c], v[4 + c], 0xEE);
        const __m512i e = _mm512_shuffle_i32x4(v[8 + c], v[12 + c], 0x44),
                      h = _mm512_shuffle_i32x4(v[8 + c], v[12 + c], 0xEE);
        t[c] = _mm512_shuffle_i32x4(a, e, 0x88);      /* lane 0 of each: column c */
        t[4 + c] = _mm512_shuffle_i32x4(a, e, 0xDD);  /* lane 1: column 4 + c */
        t[8 + c] = _mm512_shuffle_i32x4(b, h, 0x88);  /* lane 2: column 8 + c */
        t[12 + c] = _mm512_shuffle_i32x4(b, h, 0xDD); /* lane 3: column 12 + c */
    }
    for (int i = 0; i < 16; i++) v[i] = t[i];
}

/* cols (a multiple of 32) floats at src as cols / 2 bf16 pairs at dst, the
 * pair's low half the even element; round to nearest even. */
static void bf16_pairs(const float *src, int64_t cols, uint32_t *dst) {
    for (int64_t k = 0; k < cols; k += 32) {
        __m512bh h = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(src + k + 16), _mm512_loadu_ps(src + k));
        _mm512_storeu_si512(dst + k / 2, (__m512i)h);
    }
}

/* One weight row of type t (cols elements at w) as cols / 2 bf16 pairs:
 * the model's block formats expanded here 32 values at a time, d * q + m
 * by FMA (the same value as la_quant_expand_row's, up to its one rounding,
 * before the bf16 rounding); others through la_quant_expand_row into row. */
static void row_pairs(const la_format *f, la_ggml_type t, const char *w, int64_t cols, float *row, uint32_t *dst) {
    const int64_t nb = cols / LA_QK;
    const __m128i low4 = _mm_set1_epi8(0x0F);
    switch (t) {
    case LA_GGML_Q4_1:
    case LA_GGML_Q4_0:
        for (int64_t b = 0; b < nb; b++) {
            /* both layouts: the fp16 scale(s), then 16 bytes of nibbles */
            const la_block_q4_1 *b1 = (const la_block_q4_1 *)w + b;
            const la_block_q4_0 *b0 = (const la_block_q4_0 *)w + b;
            const bool q41 = t == LA_GGML_Q4_1;
            const __m512 d = _mm512_set1_ps(la_quant_f16(q41 ? b1->d : b0->d));
            const __m512 m = q41 ? _mm512_set1_ps(la_quant_f16(b1->m)) : _mm512_mul_ps(d, _mm512_set1_ps(-8.0f));
            const __m128i q = _mm_loadu_si128((const __m128i *)(q41 ? b1->qs : b0->qs));
            const __m512 lo = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_and_si128(q, low4)));
            const __m512 hi = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_and_si128(_mm_srli_epi16(q, 4), low4)));
            const __m512bh h = _mm512_cvtne2ps_pbh(_mm512_fmadd_ps(d, hi, m), _mm512_fmadd_ps(d, lo, m));
            _mm512_storeu_si512(dst + b * 16, (__m512i)h);
        }
        return;
    case LA_GGML_Q8_0:
        for (int64_t b = 0; b < nb; b++) {
            const la_block_q8_0 *blk = (const la_block_q8_0 *)w + b;
            const __m512 d = _mm512_set1_ps(la_quant_f16(blk->d));
            const __m512 lo = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)blk->qs)));
            const __m512 hi = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)blk->qs + 1)));
            const __m512bh h = _mm512_cvtne2ps_pbh(_mm512_mul_ps(d, hi), _mm512_mul_ps(d, lo));
            _mm512_storeu_si512(dst + b * 16, (__m512i)h);
        }
        return;
    default:
        la_quant_expand_row(f, t, w, cols, row);
        bf16_pairs(row, cols, dst);
    }
}

/* The nr (<= DB_RB) rows at w into the packed panel wp [cols / 2][DB_RB];
 * rows [nr, DB_RB) zero. row: cols floats, pairs: 16 rows of cols / 2
 * pairs of scratch. Rows go 16 at a time through pairs, then 16 x 16
 * blocks of pairs are transposed in registers, so each store is a whole
 * vector of 16 rows (strided single stores cost as much as the rest). */
static void pack_panel(const la_format *f, la_ggml_type t, const char *w, size_t rb, int64_t nr, int64_t cols,
                       float *row, uint32_t *pairs, uint32_t *wp) {
    const int64_t kpn = cols / 2;
    for (int64_t g = 0; g < DB_NR; g++) {
        for (int64_t r = 0; r < 16; r++) {
            if (g * 16 + r < nr) row_pairs(f, t, w + (size_t)(g * 16 + r) * rb, cols, row, pairs + r * kpn);
            else memset(pairs + r * kpn, 0, sizeof(uint32_t) * (size_t)kpn);
        }
        for (int64_t k0 = 0; k0 < kpn; k0 += 16) {
            __m512i v[16];
            for (int r = 0; r < 16; r++) v[r] = _mm512_loadu_si512(pairs + r * kpn + k0);
            transpose16(v);
            for (int k = 0; k < 16; k++) _mm512_storeu_si512(wp + (k0 + k) * DB_RB + g * 16, v[k]);
        }
    }
}

/* One micro-tile: the DB_MR tokens of xt against the panel wp over all kpn
 * pairs; the first h tokens' outputs stored at y (rows ldy apart), each
 * vector j's lanes under mask[j]. */
static void tile_dot(const uint32_t *xt, const uint32_t *wp, int64_t kpn, float *y, int64_t ldy, int h,
                     const __mmask16 *mask) {
    __m512 acc[DB_MR][DB_NR];
#pragma GCC unroll 8
    for (int i = 0; i < DB_MR; i++)
#pragma GCC unroll 3
        for (int j = 0; j < DB_NR; j++) acc[i][j] = _mm512_setzero_ps();
    for (int64_t kp = 0; kp < kpn; kp++) {
        __m512bh b[DB_NR];
#pragma GCC unroll 3
        for (int j = 0; j < DB_NR; j++) b[j] = (__m512bh)_mm512_loadu_si512(wp + kp * DB_RB + j * 16);
        const uint32_t *xk = xt + kp * DB_MR;
#pragma GCC unroll 8
        for (int i = 0; i < DB_MR; i++) {
            const __m512bh a = (__m512bh)_mm512_set1_epi32((int)xk[i]);
#pragma GCC unroll 3
            for (int j = 0; j < DB_NR; j++) acc[i][j] = _mm512_dpbf16_ps(acc[i][j], b[j], a);
        }
    }
#pragma GCC unroll 8
    for (int i = 0; i < DB_MR; i++)
        if (i < h)
#pragma GCC unroll 3
            for (int j = 0; j < DB_NR; j++) _mm512_mask_storeu_ps(y + i * ldy + j * 16, mask[j], acc[i][j]);
}

la_status la_quant_matmul_bf16_avx512_bf16(la_context *ctx, la_ggml_type t, const void *W, size_t rb, int64_t rows,
                                           int64_t cols, const float *X, int64_t n, float *Y) {
    const la_format *f = la_format_of_ggml(t);
    const int64_t tiles = (n + DB_MR - 1) / DB_MR, panels = (rows + DB_RB - 1) / DB_RB, kpn = cols / 2;
    const int threads = ctx->threads;
    const int64_t split = la_mm_split(panels, tiles, threads), units = panels * split;
    /* Workspace, in 64-byte lines: the bf16 activation tiles, then per
     * thread a packed panel (cols * DB_RB bf16), a row (cols floats) and
     * 16 rows of pairs (16 cols bf16). */
    size_t xp_bytes, panel_bytes, per_thread, total;
    if (!la_mul_size((size_t)tiles * DB_MR, (size_t)cols * 2, &xp_bytes) ||
        !la_mul_size((size_t)cols, DB_RB * 2, &panel_bytes) ||
        (per_thread = panel_bytes + (size_t)cols * 36 + 3 * 64) < panel_bytes ||
        !la_mul_size(per_thread / 64 * 64, (size_t)threads, &total) || (total += xp_bytes + 64) < xp_bytes)
        return la_fail(LA_ERR_OVERFLOW, "matmul workspace overflows");
    per_thread = per_thread / 64 * 64;
    char *mem;
    la_status st = la_workspace(ctx, total, (void **)&mem);
    if (st) return st;
    uint32_t *xp = (uint32_t *)mem;
    char *thread_mem = mem + (xp_bytes + 63) / 64 * 64;
    const char *w = W;
#pragma omp parallel num_threads(threads) if (threads > 1 && (double)rows * (double)cols * (double)n > 1e5)
    {
        char *mine = thread_mem + (size_t)la_thread_id() * per_thread;
        uint32_t *wp = (uint32_t *)mine;
        float *row = (float *)(mine + (panel_bytes + 63) / 64 * 64);
        uint32_t *pairs = (uint32_t *)((char *)row + ((size_t)cols * 4 + 63) / 64 * 64);
#pragma omp for schedule(static)
        for (int64_t ti = 0; ti < tiles; ti++) {
            uint32_t *dst = xp + ti * DB_MR * kpn;
            for (int64_t i = 0; i < DB_MR; i++) {
                const int64_t tok = ti * DB_MR + i;
                if (tok < n) bf16_pairs(X + tok * cols, cols, pairs);
                else memset(pairs, 0, sizeof(uint32_t) * (size_t)kpn);
                for (int64_t kp = 0; kp < kpn; kp++) dst[kp * DB_MR + i] = pairs[kp];
            }
        }
        int64_t have = -1; /* the panel wp holds */
#pragma omp for schedule(dynamic, 1)
        for (int64_t u = 0; u < units; u++) {
            const int64_t p = u / split, s = u % split, r0 = p * DB_RB;
            const int64_t nr = rows - r0 < DB_RB ? rows - r0 : DB_RB;
            if (have != p) pack_panel(f, t, w + (size_t)r0 * rb, rb, nr, cols, row, pairs, wp), have = p;
            __mmask16 mask[DB_NR];
            for (int j = 0; j < DB_NR; j++) {
                const int64_t lanes = nr - j * 16;
                mask[j] = lanes >= 16 ? (__mmask16)0xffff : lanes <= 0 ? 0 : (__mmask16)((1u << lanes) - 1);
            }
            for (int64_t ti = tiles * s / split; ti < tiles * (s + 1) / split; ti++) {
                const int64_t h = n - ti * DB_MR < DB_MR ? n - ti * DB_MR : DB_MR;
                tile_dot(xp + ti * DB_MR * kpn, wp, kpn, Y + ti * DB_MR * rows + r0, rows, (int)h, mask);
            }
        }
    }
    return LA_OK;
}

#endif
