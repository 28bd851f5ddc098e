/* Prefill's weight products on Intel AMX: Y = X W^T (X: n > 1 tokens x cols
 * f32, W: rows x cols of a quantised type or BF16, Y: n x rows) with
 * TDPBF16PS. The one source built with -mamx-tile -mamx-bf16 (and AVX-512
 * for the conversions); CMake builds it only where the compiler has those
 * flags, la_cpu_matmul calls it only where la_amx_usable said yes and the
 * context's level is avx512 or above (tests/layers/check_isa_objects.sh
 * checks that no other object holds an AMX instruction). The AMX ceiling's
 * loop (la_peak_amx_run, driven by cpu/peak/peak.c) is here for that reason.
 *
 * - Tiles (all 16 rows of 64 bytes): C0..C3 (tmm0-3) a 2 x 2 block of f32
 *   outputs, 32 tokens x 32 weight rows; A0, A1 (tmm4-5) 16 tokens x 32 k
 *   of bf16 activations each; B0, B1 (tmm6-7) 32 k x 16 weight rows of bf16
 *   weights each, in the pair ("VNNI") layout TDPBF16PS reads: row kp of
 *   the tile holds, for each of the 16 weight rows, the pair (k = 2 kp,
 *   2 kp + 1).
 * - Weights: a panel of AMX_RB = 32 rows is dequantised once per call to
 *   f32 (la_quant_expand_row, scales applied there), rounded to bf16 and
 *   scattered into the pair layout, k-block after k-block:
 *   wp[kb][g][kp][r] (one 32-bit pair each; g the 16-row half), so each B
 *   tile is 1 KB contiguous. Each thread packs its own panels.
 * - Activations: rounded to bf16 once for all threads, row-major
 *   (xb[i][k]), rows padded with zeros to a multiple of 32 so every A tile
 *   load is whole; padded tokens' outputs are never stored.
 * - Each output is accumulated in its C tile over the whole of k, in k
 *   order, by the same instruction sequence whatever n, the token's
 *   position, the thread count: a row's result depends on its own
 *   activations only (bf16 products are exact in f32; sums in f32, with
 *   denormals flushed, as TDPBF16PS defines). */
#include "base/parallel.h"
#include "cpu/quant/quant_kernels.h"

#include <immintrin.h>

#define AMX_RB 32 /* weight rows per panel: two C tile columns of 16 */
#define AMX_MB 32 /* tokens per step: two C tile rows of 16 */
#define AMX_KB 32 /* k per tile step: 16 bf16 pairs, 64 bytes a tile row */
#define AMX_PAIRS_PER_TILE 256 /* 16 pair rows x 16 weight rows, 32 bits each */

/* The tile configuration (palette 1): every tile 16 rows of 64 bytes. */
typedef struct {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} amx_tilecfg;

static void amx_configure(void) {
    amx_tilecfg cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    for (int t = 0; t < 8; t++) cfg.colsb[t] = 64, cfg.rows[t] = 16;
    _tile_loadconfig(&cfg);
}

/* 16 floats to bf16, round to nearest even (finite inputs: weights and
 * activations are finite where the product means anything). */
static inline __m256i amx_bf16_of(__m512 v) {
    __m512i u = _mm512_castps_si512(v);
    __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
    u = _mm512_add_epi32(u, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff)));
    return _mm512_cvtepi32_epi16(_mm512_srli_epi32(u, 16));
}

/* 32 floats to 32 bf16 in order: as 16 dwords, the pairs (2 j, 2 j + 1). */
static inline __m512i amx_pairs_of(const float *p) {
    return _mm512_inserti64x4(_mm512_castsi256_si512(amx_bf16_of(_mm512_loadu_ps(p))),
                              amx_bf16_of(_mm512_loadu_ps(p + 16)), 1);
}

/* The nr (<= AMX_RB) rows at w into the packed panel wp (cols / 32 * 2
 * tiles of AMX_PAIRS_PER_TILE pairs); rows [nr, AMX_RB) zero. */
