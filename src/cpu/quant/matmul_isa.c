/* Prefill's weight products, Y = X W^T (X: n tokens x cols f32, W: rows x
 * cols of a GGUF type, Y: n x rows), as a blocked GEMM, one copy per ISA.
 *
 * - Weights are dequantised once, a panel of MM_RB rows at a time (the
 *   micro-kernel's vector width times its vector count), to f32 packed
 *   k-major: Wp[k][MM_RB], so the micro-kernel loads MM_NR whole vectors of
 *   rows per k and never a strided one. Each thread dequantises its own
 *   panels; no weight row is dequantised twice (unless there are fewer
 *   panels than threads and a panel's tokens are split).
 * - Activations are packed once for all threads into tiles of MM_MR tokens,
 *   k-major (Xp[tile][k][MM_MR]): one pass over X, read by every panel.
 * - The micro-kernel (tile_gemm.h) holds MM_MR tokens x MM_NR vectors of
 *   rows in registers (AVX-512: 8 x 3 zmm = 24 accumulators; AVX2: 6 x 2;
 *   scalar 4 x 2), broadcasting one activation per token and k, and stores
 *   straight into Y's rows (a token's outputs are contiguous in r): no
 *   transposed write-back.
 * - Blocking: k in blocks of MM_KC (a panel's k-block, MM_KC * MM_RB * 4 =
 *   48 KB at AVX-512, stays in L1/L2 while the token tiles stream past it)
 *   and tokens in blocks of MM_NC (the X k-block, MM_NC * MM_KC * 4 =
 *   512 KB, stays in L2 across the panel's k-blocks).
 * Activations stay f32 throughout: each output is one sequential f32 sum
 * over k of exact-as-f32 dequantised weights times f32 activations. */
#include "cpu/isa.h"
#include "base/parallel.h"
#include "cpu/quant/quant_kernels.h"
#include "cpu/tile_gemm.h"

#define MM_NR TG_NR_MAX
#define MM_RB (MM_NR * LA_VL)
#if defined(LA_ISA_AVX512)
#define MM_MR 8
#elif defined(LA_ISA_AVX2)
#define MM_MR 6
#else
#define MM_MR 4
#endif
#define MM_KC 256
#define MM_NC (512 / MM_MR * MM_MR) /* whole token tiles */

/* Row r (< MM_RB) of a panel, dequantised (la_quant_expand_row) into
 * column r of the packed panel wp[k * MM_RB + r]; row is a scratch of cols
 * floats. */
static void dequant_row_packed(const la_format *f, la_ggml_type t, const char *w, int64_t cols, float *row,
                               float *wp, int r) {
    la_quant_expand_row(f, t, w, cols, row);
    for (int64_t k = 0; k < cols; k++) wp[k * MM_RB + r] = row[k];
}

/* The nr (<= MM_RB) rows at w into the packed panel wp [cols][MM_RB];
 * columns [nr, MM_RB) zero. */
static void pack_panel(const la_format *f, la_ggml_type t, const char *w, size_t rb, int64_t nr, int64_t cols,
                       float *row, float *wp) {
    for (int64_t r = 0; r < nr; r++) dequant_row_packed(f, t, w + (size_t)r * rb, cols, row, wp, (int)r);
    if (nr < MM_RB)
        for (int64_t k = 0; k < cols; k++)
            for (int64_t r = nr; r < MM_RB; r++) wp[k * MM_RB + r] = 0;
}

/* Tokens [i0, i1) of one packed panel: C[i][0..MM_RB) for i in the range,
 * c's rows ldc apart, k-blocks accumulated in order. */
static void panel_tokens(const float *xp, int64_t cols, const float *wp, int64_t i0, int64_t i1, float *c,
                         int64_t ldc) {
    for (int64_t b0 = i0; b0 < i1; b0 += MM_NC) {
        const int64_t b1 = i1 - b0 < MM_NC ? i1 : b0 + MM_NC;
        for (int64_t k0 = 0; k0 < cols; k0 += MM_KC) {
            const int64_t kc = cols - k0 < MM_KC ? cols - k0 : MM_KC;
            for (int64_t t0 = b0; t0 < b1; t0 += MM_MR) {
                const int64_t h = b1 - t0 < MM_MR ? b1 - t0 : MM_MR;
                /* token tile t0 / MM_MR (i0 is a multiple of MM_MR) */
                const float *a = xp + (t0 / MM_MR) * MM_MR * cols + k0 * MM_MR;
                tg_tile_table_u[h - 1][MM_NR - 1](kc, a, 1, MM_MR, wp + k0 * MM_RB, MM_RB, c + t0 * ldc, ldc,
                                                  k0 > 0);
            }
        }
    }
}

