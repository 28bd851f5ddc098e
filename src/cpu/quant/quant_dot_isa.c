/* Dot products of quantised weight rows with f32 activations, one copy per
 * ISA. Blocks are widened to f32 in registers and multiplied there; the
 * offset terms of Q4_0/Q4_1 (d * -8, m) are applied once per block through
 * the activation's block sums (of the int8-rounded x in the integer
 * kernels), which matvec computes once for all rows. */
#include "cpu/isa.h"
#include "cpu/quant/quant_kernels.h"

typedef uint8_t vq __attribute__((vector_size(LA_VL)));
typedef int8_t vqs __attribute__((vector_size(LA_VL)));

#if defined(LA_ISA_AVX2) || defined(LA_ISA_AVX512)
/* Weights are streamed once per token; with two threads each streaming
 * its own half of the rows, asking 2 KB ahead measured 8% faster
 * generation than the hardware prefetchers alone (Zen 1 dev machine, AVX2
 * copy). On Zen 5 (the AVX-512 copy) 2 KB is about one DRAM latency of
 * one thread's stream: 8 KB took the 1536-column down product from 27 to
 * ~42 GB/s and the other products 5-15% up (BENCHMARKS s20-step); farther
 * gained nothing. */
#if defined(LA_ISA_AVX512)
#define PREFETCH_BYTES 8192
#else
#define PREFETCH_BYTES 2048
#endif
/* Integer block dots against the activation quantised to int8 blocks (xq,
 * scale dx per 32 values), as llama.cpp does: maddubs multiplies unsigned
 * by signed bytes and sums pairs into int16 (|15 * 127 * 2| and
 * |127 * 127 * 2| both fit), madd sums those into int32. */
static inline __m256 q4_block(const uint8_t *qs, const int8_t *xq) {
    const __m128i raw = _mm_loadu_si128((const __m128i *)qs), mask = _mm_set1_epi8(0x0F);
    const __m256i q = _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(raw, 4), mask), _mm_and_si128(raw, mask));
    const __m256i p16 = _mm256_maddubs_epi16(q, _mm256_loadu_si256((const __m256i *)xq));
    return _mm256_cvtepi32_ps(_mm256_madd_epi16(p16, _mm256_set1_epi16(1)));
}

static inline __m256 q8_block(const int8_t *qs, const int8_t *xq) {
    const __m256i q = _mm256_loadu_si256((const __m256i *)qs), x = _mm256_loadu_si256((const __m256i *)xq);
    const __m256i p16 = _mm256_maddubs_epi16(_mm256_sign_epi8(q, q), _mm256_sign_epi8(x, q));
    return _mm256_cvtepi32_ps(_mm256_madd_epi16(p16, _mm256_set1_epi16(1)));
}

