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
 * 4-wide vectors map to the 16 SSE registers: 4 x 2. tg_gemm uses these;
 * tg_gemm_pack_a takes the shape as arguments, up to
 * TG_MR_MAX x TG_NR_MAX (AVX-512: 12 x 3 = 24 or 8 x 3 = 24 accumulators fit
 * the 32 zmm registers beside the B vectors and the broadcast). */
#if defined(LA_ISA_AVX512)
#define TG_MR 8
#define TG_MR_MAX 12
#define TG_NR_MAX 3
#elif defined(LA_ISA_AVX2)
#define TG_MR 6
#define TG_MR_MAX 6
#define TG_NR_MAX 2
#else
#define TG_MR 4
#define TG_MR_MAX 4
#define TG_NR_MAX 2
#endif
#define TG_NR 2

#define TG_ALWAYS_INLINE inline __attribute__((always_inline))

static inline int64_t tg_round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

static TG_ALWAYS_INLINE void tg_micro_tile(const int mr, const int nr, int64_t kc, const float *a, int64_t a_rs,
                                          int64_t a_ks, const float *b, int64_t ldb, float *c, int64_t ldc,
                                          bool add) {
    vf acc[TG_MR_MAX][TG_NR_MAX];
#pragma GCC unroll 16
    for (int i = 0; i < mr; i++)
#pragma GCC unroll 4
        for (int j = 0; j < nr; j++) acc[i][j] = add ? vf_load(c + i * ldc + j * LA_VL) : vf_set1(0);
    for (int64_t k = 0; k < kc; k++) {
        vf bv[TG_NR_MAX];
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

/* One compiled copy per (rows, vectors) shape so every accumulator is a
 * register, and one more per shape for A rows next to each other (a_rs = 1:
 * P^T, dS^T and packed panels): its broadcasts address a + 4i directly,
 * where a run-time row stride needs one index register per row, more than
 * x86-64 has for 12 rows (the 12 x 2 loop reloaded them from the stack). */
#define TG_TILE_FN(R, N)                                                                                        \
    static void tg_tile_##R##x##N(int64_t kc, const float *a, int64_t a_rs, int64_t a_ks, const float *b,      \
                                  int64_t ldb, float *c, int64_t ldc, bool add) {                              \
        tg_micro_tile(R, N, kc, a, a_rs, a_ks, b, ldb, c, ldc, add);                                           \
    }                                                                                                           \
    static void tg_tile_u_##R##x##N(int64_t kc, const float *a, int64_t a_rs, int64_t a_ks, const float *b,    \
                                    int64_t ldb, float *c, int64_t ldc, bool add) {                            \
        (void)a_rs;                                                                                             \
        tg_micro_tile(R, N, kc, a, 1, a_ks, b, ldb, c, ldc, add);                                              \
    }
#if TG_NR_MAX > 2
#define TG_TILE_FNS(R) TG_TILE_FN(R, 1) TG_TILE_FN(R, 2) TG_TILE_FN(R, 3)
#define TG_TILE_ROW(R) {tg_tile_##R##x1, tg_tile_##R##x2, tg_tile_##R##x3}
#define TG_TILE_ROW_U(R) {tg_tile_u_##R##x1, tg_tile_u_##R##x2, tg_tile_u_##R##x3}
#else
#define TG_TILE_FNS(R) TG_TILE_FN(R, 1) TG_TILE_FN(R, 2)
#define TG_TILE_ROW(R) {tg_tile_##R##x1, tg_tile_##R##x2}
#define TG_TILE_ROW_U(R) {tg_tile_u_##R##x1, tg_tile_u_##R##x2}
#endif
TG_TILE_FNS(1) TG_TILE_FNS(2) TG_TILE_FNS(3) TG_TILE_FNS(4)
#if TG_MR_MAX > 4
TG_TILE_FNS(5) TG_TILE_FNS(6)
#endif
#if TG_MR_MAX > 6
TG_TILE_FNS(7) TG_TILE_FNS(8) TG_TILE_FNS(9) TG_TILE_FNS(10) TG_TILE_FNS(11) TG_TILE_FNS(12)
#endif