la_status LA_ISA_FN(la_quant_matmul)(la_context *ctx, la_ggml_type t, const void *W, size_t rb, int64_t rows,
                                     int64_t cols, const float *X, int64_t n, float *Y) {
    const la_format *f = la_format_of_ggml(t);
    const int64_t tiles = (n + MM_MR - 1) / MM_MR, panels = (rows + MM_RB - 1) / MM_RB;
    const int threads = ctx->threads;
    /* Work units: panels, split into runs of token tiles (la_mm_split). */
    const int64_t split = la_mm_split(panels, tiles, threads), units = panels * split;
    /* Workspace: packed X (tiles * MM_MR * cols), then per thread a packed
     * panel (cols * MM_RB), a row scratch (cols + pad) and the short last
     * panel's outputs (n * MM_RB). */
    size_t xp_n, panel_n, tail_n, per_thread, total, bytes;
    if (!la_mul_size((size_t)tiles * MM_MR, (size_t)cols, &xp_n) || !la_mul_size((size_t)cols, MM_RB, &panel_n) ||
        !la_mul_size((size_t)tiles * MM_MR, MM_RB, &tail_n) ||
        (per_thread = panel_n + (size_t)cols + 16 + tail_n + 15) < panel_n ||
        !la_mul_size(per_thread / 16 * 16, (size_t)threads, &total) || (xp_n = (xp_n + 15) / 16 * 16) < 16 ||
        (total += xp_n) < xp_n || !la_mul_size(total, sizeof(float), &bytes))
        return la_fail(LA_ERR_OVERFLOW, "matmul workspace overflows");
    per_thread = per_thread / 16 * 16; /* each thread's part 64-byte aligned */
    float *mem;
    la_status st = la_workspace(ctx, bytes, (void **)&mem);
    if (st) return st;
    float *xp = mem;
    const char *w = W;
#pragma omp parallel num_threads(threads) if (threads > 1 && (double)rows * (double)cols * (double)n > 1e5)
    {
        /* X into tiles of MM_MR tokens, k-major; the last tile's missing
         * tokens zero (their outputs are never stored). */
#pragma omp for schedule(static)
        for (int64_t ti = 0; ti < tiles; ti++) {
            float *dst = xp + ti * MM_MR * cols;
            const int64_t h = n - ti * MM_MR < MM_MR ? n - ti * MM_MR : MM_MR;
            for (int64_t i = 0; i < h; i++) {
                const float *src = X + (ti * MM_MR + i) * cols;
                for (int64_t k = 0; k < cols; k++) dst[k * MM_MR + i] = src[k];
            }
            for (int64_t i = h; i < MM_MR; i++)
                for (int64_t k = 0; k < cols; k++) dst[k * MM_MR + i] = 0;
        }
        float *wp = mem + xp_n + (size_t)la_thread_id() * per_thread, *row = wp + panel_n, *tail = row + cols + 16;
        int64_t have = -1; /* the panel wp holds */
#pragma omp for schedule(dynamic, 1)
        for (int64_t u = 0; u < units; u++) {
            const int64_t p = u / split, s = u % split, r0 = p * MM_RB;
            const int64_t nr = rows - r0 < MM_RB ? rows - r0 : MM_RB;
            if (have != p) pack_panel(f, t, w + (size_t)r0 * rb, rb, nr, cols, row, wp), have = p;
            const int64_t i0 = tiles * s / split * MM_MR, i1 = tiles * (s + 1) / split * MM_MR < n
                                                                  ? tiles * (s + 1) / split * MM_MR : n;
            if (nr == MM_RB) {
                panel_tokens(xp, cols, wp, i0, i1, Y + r0, rows);
            } else { /* a short panel: full-width stores would reach past the row */
                panel_tokens(xp, cols, wp, i0, i1, tail, MM_RB);
                for (int64_t i = i0; i < i1; i++) memcpy(Y + i * rows + r0, tail + i * MM_RB, sizeof(float) * (size_t)nr);
            }
        }
    }
    return LA_OK;
}