static void amx_pack_panel(const la_format *f, la_ggml_type t, const char *w, size_t rb, int64_t nr, int64_t cols,
                           float *row, uint32_t *wp) {
    const __m512i stride = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                              _mm512_set1_epi32(16));
    for (int64_t r = 0; r < AMX_RB; r++) {
        if (r < nr) la_quant_expand_row(f, t, w + (size_t)r * rb, cols, row);
        else memset(row, 0, sizeof(float) * (size_t)cols);
        uint32_t *base = wp + (r / 16) * AMX_PAIRS_PER_TILE + r % 16;
        for (int64_t kb = 0; kb < cols / AMX_KB; kb++)
            _mm512_i32scatter_epi32(base + kb * 2 * AMX_PAIRS_PER_TILE, stride, amx_pairs_of(row + kb * AMX_KB), 4);
    }
}

/* Tokens [i0, i1) (i0 a multiple of AMX_MB) against one packed panel: the
 * outputs of the nr panel rows into Y's columns r0.., whole tiles straight
 * into Y, partial ones through cbuf (AMX_MB x AMX_RB floats). */
static void amx_panel_tokens(const uint16_t *xb, int64_t cols, const uint32_t *wp, int64_t i0, int64_t i1, int64_t n,
                             float *Y, int64_t rows, int64_t r0, int64_t nr, float *cbuf) {
    const int64_t nkb = cols / AMX_KB, xstride = cols * 2;
    for (int64_t i = i0; i < i1; i += AMX_MB) {
        _tile_zero(0);
        _tile_zero(1);
        _tile_zero(2);
        _tile_zero(3);
        const uint16_t *a = xb + i * cols;
        for (int64_t kb = 0; kb < nkb; kb++) {
            _tile_loadd(4, a + kb * AMX_KB, xstride);
            _tile_loadd(5, a + 16 * cols + kb * AMX_KB, xstride);
            _tile_loadd(6, wp + kb * 2 * AMX_PAIRS_PER_TILE, 64);
            _tile_loadd(7, wp + (kb * 2 + 1) * AMX_PAIRS_PER_TILE, 64);
            _tile_dpbf16ps(0, 4, 6);
            _tile_dpbf16ps(1, 4, 7);
            _tile_dpbf16ps(2, 5, 6);
            _tile_dpbf16ps(3, 5, 7);
        }
        if (i + AMX_MB <= n && nr == AMX_RB) {
            float *c = Y + i * rows + r0;
            const int64_t ys = rows * 4;
            _tile_stored(0, c, ys);
            _tile_stored(1, c + 16, ys);
            _tile_stored(2, c + 16 * rows, ys);
            _tile_stored(3, c + 16 * rows + 16, ys);
        } else {
            _tile_stored(0, cbuf, AMX_RB * 4);
            _tile_stored(1, cbuf + 16, AMX_RB * 4);
            _tile_stored(2, cbuf + 16 * AMX_RB, AMX_RB * 4);
            _tile_stored(3, cbuf + 16 * AMX_RB + 16, AMX_RB * 4);
            const int64_t h = n - i < AMX_MB ? n - i : AMX_MB;
            for (int64_t m = 0; m < h; m++)
                memcpy(Y + (i + m) * rows + r0, cbuf + m * AMX_RB, sizeof(float) * (size_t)nr);
        }
    }
}

