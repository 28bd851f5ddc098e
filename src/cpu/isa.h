/* Write a kernel once, compile it per instruction set.
 *
 * A file named src/cpu/<op>/NAME_isa.c is compiled four times by CMake, with
 * one of LA_ISA_SCALAR, LA_ISA_AVX2, LA_ISA_AVX512 or LA_ISA_AVX512_BF16
 * defined and that level's -m flags, one copy per la_simd level. It names its
 * entry points with LA_ISA_FN(name), which becomes name_scalar, name_avx2,
 * name_avx512 or name_avx512_bf16, and its arithmetic uses `vf`, a GNU vector
 * of LA_VL floats that the compiler maps onto the ISA's registers. The
 * AVX512_BF16 copy also defines LA_ISA_AVX512 (the same vectors); only it is
 * built with -mavx512bf16, so the AVX512 copy runs on AVX-512 CPUs without
 * BF16 (a test disassembles it to check). Callers pick a copy with
 * LA_ISA_PICK(name, level): the one dispatcher. */
#ifndef LA_ISA_H
#define LA_ISA_H

#include "base/base.h"

#include <math.h>
#include <stdint.h>
#include <string.h>
#if defined(LA_ISA_AVX512_BF16) && !defined(LA_ISA_AVX512)
#define LA_ISA_AVX512 1
#endif
#if defined(LA_ISA_AVX2) || defined(LA_ISA_AVX512)
#include <immintrin.h>
#endif

#if defined(LA_ISA_AVX512_BF16)
#define LA_VL 16
#define LA_ISA_FN(name) name##_avx512_bf16
#elif defined(LA_ISA_AVX512)
#define LA_VL 16
#define LA_ISA_FN(name) name##_avx512
#elif defined(LA_ISA_AVX2)
#define LA_VL 8
#define LA_ISA_FN(name) name##_avx2
#elif defined(LA_ISA_SCALAR)
#define LA_VL 4
#define LA_ISA_FN(name) name##_scalar
#else
/* Included from a dispatcher: only the declarations below are wanted. */
#define LA_VL 4
#endif

/* Vectors of columns a state-update step (delta rule, Titans) works on at
 * once: its two sets of LA_STEP_NB accumulators stay in registers (half of
 * AVX-512's 32, all of AVX2's 16). */
#define LA_STEP_NB (LA_VL == 16 ? 8 : 4)

/* Declare the four copies of an entry point, for dispatchers. */
#define LA_ISA_DECLARE(ret, name, args) \
    ret name##_scalar args;             \
    ret name##_avx2 args;               \
    ret name##_avx512 args;             \
    ret name##_avx512_bf16 args

/* The copy of `name` for la_simd level `simd` (a valid level, as the
 * context guarantees). */
