/* Lane reductions for the decode kernels (attention/decode_isa.c,
 * kvquant/kvq_decode_isa.c), included after cpu/isa.h: a block's max and
 * sum as trees (log2 LA_VL steps) rather than isa.h's serial chain of
 * scalar ops, since both sit on every query row's critical path. The tree
 * sums in another order than vf_reduce_add; the order is still fixed, so
 * results stay the same for any thread count or page size. */
#ifndef LA_CPU_DECODE_SIMD_H
#define LA_CPU_DECODE_SIMD_H

#include <string.h>

#include "cpu/isa.h"
#include "cpu/attention/score_simd.h"

static inline float tree_max(vf v) {
#if defined(LA_ISA_AVX512)
    return _mm512_reduce_max_ps((__m512)v);
#elif defined(LA_ISA_AVX2)
    __m128 x = _mm_max_ps(_mm256_castps256_ps128((__m256)v), _mm256_extractf128_ps((__m256)v, 1));
    x = _mm_max_ps(x, _mm_movehl_ps(x, x));
    return _mm_cvtss_f32(_mm_max_ss(x, _mm_movehdup_ps(x)));
#else
    return vf_reduce_max(v);
#endif
}
static inline float tree_add(vf v) {
#if defined(LA_ISA_AVX512)
    return _mm512_reduce_add_ps((__m512)v);
#elif defined(LA_ISA_AVX2)
    __m128 x = _mm_add_ps(_mm256_castps256_ps128((__m256)v), _mm256_extractf128_ps((__m256)v, 1));
    x = _mm_add_ps(x, _mm_movehl_ps(x, x));
    return _mm_cvtss_f32(_mm_add_ss(x, _mm_movehdup_ps(x)));
#else
    return vf_reduce_add(v);
#endif
}

/* exp(x) for the decode kernels' weight pass: vf_exp's clamp and
 * polynomial; on AVX2 n = round(x log2 e) by adding and subtracting 1.5 *
 * 2^23 (ties to even, as AVX-512's roundscale in attn_exp) and 2^n built
 * from that sum's low bits, where vf_exp's convert, select and two
 * conversions back took three half-rate converts on Zen 1's FMA pipes
 * (the weight pass was a sixth of the decode kernel's time there); on
 * AVX-512 attn_exp (score_simd.h). Within vf_exp's 1-2 ulp; the same for
 * every layout and thread count. */
static inline vf decode_exp(vf x) {
#if defined(LA_ISA_AVX512)
    return attn_exp(x); /* roundscale and scalef: ~15 instructions where vf_exp's converts took ~25 */
#elif defined(LA_ISA_AVX2)
    const __m256 lo = _mm256_set1_ps(-87.3f), magic = _mm256_set1_ps(12582912.0f);
    const __m256 keep = _mm256_cmp_ps((__m256)x, lo, _CMP_NLT_UQ); /* x >= lo or NaN */
    const __m256 xv = _mm256_min_ps(_mm256_max_ps((__m256)x, lo), _mm256_set1_ps(88.3f));
    const __m256 t = _mm256_fmadd_ps(xv, _mm256_set1_ps(1.44269504088896341f), magic);
    const __m256 n = _mm256_sub_ps(t, magic);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693145751953125f), xv);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(1.428606765330187045e-06f), r);
    const vf p = vf_exp_poly((vf)r);
    /* t's mantissa holds n + 2^22 + 2^23 in its low bits: n + 127 in the exponent field */
    const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_castps_si256(t), _mm256_set1_epi32(127)), 23);
    return (vf)_mm256_and_ps(_mm256_mul_ps((__m256)p, _mm256_castsi256_ps(e)), keep);
#else
    return vf_exp(x);
#endif
}

/* LA_VL codes as floats, in registers: int8 widens byte to lane
 * (vpmovzxbd + vcvtdq2ps); int4 takes LA_VL / 2 bytes, splits each into
 * its nibbles and interleaves them (low nibble first), then widens. Through
 * intrinsics: GCC builds a u8 -> i32 __builtin_convertvector lane by lane
 * (vpinsrd per element), which ran the whole decode 2x slower. */
#if defined(LA_ISA_AVX512)
static inline vf vf_from_u8(const uint8_t *p) {
    return (vf)_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)p)));
}
static inline vf vf_from_u4(const uint8_t *p) {
    const __m128i b = _mm_loadl_epi64((const __m128i *)p), m = _mm_set1_epi8(15);
    const __m128i x = _mm_unpacklo_epi8(_mm_and_si128(b, m), _mm_and_si128(_mm_srli_epi16(b, 4), m));
    return (vf)_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(x));
}
#elif defined(LA_ISA_AVX2)
static inline vf vf_from_u8(const uint8_t *p) {
    return (vf)_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)p)));
}
static inline vf vf_from_u4(const uint8_t *p) {
    int32_t w;
    memcpy(&w, p, sizeof w);
    const __m128i b = _mm_cvtsi32_si128(w), m = _mm_set1_epi8(15);
    const __m128i x = _mm_unpacklo_epi8(_mm_and_si128(b, m), _mm_and_si128(_mm_srli_epi16(b, 4), m));
    return (vf)_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(x));
}
#else
static inline vf vf_from_u8(const uint8_t *p) {
    vf f;
    for (int i = 0; i < LA_VL; i++) f[i] = (float)p[i];
    return f;
}
static inline vf vf_from_u4(const uint8_t *p) {
    vf f;
    for (int i = 0; i < LA_VL / 2; i++) f[2 * i] = (float)(p[i] & 15), f[2 * i + 1] = (float)(p[i] >> 4);
    return f;
}
#endif
#endif