typedef void (*tg_tile_fn)(int64_t, const float *, int64_t, int64_t, const float *, int64_t, float *, int64_t, bool);
static const tg_tile_fn tg_tile_table[TG_MR_MAX][TG_NR_MAX] = {
    TG_TILE_ROW(1), TG_TILE_ROW(2), TG_TILE_ROW(3), TG_TILE_ROW(4),
#if TG_MR_MAX > 4
    TG_TILE_ROW(5), TG_TILE_ROW(6),
#endif
#if TG_MR_MAX > 6
    TG_TILE_ROW(7), TG_TILE_ROW(8), TG_TILE_ROW(9), TG_TILE_ROW(10), TG_TILE_ROW(11), TG_TILE_ROW(12),
#endif
};
static const tg_tile_fn tg_tile_table_u[TG_MR_MAX][TG_NR_MAX] = {
    TG_TILE_ROW_U(1), TG_TILE_ROW_U(2), TG_TILE_ROW_U(3), TG_TILE_ROW_U(4),
#if TG_MR_MAX > 4
    TG_TILE_ROW_U(5), TG_TILE_ROW_U(6),
#endif
#if TG_MR_MAX > 6
    TG_TILE_ROW_U(7), TG_TILE_ROW_U(8), TG_TILE_ROW_U(9), TG_TILE_ROW_U(10), TG_TILE_ROW_U(11), TG_TILE_ROW_U(12),
#endif
};

/* C[m x n] (+)= A[m x kc] B[kc x n] in tiles of at most mr_max rows x
 * nr_max vectors (within TG_MR_MAX x TG_NR_MAX); n is a multiple of LA_VL. */
static inline void tg_gemm_shape(int mr_max, int nr_max, int64_t m, int64_t n, int64_t kc, const float *a,
                                 int64_t a_rs, int64_t a_ks, const float *b, int64_t ldb, float *c, int64_t ldc,
                                 bool add) {
    const tg_tile_fn(*table)[TG_NR_MAX] = a_rs == 1 ? tg_tile_table_u : tg_tile_table;
    for (int64_t j0 = 0; j0 < n; j0 += nr_max * LA_VL) {
        int64_t nr = (n - j0) / LA_VL < nr_max ? (n - j0) / LA_VL : nr_max;
        for (int64_t i0 = 0; i0 < m; i0 += mr_max) {
            int64_t mr = m - i0 < mr_max ? m - i0 : mr_max;
            table[mr - 1][nr - 1](kc, a + i0 * a_rs, a_rs, a_ks, b + j0, ldb, c + i0 * ldc + j0, ldc, add);
        }
    }
}

/* C[m x n] (+)= A[m x kc] B[kc x n]; n is a multiple of LA_VL. */
static inline void tg_gemm(int64_t m, int64_t n, int64_t kc, const float *a, int64_t a_rs, int64_t a_ks,
                           const float *b, int64_t ldb, float *c, int64_t ldc, bool add) {
    tg_gemm_shape(TG_MR, TG_NR, m, n, kc, a, a_rs, a_ks, b, ldb, c, ldc, add);
}

/* Packed operands: a matrix reused by many products is laid out once so
 * that a micro-kernel reads it as one contiguous stream (row-major panels
 * 512 bytes apart ran 8 to 15% slower on a Xeon at AVX-512: eight or more
 * strided streams per tile).
 *
 * A packed for row tiles of `mr` rows: rows [t*mr, t*mr + mr) as a [kc][mr]
 * block at ap + t*mr*ldp (ldp >= kc; a short last tile zero padded), i.e.
 * A(i, k) = ap[(i / mr) * mr * ldp + k * mr + i % mr]. */
static inline void tg_pack_a_row(float *ap, int mr, int64_t ldp, int64_t i, const float *row, int64_t kc) {
    float *dst = ap + (i / mr) * mr * ldp + i % mr;
    for (int64_t k = 0; k < kc; k++) dst[k * mr] = row[k];
}

/* Column k of A (rows [0, m)) into the same layout: A^T packed from its rows. */
static inline void tg_pack_a_col(float *ap, int mr, int64_t ldp, int64_t k, const float *col, int64_t m) {
    for (int64_t i = 0; i < m; i++) ap[(i / mr) * mr * ldp + k * mr + i % mr] = col[i];
}

/* C[m x n] (+)= A[m x kc] B[kc x n] with A packed by tg_pack_a_row (same mr,
 * 1 <= mr <= TG_MR_MAX) and B row-major; tiles of mr rows x nr vectors
 * (1 <= nr <= TG_NR_MAX); n a multiple of LA_VL. */
static inline void tg_gemm_pack_a(int mr, int nr, int64_t m, int64_t n, int64_t kc, const float *ap, int64_t ldp,
                                  const float *b, int64_t ldb, float *c, int64_t ldc, bool add) {
    for (int64_t j0 = 0; j0 < n; j0 += nr * LA_VL) {
        int64_t w = (n - j0) / LA_VL < nr ? (n - j0) / LA_VL : nr;
        for (int64_t i0 = 0; i0 < m; i0 += mr) {
            int64_t h = m - i0 < mr ? m - i0 : mr;
            tg_tile_table_u[h - 1][w - 1](kc, ap + i0 * ldp, 1, mr, b + j0, ldb, c + i0 * ldc + j0, ldc, add);
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
