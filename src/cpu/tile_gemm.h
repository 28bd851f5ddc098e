/* Register-blocked small matrix products on f32 panels, shared by the
 * attention kernels. Include only from the per-ISA kernel files (after
 * isa.h): the tile shapes follow the ISA being compiled.
 *
 * gemm computes C[m x n] (+)= A[m x kc] B[kc x n] with A read by scalar
 * broadcasts through two strides (A(i, k) = a[i*a_rs + k*a_ks], so a
 * transposed A needs no copy) and B a row-major panel whose n is a multiple
 * of LA_VL. */
#ifndef LA_TILE_GEMM_H
#define LA_TILE_GEMM_H

#include "isa.h"

#include <stdbool.h>

/* Micro-kernel register tile: MR rows x NR vectors of accumulators.
 * AVX2 has 16 ymm registers: 6 x 2 accumulators + 2 B vectors + 1 broadcast.
 * AVX-512 has 32 zmm: 8 x 2 leaves room without spilling. The scalar build's
 * 4-wide vectors map to the 16 SSE registers: 4 x 2. */
#if defined(LA_ISA_AVX512)
#define TG_MR 8
#elif defined(LA_ISA_AVX2)
#define TG_MR 6
#else
#define TG_MR 4
#endif
#define TG_NR 2

#define TG_ALWAYS_INLINE inline __attribute__((always_inline))

static inline int64_t tg_round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

static TG_ALWAYS_INLINE void tg_micro_tile(const int mr, const int nr, int64_t kc, const float *a, int64_t a_rs,
                                          int64_t a_ks, const float *b, int64_t ldb, float *c, int64_t ldc,
                                          bool add) {
    vf acc[TG_MR][TG_NR];
#pragma GCC unroll 16
    for (int i = 0; i < mr; i++)
#pragma GCC unroll 4
        for (int j = 0; j < nr; j++) acc[i][j] = add ? vf_load(c + i * ldc + j * LA_VL) : vf_set1(0);
    for (int64_t k = 0; k < kc; k++) {
        vf bv[TG_NR];
#pragma GCC unroll 4
        for (int j = 0; j < nr; j++) bv[j] = vf_load(b + k * ldb + j * LA_VL);
        const float *ak = a + k * a_ks;
#pragma GCC unroll 16
        for (int i = 0; i < mr; i++) {
            vf av = vf_set1(ak[i * a_rs]);
#pragma GCC unroll 4
            for (int j = 0; j < nr; j++) acc[i][j] = vf_fma(av, bv[j], acc[i][j]);
        }
    }
#pragma GCC unroll 16
    for (int i = 0; i < mr; i++)
#pragma GCC unroll 4
        for (int j = 0; j < nr; j++) vf_store(c + i * ldc + j * LA_VL, acc[i][j]);
}

/* One compiled copy per (rows, vectors) shape so every accumulator is a register. */
#define TG_TILE_FN(R, N)                                                                                        \
    static void tg_tile_##R##x##N(int64_t kc, const float *a, int64_t a_rs, int64_t a_ks, const float *b,      \
                                  int64_t ldb, float *c, int64_t ldc, bool add) {                              \
        tg_micro_tile(R, N, kc, a, a_rs, a_ks, b, ldb, c, ldc, add);                                           \
    }
#define TG_TILE_FNS(R) TG_TILE_FN(R, 1) TG_TILE_FN(R, 2)
TG_TILE_FNS(1) TG_TILE_FNS(2) TG_TILE_FNS(3) TG_TILE_FNS(4)
#if TG_MR > 4
TG_TILE_FNS(5) TG_TILE_FNS(6)
#endif
#if TG_MR > 6
TG_TILE_FNS(7) TG_TILE_FNS(8)
#endif

typedef void (*tg_tile_fn)(int64_t, const float *, int64_t, int64_t, const float *, int64_t, float *, int64_t, bool);
#define TG_TILE_ROW(R) {tg_tile_##R##x1, tg_tile_##R##x2}
static const tg_tile_fn tg_tile_table[TG_MR][TG_NR] = {
    TG_TILE_ROW(1), TG_TILE_ROW(2), TG_TILE_ROW(3), TG_TILE_ROW(4),
#if TG_MR > 4
    TG_TILE_ROW(5), TG_TILE_ROW(6),
#endif
#if TG_MR > 6
    TG_TILE_ROW(7), TG_TILE_ROW(8),
#endif
};

/* C[m x n] (+)= A[m x kc] B[kc x n]; n is a multiple of LA_VL. */
static inline void tg_gemm(int64_t m, int64_t n, int64_t kc, const float *a, int64_t a_rs, int64_t a_ks,
                           const float *b, int64_t ldb, float *c, int64_t ldc, bool add) {
    for (int64_t j0 = 0; j0 < n; j0 += TG_NR * LA_VL) {
        int64_t nr = (n - j0) / LA_VL < TG_NR ? (n - j0) / LA_VL : TG_NR;
        for (int64_t i0 = 0; i0 < m; i0 += TG_MR) {
            int64_t mr = m - i0 < TG_MR ? m - i0 : TG_MR;
            tg_tile_table[mr - 1][nr - 1](kc, a + i0 * a_rs, a_rs, a_ks, b + j0, ldb, c + i0 * ldc + j0, ldc, add);
        }
    }
}

/* dst[0..Dp) = src[0..D) as f32, zero padded. */
static inline void tg_load_row(float *dst, const char *src, la_dtype t, int64_t D, int64_t Dp) {
    int64_t d = 0;
    size_t es = la_dtype_size(t);
    for (; d + LA_VL <= D; d += LA_VL) vf_store(dst + d, vf_load_any(src + d * (int64_t)es, t));
    for (; d < D; d++) dst[d] = la_load_f32(src, t, d);
    for (; d < Dp; d++) dst[d] = 0;
}

static inline void tg_store_row(char *dst, la_dtype t, const float *src, int64_t D) {
    if (t == LA_F32) {
        memcpy(dst, src, (size_t)D * sizeof(float));
        return;
    }
    for (int64_t d = 0; d < D; d++) la_store_f32(dst, t, d, src[d]);
}

#endif