static inline float hsum256(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

#if defined(LA_ISA_AVX512)
/* Q4_1 against int8 x, two blocks per 512-bit step (AVX512BW): the 16-byte
 * nibble fields of blocks b, b+1 widen to [lo_b, lo_b1, hi_b, hi_b1] (16
 * bytes each), x's 64 bytes are permuted to match, maddubs + madd give 16
 * exact int32 partial sums (lanes 0-3, 8-11 of block b; 4-7, 12-15 of b+1).
 * The four f16 fields (d, m of both blocks) widen in one vcvtph2ps, and
 * [d0, m0, d1, m1] * [dx0, xqsum0, dx1, xqsum1] gives both scales and both
 * offset terms at once. An odd last block goes through the 256-bit step. */
/* sum of u[i] * s[i] over each 4 bytes: one vpdpbusd where the CPU has
 * AVX512-VNNI (inline assembly: the ISA copies are not compiled for it; the
 * caller checks at run time), else maddubs + madd. Both are exact (no
 * pair of products saturates int16: |15 * 127 * 2| < 2^15), so the same
 * bits either way. */
static inline __attribute__((always_inline)) __m512i dot_u8s8(__m512i u, __m512i s, int vnni) {
    if (vnni) {
        __m512i acc = _mm512_setzero_si512();
        __asm__("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(u), "v"(s));
        return acc;
    }
    return _mm512_madd_epi16(_mm512_maddubs_epi16(u, s), _mm512_set1_epi16(1));
}

static inline __attribute__((always_inline)) void dot_q4_1_int8_avx512(const la_block_q4_1 *const *rows, int nr,
                                                                         int vnni, int64_t nb, const int8_t *xq,
                                                                         const float *dx, const float *xqsum,
                                                                         float *out) {
    const __m256i mask = _mm256_set1_epi8(0x0F);
    const __m512i pick = _mm512_set_epi32(2, 2, 2, 2, 0, 0, 0, 0, 2, 2, 2, 2, 0, 0, 0, 0);
    __m512 acc[2] = {_mm512_setzero_ps(), _mm512_setzero_ps()};
    __m128 tail[2] = {_mm_setzero_ps(), _mm_setzero_ps()}; /* lanes 1, 3: m * xqsum */
    int64_t b = 0;
    for (; b + 2 <= nb; b += 2) {
        const __m512i x = _mm512_loadu_si512((const void *)(xq + b * LA_QK));
        const __m512i xp = _mm512_shuffle_i64x2(x, x, _MM_SHUFFLE(3, 1, 2, 0));
        const __m128 xs = _mm_unpacklo_ps(_mm_castsi128_ps(_mm_loadl_epi64((const __m128i *)(dx + b))),
                                          _mm_castsi128_ps(_mm_loadl_epi64((const __m128i *)(xqsum + b))));
        for (int r = 0; r < nr; r++) {
            const la_block_q4_1 *blk = rows[r];
            _mm_prefetch((const char *)&blk[b] + PREFETCH_BYTES, _MM_HINT_T0);
            const __m256i raw = _mm256_inserti128_si256(
                _mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)blk[b].qs)),
                _mm_loadu_si128((const __m128i *)blk[b + 1].qs), 1);
            const __m512i q = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_and_si256(raw, mask)),
                                                 _mm256_and_si256(_mm256_srli_epi16(raw, 4), mask), 1);
            const __m512i sums = dot_u8s8(q, xp, vnni);
            uint32_t f0, f1; /* d | m << 16 of each block */
            memcpy(&f0, &blk[b], 4), memcpy(&f1, &blk[b + 1], 4);
            const __m128 dm = _mm_cvtph_ps(_mm_set_epi32(0, 0, (int)f1, (int)f0));
            const __m128 prod = _mm_mul_ps(dm, xs); /* d0 dx0, m0 xqsum0, d1 dx1, m1 xqsum1 */
            tail[r] = _mm_add_ps(tail[r], prod);
            acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sums), _mm512_permutexvar_ps(pick, _mm512_castps128_ps512(prod)),
                                     acc[r]);
        }
    }
    for (int r = 0; r < nr; r++) {
        const la_block_q4_1 *blk = rows[r];
        float last = 0;
        if (b < nb)
            last = hsum256(_mm256_mul_ps(q4_block(blk[b].qs, xq + b * LA_QK),
                                         _mm256_set1_ps(la_quant_f16(blk[b].d) * dx[b]))) +
                   la_quant_f16(blk[b].m) * xqsum[b];
        float t4[4];
        _mm_storeu_ps(t4, tail[r]);
        out[r] = _mm512_reduce_add_ps(acc[r]) + (t4[1] + t4[3]) + last;
    }
}

/* Rows of Q4_1 two at a time (sharing x's loads); each row's result is the
 * same bits as it alone would give. */
static inline __attribute__((always_inline)) void dot_rows_q4_1(const char *w, size_t row_bytes, int64_t nrows,
                                                                  int vnni, int64_t nb, const int8_t *xq,
                                                                  const float *dx, const float *xqsum, float *y) {
    int64_t r = 0;
    for (; r + 2 <= nrows; r += 2) {
        const la_block_q4_1 *rows[2] = {(const la_block_q4_1 *)(w + (size_t)r * row_bytes),
                                        (const la_block_q4_1 *)(w + (size_t)(r + 1) * row_bytes)};
        dot_q4_1_int8_avx512(rows, 2, vnni, nb, xq, dx, xqsum, y + r);
    }
    if (r < nrows) {
        const la_block_q4_1 *rows[1] = {(const la_block_q4_1 *)(w + (size_t)r * row_bytes)};
        dot_q4_1_int8_avx512(rows, 1, vnni, nb, xq, dx, xqsum, y + r);
    }
}