#define LA_ISA_PICK(name, simd) \
    ((__typeof__(&name##_scalar)[LA_SIMD_COUNT]){name##_scalar, name##_avx2, name##_avx512, name##_avx512_bf16}[(simd)])

typedef float vf __attribute__((vector_size(LA_VL * 4)));
typedef int32_t vi __attribute__((vector_size(LA_VL * 4)));
typedef uint32_t vu __attribute__((vector_size(LA_VL * 4)));
typedef uint16_t vh __attribute__((vector_size(LA_VL * 2)));

static inline vf vf_load(const float *p) {
    vf v;
    memcpy(&v, p, sizeof v);
    return v;
}
static inline void vf_store(float *p, vf v) { memcpy(p, &v, sizeof v); }
/* Through the ISA's broadcast: (vf){0} + x costs a scalar add first (0 + x
 * is not x for x = -0 without -ffast-math), which sat on the critical path
 * of every micro-kernel broadcast. */
static inline vf vf_set1(float x) {
#if defined(LA_ISA_AVX512)
    return (vf)_mm512_set1_ps(x);
#elif defined(LA_ISA_AVX2)
    return (vf)_mm256_set1_ps(x);
#else
    return (vf){x, x, x, x}; /* LA_VL is 4 */
#endif
}
/* a * b + c, fused where the ISA has FMA. Explicit, not left to contraction:
 * GCC contracts `a * b + c` or not depending on the code around it (a branch
 * nearby was enough once), and kernels that must agree bit for bit across
 * layouts (decode over pages vs contiguous keys) cannot depend on that. */
static inline vf vf_fma(vf a, vf b, vf c) {
#if defined(LA_ISA_AVX512)
    return (vf)_mm512_fmadd_ps((__m512)a, (__m512)b, (__m512)c);
#elif defined(LA_ISA_AVX2)
    return (vf)_mm256_fmadd_ps((__m256)a, (__m256)b, (__m256)c);
#else
    return a * b + c;
#endif
}
/* A read hint for the line at a, into every cache level. Written out on
 * x86: GCC 12 dropped __builtin_prefetch from the selective scan's step
 * loop altogether, in every ISA copy. */
static inline void la_prefetch_t0(const void *a) {
#if defined(__x86_64__) || defined(__i386__)
    __asm__ volatile("prefetcht0 %0" : : "m"(*(const char *)a));
#else
    __builtin_prefetch(a, 0, 3);
#endif
}
/* Lane-wise mask ? a : b (mask lanes all ones or zero). GNU C, unlike C++,
 * has no ?: on vectors, so select through the bits. */
static inline vf vf_select(vi mask, vf a, vf b) { return (vf)(((vi)a & mask) | ((vi)b & ~mask)); }
static inline vf vf_max(vf a, vf b) { return vf_select(a > b, a, b); }
static inline vf vf_min(vf a, vf b) { return vf_select(a < b, a, b); }

static inline float vf_reduce_add(vf v) {
    float s = 0;
    for (int i = 0; i < LA_VL; i++) s += v[i];
    return s;
}
static inline float vf_reduce_max(vf v) {
    float m = v[0];
    for (int i = 1; i < LA_VL; i++) m = v[i] > m ? v[i] : m;
    return m;
}

/* Lane e of the result is the sum of v[e]'s lanes, for LA_VL vectors v
 * (overwritten): a tree of even/odd pair sums, LA_VL - 1 steps in all
 * instead of one full reduction per vector. After each level, vector i
 * holds partial sums of the 2^level inputs it covers, in input order. */
#if LA_VL == 16
#define LA_EVEN_LANES 0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30
#define LA_ODD_LANES 1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31
#elif LA_VL == 8
#define LA_EVEN_LANES 0, 2, 4, 6, 8, 10, 12, 14
#define LA_ODD_LANES 1, 3, 5, 7, 9, 11, 13, 15
#else
#define LA_EVEN_LANES 0, 2, 4, 6
#define LA_ODD_LANES 1, 3, 5, 7
#endif
static inline vf vf_transpose_sum(vf *v) {
#pragma GCC unroll 16
    for (int n = LA_VL; n > 1; n /= 2)
#pragma GCC unroll 16
        for (int i = 0; i < n / 2; i++)
            v[i] = __builtin_shufflevector(v[2 * i], v[2 * i + 1], LA_EVEN_LANES) +
                   __builtin_shufflevector(v[2 * i], v[2 * i + 1], LA_ODD_LANES);
    return v[0];
}

/* bf16 is the top half of an f32: widen and shift. */
static inline vf vf_load_bf16(const uint16_t *p) {
    vh h;
    memcpy(&h, p, sizeof h);
    vu u = __builtin_convertvector(h, vu) << 16;
    vf f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static inline vf vf_load_f16(const uint16_t *p) {
#if defined(LA_ISA_AVX512)
    return (vf)_mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p));
#elif defined(LA_ISA_AVX2)
    return (vf)_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
#else
    const la_u16_any_align *h = (const la_u16_any_align *)p; /* f16 weight rows may start at an odd address */
    vf f;
    for (int i = 0; i < LA_VL; i++) f[i] = la_f16_to_f32(h[i]);
    return f;
#endif
}

/* Load LA_VL elements of any storage dtype as f32. */
static inline vf vf_load_any(const void *p, la_dtype t) {
    switch (t) {
    case LA_BF16: return vf_load_bf16(p);
    case LA_F16: return vf_load_f16(p);
    default: return vf_load(p);
    }
}

/* Store LA_VL floats as bf16, rounded to nearest even, NaN kept a quiet
 * NaN: la_f32_to_bf16 lane-wise. */
static inline void vf_store_bf16(uint16_t *p, vf x) {
    vu u;
    memcpy(&u, &x, sizeof u);
    vi nan = (u & 0x7fffffffu) > 0x7f800000u;
    vi r = (vi)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
    r = (r & ~nan) | ((vi)((u >> 16) | 0x40u) & nan);
    vh h = __builtin_convertvector(r, vh);
    memcpy(p, &h, sizeof h);
}

/* Store LA_VL floats as f16, rounded to nearest even (F16C where the ISA
 * has it; NaN stays NaN, its payload may differ from la_f32_to_f16's). */
static inline void vf_store_f16(uint16_t *p, vf x) {
#if defined(LA_ISA_AVX512)
    _mm256_storeu_si256((__m256i *)p, _mm512_cvtps_ph((__m512)x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
#elif defined(LA_ISA_AVX2)
    _mm_storeu_si128((__m128i *)p, _mm256_cvtps_ph((__m256)x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
#else
    for (int i = 0; i < LA_VL; i++) p[i] = la_f32_to_f16(x[i]);
#endif
}

/* Store LA_VL floats in any storage dtype. */
static inline void vf_store_any(void *p, la_dtype t, vf x) {
    switch (t) {
    case LA_BF16: vf_store_bf16(p, x); break;
    case LA_F16: vf_store_f16(p, x); break;
    default: vf_store(p, x); break;
    }
}

/* e^r for |r| <= ln2/2: the degree-6 polynomial vf_exp and scan_exp share. */
static inline vf vf_exp_poly(vf r) {
    vf p = vf_set1(1.3981999507e-3f);
    p = vf_fma(p, r, vf_set1(8.3334519073e-3f));
    p = vf_fma(p, r, vf_set1(4.1665795894e-2f));
    p = vf_fma(p, r, vf_set1(1.6666665459e-1f));
    p = vf_fma(p, r, vf_set1(5.0000001201e-1f));
    p = vf_fma(p, r * r, r + 1.0f);
    return p;
}

/* exp(x) for x <= ~88, 1-2 ulp over the range softmax uses; exp(-inf) = 0.
 * Cody-Waite range reduction to 2^n * exp(r), |r| <= ln2/2, then the
 * degree-6 polynomial for exp(r). */
static inline vf vf_exp(vf x) {
    const vf lo = vf_set1(-87.3f);
    vi underflow = x < lo;
    x = vf_max(x, lo);
    x = vf_min(x, vf_set1(88.3f));
    vf n = x * 1.44269504088896341f;
    n = __builtin_convertvector(__builtin_convertvector(n + vf_select(n >= 0, vf_set1(0.5f), vf_set1(-0.5f)), vi), vf);
    vf r = x - n * 0.693145751953125f;
    r = r - n * 1.428606765330187045e-06f;
    vf p = vf_exp_poly(r);
    vi e = (__builtin_convertvector(n, vi) + 127) << 23;
    vf scale;
    memcpy(&scale, &e, sizeof scale);
    vf y = p * scale;
    return (vf)((vi)y & ~underflow);
}

static inline vf vf_tanh(vf x) { return 1.0f - 2.0f / (vf_exp(2.0f * x) + 1.0f); }
static inline vf vf_sigmoid(vf x) { return 1.0f / (1.0f + vf_exp(-x)); }
static inline vf vf_abs(vf x) { return vf_max(x, -x); }

static inline vi vi_iota(void) {
    vi v;
    for (int i = 0; i < LA_VL; i++) v[i] = i;
    return v;
}

#endif