la_status la_quant_matmul_amx(la_context *ctx, la_ggml_type t, const void *W, size_t rb, int64_t rows, int64_t cols,
                              const float *X, int64_t n, float *Y) {
    const la_format *f = la_format_of_ggml(t);
    const int64_t blocks = (n + AMX_MB - 1) / AMX_MB, panels = (rows + AMX_RB - 1) / AMX_RB;
    const int threads = ctx->threads;
    /* Work units: panels, split into runs of token tiles (la_mm_split). */
    const int64_t split = la_mm_split(panels, blocks, threads), units = panels * split;
    /* Workspace, in 64-byte lines: the bf16 activations (blocks * AMX_MB
     * rows), then per thread a packed panel (cols * AMX_RB bf16), a row
     * scratch (cols floats) and the partial tiles' outputs. */
    size_t xb_bytes, panel_bytes, per_thread, total;
    if (!la_mul_size((size_t)blocks * AMX_MB, (size_t)cols * 2, &xb_bytes) ||
        !la_mul_size((size_t)cols, AMX_RB * 2, &panel_bytes) ||
        (per_thread = panel_bytes + (size_t)cols * 4 + AMX_MB * AMX_RB * 4 + 3 * 64) < panel_bytes ||
        !la_mul_size(per_thread / 64 * 64, (size_t)threads, &total) || (total += xb_bytes + 64) < xb_bytes)
        return la_fail(LA_ERR_OVERFLOW, "matmul workspace overflows");
    per_thread = per_thread / 64 * 64;
    char *mem;
    la_status st = la_workspace(ctx, total, (void **)&mem);
    if (st) return st;
    uint16_t *xb = (uint16_t *)mem;
    char *thread_mem = mem + (xb_bytes + 63) / 64 * 64;
    const char *w = W;
#pragma omp parallel num_threads(threads) if (threads > 1 && (double)rows * (double)cols * (double)n > 1e5)
    {
#pragma omp for schedule(static)
        for (int64_t i = 0; i < blocks * AMX_MB; i++) {
            uint16_t *dst = xb + i * cols;
            if (i < n)
                for (int64_t k = 0; k < cols; k += 16)
                    _mm256_storeu_si256((__m256i *)(dst + k), amx_bf16_of(_mm512_loadu_ps(X + i * cols + k)));
            else
                memset(dst, 0, (size_t)cols * 2);
        }
        char *mine = thread_mem + (size_t)la_thread_id() * per_thread;
        uint32_t *wp = (uint32_t *)mine;
        float *row = (float *)(mine + (panel_bytes + 63) / 64 * 64);
        float *cbuf = (float *)((char *)row + ((size_t)cols * 4 + 63) / 64 * 64);
        amx_configure();
        int64_t have = -1; /* the panel wp holds */
#pragma omp for schedule(dynamic, 1)
        for (int64_t u = 0; u < units; u++) {
            const int64_t p = u / split, s = u % split, r0 = p * AMX_RB;
            const int64_t nr = rows - r0 < AMX_RB ? rows - r0 : AMX_RB;
            if (have != p) amx_pack_panel(f, t, w + (size_t)r0 * rb, rb, nr, cols, row, wp), have = p;
            const int64_t i0 = blocks * s / split * AMX_MB, i1e = blocks * (s + 1) / split * AMX_MB;
            amx_panel_tokens(xb, cols, wp, i0, i1e < n ? i1e : n, n, Y, rows, r0, nr, cbuf);
        }
        _tile_release();
    }
    return LA_OK;
}

/* The ceiling of the path above: TDPBF16PS alone, on tiles already loaded,
 * the loads and packing the kernel also does left out. Four independent C
 * tiles (as the kernel's 2 x 2 block) so an instruction never waits for
 * the one before it. Each thread configures its own tiles (the tile
 * configuration is per thread, as in la_quant_matmul_amx); the process's
 * permission was asked for by la_amx_usable. */
double la_peak_amx_run(int64_t iters) {
    /* small bf16 values (1/128; the pairs 0x3c003c00): the sums stay far
     * from overflow however long the loop, and no input is denormal */
    uint32_t ab[16 * 16];
    float out[16 * 16];
    for (int i = 0; i < 16 * 16; i++) ab[i] = 0x3c003c00u;
    amx_configure();
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
    _tile_loadd(4, ab, 64);
    _tile_loadd(5, ab, 64);
    _tile_loadd(6, ab, 64);
    _tile_loadd(7, ab, 64);
    for (int64_t i = 0; i < iters; i++) {
        _tile_dpbf16ps(0, 4, 6);
        _tile_dpbf16ps(1, 4, 7);
        _tile_dpbf16ps(2, 5, 6);
        _tile_dpbf16ps(3, 5, 7);
    }
    _tile_stored(0, out, 64); /* keeps the products alive */
    _tile_release();
    volatile float sink = out[0];
    (void)sink;
    return (double)iters * 4.0 * (2.0 * 16 * 16 * 32);
}