static void dot_rows_q4_1_int8_avx512(const char *w, size_t row_bytes, int64_t nrows, int64_t nb, const int8_t *xq,
                                      const float *dx, const float *xqsum, float *y) {
    if (la_cpu_avx512_vnni())
        dot_rows_q4_1(w, row_bytes, nrows, 1, nb, xq, dx, xqsum, y);
    else
        dot_rows_q4_1(w, row_bytes, nrows, 0, nb, xq, dx, xqsum, y);
}
#endif

#if !defined(LA_ISA_AVX512)
/* Q4_1 against int8 x (AVX2), NR = 1 or 2 rows sharing x's loads. Per
 * row and block: the scale d * dx and the offset term m * xqsum come from
 * one vcvtph2ps of both rows' (d, m) and one multiply, where the one-row
 * loop converted each f16 field with a scalar vcvtph2ps and multiplied it
 * apart; two rows give the FMA chains (a 5-cycle latency per block on
 * Zen 1, one chain per row) a partner to overlap with. A row's arithmetic
 * is the same whether it goes alone or with another (so the same bits
 * whatever the threads' row split): acc += q(b) * (d dx), offsets summed
 * in block order by FMA, then hsum(acc) + offsets. */
static inline __attribute__((always_inline)) void dot_q4_1_int8_avx2(const la_block_q4_1 *const *rows, const int NR,
                                                                       int64_t nb, const int8_t *xq, const float *dx,
                                                                       const float *xqsum, float *out) {
    __m256 acc[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
    __m128 tail = _mm_setzero_ps(); /* lanes 1, 3: rows 0, 1's sums of m * xqsum */
    const __m128i mask = _mm_set1_epi8(0x0F);
    for (int64_t b = 0; b < nb; b++) {
        const __m256i x = _mm256_loadu_si256((const __m256i *)(xq + b * LA_QK));
        const __m128 xs1 = _mm_unpacklo_ps(_mm_load_ss(dx + b), _mm_load_ss(xqsum + b));
        const __m128 xs = _mm_movelh_ps(xs1, xs1); /* dx, xqsum, dx, xqsum */
        uint32_t f[2] = {0, 0}; /* d | m << 16 of each row's block */
#pragma GCC unroll 2
        for (int r = 0; r < NR; r++) {
            _mm_prefetch((const char *)&rows[r][b] + PREFETCH_BYTES, _MM_HINT_T0);
            memcpy(&f[r], &rows[r][b], 4);
        }
        const __m128 dm = _mm_cvtph_ps(_mm_set_epi32(0, 0, (int)f[1], (int)f[0])); /* d0 m0 d1 m1 */
        const __m128 scale = _mm_mul_ps(dm, xs);
        tail = _mm_fmadd_ps(dm, xs, tail);
#pragma GCC unroll 2
        for (int r = 0; r < NR; r++) {
            const __m128i raw = _mm_loadu_si128((const __m128i *)rows[r][b].qs);
            const __m256i q = _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(raw, 4), mask), _mm_and_si128(raw, mask));
            const __m256 qx = _mm256_cvtepi32_ps(_mm256_madd_epi16(_mm256_maddubs_epi16(q, x), _mm256_set1_epi16(1)));
            const __m256 sc = _mm256_broadcastss_ps(r == 0 ? scale : _mm_movehl_ps(scale, scale));
            acc[r] = _mm256_fmadd_ps(qx, sc, acc[r]);
        }
    }
    float t4[4];
    _mm_storeu_ps(t4, tail);
#pragma GCC unroll 2
    for (int r = 0; r < NR; r++) out[r] = hsum256(acc[r]) + t4[1 + 2 * r];
}

static void dot_rows_q4_1_int8_avx2(const char *w, size_t row_bytes, int64_t nrows, int64_t nb, const int8_t *xq,
                                    const float *dx, const float *xqsum, float *y) {
    int64_t r = 0;
    for (; r + 2 <= nrows; r += 2) {
        const la_block_q4_1 *rows[2] = {(const la_block_q4_1 *)(w + (size_t)r * row_bytes),
                                        (const la_block_q4_1 *)(w + (size_t)(r + 1) * row_bytes)};
        dot_q4_1_int8_avx2(rows, 2, nb, xq, dx, xqsum, y + r);
    }
    if (r < nrows) {
        const la_block_q4_1 *rows[2] = {(const la_block_q4_1 *)(w + (size_t)r * row_bytes), NULL};
        dot_q4_1_int8_avx2(rows, 1, nb, xq, dx, xqsum, y + r);
    }
}
#endif

static bool dot_row_int8(la_ggml_type t, const char *w, int64_t cols, const int8_t *xq, const float *dx,
                         const float *xqsum, float *out) {
    const int64_t nb = cols / LA_QK;
    __m256 acc = _mm256_setzero_ps();
    float tail = 0;
    switch (t) {
    case LA_GGML_Q4_1: {
        const la_block_q4_1 *blk = (const la_block_q4_1 *)w;
        for (int64_t b = 0; b < nb; b++) {
            _mm_prefetch((const char *)&blk[b] + PREFETCH_BYTES, _MM_HINT_T0);
            acc = _mm256_fmadd_ps(q4_block(blk[b].qs, xq + b * LA_QK), _mm256_set1_ps(la_quant_f16(blk[b].d) * dx[b]),
                                  acc);
            tail += la_quant_f16(blk[b].m) * xqsum[b];
        }
        break;
    }
    case LA_GGML_Q4_0: {
        const la_block_q4_0 *blk = (const la_block_q4_0 *)w;
        for (int64_t b = 0; b < nb; b++) {
            _mm_prefetch((const char *)&blk[b] + PREFETCH_BYTES, _MM_HINT_T0);
            float d = la_quant_f16(blk[b].d);
            acc = _mm256_fmadd_ps(q4_block(blk[b].qs, xq + b * LA_QK), _mm256_set1_ps(d * dx[b]), acc);
            tail -= 8 * d * xqsum[b];
        }
        break;
    }
    case LA_GGML_Q8_0: {
        const la_block_q8_0 *blk = (const la_block_q8_0 *)w;
        for (int64_t b = 0; b < nb; b++) {
            _mm_prefetch((const char *)&blk[b] + PREFETCH_BYTES, _MM_HINT_T0);
            acc = _mm256_fmadd_ps(q8_block(blk[b].qs, xq + b * LA_QK), _mm256_set1_ps(la_quant_f16(blk[b].d) * dx[b]),
                                  acc);
        }
        break;
    }
    default: return false;
    }
    *out = hsum256(acc) + tail;
    return true;
}
#endif

static inline vf widen_u8(const uint8_t *p) {
    vq b;
    memcpy(&b, p, sizeof b);
    return __builtin_convertvector(__builtin_convertvector(b, vi), vf);
}

static inline vf widen_s8(const int8_t *p) {
    vqs b;
    memcpy(&b, p, sizeof b);
    return __builtin_convertvector(__builtin_convertvector(b, vi), vf);
}

/* sum_j q_j x_j over one 32-element 4-bit block: low nibbles pair with
 * x[0..16), high nibbles with x[16..32). */
#if defined(LA_ISA_AVX2)
/* f32 activations (la_matvec_batch_f32): the nibbles split in registers
 * and widened 8 at a time, where the generic copy goes through memory. */
static inline vf nibble_dot(const uint8_t *qs, const float *x) {
    const __m128i raw = _mm_loadu_si128((const __m128i *)qs), mask = _mm_set1_epi8(0x0F);
    const __m128i lo = _mm_and_si128(raw, mask), hi = _mm_and_si128(_mm_srli_epi16(raw, 4), mask);
    __m256 t = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(lo)), _mm256_loadu_ps(x));
    t = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(lo, 8))), _mm256_loadu_ps(x + 8), t);
    t = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(hi)), _mm256_loadu_ps(x + 16), t);
    t = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(hi, 8))), _mm256_loadu_ps(x + 24), t);
    return (vf)t;
}
#else
static inline vf nibble_dot(const uint8_t *qs, const float *x) {
    uint8_t lo[LA_QK / 2], hi[LA_QK / 2];
    for (int j = 0; j < LA_QK / 2; j++) lo[j] = qs[j] & 0xF, hi[j] = qs[j] >> 4;
    vf t = vf_set1(0);
    for (int j = 0; j < LA_QK / 2; j += LA_VL) {
        t = vf_fma(widen_u8(lo + j), vf_load(x + j), t);
        t = vf_fma(widen_u8(hi + j), vf_load(x + LA_QK / 2 + j), t);
    }
    return t;
}
#endif

static float dot_row(const la_format *f, const char *w, int64_t cols, const float *x, const float *xsum) {
    vf acc = vf_set1(0);
    float tail = 0;
    const int64_t nb = cols / LA_QK;
    switch (f->ggml) {
    case LA_GGML_Q4_1: {
        const la_block_q4_1 *blk = (const la_block_q4_1 *)w;
        for (int64_t b = 0; b < nb; b++) {
            acc = vf_fma(nibble_dot(blk[b].qs, x + b * LA_QK), vf_set1(la_quant_f16(blk[b].d)), acc);
            tail += la_quant_f16(blk[b].m) * xsum[b];
        }
        break;
    }
    case LA_GGML_Q4_0: {
        const la_block_q4_0 *blk = (const la_block_q4_0 *)w;
        for (int64_t b = 0; b < nb; b++) {
            float d = la_quant_f16(blk[b].d);
            acc = vf_fma(nibble_dot(blk[b].qs, x + b * LA_QK), vf_set1(d), acc);
            tail -= 8 * d * xsum[b];
        }
        break;
    }
    case LA_GGML_Q8_0: {
        const la_block_q8_0 *blk = (const la_block_q8_0 *)w;
        for (int64_t b = 0; b < nb; b++) {
            vf s = vf_set1(0);
            for (int j = 0; j < LA_QK; j += LA_VL) s = vf_fma(widen_s8(blk[b].qs + j), vf_load(x + b * LA_QK + j), s);
            acc = vf_fma(s, vf_set1(la_quant_f16(blk[b].d)), acc);
        }
        break;
    }
    case LA_GGML_F32:
    case LA_GGML_F16:
    case LA_GGML_BF16: { /* rows of a la_dtype: the table's first rows */
        la_dtype dt = la_format_dtype(f);
        int64_t j = 0;
        for (; j + LA_VL <= cols; j += LA_VL)
            acc = vf_fma(vf_load_any(w + j * (int64_t)f->block_bytes, dt), vf_load(x + j), acc);
        for (; j < cols; j++) tail += la_load_f32(w, dt, j) * x[j];
        break;
    }
    default: { /* K-quants: widen a super-block at a time */
        float blk[LA_QK_K];
        for (int64_t b = 0; b < cols / LA_QK_K; b++, w += f->block_bytes) {
            f->dequantize(w, blk, LA_QK_K);
            for (int j = 0; j < LA_QK_K; j += LA_VL) acc = vf_fma(vf_load(blk + j), vf_load(x + b * LA_QK_K + j), acc);
        }
        break;
    }
    }
    return vf_reduce_add(acc) + tail;
}

void LA_ISA_FN(la_quant_dot_rows)(la_ggml_type t, const char *w, size_t row_bytes, int64_t nrows, int64_t cols,
                                  const float *x, const float *xsum, const int8_t *xq, const float *dx,
                                  const float *xqsum, float *y) {
    const la_format *f = la_format_of_ggml(t);
#if defined(LA_ISA_AVX512)
    if (xq && t == LA_GGML_Q4_1) {
        dot_rows_q4_1_int8_avx512(w, row_bytes, nrows, cols / LA_QK, xq, dx, xqsum, y);
        return;
    }
#elif defined(LA_ISA_AVX2)
    if (xq && t == LA_GGML_Q4_1) {
        dot_rows_q4_1_int8_avx2(w, row_bytes, nrows, cols / LA_QK, xq, dx, xqsum, y);
        return;
    }
#endif
    for (int64_t r = 0; r < nrows; r++) {
#if defined(LA_ISA_AVX2) || defined(LA_ISA_AVX512)
        if (xq && dot_row_int8(t, w + (size_t)r * row_bytes, cols, xq, dx, xqsum, &y[r])) continue;
#else
        (void)xq, (void)dx, (void)xqsum;
#endif
        y[r] = dot_row(f, w + (size_t)r * row_bytes, cols, x, xsum);
    }
}
